"""What the app asks of a scorer, and scoring a list of jobs with one model (shared by every scorer).

A *job* is one request's pairs and scoring options. ``score_jobs`` merges jobs with identical
options into one ``BGEReranker.score_groups`` call each (shared forward batches, every job scored
exactly as its own call would be) and hands every job its own scores back; a failing call fails
only the jobs it held. The dynamic batcher (``batcher.DynamicBatcher``) runs it in
one worker thread; a Ray Serve deployment can run it under ``@serve.batch``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

from ..reranker import BGEReranker

logger = logging.getLogger(__name__)

Pair = tuple[str, str]


class Overloaded(Exception):
    """The scorer's queue is full: the app answers 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ScoredPairs:
    """One job's result: a score per pair (raw or normalized, as its options asked), the tokens each pair used
    (every window of a long passage), and each pair's best window (``None``: scored whole; see ``GroupScores``)."""

    scores: list[float]
    tokens: list[int]
    spans: list[tuple[int, int] | None] | None = None


@dataclass
class Job:
    """One request's pairs and scoring options (``BGEReranker`` keyword arguments, already checked)."""

    pairs: Sequence[Pair]
    options: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> tuple:
        """Jobs with the same key can share a ``score_groups`` call."""
        return tuple(sorted((name, _hashable(value)) for name, value in self.options.items()))


@runtime_checkable
class Scorer(Protocol):
    """What ``create_app`` needs: the model (for option checks and ``/info``) and an async ``score``.

    Optional: ``ready`` (bool, ``/health`` answers 503 while false), ``async start()`` and
    ``async stop()`` (called by the app's lifespan), ``queued_pairs`` (int, for metrics).
    """

    reranker: BGEReranker

    async def score(self, pairs: Sequence[Pair], options: Mapping[str, Any]) -> ScoredPairs:
        """Score ``pairs`` with ``options``; raise ``Overloaded`` when the queue is full."""
        ...


def score_jobs(reranker: BGEReranker, jobs: Sequence[Job]) -> list[ScoredPairs | BaseException]:
    """Score ``jobs``, merging those with identical options into one call; one result or error per job, in order.

    Blocking: run it off the event loop.

    >>> score_jobs(reranker, [Job([("q", "a")]), Job([("q", "b"), ("q", "c")])])  # doctest: +SKIP
    [ScoredPairs(scores=[0.2], tokens=[7]), ScoredPairs(scores=[0.9, 0.1], tokens=[7, 7])]
    """
    groups: dict[tuple, list[int]] = {}
    for position, job in enumerate(jobs):
        groups.setdefault(job.key(), []).append(position)
    results: list[ScoredPairs | BaseException] = [RuntimeError("not scored")] * len(jobs)
    for positions in groups.values():
        options = dict(jobs[positions[0]].options)
        try:  # each job scored as its own call would score it, in shared forward batches
            scored = reranker.score_groups([jobs[position].pairs for position in positions], **options)
        except Exception as error:  # handed to the jobs of this call only
            pairs = sum(len(jobs[position].pairs) for position in positions)
            logger.exception("Scoring %d pairs of %d request(s) failed.", pairs, len(positions))
            for position in positions:
                results[position] = error
            continue
        for position, group in zip(positions, scored):
            # The server takes at most one cutoff layer (check_single_score): one float (and span) per pair.
            results[position] = ScoredPairs(
                cast("list[float]", group.scores), group.tokens, cast("list[tuple[int, int] | None]", group.spans)
            )
    return results


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
