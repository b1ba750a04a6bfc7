"""How the server's scorers share model calls, without a model: ``score_jobs`` and ``DynamicBatcher``."""

from __future__ import annotations

import asyncio

import pytest

from bge_rerank_integrations.reranker import GroupScores
from bge_rerank_integrations.serving import DynamicBatcher, Job, Overloaded, ScoredPairs, score_jobs


class CountingReranker:
    """Scores a pair as len(query) + len(passage) (+ 1000 when normalize), records each call (pairs, options); fails on prompt="fail"."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict]] = []

    def load(self) -> None:
        pass

    def score_groups(self, groups, **options):
        self.calls.append((sum(len(pairs) for pairs in groups), options))
        if options.get("prompt") == "fail":
            raise RuntimeError("this call failed")
        bonus = 1000 if options.get("normalize") else 0
        return [
            GroupScores([len(q) + len(p) + bonus for q, p in pairs], [len(p) for _, p in pairs]) for pairs in groups
        ]


def test_jobs_with_identical_options_share_one_call_and_get_their_own_scores():
    reranker = CountingReranker()
    jobs = [Job([("q", "a")], {}), Job([("qq", "bb"), ("q", "ccc")], {"normalize": True}), Job([("q", "dddd")], {})]
    results = score_jobs(reranker, jobs)
    assert results == [ScoredPairs([2], [1]), ScoredPairs([1004, 1004], [2, 3]), ScoredPairs([5], [4])]
    assert reranker.calls == [(2, {}), (2, {"normalize": True})]


def test_a_failing_call_fails_only_its_jobs():
    reranker = CountingReranker()
    jobs = [Job([("q", "a")], {"prompt": "fail"}), Job([("q", "b")], {}), Job([("q", "c")], {"prompt": "fail"})]
    results = score_jobs(reranker, jobs)
    assert isinstance(results[0], RuntimeError) and results[0] is results[2]
    assert results[1] == ScoredPairs([2], [1])


def test_layer_lists_in_options_group_like_tuples():
    reranker = CountingReranker()
    score_jobs(reranker, [Job([("q", "a")], {"cutoff_layers": [3]}), Job([("q", "b")], {"cutoff_layers": [3]})])
    assert len(reranker.calls) == 1


def test_the_batcher_merges_concurrent_requests_and_bounds_its_queue():
    reranker = CountingReranker()

    async def main():
        batcher = DynamicBatcher(reranker, max_batch_pairs=4, max_wait_ms=50, max_queue_pairs=6)
        await batcher.start()
        try:
            first = [batcher.score([("q", "x" * i), ("q", "y")], {}) for i in range(3)]
            results = await asyncio.gather(*first)
            with pytest.raises(Overloaded, match="at most 6"):
                await asyncio.gather(*(batcher.score([("q", "z")] * 4, {}) for _ in range(2)))
            return results, batcher.queued_pairs
        finally:
            await batcher.stop()

    results, queued = asyncio.run(main())
    assert [r.scores for r in results] == [[1, 2], [2, 2], [3, 2]]
    assert reranker.calls[0] == (4, {}), "the first two requests share one call of at most max_batch_pairs"
    assert queued == 0
