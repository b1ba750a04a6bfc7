"""Benchmark our scoring core against FlagEmbedding 1.4.2 on the same checkpoints and pairs.

    .venv/bin/python benchmarks/bench.py                       # every CPU case, ~15 min on 2 cores
    .venv/bin/python benchmarks/bench.py --case encoder-rag --rounds 3
    .venv/bin/python benchmarks/bench.py --case encoder-rag --device cuda --dtype fp16   # on a GPU

For each case the shaped random checkpoint is built once under ``--workdir`` (with the
reference env's classes, ``benchmarks/build_checkpoints.py``), the pairs are generated
deterministically, and then the reference (``--ref-python``, default ``.venv-ref``) and ours
(``--ours-python``, default this interpreter) are run *alternately in separate processes*
(ref, ours, ref, ours, ...). Each process loads the model (reported separately as "load"),
makes one small warm-up call, then times ``--repeat`` calls on all the pairs. Reported per
implementation: median call time over all timed calls of all rounds, pairs/s, peak RSS of the
process (``ru_maxrss``, model included), peak RSS without the resident pages of the mmapped weight
files ("w/o weights": what a run holds besides the weights it reads; a copy of the weights, such as the
llm's 256k-row embedding materialised again, or a forward holding more activations shows here), and
the max |score difference| against the
reference on the same pairs. Where the reference env is missing, only ours runs.

No assertion is made on the timings: this is a measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

WORDS = [
    "the",
    "a",
    "reranker",
    "reads",
    "query",
    "and",
    "passage",
    "together",
    "outputs",
    "single",
    "score",
    "machine",
    "learning",
    "models",
    "rank",
    "passages",
    "by",
    "their",
    "relevance",
    "to",
    "search",
    "large",
    "language",
    "can",
    "be",
    "used",
    "as",
    "rerankers",
    "reading",
    "logit",
    "of",
    "token",
    "yes",
    "eiffel",
    "tower",
    "is",
    "in",
    "paris",
    "capital",
    "largest",
    "city",
    "france",
    "berlin",
    "germany",
    "madrid",
    "spain",
    "china",
    "has",
    "second",
    "population",
    "world",
    "after",
    "india",
    "pandas",
    "eat",
    "bamboo",
    "they",
    "live",
    "mountains",
    "central",
    "weather",
    "today",
    "sunny",
    "with",
    "light",
    "breeze",
    "from",
    "west",
    "photosynthesis",
    "converts",
    "energy",
    "into",
    "chemical",
    "plants",
    "water",
    "boils",
    "at",
    "100",
    "degrees",
    "celsius",
    "sea",
    "level",
    "report",
    "lists",
    "findings",
    "tables",
    "references",
    "bananas",
    "are",
    "rich",
    "potassium",
    "easy",
    "to",
    "carry",
    "river",
    "flows",
    "north",
    "through",
    "valley",
    "before",
    "it",
    "reaches",
    "how",
    "many",
    "people",
    "tokyo",
    "about",
    "fourteen",
    "million",
    "who",
    "wrote",
    "hamlet",
    "william",
    "shakespeare",
    "around",
    "year",
    "1600",
    "giant",
    "panda",
    "sometimes",
    "called",
    "bear",
    "or",
    "simply",
    "species",
    "endemic",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
]
QUERIES = [
    "what is panda?",
    "What is the capital of France?",
    "What is the population of China?",
    "How many people live in Tokyo?",
    "Who wrote Hamlet and when?",
    "At what temperature does water boil at sea level?",
    "How do rerankers score the relevance of a passage to a search query?",
    "Which city is the capital of Germany?",
]


def _passage(rng: random.Random, words: int) -> str:
    out = []
    while len(out) < words:
        sentence = rng.sample(WORDS, rng.randint(6, 14))
        sentence[0] = sentence[0].capitalize()
        out.extend(sentence)
        out[-1] += "."
    return " ".join(out[:words])


def make_pairs(kind: str, n: int, seed: int = 0) -> list[list[str]]:
    """Deterministic pairs. ``rag``: one query, passages of mixed length (about 20 to 550 tokens,
    log-uniform, so a few hit the 512-token cap); ``bulk``: 2,000-style many queries and short
    passages (about 20 to 120 tokens); ``decoder``: one query, passages of 60 to 250 tokens."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        if kind == "rag":
            query, words = QUERIES[0], round(10 ** rng.uniform(0.9, 2.33))
        elif kind == "bulk":
            query, words = QUERIES[i % len(QUERIES)], rng.randint(8, 45)
        else:
            query, words = QUERIES[1], rng.randint(25, 95)
        pairs.append([query, _passage(rng, words)])
    return pairs


#: case -> checkpoint, family, pair kind, default pair count, constructor options, variants, default repeat.
CASES: dict[str, dict] = {
    "encoder-rag": dict(
        checkpoint="encoder-base",
        family="encoder",
        kind="rag",
        pairs=32,
        repeat=2,
        note="bge-reranker-base shape (12 layers, hidden 768, vocab 250002); one RAG call: 1 query x N passages of mixed length",
        variants=[{"name": "default", "call": {}}],
    ),
    "encoder-bulk": dict(
        checkpoint="encoder-bulk",
        family="encoder",
        kind="bulk",
        pairs=2000,
        repeat=1,
        note="hidden 768 / vocab 250002 as bge-reranker-base but 4 layers (not 12) and short passages, to fit the time budget",
        variants=[{"name": "default", "call": {}}],
    ),
    "encoder-bulk12": dict(  # optional: the bulk pairs on the full 12-layer model (~10 min on 2 free cores)
        checkpoint="encoder-base",
        family="encoder",
        kind="bulk",
        pairs=2000,
        repeat=1,
        note="bge-reranker-base shape (12 layers, hidden 768, vocab 250002), 2,000 short pairs (8 queries)",
        variants=[{"name": "default", "call": {}}],
    ),
    "llm": dict(
        checkpoint="llm-gemma",
        family="llm",
        kind="decoder",
        pairs=24,
        repeat=1,
        note="bge-reranker-v2-gemma shape (Gemma-1 2B blocks, real 256000 vocabulary) with 2 layers",
        variants=[{"name": "default", "call": {}}],
    ),
    "layerwise": dict(
        checkpoint="layerwise",
        family="layerwise",
        kind="decoder",
        pairs=16,
        repeat=1,
        note="MiniCPM-layerwise blocks narrowed to hidden 1024, 12 layers, heads from layer 4",
        variants=[{"name": f"cutoff={layer}", "call": {"cutoff_layers": [layer]}} for layer in (4, 8, 12)],
    ),
    "lightweight": dict(
        checkpoint="lightweight",
        family="lightweight",
        kind="decoder",
        pairs=16,
        repeat=1,
        note="cost-wise Gemma-2 blocks narrowed to hidden 1024, 12 layers, heads from layer 4; compression at layer 4",
        variants=[
            {"name": f"cutoff={layer} ratio=1", "call": {"cutoff_layers": [layer], "compress_ratio": 1}}
            for layer in (8, 12)
        ]
        + [
            {
                "name": f"cutoff=12 ratio={ratio}",
                "call": {"cutoff_layers": [12], "compress_ratio": ratio, "compress_layers": [4]},
            }
            for ratio in (2, 4, 8)
        ],
    ),
    "encoder-v2m3": dict(  # GPU case: bge-reranker-v2-m3 shape
        checkpoint="encoder-v2m3",
        family="encoder",
        kind="rag",
        pairs=1024,
        repeat=3,
        note="bge-reranker-v2-m3 shape (24 layers, hidden 1024); meant for --device cuda --dtype fp16/bf16",
        variants=[{"name": "default", "call": {}}],
    ),
}
CPU_CASES = ["encoder-rag", "encoder-bulk", "llm", "layerwise", "lightweight"]

#: Dense fp16/bf16 tensor-core peak, TFLOP/s, by GPU name fragment (datasheet figures, no sparsity).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L4": 121.0,
    "A10": 125.0,
}


def _run_worker(python: str, spec: dict, workdir: Path, tag: str, env_extra: dict) -> dict:
    spec_path = workdir / "runs" / f"{tag}.spec.json"
    out_path = workdir / "runs" / f"{tag}.out.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec))
    if out_path.exists():
        out_path.unlink()
    env = dict(os.environ, **env_extra)
    start = time.perf_counter()
    proc = subprocess.run(
        [python, str(HERE / "_worker.py"), str(spec_path), str(out_path)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"{tag} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(out_path.read_text())
    result["process_s"] = time.perf_counter() - start
    return result


def _max_diff(a, b) -> float:
    if isinstance(a, list):
        return max((_max_diff(x, y) for x, y in zip(a, b)), default=0.0)
    return abs(a - b)


def _encoder_flops(checkpoint: Path, pairs: list[list[str]], max_length: int = 512) -> float:
    """Useful FLOPs of one encoder pass over ``pairs`` (no padding counted): linear layers + attention."""
    from bge_rerank_integrations.tokenization import load_tokenizer

    cfg = json.loads((checkpoint / "config.json").read_text())
    tok = load_tokenizer(checkpoint)
    q = tok([p[0] for p in pairs], add_special_tokens=False)["input_ids"]
    p = tok([p[1] for p in pairs], add_special_tokens=False)["input_ids"]
    lengths = [min(len(a) + len(b) + 4, max_length) for a, b in zip(q, p)]
    h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    per_token = n * 2 * (4 * h * h + 2 * h * i)
    attention = sum(n * 4 * length * length * h for length in lengths)
    return per_token * sum(lengths) + attention


def run_case(name: str, args, ref_ok: bool) -> dict:
    case = CASES[name]
    workdir = Path(args.workdir)
    ckpt = workdir / "checkpoints" / case["checkpoint"]
    if not (ckpt / "model.safetensors").exists():
        if not ref_ok:
            raise SystemExit(f"{ckpt} is missing and building it needs the reference env ({args.ref_python}).")
        print(f"building {case['checkpoint']} ...", flush=True)
        subprocess.run(
            [
                args.ref_python,
                str(HERE / "build_checkpoints.py"),
                "--workdir",
                str(workdir),
                "--only",
                case["checkpoint"],
            ],
            check=True,
        )
    n = args.pairs or case["pairs"]
    pairs = make_pairs(case["kind"], n)
    pairs_path = workdir / "pairs" / f"{name}-{n}.json"
    pairs_path.parent.mkdir(parents=True, exist_ok=True)
    pairs_path.write_text(json.dumps(pairs))
    repeat = args.repeat or case["repeat"]
    base = dict(
        family=case["family"],
        checkpoint=str(ckpt),
        pairs=str(pairs_path),
        device=args.device,
        dtype=args.dtype,
        init={},
        variants=case["variants"],
        repeat=repeat,
    )
    impls = (["ref"] if ref_ok else []) + ["ours"]
    runs: dict[str, list[dict]] = {impl: [] for impl in impls}
    for round_ in range(args.rounds):
        for impl in impls:
            python = args.ref_python if impl == "ref" else args.ours_python
            env = {"PYTHONPATH": str(ROOT)} if impl == "ours" else {}
            print(f"  {name}: round {round_ + 1}/{args.rounds}, {impl} ...", flush=True)
            runs[impl].append(_run_worker(python, dict(base, impl=impl), workdir, f"{name}-{impl}-{round_}", env))
    flops = _encoder_flops(ckpt, pairs) if case["family"] == "encoder" and args.device.startswith("cuda") else None
    rows = []
    for v, variant in enumerate(case["variants"]):
        row = {"variant": variant["name"]}
        for impl in impls:
            times = [t for run in runs[impl] for t in run["variants"][v]["times"]]
            med = statistics.median(times)
            cpu = [t for run in runs[impl] for t in run["variants"][v].get("cpu_times", [])]
            row[impl] = {
                "load_s": statistics.median(r["load_s"] for r in runs[impl]),
                "call_s": med,
                "call_min_s": min(times),
                "cpu_s": statistics.median(cpu) if cpu else None,
                "pairs_per_s": n / med,
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[impl]),
                "rss_loaded_mib": max(r["rss_loaded_mib"] for r in runs[impl]),
                "beyond_weights_mib": max(r["peak_rss_mib"] - r.get("weights_rss_mib", 0) for r in runs[impl]),
                "cuda_peak_mib": max((r.get("cuda_peak_mib", 0) for r in runs[impl]), default=0) or None,
                "scores": runs[impl][-1]["variants"][v]["scores"],
            }
            if flops:
                row[impl]["tflops"] = flops / med / 1e12
        if "ref" in row:
            row["max_abs_diff"] = _max_diff(row["ours"]["scores"], row["ref"]["scores"])
            row["speedup"] = row["ref"]["call_s"] / row["ours"]["call_s"]
            if row["ref"]["cpu_s"] and row["ours"]["cpu_s"]:
                row["cpu_speedup"] = row["ref"]["cpu_s"] / row["ours"]["cpu_s"]
            row["mem_ratio"] = row["ref"]["peak_rss_mib"] / row["ours"]["peak_rss_mib"]
        rows.append(row)
    return {
        "case": name,
        "note": case["note"],
        "pairs": n,
        "repeat": repeat,
        "rounds": args.rounds,
        "device": args.device,
        "dtype": args.dtype,
        "rows": rows,
        "versions": {impl: runs[impl][0]["transformers"] for impl in impls},
        "threads": runs["ours"][0]["torch_threads"],
    }


def print_case(result: dict, peak_tflops: float | None) -> None:
    print(
        f"\n== {result['case']}: {result['pairs']} pairs, {result['device']} {result['dtype']}, "
        f"{result['rounds']} round(s) x {result['repeat']} timed call(s), torch threads {result['threads']}"
    )
    print(f"   {result['note']}")
    head = f"{'variant':22s} {'impl':5s} {'load s':>7s} {'call s':>8s} {'min s':>8s} {'CPU s':>8s} {'pairs/s':>8s} {'peak RSS MiB':>13s} {'w/o weights':>11s}"
    gpu = result["device"].startswith("cuda")
    if gpu:
        head += f" {'GPU MiB':>8s} {'TFLOP/s':>8s} {'% peak':>7s}"
    print(head + f" {'max|diff|':>10s} {'ref/ours':>9s} {'CPU r/o':>8s} {'mem ref/ours':>12s}")
    for row in result["rows"]:
        for impl in ("ref", "ours"):
            if impl not in row:
                continue
            r = row[impl]
            line = (
                f"{row['variant']:22s} {impl:5s} {r['load_s']:7.1f} {r['call_s']:8.2f} {r['call_min_s']:8.2f} "
                f"{r['cpu_s'] or 0:8.2f} {r['pairs_per_s']:8.1f} {r['peak_rss_mib']:13.0f} {r['beyond_weights_mib']:11.0f}"
            )
            if gpu:
                tf = r.get("tflops")
                pct = f"{100 * tf / peak_tflops:6.1f}%" if tf and peak_tflops else "    n/a"
                line += f" {r['cuda_peak_mib'] or 0:8.0f} {tf or 0:8.1f} {pct:>7s}"
            if impl == "ours" and "ref" in row:
                line += (
                    f" {row['max_abs_diff']:10.2e} {row['speedup']:8.2f}x {row.get('cpu_speedup', 0):7.2f}x"
                    f" {row['mem_ratio']:11.2f}x"
                )
            print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--case", action="append", choices=sorted(CASES), help="case to run (repeatable); default: every CPU case"
    )
    ap.add_argument("--pairs", type=int, help="number of pairs (default: per case)")
    ap.add_argument("--repeat", type=int, help="timed calls per process (default: per case)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating ref/ours process rounds (default 2)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ... (default cpu)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument(
        "--workdir",
        default=os.environ.get("BGE_BENCH_DIR", "/tmp/bge-bench"),
        help="checkpoints and runs (outside the repo)",
    )
    ap.add_argument("--ref-python", default=str(ROOT / ".venv-ref" / "bin" / "python"))
    ap.add_argument("--ours-python", default=sys.executable)
    ap.add_argument("--no-ref", action="store_true", help="run ours only")
    ap.add_argument(
        "--peak-tflops", type=float, help="GPU peak dense TFLOP/s for the %%-of-peak column (default: by GPU name)"
    )
    ap.add_argument("--json", help="also write all results (scores included) to this file")
    args = ap.parse_args(argv)

    ref_ok = not args.no_ref and Path(args.ref_python).exists()
    if not ref_ok and not args.no_ref:
        print(f"reference env not found at {args.ref_python}: running ours only")
    peak = args.peak_tflops
    if args.device.startswith("cuda") and peak is None:
        import torch

        gpu = torch.cuda.get_device_name(args.device) if torch.cuda.is_available() else ""
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
        print(f"GPU: {gpu or 'none visible'}; peak {peak or 'unknown'} TFLOP/s dense fp16/bf16")
    cases = args.case or CPU_CASES
    results = []
    for name in cases:
        result = run_case(name, args, ref_ok)
        print_case(result, peak)
        results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
