"""``bge-rerank``: score passages against a query from the command line.

    $ bge-rerank --model BAAI/bge-reranker-v2-m3 --query "what is panda?" "hi" "The giant panda ..."
    rank  index    score  text
       1      1   5.2617  The giant panda ...
       2      0  -8.1875  hi

    $ bge-rerank --url http://127.0.0.1:8080 --api tei --query "what is panda?" "hi" "The giant panda ..."

``--url`` ranks through a rerank server instead of a local model (``--api``: bge, tei, infinity,
vllm, cohere; the API key comes from ``BGE_RERANK_API_KEY``).

Passages come from the arguments, from ``--file`` or from standard input: one per line, or
JSON Lines with a ``text`` field (``--text-field`` names another); with ``--json`` each JSONL
record's other fields (an ``id``, say) are kept next to ``index``, ``score`` and ``text``.

``--help`` and ``--version`` answer without importing torch: the model code is imported only
once there is something to score.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn, Sequence, TextIO

from . import __version__

if TYPE_CHECKING:  # pragma: no cover - the real import waits until there is something to score (torch)
    from .reranker import RerankResult

logger = logging.getLogger(__name__)

#: Inputs at least this long get a progress bar on standard error.
PROGRESS_FROM = 256


class _Parser(argparse.ArgumentParser):
    """Argument errors are one line on standard error: the problem, then where to read more (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bge-rerank", description="Rerank passages for a query with a BGE reranker (FlagEmbedding-exact scores)."
    )
    parser.add_argument("passages", nargs="*", help="passages to score (else --file, else standard input)")
    parser.add_argument("--model", "-m", help="Hub id (e.g. BAAI/bge-reranker-v2-m3) or local checkpoint directory")
    parser.add_argument("--url", help="rank through a rerank server at this URL instead of --model (e.g. http://127.0.0.1:8080)")
    parser.add_argument(
        "--api", default="bge", choices=["bge", "tei", "infinity", "vllm", "cohere"],
        help="the server's API with --url (default bge: bge-rerank serve); API key from $BGE_RERANK_API_KEY",
    )
    parser.add_argument("--remote-model", help="with --url: the model name sent to servers that take one (Cohere needs it)")
    parser.add_argument("--timeout", type=float, help="with --url: seconds to wait for the server (default 60)")
    parser.add_argument("--query", "-q", required=True, help="the query")
    parser.add_argument("--file", "-f", help="read passages from this file ('-' = standard input): one per non-blank line, or JSONL")
    parser.add_argument("--text-field", default="text", help="JSONL field holding the passage (default: text)")
    parser.add_argument("--top-n", type=int, help="print only the best N")
    parser.add_argument(
        "--score-threshold", type=float, help="drop passages scoring below this (before --top-n; use with --normalize for a (0, 1) scale)"
    )
    parser.add_argument("--normalize", action="store_true", help="map scores through a sigmoid into (0, 1)")
    parser.add_argument("--cutoff-layers", type=_int_list, help="layerwise/lightweight: one layer to score at, e.g. 28")
    parser.add_argument("--compress-ratio", type=int, help="lightweight: passage compression ratio (1, 2, 4, 8)")
    parser.add_argument("--compress-layers", type=_int_list, help="lightweight: layers that compress, e.g. 24,40")
    parser.add_argument("--prompt", help="decoder families: the instruction prompt")
    parser.add_argument(
        "--max-chunks-per-passage", type=int,
        help="score a passage longer than its pair's room as up to N overlapping windows; it gets the best one's score (default 1: truncate)",
    )
    parser.add_argument("--chunk-overlap", type=int, help="tokens shared by consecutive windows (default: an eighth of a window)")
    parser.add_argument("--max-length", type=int, help="longest pair in tokens (default 512)")
    parser.add_argument("--query-max-length", type=int, help="longest query in tokens (default: 3/4 of --max-length)")
    parser.add_argument("--query-instruction", help='text put before the query (decoders default to "A: "; "" for none)')
    parser.add_argument("--query-instruction-format", help='how instruction and query are joined (default "{}{}")')
    parser.add_argument("--passage-instruction", help='text put before each passage (decoders default to "B: "; "" for none)')
    parser.add_argument("--passage-instruction-format", help='how instruction and passage are joined (default "{}{}")')
    parser.add_argument("--model-class", help="family override: encoder, llm, layerwise, lightweight")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--fp16", action="store_true", help="half precision on CUDA/MPS")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 on CUDA/MPS")
    parser.add_argument("--batch-size", type=int, help="pairs per forward pass (default 128)")
    parser.add_argument("--cache-dir", help="where Hub downloads go (default: the Hugging Face cache)")
    parser.add_argument("--local-files-only", action="store_true", help="never reach the Hub: use the cache or a directory")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {index, score, text} plus each JSONL record's other fields "
        "(an input field named index, score or text is kept as input_<name>)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log what happens on standard error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _int_list(value: str) -> list[int]:
    try:
        return [int(part) for part in value.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def read_records(stream: TextIO, text_field: str = "text") -> list[tuple[str, dict[str, Any]]]:
    """Passages from a stream, each with its other fields: JSON Lines when every non-blank line is a
    JSON object (the passage is ``text_field``), else one passage per line (no other fields).

    >>> import io; read_records(io.StringIO('{"id": 7, "text": "a"}\\n{"id": 8, "text": "b"}\\n'))
    [('a', {'id': 7}), ('b', {'id': 8})]
    """
    lines = [line.rstrip("\n") for line in stream if line.strip()]
    if lines and all(line.lstrip().startswith("{") for line in lines):
        records = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"line {number} is not valid JSON: {error}") from None
            except RecursionError:
                raise ValueError(f"line {number} is nested too deeply to read as JSON.") from None
            if not isinstance(record.get(text_field), str):
                raise ValueError(f"line {number} has no string field {text_field!r}; use --text-field to name it.")
            text = record.pop(text_field)
            records.append((text, record))
        return records
    return [(line, {}) for line in lines]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure to score, 2 bad input).

    ``bge-rerank serve ...`` runs the HTTP server instead (see ``serving.serve``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        from .serving.serve import main as serve

        return serve(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        records = _gather_records(args)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    if not records:
        parser.error("no passages: give them as arguments, with --file, or on standard input")
    if (args.model is None) == (args.url is None):
        parser.error("give a local model with --model, or a rerank server with --url (one of them)")

    from .loading import CheckpointError, ModelNotFoundError
    from .remote import RemoteRerankError

    options = {
        "normalize": args.normalize or None,
        "cutoff_layers": args.cutoff_layers,
        "compress_ratio": args.compress_ratio,
        "compress_layers": args.compress_layers,
        "prompt": args.prompt,
        "max_length": args.max_length,
        "query_max_length": args.query_max_length,
        "query_instruction_for_rerank": args.query_instruction,
        "query_instruction_format": args.query_instruction_format,
        "passage_instruction_for_rerank": args.passage_instruction,
        "passage_instruction_format": args.passage_instruction_format,
        "batch_size": args.batch_size,
        "max_chunks_per_passage": args.max_chunks_per_passage,
        "chunk_overlap": args.chunk_overlap,
    }
    try:
        reranker = _reranker(args, len(records))
        passages = [text for text, _ in records]
        results = reranker.rerank(args.query, passages, top_n=args.top_n, score_threshold=args.score_threshold, **options)
    except (ModelNotFoundError, CheckpointError, RemoteRerankError) as error:
        return _fail(error, 1)
    except (ValueError, TypeError) as error:
        return _fail(error, 2)
    try:
        _print_results(results, args.json, [fields for _, fields in records])
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        os.close(devnull)
    return 0


def _fail(error: BaseException, status: int) -> int:
    """Print ``error`` as one line on standard error and return ``status``."""
    print(f"bge-rerank: {' '.join(str(error).split())}", file=sys.stderr)
    return status


def _reranker(args: argparse.Namespace, count: int) -> Any:
    """A ``BGEReranker`` for ``--model``, or a ``RemoteReranker`` for ``--url`` (load options are then an error)."""
    load = {
        "model_class": args.model_class,
        "device": args.device,
        "use_fp16": args.fp16,
        "use_bf16": args.bf16,
        "cache_dir": args.cache_dir,
        "local_files_only": args.local_files_only,
    }
    if args.url is None:
        from .reranker import BGEReranker

        return BGEReranker(args.model, **load, show_progress=count >= PROGRESS_FROM)
    given = sorted(name for name, value in load.items() if value)
    if given:
        raise ValueError(f"{', '.join(given)} choose how a local model is loaded: set them on the server, not with --url.")
    from .remote import RemoteReranker

    remote = {"model": args.remote_model, "timeout": args.timeout}
    return RemoteReranker(args.url, api=args.api, normalize=args.normalize, **{k: v for k, v in remote.items() if v is not None})


def _gather_records(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    if args.passages and args.file:
        raise ValueError("give passages as arguments or with --file, not both")
    if args.passages:
        return [(passage, {}) for passage in args.passages]
    if args.file and args.file != "-":
        with open(args.file, encoding="utf-8") as handle:
            return read_records(handle, args.text_field)
    if args.file == "-" or not sys.stdin.isatty():
        return read_records(sys.stdin, args.text_field)
    return []


def _json_record(result: RerankResult, fields: dict[str, Any]) -> dict[str, Any]:
    """``{index, score, text}`` (and ``span``, the best window, when the passage was scored in windows) then the
    input record's other fields; one named like ours becomes ``input_<name>``."""
    score = None if math.isnan(result.score) else result.score  # a NaN score (a broken model) is null: JSON has no NaN
    record: dict[str, Any] = {"index": result.index, "score": score, "text": result.text}
    if result.span is not None:
        record["span"] = list(result.span)
    for key, value in fields.items():
        while key in record:
            key = f"input_{key}"
        record[key] = value
    return record


def _print_results(results: Sequence[RerankResult], as_json: bool, fields: Sequence[dict[str, Any]]) -> None:
    if as_json:
        print(json.dumps([_json_record(r, fields[r.index]) for r in results], ensure_ascii=False, allow_nan=False))
        return
    print(f"{'rank':>4}  {'index':>5}  {'score':>9}  text")
    for rank, result in enumerate(results, 1):
        text = _printable(" ".join(result.text.split()))
        print(f"{rank:>4}  {result.index:>5}  {result.score:>9.4f}  {text[:100]}{'…' if len(text) > 100 else ''}")


def _printable(text: str) -> str:
    r"""``text`` with control and format characters (ANSI escapes, bidi overrides) written as escapes.

    >>> _printable("red \x1b[31mtext")
    'red \\x1b[31mtext'
    """
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


if __name__ == "__main__":
    sys.exit(main())
