"""``Reranker``: the one interface of every reranker (``BGEReranker`` in-process, ``RemoteReranker`` over HTTP).

Adapters, the server and Ray depend on this interface only. Torch-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, cast

from .options import ScoreOptions, check_single_score
from .ranking import RerankResult, rank, rerank_pairs

__all__ = ["Reranker", "Scores"]

#: What ``compute_score`` returns: one float for one pair, a list for a list of pairs, a list per layer
#: for several ``cutoff_layers``.
Scores = float | list[float] | list[list[float]]


class Reranker(ABC):
    """Scores (query, passage) pairs and ranks passages; every method takes the scoring options per call.

    Subclasses implement ``compute_score``, ``acompute_score``, ``check_options``, ``options``,
    ``model_name_or_path`` and ``settings``; ``rerank`` and ``arerank`` rank their scores the same
    way for every reranker (best first, NaN last, ties in input order).
    """

    @abstractmethod
    def compute_score(self, sentence_pairs: Any, **options: Any) -> Scores:
        """Score one ``[query, passage]`` pair (-> float) or a list of pairs (-> list of floats, input order)."""

    @abstractmethod
    async def acompute_score(self, sentence_pairs: Any, **options: Any) -> Scores:
        """``compute_score`` without blocking the running event loop."""

    @abstractmethod
    def check_options(self, **options: Any) -> ScoreOptions:
        """Check per-call ``options`` now, without scoring, and return the options a call with them would use."""

    @property
    @abstractmethod
    def options(self) -> ScoreOptions:
        """The scoring options calls start from."""

    @property
    @abstractmethod
    def model_name_or_path(self) -> str:
        """What scores, for logs and events: a Hub id or path, or a server's endpoint."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The constructor's arguments as given (never a secret): what rebuilds an equivalent reranker."""

    def rerank(
        self,
        query: str,
        passages: Sequence[str],
        top_n: int | None = None,
        score_threshold: float | None = None,
        **options: Any,
    ) -> list[RerankResult]:
        """Score ``passages`` against ``query`` and return them best first.

        Passages scoring below ``score_threshold`` are dropped first, then at most ``top_n``
        are kept. Ties keep input order. ``options`` are ``compute_score``'s, for this call.

        >>> reranker.rerank("what is panda?", ["hi", "The giant panda ..."], top_n=1)  # doctest: +SKIP
        [RerankResult(index=1, score=5.26171875, text='The giant panda ...')]
        """
        pairs = self._rerank_pairs(query, passages, top_n, score_threshold, options)
        scores, spans = self._scores_and_spans(pairs, **options)
        return rank(passages, scores, top_n, score_threshold, spans)

    async def arerank(
        self,
        query: str,
        passages: Sequence[str],
        top_n: int | None = None,
        score_threshold: float | None = None,
        **options: Any,
    ) -> list[RerankResult]:
        """``rerank`` without blocking the running event loop."""
        pairs = self._rerank_pairs(query, passages, top_n, score_threshold, options)
        scores, spans = await self._ascores_and_spans(pairs, **options)
        return rank(passages, scores, top_n, score_threshold, spans)

    def _scores_and_spans(self, pairs: list[tuple[str, str]], **options: Any) -> tuple[list[float], list[Any] | None]:
        """One score per pair (checked by ``_rerank_pairs``) and, where the reranker knows them, each passage's
        best window (``RerankResult.span``), else ``None``."""
        return cast(list[float], self.compute_score(pairs, **options)), None

    async def _ascores_and_spans(
        self, pairs: list[tuple[str, str]], **options: Any
    ) -> tuple[list[float], list[Any] | None]:
        """``_scores_and_spans`` without blocking the running event loop."""
        return cast(list[float], await self.acompute_score(pairs, **options)), None

    def _rerank_pairs(
        self, query: Any, passages: Any, top_n: Any, score_threshold: Any, options: dict[str, Any]
    ) -> list[tuple[str, str]]:
        """The pairs of a ``rerank`` call, after checking its arguments and options (before any scoring)."""
        pairs = rerank_pairs(query, passages, top_n, score_threshold)
        check_single_score(self.check_options(**options).cutoff_layers)
        return pairs
