"""Device and dtype policy: the one place that decides where a model runs and in what precision."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from collections.abc import Set as AbstractSet

import torch

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Pick the device: the one asked for, else CUDA, then Apple MPS, then CPU (see :func:`canonical_device`).

    >>> resolve_device("cpu:0")
    device(type='cpu')
    """
    if device is None:
        if torch.cuda.is_available():
            return canonical_device(torch.device("cuda"))
        return torch.device("mps" if _mps_available() else "cpu")
    if isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'cpu', 'cuda:1' or 'mps', got {type(device).__name__}.")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or 'mps'.") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for but CUDA is not available; use device='cpu'.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: there are only {torch.cuda.device_count()} CUDA device(s).")
    elif resolved.type == "mps":
        if not _mps_available():
            raise ValueError(f"device={device!r} was asked for but Apple MPS is not available; use device='cpu'.")
    elif resolved.type != "cpu" and not _backend_available(resolved.type):  # "meta" and the like hold no data
        raise ValueError(f"device={device!r} cannot run a reranker here; use 'cpu', 'cuda', 'cuda:1' or 'mps'.")
    return canonical_device(resolved)


def canonical_device(device: torch.device) -> torch.device:
    """One name per device, so that one device gives one cached model: ``cpu:0`` is ``cpu``, ``cuda`` is ``cuda:<current>``.

    >>> canonical_device(torch.device("cpu:0"))
    device(type='cpu')
    """
    if device.type in ("cpu", "mps"):
        return torch.device(device.type)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _backend_available(device_type: str) -> bool:
    """Whether torch has a backend module for ``device_type`` (``torch.xpu``...) that reports a device."""
    is_available = getattr(getattr(torch, device_type, None), "is_available", None)
    return bool(callable(is_available) and is_available())


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


#: (model, dtype) pairs whose half-precision-on-CPU warning was given: once per model, not per reranker.
_warned_on_cpu: set[tuple[str, torch.dtype]] = set()


def resolve_dtype(
    device: torch.device, use_fp16: bool = False, use_bf16: bool = False, model: str | None = None
) -> torch.dtype:
    """Choose the weights' dtype for ``device``.

    Half precision is used on CUDA and MPS when asked for. On CPU it is used only where this CPU
    runs that dtype fast (see :func:`cpu_fast_half_dtypes`: bfloat16 with AVX-512 BF16 or AMX,
    float16 with AMX-FP16); elsewhere it is no faster than float32 and often tens of times slower, so the
    model runs in float32 and one warning says so (once per ``model`` when it is given). Scores are
    float32 either way.
    """
    if use_fp16 and use_bf16:
        raise ValueError("use_fp16 and use_bf16 are both set; choose one.")
    if not (use_fp16 or use_bf16):
        return torch.float32
    wanted = torch.float16 if use_fp16 else torch.bfloat16
    if device.type == "cpu":
        fast = cpu_fast_half_dtypes()
        if wanted in fast:
            return wanted
        if model is None or (model, wanted) not in _warned_on_cpu:
            other = " (this CPU runs bfloat16 fast: use_bf16=True)" if torch.bfloat16 in fast else ""
            logger.warning(
                "%s was asked for on a CPU without fast %s kernels (%s), where it is no faster than float32 and often many times slower: using float32%s.",
                wanted,
                _HALF_NAMES[wanted],
                _HALF_NEEDS[wanted],
                other,
            )
            if model is not None:
                _warned_on_cpu.add((model, wanted))
        return torch.float32
    if device.type == "mps" and wanted == torch.bfloat16 and not _mps_supports_bf16():
        logger.warning("bfloat16 is not supported by this MPS backend: using float16.")
        return torch.float16
    return wanted


_HALF_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_HALF_NEEDS = {torch.float16: "they need AMX-FP16", torch.bfloat16: "they need AVX-512 BF16 or AMX"}
#: CPU flags (Linux ``/proc/cpuinfo`` names) any one of which makes a dtype's matrix kernels fast. AVX-512 FP16
#: alone does not: on a Xeon with AMX-BF16/INT8 and AVX-512 FP16 but no AMX-FP16, float16 ran at float32's speed.
HALF_PRECISION_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("amx_fp16",)}
#: oneDNN's ISA levels (``ONEDNN_MAX_CPU_ISA`` values; AVX10_1 names are aliases), and the lowest that runs each dtype.
_ONEDNN_LEVELS = {
    "SSE41": 0,
    "AVX": 1,
    "AVX2": 2,
    "AVX2_VNNI": 3,
    "AVX2_VNNI_2": 4,
    "AVX512_CORE": 5,
    "AVX512_CORE_VNNI": 6,
    "AVX512_CORE_BF16": 7,
    "AVX512_CORE_FP16": 8,
    "AVX10_1_512": 8,
    "AVX512_CORE_AMX": 9,
    "AVX10_1_512_AMX": 9,
    "AVX512_CORE_AMX_FP16": 10,
    "AVX10_1_512_AMX_FP16": 10,
    "ALL": 11,
    "DEFAULT": 11,
}
_ONEDNN_NEEDS = {torch.bfloat16: "AVX512_CORE_BF16", torch.float16: "AVX512_CORE_AMX_FP16"}


def cpu_fast_half_dtypes() -> frozenset[torch.dtype]:
    """The half-precision dtypes this CPU runs fast, from what the CPU and torch report.

    A dtype counts as fast where the CPU has its instructions (bfloat16: ``avx512_bf16`` or
    ``amx_bf16``; float16: ``amx_fp16``), torch's kernels run at AVX-512 (not held
    to AVX2 by ``ATEN_CPU_CAPABILITY``) and oneDNN is not held below them (``ONEDNN_MAX_CPU_ISA``,
    ``DNNL_MAX_CPU_ISA``), as on a CPU without them: CI emulates an AVX2 CPU that way. Measured
    (torch 2.13, bge-reranker-base shape): on an AVX2 CPU bfloat16 runs 5-200x slower than float32;
    with AVX-512 BF16 (AMD EPYC) 1.8x faster, with AMX (Intel Xeon) 3.8x; float16 is 5-10x slower
    without AVX-512 FP16 and no faster than float32 with it (no AMX-FP16). Other architectures (ARM)
    stay float32 (not measured).
    """
    return cpu_half_support(torch.backends.cpu.get_cpu_capability(), cpu_flags(), os.environ)


def cpu_half_support(capability: str, flags: AbstractSet[str], environ: Mapping[str, str]) -> frozenset[torch.dtype]:
    """:func:`cpu_fast_half_dtypes` for a given ATen ``capability``, CPU ``flags`` and environment.

    >>> sorted(map(str, cpu_half_support("AVX512", {"avx512_bf16"}, {})))
    ['torch.bfloat16']
    >>> cpu_half_support("AVX2", {"avx512_bf16", "amx_bf16"}, {})  # ATEN_CPU_CAPABILITY=avx2
    frozenset()
    >>> cpu_half_support("AVX512", {"amx_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"})
    frozenset()
    """
    if not capability.upper().startswith("AVX512"):
        return frozenset()
    return frozenset(
        dtype
        for dtype, needed in HALF_PRECISION_FLAGS.items()
        if any(flag in flags for flag in needed) and _onednn_allows(_ONEDNN_NEEDS[dtype], environ)
    )


def cpu_has_int8_tiles() -> bool:
    """Whether this CPU's AMX-INT8 tiles are in reach (``amx_int8``, not held below AMX by the variables above)."""
    return cpu_int8_tiles(torch.backends.cpu.get_cpu_capability(), cpu_flags(), os.environ)


def cpu_int8_tiles(capability: str, flags: AbstractSet[str], environ: Mapping[str, str]) -> bool:
    """:func:`cpu_has_int8_tiles` for a given ATen ``capability``, CPU ``flags`` and environment.

    >>> cpu_int8_tiles("AVX512", {"amx_int8"}, {}), cpu_int8_tiles("AVX512", {"amx_int8"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"})
    (True, False)
    """
    return (
        capability.upper().startswith("AVX512") and "amx_int8" in flags and _onednn_allows("AVX512_CORE_AMX", environ)
    )


def cpu_has_vnni() -> bool:
    """Whether the CPU sums int8 products in 32 bits (AVX-512 VNNI, AVX-VNNI, AMX), so 8-bit activations cannot saturate."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512",):
        return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def _onednn_allows(level_name: str, environ: Mapping[str, str]) -> bool:
    """Whether oneDNN may use the ISA ``level_name`` (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA`` unset or at least it)."""
    limit = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "ALL").strip().upper()
    return _ONEDNN_LEVELS.get(limit, _ONEDNN_LEVELS["ALL"]) >= _ONEDNN_LEVELS[level_name]


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags: ``/proc/cpuinfo``'s on Linux, plus what torch's cpuinfo reports."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    cpu = getattr(torch, "cpu", None)
    for flag, probe in (
        ("avx512_bf16", "_is_avx512_bf16_supported"),
        ("amx_bf16", "_is_amx_tile_supported"),
        ("amx_fp16", "_is_amx_fp16_supported"),
    ):
        try:
            if getattr(cpu, probe)():
                flags.add(flag)
        except (AttributeError, RuntimeError):
            pass
    return frozenset(flags)


def _mps_supports_bf16() -> bool:
    try:
        torch.zeros(1, dtype=torch.bfloat16, device="mps")
    except (RuntimeError, TypeError):
        return False
    return True


def is_out_of_memory(error: BaseException) -> bool:
    """True for a device out-of-memory error (the only error that shrinks a batch)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def is_mps_dtype_error(error: BaseException, device: torch.device) -> bool:
    """True for MPS refusing mixed half/float operands (the reference's ``'mps.add' op`` error)."""
    message = str(error)
    return (
        device.type == "mps"
        and isinstance(error, RuntimeError)
        and ("same element type" in message or ("mps." in message and "f16" in message))
    )
