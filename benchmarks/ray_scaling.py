"""Ray Data scaling: pairs/s of ``rerank_dataset`` with 1 and 2 actors against in-process scoring.

    .venv/bin/python benchmarks/ray_scaling.py                  # 5,000 pairs, about 10 min on 2 free cores
    .venv/bin/python benchmarks/ray_scaling.py --pairs 1000 --rounds 2

The checkpoint is a random-weight ``XLMRobertaForSequenceClassification`` in the shape of the
small cross-encoder rerankers (4 layers, hidden 384, 12 heads, MLP 1536: MiniLM-L4) with the
test fixture's tokenizer, built once under ``--workdir`` (a few MB, never committed). The pairs
are ``bench.py``'s "bulk" pairs (8 queries, short passages). On a local Ray instance with the
machine's two cores, each configuration is timed end to end, as a user runs it: in process, a
``BGEReranker`` is created, loaded and scores every pair with 1 or 2 torch threads; on Ray,
``rerank_dataset(...).take_all()`` starts the actors (one torch thread each), loads one model per
actor and brings every scored row back. Ray's overhead is ``1 - ray pairs/s / in-process pairs/s``
for the same cores: 1 actor against 1 thread, 2 actors against 2 threads. Scores are checked
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of every configuration (default 1)")
    ap.add_argument("--batch-size", type=int, default=250, help="rows per actor call (default 250)")
    ap.add_argument(
        "--workdir", default=os.environ.get("BGE_BENCH_DIR", "/tmp/bge-bench"), help="checkpoint (outside the repo)"
    )
    args = ap.parse_args(argv)

    import ray

    checkpoint = str(build_checkpoint(Path(args.workdir) / "checkpoints" / "encoder-minilm-l4"))
    pairs = make_pairs("bulk", args.pairs)
    times: dict[str, list[float]] = {}
    reference: list[float] | None = None
    worst = 0.0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for round_ in range(args.rounds):
            for name, run in (
                ("in-process, 1 thread", lambda: in_process(checkpoint, pairs, 1)),
                ("ray, 1 actor", lambda: on_ray(checkpoint, pairs, 1, args.batch_size)),
                ("in-process, 2 threads", lambda: in_process(checkpoint, pairs, 2)),
                ("ray, 2 actors", lambda: on_ray(checkpoint, pairs, 2, args.batch_size)),
            ):
                print(f"round {round_ + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
                seconds, scores = run()
                times.setdefault(name, []).append(seconds)
                if reference is None:
                    reference = scores
                worst = max(worst, max(abs(a - b) for a, b in zip(scores, reference)))
    finally:
        ray.shutdown()

    best = {name: min(values) for name, values in times.items()}
    print(f"\n{args.pairs} pairs, {SHAPE}, best of {args.rounds} round(s), end to end (load included)\n")
    print("| configuration | s | pairs/s | vs in-process on the same cores |")
    print("|---|---|---|---|")
    for name, seconds in best.items():
        same_cores = "in-process, 1 thread" if "1" in name.split(",")[1] else "in-process, 2 threads"
        ratio = best[same_cores] / seconds
        print(
            f"| {name} | {seconds:.1f} | {args.pairs / seconds:.1f} | {ratio:.2f}x ({(1 - ratio) * 100:+.0f}% overhead) |"
        )
    print(f"\nmax |score difference| between configurations: {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
