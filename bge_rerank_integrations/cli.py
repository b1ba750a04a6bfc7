"""``bge-rerank``: score passages against a query from the command line, or serve a reranker.

    $ bge-rerank --model BAAI/bge-reranker-v2-m3 --query "what is panda?" "hi" "The giant panda ..."
    rank  index    score  text
       1      1   5.2617  The giant panda ...
       2      0  -8.1875  hi

    $ bge-rerank --url http://127.0.0.1:8080 --api tei --query "what is panda?" "hi" "The giant panda ..."
    $ bge-rerank serve --model BAAI/bge-reranker-v2-m3 --port 8080

Subcommands (``SUBCOMMANDS``): ``rank`` (the default when none is named, so ``bge-rerank
[rank] --model ... --query ...``), ``serve`` (``serving.serve``) and ``eval`` (``evaluation.cli``).
``--url`` ranks through a rerank server instead of a local model (``--api``: bge, tei, infinity,
vllm, cohere; the API key comes from ``BGE_RERANK_API_KEY``).

Passages come from the arguments, from ``--file`` or from standard input: one per line, or
JSON Lines with a ``text`` field (``--text-field`` names another); with ``--json`` each JSONL
record's other fields (an ``id``, say) are kept next to ``index``, ``score`` and ``text``.

``--help`` and ``--version`` answer without importing torch: the model code is imported only
once there is something to score, and a subcommand's module only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from . import __version__
from .options import LOAD_OPTIONS, SCORE_OPTIONS, add_flags, given_options

if TYPE_CHECKING:  # pragma: no cover - the real import waits until there is something to score (torch)
    from .ranking import RerankResult

#: Inputs at least this long get a progress bar on standard error.
PROGRESS_FROM = 256
#: The subcommands: name -> (module, one-line help). The module defines ``add_arguments(parser)`` and
#: ``run(args) -> int`` (and may define ``DESCRIPTION``); it is imported only when its subcommand is
#: named. A new subcommand (``eval``, say) is one entry here. ``DEFAULT_COMMAND`` runs when none is named.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "rank": (__name__, "rank passages for a query (the default: bge-rerank --model M --query Q PASSAGE ...)"),
    "serve": (
        "bge_rerank_integrations.serving.serve",
        "serve a reranker over HTTP (TEI and Cohere/Jina/vLLM rerank APIs)",
    ),
    "eval": ("bge_rerank_integrations.evaluation.cli", "quality and latency of models and settings on BEIR data"),
}
DEFAULT_COMMAND = "rank"
DESCRIPTION = "Rerank passages for a query with a BGE reranker (FlagEmbedding-exact scores)."


class _Parser(argparse.ArgumentParser):
    """Argument errors are one line on standard error: the problem, then where to read more (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _TopParser(_Parser):
    """``bge-rerank --help`` lists the subcommands, then the default one's options."""

    def format_help(self) -> str:
        default = _Parser(prog="bge-rerank [rank]", description=f"{DEFAULT_COMMAND} (the default subcommand):")
        add_arguments(default)
        return super().format_help() + "\n" + default.format_help()


def build_parser(command: str | None = DEFAULT_COMMAND) -> argparse.ArgumentParser:
    """The ``bge-rerank`` parser: every subcommand listed, the arguments of ``command`` added (its module imported)."""
    parser = _TopParser(prog="bge-rerank", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(
        title="subcommands", metavar="{" + ",".join(SUBCOMMANDS) + "}", parser_class=_Parser
    )
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        prog = "bge-rerank" if name == DEFAULT_COMMAND else f"bge-rerank {name}"
        if name != command:
            subcommands.add_parser(name, help=help_text, prog=prog)
            continue
        module = importlib.import_module(module_name)
        subparser = subcommands.add_parser(
            name, help=help_text, prog=prog, description=getattr(module, "DESCRIPTION", None)
        )
        module.add_arguments(subparser)
        # dests no flag of a subcommand can take (a subcommand may well have its own --run or --parser)
        subparser.set_defaults(_subcommand_run=module.run, _subcommand_parser=subparser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``bge-rerank rank``'s arguments: the input, the output, and every option's flag (``options.OPTIONS``)."""
    parser.add_argument("passages", nargs="*", help="passages to score (else --file, else standard input)")
    parser.add_argument("--model", "-m", help="Hub id (e.g. BAAI/bge-reranker-v2-m3) or local checkpoint directory")
    parser.add_argument(
        "--url", help="rank through a rerank server at this URL instead of --model (e.g. http://127.0.0.1:8080)"
    )
    parser.add_argument(
        "--api",
        default="bge",
        choices=["bge", "tei", "infinity", "vllm", "cohere"],
        help="the server's API with --url (default bge: bge-rerank serve); API key from $BGE_RERANK_API_KEY",
    )
    parser.add_argument(
        "--remote-model", help="with --url: the model name sent to servers that take one (Cohere needs it)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="with --url: seconds the whole call may take, retries and waits included (default 60)",
    )
    parser.add_argument(
        "--max-response-bytes",
        type=int,
        help="with --url: most bytes of one decompressed answer (default: 1 MiB + 1 KiB per passage + 8x the passages' size)",
    )
    parser.add_argument("--query", "-q", required=True, help="the query")
    parser.add_argument(
        "--file", "-f", help="read passages from this file ('-' = standard input): one per non-blank line, or JSONL"
    )
    parser.add_argument("--text-field", default="text", help="JSONL field holding the passage (default: text)")
    parser.add_argument("--top-n", type=int, help="print only the best N")
    parser.add_argument(
        "--score-threshold",
        type=float,
        help="drop passages scoring below this (before --top-n; use with --normalize for a (0, 1) scale)",
    )
    add_flags(parser, SCORE_OPTIONS)
    add_flags(parser, LOAD_OPTIONS)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {index, score, text} plus each JSONL record's other fields "
        "(an input field named index, score or text is kept as input_<name>)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log what happens on standard error")


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

    The first argument names the subcommand (``SUBCOMMANDS``); without one, ``rank`` runs.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = [DEFAULT_COMMAND, *argv]
    command = argv[0] if argv[0] in SUBCOMMANDS else None
    try:
        parser = build_parser(command)
    except ImportError as error:  # a subcommand whose extra is not installed (serve: fastapi, uvicorn)
        print(
            f"bge-rerank {command}: {error}; install the extra it needs, e.g. pip install 'bge-rerank-integrations[{command}]'",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    return args._subcommand_run(args)


def run(args: argparse.Namespace) -> int:
    """Rank the passages the parsed ``args`` give (``bge-rerank [rank]``); returns the exit status."""
    parser = args._subcommand_parser
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
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

    options = given_options(vars(args), SCORE_OPTIONS)
    try:
        reranker = _reranker(args, len(records))
        passages = [text for text, _ in records]
        results = reranker.rerank(
            args.query, passages, top_n=args.top_n, score_threshold=args.score_threshold, **options
        )
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
    load = given_options(vars(args), LOAD_OPTIONS)
    if args.url is None:
        from .reranker import BGEReranker

        return BGEReranker(args.model, **load, show_progress=count >= PROGRESS_FROM)
    given = sorted(name for name, value in load.items() if value)
    if given:
        raise ValueError(
            f"{', '.join(given)} choose how a local model is loaded: set them on the server, not with --url."
        )
    from .remote import RemoteReranker

    remote = {"model": args.remote_model, "timeout": args.timeout, "max_response_bytes": args.max_response_bytes}
    return RemoteReranker(args.url, api=args.api, **{k: v for k, v in remote.items() if v is not None})


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
