"""The reranker options every Ray actor gets: one place for the device default and the early checks."""

from __future__ import annotations

from typing import Any

from ..options import check_single_score
from ..reranker import BGEReranker


def actor_reranker_options(model: str, options: dict[str, Any], num_gpus: float) -> dict[str, Any]:
    """``options`` for each actor's ``BGEReranker(model, **options)``, checked now, before any actor starts.

    Actors without a GPU run on CPU unless ``device`` says otherwise (so a GPU that Ray did not
    assign is never picked); with one, the reranker picks it. Loads nothing.

    >>> actor_reranker_options("BAAI/bge-reranker-v2-m3", {"max_length": 256}, num_gpus=0)
    {'max_length': 256, 'device': 'cpu'}
    """
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, float)) or num_gpus < 0:
        raise ValueError(f"GPUs per actor must be a number >= 0, got {num_gpus!r}.")
    options = dict(options)
    if num_gpus == 0:
        options.setdefault("device", "cpu")
    BGEReranker(model, **options)  # checks every load and scoring option (loads nothing)
    check_single_score(options.get("cutoff_layers"))
    return options
