"""Ray Data scaling: pairs/s of ``rerank_dataset`` with 1 and 2 actors against in-process scoring.

    .venv/bin/python benchmarks/ray_scaling.py                  # 1,000 and 4,000 pairs, about 4 min on 2 free cores
    .venv/bin/python benchmarks/ray_scaling.py --pairs 2000 8000 --rounds 2

The checkpoint is a random-weight ``XLMRobertaForSequenceClassification`` in the shape of the
small cross-encoder rerankers (4 layers, hidden 384, 12 heads, MLP 1536: MiniLM-L4) with the
test fixture's tokenizer, built once under ``--workdir`` (a few MB, never committed). The pairs
are ``bench.py``'s "bulk" pairs (8 queries, short passages). On a local Ray instance with the
machine's two cores, each configuration is timed end to end, as a user runs it: in process, a
``BGEReranker`` is created, loaded and scores every pair with 1 or 2 torch threads; on Ray,
``rerank_dataset(...).take_all()`` starts the actors (one torch thread each), loads one model per
actor and brings every scored row back. Each configuration runs at two job sizes: the difference
between them is the steady-state cost per pair (the fixed cost of actor start and model load
cancels), and Ray's steady-state overhead is ``ray slope / in-process slope - 1`` for the same
cores (1 actor against 1 thread, 2 actors against 2 threads); the intercept is the fixed cost. Scores are checked
against the in-process ones. No assertion on timings: this is a measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench import make_pairs

#: The ms-marco-MiniLM-L-4-v2 cross-encoder shape (4 layers, hidden 384), XLM-R architecture.
SHAPE = dict(hidden_size=384, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1536)
FIXTURE = ROOT / "tests" / "fixtures" / "checkpoints" / "encoder"


def build_checkpoint(out: Path) -> Path:
    """The shaped random checkpoint (fixture tokenizer and config, ``SHAPE`` dimensions), built once."""
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(FIXTURE / name, out / name)
    config = XLMRobertaConfig.from_pretrained(FIXTURE, **SHAPE, initializer_range=0.02)
    torch.manual_seed(0)
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(out, safe_serialization=True)
    return out


def in_process(checkpoint: str, pairs: list[list[str]], threads: int) -> tuple[float, list[float]]:
    """Seconds to create, load and score every pair with ``threads`` torch threads; the scores."""
    import torch

    from bge_rerank_integrations import BGEReranker, clear_model_cache

    clear_model_cache()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        scores = BGEReranker(checkpoint, device="cpu").compute_score(pairs)
        return time.perf_counter() - start, scores
    finally:
        torch.set_num_threads(before)


def on_ray(checkpoint: str, pairs: list[list[str]], actors: int, batch_size: int) -> tuple[float, list[float]]:
    """Seconds for ``rerank_dataset`` with ``actors`` one-CPU actors, start to last row back; the scores by row."""
    import ray.data

    from bge_rerank_integrations.ray import rerank_dataset

    rows = [{"id": i, "query": query, "text": text} for i, (query, text) in enumerate(pairs)]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // batch_size))
    start = time.perf_counter()
    result = rerank_dataset(
        dataset, checkpoint, num_actors=actors, num_cpus_per_actor=1, batch_size=batch_size
    ).take_all()
    seconds = time.perf_counter() - start
    scores = [0.0] * len(pairs)
    for row in result:
        scores[row["id"]] = row["score"]
    assert len(result) == len(pairs), (len(result), len(pairs))
    return seconds, scores


def steady_and_fixed(small: tuple[int, float], large: tuple[int, float]) -> tuple[float, float]:
    """Seconds per pair beyond the fixed cost (the slope between two job sizes) and the fixed cost (the intercept)."""
    (n1, t1), (n2, t2) = small, large
    per_pair = (t2 - t1) / (n2 - n1)
    return per_pair, t1 - n1 * per_pair


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, nargs=2, default=[1000, 4000], help="the two job sizes (default 1000 4000)")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of every configuration (default 1)")
    ap.add_argument("--batch-size", type=int, default=500, help="rows per actor call (default 500)")
    ap.add_argument(
        "--workdir", default=os.environ.get("BGE_BENCH_DIR", "/tmp/bge-bench"), help="checkpoint (outside the repo)"
    )
    args = ap.parse_args(argv)

    import ray

    checkpoint = str(build_checkpoint(Path(args.workdir) / "checkpoints" / "encoder-minilm-l4"))
    sizes = sorted(args.pairs)
    jobs = {n: make_pairs("bulk", n) for n in sizes}
    times: dict[tuple[str, int], list[float]] = {}
    reference: dict[int, list[float]] = {}
    worst = 0.0
    configurations = (
        ("in-process, 1 thread", lambda pairs: in_process(checkpoint, pairs, 1)),
        ("ray, 1 actor", lambda pairs: on_ray(checkpoint, pairs, 1, args.batch_size)),
        ("in-process, 2 threads", lambda pairs: in_process(checkpoint, pairs, 2)),
        ("ray, 2 actors", lambda pairs: on_ray(checkpoint, pairs, 2, args.batch_size)),
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for round_ in range(args.rounds):
            for n in sizes:
                for name, run in configurations:
                    print(f"round {round_ + 1}/{args.rounds}, {n} pairs: {name} ...", file=sys.stderr, flush=True)
                    seconds, scores = run(jobs[n])
                    times.setdefault((name, n), []).append(seconds)
                    reference.setdefault(n, scores)
                    worst = max(worst, max(abs(a - b) for a, b in zip(scores, reference[n])))
    finally:
        ray.shutdown()

    best = {key: min(values) for key, values in times.items()}
    small, large = sizes
    print(f"\n{SHAPE}, batch_size={args.batch_size}, best of {args.rounds} round(s), end to end (load included)\n")
    print(
        f"| configuration | {small} pairs | {large} pairs | ms per pair beyond the fixed cost | fixed cost | steady-state overhead |"
    )
    print("|---|---|---|---|---|---|")
    for name, _ in configurations:
        per_pair, fixed = steady_and_fixed((small, best[name, small]), (large, best[name, large]))
        if name.startswith("ray"):
            same_cores = "in-process, 1 thread" if "1 actor" in name else "in-process, 2 threads"
            base, _ = steady_and_fixed((small, best[same_cores, small]), (large, best[same_cores, large]))
            overhead = f"{(per_pair / base - 1) * 100:+.1f}% vs {same_cores}"
        else:
            overhead = "—"
        print(
            f"| {name} | {best[name, small]:.1f} s | {best[name, large]:.1f} s | {per_pair * 1000:.2f} | {fixed:.1f} s | {overhead} |"
        )
    print(f"\nmax |score difference| between configurations: {worst:.1e}; load average now: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
