"""``bge-rerank eval``: quality and latency of every model and setting on a BEIR-format dataset.

    $ bge-rerank eval ./scifact --first-stage bm25 --top-k 100 \\
        --model BAAI/bge-reranker-v2-minicpm-layerwise --sweep cutoff_layers=20,28,40 --output eval-out

Writes results.json, runs/<configuration>.trec, results.md and pareto.png into ``--output`` and
prints the table. Exit status: 0 done, 1 a model could not be loaded or scored, 2 bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .metrics import DEFAULT_METRICS

#: The subcommand's description (``bge-rerank eval --help``).
DESCRIPTION = "Evaluate rerankers (quality and latency of every model and setting) on a BEIR-format dataset."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The eval command's arguments, added to ``parser`` (its own, or a subcommand's)."""
    parser.add_argument("dataset", help="a BEIR-format directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", default="test", help="the qrels split to evaluate (default test: qrels/test.tsv)")
    parser.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        dest="models",
        help="repeatable: a Hub id, a local checkpoint directory, or a rerank server URL (http://host:port)",
    )
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="repeatable: values of a scoring or load option (cutoff_layers=20,28,40; compress_layers=[8],[24,40]; "
        "use_fp16=true,false); several sweeps give the grid of all combinations",
    )
    first = parser.add_mutually_exclusive_group()
    first.add_argument(
        "--run",
        dest="run_file",
        metavar="FILE",
        help="the first stage: a TREC run file (qid Q0 docid rank score tag) from your retriever",
    )
    first.add_argument(
        "--first-stage", default="bm25", choices=["bm25"], help="the first stage when no --run (default bm25)"
    )
    parser.add_argument(
        "--top-k", type=int, default=100, help="first-stage candidates reranked per query (default 100)"
    )
    parser.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help=f"comma-separated (default {','.join(DEFAULT_METRICS)}); ndcg@K, mrr@K, recall@K, precision@K, map, "
        "or ir-measures names; the first orders the table and is the plot's quality axis",
    )
    parser.add_argument(
        "--output", "-o", required=True, help="folder for results.json, runs/, results.md and pareto.png"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the configurations already in --output, run the others"
    )
    parser.add_argument("--device", help="local models: cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument(
        "--api",
        default="bge",
        choices=["bge", "tei", "infinity", "vllm", "cohere"],
        help="the API of server URLs given to --model (default bge: bge-rerank serve)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", "-v", action="store_true", help="log what happens on standard error")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation the parsed ``args`` describe; print the table; return the exit status."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s"
    )
    from ..loading import CheckpointError, ModelNotFoundError
    from ..remote import RemoteRerankError
    from .configurations import parse_sweep
    from .errors import EvaluationError, ScoringError
    from .runner import evaluate

    try:
        sweep: dict = {}
        for spec in args.sweep:
            name, values = parse_sweep(spec)
            if name in sweep:
                raise EvaluationError(f"--sweep {name} is given twice: put all its values in one --sweep.")
            sweep[name] = values
        results = evaluate(
            args.dataset,
            args.models,
            sweep=sweep,
            split=args.split,
            run=args.run_file,
            first_stage_method=args.first_stage,
            top_k=args.top_k,
            metrics=args.metrics,
            output=args.output,
            resume=args.resume,
            device=args.device,
            api=args.api,
            progress=not args.no_progress,
        )
    except EvaluationError as error:
        return _fail(error, 2)
    except (ModelNotFoundError, CheckpointError, RemoteRerankError, ScoringError) as error:
        return _fail(error, 1)
    except (ValueError, TypeError) as error:
        return _fail(error, 2)
    except ImportError as error:
        return _fail(error, 1)
    except OSError as error:  # the output folder cannot be written
        return _fail(f"{error.strerror or error}: {error.filename or args.output}", 1)
    except KeyboardInterrupt:
        print(
            f"bge-rerank eval: interrupted; the configurations finished are in {args.output}/results.json, "
            "and --resume runs the others.",
            file=sys.stderr,
        )
        return 130
    for reason, count in results.notes.items():
        print(f"note: {count} {'query' if count == 1 else 'queries'} {reason}.", file=sys.stderr)
    files = "results.json, results.md, runs/, pareto.png"
    print(f"{results.queries} queries evaluated; results in {args.output}/ ({files})\n")
    print(results.table(), end="")
    return 0


def _fail(error: BaseException | str, status: int) -> int:
    print(f"bge-rerank eval: {' '.join(str(error).split())}", file=sys.stderr)
    return status
