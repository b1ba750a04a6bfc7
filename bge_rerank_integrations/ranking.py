"""Turning scores into a ranking: one place for the order (best first, NaN last), ``score_threshold`` and ``top_n``.

Every reranker's ``rerank`` and ``arerank`` (``contract.Reranker``) rank with ``rank``, so every
reranker ranks the same scores the same way; servers order their answers with ``best_first``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .inputs import check_score_threshold, check_text


@dataclass(frozen=True)
class RerankResult:
    """One passage of a ``rerank`` call: its position in the input, its score and its text.

    ``span`` is the ``(start, end)`` character range of the passage's best window, so that
    ``text[start:end]`` is the part that scored, when the passage was scored in windows
    (``max_chunks_per_passage > 1``); ``None`` when it was scored whole (or truncated, with one window).
    """

    index: int
    score: float
    text: str
    span: tuple[int, int] | None = None

    def __repr__(self) -> str:
        span = "" if self.span is None else f", span={self.span!r}"
        return f"RerankResult(index={self.index!r}, score={self.score!r}, text={self.text!r}{span})"


def rerank_pairs(query: Any, passages: Any, top_n: Any, score_threshold: Any) -> list[tuple[str, str]]:
    """The (query, passage) pairs of a ``rerank`` call, after rejecting a non-string query, a non-list of
    passages, a bad ``top_n`` or ``score_threshold`` (before any scoring)."""
    check_text(query, "query")
    if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence):
        raise TypeError(f"passages must be a list of strings, got {type(passages).__name__}.")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0):
        raise ValueError(f"top_n must be a non-negative integer or None, got {top_n!r}.")
    check_score_threshold(score_threshold)
    return [(query, passage) for passage in passages]


def rank(
    passages: Sequence[str],
    scores: Sequence[Any],
    top_n: int | None,
    score_threshold: float | None,
    spans: Sequence[tuple[int, int] | None] | None = None,
) -> list[RerankResult]:
    """``passages`` best first by ``scores``: below ``score_threshold`` dropped first, then at most ``top_n`` kept.

    Ties keep input order; NaN scores (a broken model, logged where they are computed) rank last
    and pass no threshold. ``spans`` (one per passage, or ``None``) become the results' ``span``.

    >>> rank(["a", "b", "c"], [0.1, 0.9, 0.5], top_n=2, score_threshold=None)
    [RerankResult(index=1, score=0.9, text='b'), RerankResult(index=2, score=0.5, text='c')]
    """
    score_threshold = check_score_threshold(score_threshold)
    ranked = best_first(scores)
    if score_threshold is not None:
        ranked = [i for i in ranked if scores[i] >= score_threshold]
    return [RerankResult(i, scores[i], passages[i], None if spans is None else spans[i]) for i in ranked[:top_n]]


def best_first(scores: Sequence[float]) -> list[int]:
    """Indices of ``scores``, best first; ties keep input order and NaN scores come last.

    >>> best_first([0.5, float("nan"), 0.9, 0.5])
    [2, 0, 3, 1]
    """
    return sorted(range(len(scores)), key=lambda i: (math.isnan(scores[i]), -scores[i]))
