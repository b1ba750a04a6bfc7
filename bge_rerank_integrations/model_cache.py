"""Process-wide cache of loaded models: one copy per (checkpoint, family, device, dtype)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .families import RerankerFamily, family_class
from .loading import quiet_transformers

logger = logging.getLogger(__name__)


@dataclass
class CachedModel:
    """A loaded family and the lock that serialises its use across threads."""

    family: RerankerFamily
    lock: threading.Lock = field(default_factory=threading.Lock)


_models: dict[tuple[str, str, str, torch.dtype], CachedModel] = {}
_models_lock = threading.Lock()


def get_model(path: Path, family: str, device: torch.device, dtype: torch.dtype) -> CachedModel:
    """Return the cached model for this key, loading it on first use."""
    key = (str(Path(path).resolve()), family, str(device), dtype)
    with _models_lock:
        cached = _models.get(key)
        if cached is None:
            logger.info("Loading %s reranker from %s on %s (%s).", family, path, device, dtype)
            with quiet_transformers():
                cached = CachedModel(family_class(family).load(str(path), device, dtype))
            _models[key] = cached
        return cached


def clear_model_cache() -> None:
    """Forget every cached model (their memory is freed once no reranker holds them)."""
    with _models_lock:
        _models.clear()
