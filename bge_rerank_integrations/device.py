"""Device and dtype policy: the one place that decides where a model runs and in what precision."""

from __future__ import annotations

import logging

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

    Half precision is used on CUDA and MPS when asked for; on CPU it is slow or unsupported,
    so the model runs in float32 and one warning says so (once per ``model`` when it is given).
    """
    if use_fp16 and use_bf16:
        raise ValueError("use_fp16 and use_bf16 are both set; choose one.")
    if not (use_fp16 or use_bf16):
        return torch.float32
    wanted = torch.float16 if use_fp16 else torch.bfloat16
    if device.type == "cpu":
        if model is None or (model, wanted) not in _warned_on_cpu:
            logger.warning(
                "%s was asked for on CPU, where half precision is slow or unsupported: using float32.", wanted
            )
            if model is not None:
                _warned_on_cpu.add((model, wanted))
        return torch.float32
    if device.type == "mps" and wanted == torch.bfloat16 and not _mps_supports_bf16():
        logger.warning("bfloat16 is not supported by this MPS backend: using float16.")
        return torch.float16
    return wanted


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
    return device.type == "mps" and isinstance(error, RuntimeError) and (
        "same element type" in message or "mps." in message and "f16" in message
    )
