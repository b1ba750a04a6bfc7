"""Model families and the one place that decides which family a checkpoint belongs to."""

from __future__ import annotations

import importlib
from typing import Any

from .base import Encoded, RerankerFamily, ScoreOptions

__all__ = ["FAMILIES", "KNOWN_MODELS", "Encoded", "RerankerFamily", "ScoreOptions", "detect_family", "family_class"]

#: Family name -> "module:Class", imported only when used.
FAMILIES = {
    "encoder": "encoder:EncoderFamily",
    "llm": "llm:LLMFamily",
    "layerwise": "layerwise:LayerwiseFamily",
    "lightweight": "lightweight:LightweightFamily",
}

#: FlagEmbedding's ``model_class`` names, accepted as aliases.
_ALIASES = {
    "encoder-only-base": "encoder",
    "decoder-only-base": "llm",
    "decoder-only-layerwise": "layerwise",
    "decoder-only-lightweight": "lightweight",
}

#: The official checkpoints, matched by exact id (case-insensitive).
KNOWN_MODELS = {
    "baai/bge-reranker-base": "encoder",
    "baai/bge-reranker-large": "encoder",
    "baai/bge-reranker-v2-m3": "encoder",
    "baai/bge-reranker-v2-gemma": "llm",
    "baai/bge-reranker-v2-minicpm-layerwise": "layerwise",
    "baai/bge-reranker-v2.5-gemma2-lightweight": "lightweight",
}


def canonical_family(model_class: str) -> str:
    """Map a family name or FlagEmbedding alias to our family name, or raise ValueError."""
    name = _ALIASES.get(model_class, model_class) if isinstance(model_class, str) else None
    if name not in FAMILIES:
        choices = ", ".join([*FAMILIES, *_ALIASES])
        raise ValueError(f"Unknown model_class {model_class!r}: choose one of {choices}.")
    return name


def family_class(name: str) -> type[RerankerFamily]:
    """The family class for a family name (or alias), imported on first use."""
    module_name, class_name = FAMILIES[canonical_family(name)].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


def detect_family(model: str, config: dict[str, Any] | None) -> str:
    """Decide the family of ``model`` from its exact id, else from its ``config.json``.

    >>> detect_family("BAAI/bge-reranker-v2-m3", None)
    'encoder'
    >>> detect_family("./my-ckpt", {"model_type": "minicpm", "head_multi": True})
    'layerwise'
    """
    known = KNOWN_MODELS.get(model.strip().lower()) if isinstance(model, str) else None
    if known is not None:
        return known
    config = config or {}
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type == "cost_wise_gemma" or config.get("layer_wise"):
        return "lightweight"
    if config.get("head_multi"):
        return "layerwise"
    if any(arch.endswith("ForSequenceClassification") for arch in architectures):
        return "encoder"
    if any(arch.endswith("ForCausalLM") for arch in architectures):
        return "llm"
    raise ValueError(
        f"Cannot tell which reranker family {model!r} is (config model_type={model_type!r}, "
        f"architectures={architectures}). Pass model_class='encoder', 'llm', 'layerwise' or 'lightweight'."
    )
