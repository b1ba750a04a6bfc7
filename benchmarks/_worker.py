"""One benchmark process: load one implementation, score the pairs, report JSON.

Not meant to be run by hand; ``benchmarks/bench.py`` starts it once per (implementation,
round) with the interpreter of the right environment. Works under transformers 4.46
(the reference env) and 5.x (ours) alike, using only the standard library and torch.

    python benchmarks/_worker.py SPEC.json OUT.json

SPEC: {"impl": "ref"|"ours", "family", "checkpoint", "pairs": path, "device", "dtype",
"init": {...}, "variants": [{"name", "call": {...}}], "repeat", "warmup"}.
OUT: load time, RSS after load, peak RSS (ru_maxrss, whole process), the resident pages of the
mapped weight files (so that peak minus weights shows what else a run holds) and, per variant, every
timed call's wall time and the scores of the last call.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _weights_rss_mib() -> float:
    """Resident size of the mapped weight files (safetensors are mmapped: the pages a run touched)."""
    total, current = 0, ""
    try:
        with open("/proc/self/smaps") as handle:
            for line in handle:
                parts = line.split()
                if parts and "-" in parts[0] and not parts[0].endswith(":"):
                    current = parts[5] if len(parts) > 5 else ""
                elif parts and parts[0] == "Rss:" and current.endswith((".safetensors", ".bin")):
                    total += int(parts[1])
    except OSError:
        return 0.0
    return total / 1024


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _load(spec: dict):
    import torch

    impl, family, path, device = spec["impl"], spec["family"], spec["checkpoint"], spec["device"]
    dtype = spec.get("dtype", "fp32")
    init = dict(spec.get("init", {}))
    if impl == "ours":
        from bge_rerank_integrations import BGEReranker

        reranker = BGEReranker(
            path, model_class=family, device=device, use_fp16=dtype == "fp16", use_bf16=dtype == "bf16", **init
        )
        reranker.load()
        return reranker
    import FlagEmbedding as fe

    cls = {
        "encoder": fe.FlagReranker,
        "llm": fe.FlagLLMReranker,
        "layerwise": fe.LayerWiseFlagLLMReranker,
        "lightweight": fe.LightWeightFlagLLMReranker,
    }[family]
    if family == "encoder":  # FlagReranker has no bf16 switch: cast its model ourselves
        reranker = cls(path, devices=device, use_fp16=dtype == "fp16", **init)
        if dtype == "bf16":
            reranker.model.to(torch.bfloat16)
    else:
        reranker = cls(path, devices=device, use_fp16=dtype == "fp16", use_bf16=dtype == "bf16", **init)
    if device != "cpu":  # the reference moves the model on its first call; do it before timing
        reranker.model.to(device)
    return reranker


def main() -> int:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    with open(spec["pairs"], encoding="utf-8") as handle:
        pairs = [list(p) for p in json.load(handle)]

    start = time.perf_counter()
    import torch  # noqa: F401  (import time is part of "load")

    reranker = _load(spec)
    load_s = time.perf_counter() - start
    rss_loaded = _rss_mib()
    device = spec["device"]

    results = []
    for variant in spec["variants"]:
        call = dict(variant.get("call", {}))
        if spec.get("warmup", True):  # a small call first: one-time kernel/alloc setup is not timed
            reranker.compute_score(pairs[:2], **call)
        times, cpu = [], []
        scores = None
        for _ in range(int(spec.get("repeat", 1))):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            scores = reranker.compute_score(pairs, **call)
            _sync(device)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        results.append({"name": variant["name"], "times": times, "cpu_times": cpu, "scores": scores})
    out = {
        "impl": spec["impl"],
        "load_s": load_s,
        "rss_loaded_mib": rss_loaded,
        "peak_rss_mib": _peak_rss_mib(),
        "weights_rss_mib": _weights_rss_mib(),
        "variants": results,
        "torch_threads": __import__("torch").get_num_threads(),
        "transformers": __import__("transformers").__version__,
    }
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = __import__("torch").cuda.max_memory_allocated() / 2**20
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(out, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
