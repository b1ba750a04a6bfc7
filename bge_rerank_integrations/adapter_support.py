"""What both framework adapters share: which settings load a model, which score, and building the reranker.

Adapters turn their documents or nodes into texts, call ``BGEReranker.rerank`` with the
scoring settings, and turn the results back; this module keeps those settings in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Mapping, Optional, Sequence

from pydantic import BeforeValidator

from .families import ScoreOptions
from .inputs import check_score_threshold
from .reranker import BGEReranker

#: Settings that decide which model is loaded, where and in what dtype (constructor only).
LOAD_SETTINGS = ("model_class", "device", "use_fp16", "use_bf16")
#: Settings forwarded to every ``rerank`` call unchanged (``None`` = the model's default): every scoring option.
SCORE_SETTINGS = tuple(option.name for option in dataclasses.fields(ScoreOptions))
#: An adapter's ``score_threshold`` field: any real number (numpy scalars, ints, Decimal), never NaN; as the core checks it.
ScoreThreshold = Annotated[Optional[float], BeforeValidator(check_score_threshold)]


def build_reranker(model: str | BGEReranker, settings: Mapping[str, Any]) -> BGEReranker:
    """The adapter's reranker: ``model`` itself when it is a ``BGEReranker``, else a new one (lazy, cache-shared).

    Load settings given alongside an existing ``BGEReranker`` are an error: they would be ignored.
    The scoring settings are checked here, so a setting the model's family lacks fails at construction
    whenever the family is known without loading.
    """
    load = {name: settings.get(name) for name in LOAD_SETTINGS if settings.get(name) not in (None, False)}
    if isinstance(model, BGEReranker):
        if load:
            raise ValueError(
                f"{sorted(load)} choose how a model is loaded, but model is an existing BGEReranker: "
                "set them when building that BGEReranker, or pass its name or path instead."
            )
        reranker = model
    elif not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a Hub id, a local checkpoint directory or a BGEReranker, got {model!r}.")
    else:
        reranker = BGEReranker(model, **load)
    reranker.check_options(**score_options(settings))
    return reranker


def score_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The scoring settings that were set, as keyword arguments for ``rerank``."""
    return {name: settings[name] for name in SCORE_SETTINGS if settings.get(name) is not None}


def check_single_score(cutoff_layers: int | Sequence[int] | None) -> None:
    """Adapters rank by one score per text: several cutoff layers are an error at construction."""
    if cutoff_layers is not None and not isinstance(cutoff_layers, int) and len(cutoff_layers) > 1:
        raise ValueError(
            f"cutoff_layers={list(cutoff_layers)} gives one score per layer, but a reranker needs one score per "
            "document: pass a single layer, e.g. cutoff_layers=[28]."
        )


def shared_reranker_settings(reranker: BGEReranker, data: Mapping[str, Any]) -> dict[str, Any]:
    """The load settings of a shared ``reranker`` and the scoring defaults it changed, as adapter fields.

    What an adapter built on an existing ``BGEReranker`` adds to its serialized configuration, so
    that the configuration alone rebuilds an equivalent adapter (sharing the cached model).

    Fields the adapter sets itself (not ``None`` in ``data``) win.
    """
    settings: dict[str, Any] = {
        "model_class": reranker.model_class,
        "device": str(reranker.device),
        "use_fp16": str(reranker.dtype) == "torch.float16",
        "use_bf16": str(reranker.dtype) == "torch.bfloat16",
    }
    baseline = ScoreOptions()
    for option in dataclasses.fields(baseline):
        value, default = getattr(reranker.options, option.name), getattr(baseline, option.name)
        derived = option.name == "query_max_length" and value == reranker.options.max_length * 3 // 4
        if value == default or derived:  # a derived query_max_length keeps following max_length
            continue
        if data.get(option.name) is None:
            settings[option.name] = list(value) if isinstance(value, tuple) else value
    return settings
