"""Process-wide cache of loaded models: one copy per (checkpoint, family, device, dtype, quantization)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .device import canonical_device
from .families import RerankerFamily, family_class
from .loading import check_checkpoint, quiet_transformers

logger = logging.getLogger(__name__)

_Key = tuple[str, str, str, torch.dtype, "str | None"]


@dataclass
class CachedModel:
    """A loaded family and the lock that serialises its use across threads."""

    family: RerankerFamily
    lock: threading.Lock = field(default_factory=threading.Lock)


_models: dict[_Key, CachedModel] = {}
#: One lock per key while it loads: loading one checkpoint never blocks loading another.
_loading: dict[_Key, threading.Lock] = {}
_models_lock = threading.Lock()


def get_model(
    path: Path, family: str, device: torch.device, dtype: torch.dtype, quantization: str | None = None
) -> CachedModel:
    """Return the cached model for this key, loading it on first use (a broken checkpoint raises ``CheckpointError``).

    ``quantization="int8"`` quantizes the loaded model once, here (see :mod:`.quantization`).
    """
    key = (str(Path(path).resolve()), family, str(canonical_device(device)), dtype, quantization)
    with _models_lock:
        cached = _models.get(key)
        if cached is not None:
            return cached
        key_lock = _loading.setdefault(key, threading.Lock())
    with key_lock:
        with _models_lock:
            cached = _models.get(key)
        if cached is None:
            start = time.perf_counter()
            check_checkpoint(path)
            with quiet_transformers():
                loaded = family_class(family).load(str(path), canonical_device(device), dtype)
            if quantization == "int8":
                from .quantization import quantize_family

                quantize_family(loaded)
            cached = CachedModel(loaded)
            logger.info(
                "Loaded %s: family %s, device %s, dtype %s%s, in %.2f s.",
                path,
                family,
                canonical_device(device),
                str(dtype).replace("torch.", ""),
                f", quantization {quantization}" if quantization else "",
                time.perf_counter() - start,
            )
            with _models_lock:
                _models[key] = cached
        return cached


def clear_model_cache() -> None:
    """Forget every cached model (their memory is freed once no reranker holds them)."""
    with _models_lock:
        _models.clear()
