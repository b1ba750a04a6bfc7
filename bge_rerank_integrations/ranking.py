"""Turning scores into a ranking: one place for the order, ``score_threshold`` and ``top_n``.

``Ranking.rerank`` is ``BGEReranker.rerank`` (in-process) and ``RemoteReranker.rerank`` (through
a server), and ``RemoteReranker.arerank`` ranks with the same steps, so every reranker ranks the
same scores the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

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


class Ranking:
    """``rerank`` over the subclass's ``compute_score(sentence_pairs, **options)``."""

    def rerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None, score_threshold: float | None = None, **options: Any
    ) -> list[RerankResult]:
        """Score ``passages`` against ``query`` and return them best first.

        Passages scoring below ``score_threshold`` are dropped first, then at most ``top_n``
        are kept. Ties keep input order. ``options`` are ``compute_score``'s, for this call.

        >>> reranker.rerank("what is panda?", ["hi", "The giant panda ..."], top_n=1)  # doctest: +SKIP
        [RerankResult(index=1, score=5.26171875, text='The giant panda ...')]
        """
        pairs = rerank_pairs(query, passages, top_n, score_threshold)
        scores, spans = self._scores_and_spans(pairs, **options)
        return rank(passages, scores, top_n, score_threshold, spans)

    def _scores_and_spans(self, pairs: list[tuple[str, str]], **options: Any) -> tuple[list[Any], list[Any] | None]:
        """Scores of ``pairs`` and, where the reranker knows them, each passage's best window (else ``None``)."""
        return self.compute_score(pairs, **options), None


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
    if scores and isinstance(scores[0], list):
        raise ValueError("rerank needs one score per passage, but several cutoff_layers were asked for: pass one layer.")
    score_threshold = check_score_threshold(score_threshold)
    ranked = sorted(range(len(passages)), key=lambda i: (math.isnan(scores[i]), -scores[i]))
    if score_threshold is not None:
        ranked = [i for i in ranked if scores[i] >= score_threshold]
    return [RerankResult(i, scores[i], passages[i], None if spans is None else spans[i]) for i in ranked[:top_n]]
