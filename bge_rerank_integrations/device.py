"""Device and dtype policy: the one place that decides where a model runs and in what precision."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Pick the device: the one asked for, else CUDA, then Apple MPS, then CPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is not None:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or 'mps'.") from exc
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for but CUDA is not available; use device='cpu'.")
        if resolved.type == "mps" and not _mps_available():
            raise ValueError(f"device={device!r} was asked for but Apple MPS is not available; use device='cpu'.")
        return resolved
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_dtype(device: torch.device, use_fp16: bool = False, use_bf16: bool = False) -> torch.dtype:
    """Choose the weights' dtype for ``device``.

    Half precision is used on CUDA and MPS when asked for; on CPU it is slow or unsupported,
    so the model runs in float32 and one warning says so.
    """
    if use_fp16 and use_bf16:
        raise ValueError("use_fp16 and use_bf16 are both set; choose one.")
    if not (use_fp16 or use_bf16):
        return torch.float32
    wanted = torch.float16 if use_fp16 else torch.bfloat16
    if device.type == "cpu":
        logger.warning("%s was asked for on CPU, where half precision is slow or unsupported: using float32.", wanted)
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
