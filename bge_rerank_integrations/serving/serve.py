"""``bge-rerank serve``: one BGE reranker behind the rerank HTTP APIs, on uvicorn.

    $ bge-rerank serve --model BAAI/bge-reranker-v2-m3 --device cuda --fp16 --port 8080
    $ curl -s localhost:8080/rerank -H 'content-type: application/json' \\
        -d '{"query": "what is panda?", "texts": ["hi", "The giant panda ..."]}'
    [{"index":1,"score":0.9948},{"index":0,"score":0.0003}]

Load and scoring options are the server's defaults; requests may override scoring options.
SIGTERM (or Ctrl-C) stops accepting connections, finishes the requests in flight (for at most
``--shutdown-timeout`` seconds, then closes the rest), and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

from ..options import DEFAULT_OPTIONS, LOAD_OPTIONS, add_flags, check_single_score, given_options
from .connections import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, http_protocol
from .guard import DEFAULT_BODY_TIMEOUT

logger = logging.getLogger(__name__)

API_KEY_VARIABLE = "BGE_RERANK_API_KEY"
DESCRIPTION = "Serve a BGE reranker over HTTP: TEI's POST /rerank and Cohere/Jina/vLLM's POST /v1/rerank, /v2/rerank."


def build_parser() -> argparse.ArgumentParser:
    """``bge-rerank serve``'s parser on its own (``main``); the command line adds the same arguments to its subcommand."""
    parser = argparse.ArgumentParser(prog="bge-rerank serve", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``bge-rerank serve``'s arguments: the load and scoring options' flags (``options.OPTIONS``), then the server's own."""
    parser.add_argument(
        "--model", "-m", required=True, help="Hub id (e.g. BAAI/bge-reranker-v2-m3) or local checkpoint directory"
    )
    parser.add_argument("--served-model-name", help="the name responses and /info give (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port (default 8080; 0 picks a free one, logged at start)"
    )

    model = parser.add_argument_group("model (load options)")
    add_flags(model, LOAD_OPTIONS)
    model.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's)")

    scoring = parser.add_argument_group("scoring defaults (requests may override them)")
    normalize = {
        "action": argparse.BooleanOptionalAction,
        "default": True,
        "help": "sigmoid scores unless a request asks raw_scores (default, as TEI/Cohere); --no-normalize: raw by default",
    }
    add_flags(scoring, DEFAULT_OPTIONS, overrides={"normalize": normalize})

    limits = parser.add_argument_group("batching and limits")
    limits.add_argument(
        "--max-batch-pairs",
        type=int,
        help="most pairs merged into one model call (default 256 on CUDA/MPS, 32 on CPU; 1 = no merging)",
    )
    limits.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="longest a request waits for others to share its call (default 5)",
    )
    limits.add_argument(
        "--max-request-bytes", type=int, default=2_000_000, help="largest request body, else 413 (default 2000000)"
    )
    limits.add_argument(
        "--max-documents", type=int, default=1024, help="most documents per request, else 413 (default 1024)"
    )
    limits.add_argument(
        "--max-queue", type=int, default=8192, help="most pairs waiting, else 503 with Retry-After (default 8192)"
    )
    limits.add_argument(
        "--api-key-file",
        help=f"file holding the key for 'Authorization: Bearer KEY' (or set ${API_KEY_VARIABLE}; neither = open)",
    )
    limits.add_argument(
        "--api-key", help=f"the key itself (visible in the process list: prefer --api-key-file or ${API_KEY_VARIABLE})"
    )
    connections = parser.add_argument_group("connections (stalled and idle clients, shutdown)")
    connections.add_argument(
        "--header-timeout",
        type=_seconds,
        default=DEFAULT_HEADER_TIMEOUT,
        help=f"seconds for a request's headers to arrive, else the connection is closed (default {DEFAULT_HEADER_TIMEOUT:g})",
    )
    connections.add_argument(
        "--body-timeout",
        type=_seconds,
        default=DEFAULT_BODY_TIMEOUT,
        help=f"seconds for a request's whole body to arrive, else 408 (default {DEFAULT_BODY_TIMEOUT:g})",
    )
    connections.add_argument(
        "--keep-alive-timeout",
        type=_seconds,
        default=5.0,
        help="seconds an idle connection is kept after a response (default 5)",
    )
    connections.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"most open connections; a request while more are open is a 503 (default {DEFAULT_MAX_CONNECTIONS})",
    )
    connections.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=30.0,
        help="on SIGTERM, seconds to finish requests in flight before the rest are closed and the process exits 0 (default 30)",
    )
    ray = parser.add_argument_group("Ray Serve (replicas behind one endpoint; needs the ray extra)")
    ray.add_argument("--ray", action="store_true", help="serve with Ray Serve replicas instead of one uvicorn process")
    ray.add_argument("--replicas", type=_replicas, default=1, help="replicas, or 'auto' to autoscale (default 1)")
    ray.add_argument(
        "--ray-address",
        help="Ray cluster to join, e.g. ray://head:10001 or auto (default: $RAY_ADDRESS, else a local one)",
    )
    ray.add_argument("--gpus-per-replica", type=float, default=0, help="GPUs each replica gets (default 0: CPU)")
    ray.add_argument("--cpus-per-replica", type=float, default=1, help="CPUs each replica gets (default 1)")
    ray.add_argument(
        "--max-batch-requests",
        type=int,
        default=16,
        help="most requests merged into one model call per replica (default 16)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log level (default info)"
    )


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def api_key(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    """The API key from ``--api-key-file``, ``--api-key`` or ``$BGE_RERANK_API_KEY`` (at most one); None: open.

    Raises ValueError for an empty key (it would silently start an open server) or an unreadable file.
    """
    sources = []
    if args.api_key_file is not None:
        try:
            with open(args.api_key_file, encoding="utf-8") as file:
                key = file.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read --api-key-file {args.api_key_file}: {error}") from None
        sources.append(("--api-key-file " + args.api_key_file, key))
    if args.api_key is not None:
        sources.append(("--api-key", args.api_key))
    if API_KEY_VARIABLE in environ and not sources:
        sources.append((f"${API_KEY_VARIABLE}", environ[API_KEY_VARIABLE]))
    if len(sources) > 1:
        raise ValueError("give the API key once: --api-key-file or --api-key, not both.")
    if not sources:
        return None
    where, key = sources[0]
    if not key.strip():
        raise ValueError(
            f"the API key from {where} is empty, which would start an open server: set a key, or unset {API_KEY_VARIABLE} "
            "and give no key option for a server without one."
        )
    if key != key.strip():
        raise ValueError(f"the API key from {where} starts or ends with whitespace, which no client sends: remove it.")
    return key


def _replicas(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of replicas or 'auto', got {value!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit status (0 after a clean shutdown, 2 bad options)."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the server the parsed ``args`` describe (``bge-rerank serve``); returns the exit status."""
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        import uvicorn

        from .app import ServerSettings, create_app
        from .batcher import DynamicBatcher
        from .metrics import Metrics
    except ImportError as error:
        print(
            f"bge-rerank serve: {error}; install the server with: pip install 'bge-rerank-integrations[serve]'",
            file=sys.stderr,
        )
        return 2
    from ..reranker import BGEReranker

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    try:
        if args.max_connections < 1:
            raise ValueError(f"--max-connections must be at least 1, got {args.max_connections}.")
        key = api_key(args, dict(os.environ))
        check_single_score(args.cutoff_layers)
        options = given_options(vars(args), (*LOAD_OPTIONS, *DEFAULT_OPTIONS))
        reranker = BGEReranker(args.model, **options)
        metrics = Metrics()
        batcher = DynamicBatcher(
            reranker,
            max_batch_pairs=args.max_batch_pairs,
            max_wait_ms=args.max_wait_ms,
            max_queue_pairs=args.max_queue,
            metrics=metrics,
        )
        settings = ServerSettings(
            model_name=args.served_model_name,
            max_documents=args.max_documents,
            max_request_bytes=args.max_request_bytes,
            api_key=key,
            body_timeout=args.body_timeout,
        )
    except (ValueError, TypeError) as error:
        print(f"bge-rerank serve: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # ModelNotFoundError, CheckpointError: found when the reranker is built
        print(f"bge-rerank serve: {error}", file=sys.stderr)
        return 1
    if args.ray:
        from ..ray.serve import serve_on_ray

        return serve_on_ray(
            args.model,
            options,
            settings,
            address=args.ray_address,
            host=args.host,
            port=args.port,
            num_replicas=args.replicas,
            num_gpus=args.gpus_per_replica,
            num_cpus=args.cpus_per_replica,
            max_batch_size=args.max_batch_requests,
            batch_wait_timeout_s=args.max_wait_ms / 1000,
        )
    app = create_app(batcher, settings=settings, metrics=metrics)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as error:
        print(f"bge-rerank serve: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    logger.info(
        "bge-rerank serve: %s on http://%s:%d (loading the model; /health answers 200 once ready)",
        args.model,
        host,
        port,
    )
    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        access_log=args.log_level == "debug",
        http=http_protocol(args.header_timeout, args.max_connections),
        timeout_keep_alive=args.keep_alive_timeout,
        timeout_graceful_shutdown=args.shutdown_timeout,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler it found:
    # let that handler end the process with status 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_after_shutdown)
    server.run(sockets=[sock])
    return 0 if server.started else 1


def _exit_after_shutdown(signum: int, frame: object) -> None:
    logger.info("bge-rerank serve: stopped by %s.", signal.Signals(signum).name)
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
