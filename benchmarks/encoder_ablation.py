"""What each encoder speed-up is worth on its own (ours only, one process, same pairs).

    .venv/bin/python benchmarks/encoder_ablation.py [--case encoder-rag] [--repeat 2]

Runs our encoder with the two performance changes toggled in turn: padding-bounded batches on
CPU (``reranker.CPU_MAX_PADDING``) and the first-token-only last layer
(``EncoderFamily._forward_cls_only``). Needs the checkpoints of ``bench.py`` (run it once, or
``build_checkpoints.py``). Reports median wall and CPU time per configuration and the max score
difference against the plain configuration. A measurement tool; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import CASES, make_pairs

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations import reranker as reranker_module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="encoder-rag", choices=[c for c in CASES if CASES[c]["family"] == "encoder"])
    ap.add_argument("--pairs", type=int)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/bge-bench")
    args = ap.parse_args(argv)
    case = CASES[args.case]
    pairs = make_pairs(case["kind"], args.pairs or case["pairs"])
    reranker = BGEReranker(str(Path(args.workdir) / "checkpoints" / case["checkpoint"]), device="cpu")
    family = reranker.load().family
    last_layer = family._last_layer
    configs = [
        ("plain (batches of batch_size, full last layer)", None, None),
        ("+ padding-bounded CPU batches", 0.2, None),
        ("+ first-token-only last layer", None, last_layer),
        ("both (default)", 0.2, last_layer),
    ]
    reranker.compute_score(pairs[:2])  # warm-up
    baseline = None
    print(f"{args.case}: {len(pairs)} pairs, {case['note']}")
    print(f"{'configuration':48s} {'wall s':>8s} {'CPU s':>8s} {'vs plain':>9s} {'max|diff|':>10s}")
    for name, padding, layer in configs:
        reranker_module.CPU_MAX_PADDING = padding
        family._last_layer = layer
        walls, cpus = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            scores = reranker.compute_score(pairs)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        if baseline is None:
            baseline = (cpu, scores)
        diff = max(abs(a - b) for a, b in zip(scores, baseline[1]))
        print(f"{name:48s} {wall:8.2f} {cpu:8.2f} {baseline[0] / cpu:8.2f}x {diff:10.2e}")
    reranker_module.CPU_MAX_PADDING = 0.2
    family._last_layer = last_layer
    return 0


if __name__ == "__main__":
    sys.exit(main())
