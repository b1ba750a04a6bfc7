"""Load test of ``bge-rerank serve``: dynamic batching on and off, in-process ``compute_score``, and Infinity.

    .venv/bin/python benchmarks/serve_load.py                                   # CPU, bge-reranker-base shape
    .venv/bin/python benchmarks/serve_load.py --infinity /work/venvs/infinity/bin/infinity_emb
    .venv/bin/python benchmarks/serve_load.py --device cuda --fp16 --checkpoint DIR   # on a GPU

Every request is one query and ``--docs`` passages (deterministic). For each concurrency level
(``--concurrency``, default 1, 8, 32) a bounded number of requests (``--requests``, one count
per level) is sent by that many concurrent clients over loopback HTTP, and reported: pairs/s
(all pairs / wall time), and p50 / p99 request latency. The same requests are scored
in-process, one ``compute_score`` call per request, one after the other (what one process does
with the same work), as the baseline (``--one-call`` adds all pairs in one call). Servers run as separate processes on 127.0.0.1, one at a
time: ours with batching (the default bound, and ``--max-batch-pairs 256``), ours without
(``--max-batch-pairs 1 --max-wait-ms 0``), and Infinity (``infinity_emb v2 --engine torch``) on
the same checkpoint where ``--infinity`` names its executable. Each server's raw scores are
compared with the in-process ones (max |diff|).

The checkpoint defaults to the bge-reranker-base shape built by ``benchmarks/build_checkpoints.py``
(``--only encoder-base``, with the reference env). No assertion is made: this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import QUERIES, WORDS

START_TIMEOUT = 600
REQUEST_TIMEOUT = 600


def make_requests(count: int, docs: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """``count`` requests of one query and ``docs`` passages of 8 to 40 words (about 12 to 60 tokens)."""
    rng = random.Random(seed)
    return [
        (QUERIES[i % len(QUERIES)], [" ".join(rng.choices(WORDS, k=rng.randint(8, 40))) + "." for _ in range(docs)])
        for i in range(count)
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A server process on 127.0.0.1:``port``, ready once ``health`` answers 200; always stopped."""

    def __init__(
        self, name: str, command: list[str], port: int, health: str = "/health", env: dict | None = None
    ) -> None:
        self.name, self.url = name, f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the server writes to it until stop() closes it
            "w+", prefix=f"serve-load-{name}-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {self.process.returncode}: {Path(self.log.name).read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + health, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{name} did not answer {health} in {START_TIMEOUT}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=60)
        os.unlink(self.log.name)


async def load(
    url: str, path: str, body, requests: list[tuple[str, list[str]]], concurrency: int
) -> tuple[float, list[float], list[dict]]:
    """Send ``requests`` with ``concurrency`` clients; returns (wall seconds, latencies, index -> raw score maps)."""
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits) as client:

        async def one(query: str, texts: list[str]) -> tuple[float, dict]:
            async with semaphore:
                started = time.perf_counter()
                response = await client.post(path, json=body(query, texts))
                response.raise_for_status()
                return time.perf_counter() - started, response.json()

        started = time.perf_counter()
        done = await asyncio.gather(*(one(query, texts) for query, texts in requests))
        wall = time.perf_counter() - started
    return wall, [latency for latency, _ in done], [scores_by_index(answer) for _, answer in done]


def scores_by_index(answer) -> dict[int, float]:
    hits = answer if isinstance(answer, list) else answer["results"]
    return {hit["index"]: hit.get("score", hit.get("relevance_score")) for hit in hits}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def in_process(args, requests) -> tuple[list[dict], list[list[float]]]:
    """Baselines on the same pairs: one ``compute_score`` call per request in sequence, and all pairs in one call."""
    import torch

    from bge_rerank_integrations import BGEReranker

    torch.set_num_threads(args.threads)
    reranker = BGEReranker(args.checkpoint, device=args.device, use_fp16=args.fp16)
    for query, texts in requests[: args.warmup]:  # warm-up, unmeasured, as for the servers
        reranker.compute_score([(query, text) for text in texts])
    latencies, scores = [], []
    started = time.perf_counter()
    for query, texts in requests:
        call = time.perf_counter()
        scores.append(reranker.compute_score([(query, text) for text in texts]))
        latencies.append(time.perf_counter() - call)
    rows = [row("in-process, one call per request", 1, requests, time.perf_counter() - started, latencies, None)]
    if not args.one_call:
        return rows, scores
    started = time.perf_counter()
    reranker.compute_score([(query, text) for query, texts in requests for text in texts])
    wall = time.perf_counter() - started
    rows.append(row("in-process, all pairs in one call", 1, requests, wall, [wall], None))
    return rows, scores


def run_server(name: str, server: Server, path: str, body, args, plan, expected) -> list[dict]:
    rows = []
    try:
        # Warm-up, unmeasured: a GPU loads kernels and grows its memory pool on the first shapes it sees.
        asyncio.run(load(server.url, path, body, plan[-1][1][: args.warmup], 4))
        for concurrency, requests in plan:
            wall, latencies, got = asyncio.run(load(server.url, path, body, requests, concurrency))
            diff = max(
                abs(got[r][i] - expected[r][i]) for r in range(len(requests)) for i in range(len(requests[r][1]))
            )
            rows.append(row(name, concurrency, requests, wall, latencies, diff))
            print(format_row(rows[-1]), flush=True)
    finally:
        server.stop()
    return rows


def row(name: str, concurrency: int, requests, wall: float, latencies: list[float], diff: float | None) -> dict:
    pairs = sum(len(texts) for _, texts in requests)
    return {
        "server": name,
        "concurrency": concurrency,
        "requests": len(requests),
        "pairs_per_s": pairs / wall,
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_abs_diff": diff,
    }


def format_row(r: dict) -> str:
    diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
    return (
        f"| {r['server']:<38} | {r['concurrency']:>3} | {r['requests']:>4} | {r['pairs_per_s']:>8.1f} | "
        f"{r['p50_ms']:>8.0f} | {r['p99_ms']:>8.0f} | {diff:>8} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="/tmp/bge-bench/checkpoints/encoder-base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of every process (default 1: a shared 2-core machine)"
    )
    parser.add_argument("--docs", type=int, default=20, help="passages per request (default 20)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", default="4,16,64", help="requests per concurrency level (default 4,16,64)")
    parser.add_argument("--infinity", help="the infinity_emb executable (its own venv); left out: Infinity is skipped")
    parser.add_argument("--skip", default="", help="comma-separated: batching, batching-256, no-batching")
    parser.add_argument("--one-call", action="store_true", help="also time all pairs in one in-process call")
    parser.add_argument(
        "--warmup", type=int, default=16, help="unmeasured requests sent to each server first (default 16)"
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if not (Path(args.checkpoint) / "config.json").is_file():
        parser.error(
            f"no checkpoint at {args.checkpoint}: build it with benchmarks/build_checkpoints.py --only encoder-base"
        )

    levels = [int(c) for c in args.concurrency.split(",")]
    counts = [int(n) for n in args.requests.split(",")]
    requests = make_requests(max(counts), args.docs)
    plan = [(c, requests[:n]) for c, n in zip(levels, counts)]
    print(
        f"checkpoint {args.checkpoint}, device {args.device}, {args.docs} docs/request, {args.threads} torch thread(s), CPU cores {os.cpu_count()}"
    )
    print("| server | conc. | requests | pairs/s | p50 ms | p99 ms | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    rows, expected = in_process(args, requests)
    for baseline in rows:
        print(format_row(baseline), flush=True)

    ours = [
        sys.executable,
        "-m",
        "bge_rerank_integrations.cli",
        "serve",
        "--model",
        args.checkpoint,
        "--device",
        args.device,
        "--no-normalize",
        "--max-documents",
        str(max(1024, args.docs)),
        "--log-level",
        "warning",
        "--torch-threads",
        str(args.threads),
    ] + (["--fp16"] if args.fp16 else [])
    tei_body = lambda query, texts: {"query": query, "texts": texts, "raw_scores": True}  # noqa: E731
    variants = {
        "batching": ("bge-rerank serve, batching", []),  # the server's default bound (32 pairs on CPU, 256 on GPU)
        "batching-256": ("bge-rerank serve, batching 256 pairs", ["--max-batch-pairs", "256"]),
        "no-batching": ("bge-rerank serve, no batching", ["--max-batch-pairs", "1", "--max-wait-ms", "0"]),
    }
    skip = set(filter(None, args.skip.split(",")))
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TOKENIZERS_PARALLELISM": "false",
    }
    threads = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    for key, (name, extra) in variants.items():
        if key in skip:
            continue
        port = free_port()
        server = Server(name, [*ours, "--port", str(port), *extra], port, env={**env, **threads})
        rows += run_server(name, server, "/rerank", tei_body, args, plan, expected)

    if args.infinity:
        port = free_port()
        command = [
            args.infinity,
            "v2",
            "--model-id",
            args.checkpoint,
            "--engine",
            "torch",
            "--device",
            args.device,
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--batch-size",
            "32",
            "--no-model-warmup",
        ]
        infinity_body = lambda query, texts: {  # noqa: E731 - a one-expression request builder
            "query": query,
            "documents": texts,
            "raw_scores": True,
            "model": args.checkpoint,
        }
        try:
            server = Server(
                "infinity (torch, batch 32)",
                command,
                port,
                env={"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", **threads},
            )
        except RuntimeError as error:
            print(f"Infinity did not start: {error}")
        else:
            rows += run_server("infinity (torch, batch 32)", server, "/rerank", infinity_body, args, plan, expected)
    # Other work on a shared machine changes the figures over a run: the baseline again, at the end.
    again, _ = in_process(args, requests)
    again[0]["server"] = "in-process, one call per request (again)"
    print(format_row(again[0]), flush=True)
    rows.append(again[0])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
