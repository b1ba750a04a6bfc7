"""``bge-rerank``: score passages against a query from the command line.

    $ bge-rerank --model BAAI/bge-reranker-v2-m3 --query "what is panda?" "hi" "The giant panda ..."
    rank  index    score  text
       1      1   5.2617  The giant panda ...
       2      0  -8.1875  hi

Passages come from the arguments, from ``--file`` or from standard input: one per line, or
JSON Lines with a ``text`` field (``--text-field`` names another).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Iterable, Sequence, TextIO

from .loading import ModelNotFoundError

logger = logging.getLogger(__name__)

#: Inputs at least this long get a progress bar on standard error.
PROGRESS_FROM = 256


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bge-rerank", description="Rerank passages for a query with a BGE reranker (FlagEmbedding-exact scores)."
    )
    parser.add_argument("passages", nargs="*", help="passages to score (else --file, else standard input)")
    parser.add_argument("--model", "-m", required=True, help="Hub id (e.g. BAAI/bge-reranker-v2-m3) or local checkpoint directory")
    parser.add_argument("--query", "-q", required=True, help="the query")
    parser.add_argument("--file", "-f", help="read passages from this file ('-' = standard input): one per non-blank line, or JSONL")
    parser.add_argument("--text-field", default="text", help="JSONL field holding the passage (default: text)")
    parser.add_argument("--top-n", type=int, help="print only the best N")
    parser.add_argument("--normalize", action="store_true", help="map scores through a sigmoid into (0, 1)")
    parser.add_argument("--cutoff-layers", type=_int_list, help="layerwise/lightweight: one layer to score at, e.g. 28")
    parser.add_argument("--compress-ratio", type=int, help="lightweight: passage compression ratio (1, 2, 4, 8)")
    parser.add_argument("--compress-layers", type=_int_list, help="lightweight: layers that compress, e.g. 24,40")
    parser.add_argument("--prompt", help="decoder families: the instruction prompt")
    parser.add_argument("--max-length", type=int, help="longest pair in tokens (default 512)")
    parser.add_argument("--model-class", help="family override: encoder, llm, layerwise, lightweight")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--fp16", action="store_true", help="half precision on CUDA/MPS")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 on CUDA/MPS")
    parser.add_argument("--batch-size", type=int, help="pairs per forward pass (default 128)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {index, score, text}")
    parser.add_argument("--verbose", "-v", action="store_true", help="log what happens on standard error")
    return parser


def _int_list(value: str) -> list[int]:
    try:
        return [int(part) for part in value.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def read_passages(stream: TextIO, text_field: str = "text") -> list[str]:
    """Passages from a stream: JSON Lines when every non-blank line is a JSON object, else one per line.

    >>> import io; read_passages(io.StringIO('{"text": "a"}\\n{"text": "b"}\\n'))
    ['a', 'b']
    """
    lines = [line.rstrip("\n") for line in stream if line.strip()]
    if lines and all(line.lstrip().startswith("{") for line in lines):
        passages = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"line {number} is not valid JSON: {error}") from None
            if not isinstance(record.get(text_field), str):
                raise ValueError(f"line {number} has no string field {text_field!r}; use --text-field to name it.")
            passages.append(record[text_field])
        return passages
    return lines


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
        passages = _gather_passages(args)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    if not passages:
        parser.error("no passages: give them as arguments, with --file, or on standard input")

    from .reranker import BGEReranker

    options = {
        "normalize": args.normalize or None,
        "cutoff_layers": args.cutoff_layers,
        "compress_ratio": args.compress_ratio,
        "compress_layers": args.compress_layers,
        "prompt": args.prompt,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
    }
    try:
        reranker = BGEReranker(
            args.model,
            model_class=args.model_class,
            device=args.device,
            use_fp16=args.fp16,
            use_bf16=args.bf16,
            show_progress=len(passages) >= PROGRESS_FROM,
        )
        results = reranker.rerank(args.query, passages, top_n=args.top_n, **options)
    except ModelNotFoundError as error:
        print(f"bge-rerank: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as error:
        print(f"bge-rerank: {error}", file=sys.stderr)
        return 2
    _print_results(results, args.json)
    return 0


def _gather_passages(args: argparse.Namespace) -> list[str]:
    if args.passages and args.file:
        raise ValueError("give passages as arguments or with --file, not both")
    if args.passages:
        return list(args.passages)
    if args.file and args.file != "-":
        with open(args.file, encoding="utf-8") as handle:
            return read_passages(handle, args.text_field)
    if args.file == "-" or not sys.stdin.isatty():
        return read_passages(sys.stdin, args.text_field)
    return []


def _print_results(results: Iterable, as_json: bool) -> None:
    results = list(results)
    if as_json:
        print(json.dumps([{"index": r.index, "score": r.score, "text": r.text} for r in results], ensure_ascii=False))
        return
    print(f"{'rank':>4}  {'index':>5}  {'score':>9}  text")
    for rank, result in enumerate(results, 1):
        text = " ".join(result.text.split())
        print(f"{rank:>4}  {result.index:>5}  {result.score:>9.4f}  {text[:100]}{'…' if len(text) > 100 else ''}")


if __name__ == "__main__":
    sys.exit(main())
