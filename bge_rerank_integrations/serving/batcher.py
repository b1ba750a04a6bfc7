"""Dynamic batching: pairs of concurrent requests share model calls, run in one worker thread.

Requests wait in one FIFO queue. When the model is free, the dispatcher takes the oldest
request and, until ``max_batch_pairs`` pairs are gathered or the oldest has waited
``max_wait_ms``, the requests behind it; ``score_jobs`` then merges those with identical
options into one ``score_groups`` call each. A request larger than ``max_batch_pairs`` goes
alone (the core splits it into batches of ``batch_size``). ``max_batch_pairs=1`` turns merging off.

On a GPU, larger merged calls raise throughput; on a CPU they hardly do (a padded position costs
as much as a real one, and one call already keeps the cores busy) while every merged request waits
for the whole call: so the default merge bound is small on CPU (``CPU_BATCH_PAIRS``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..reranker import BGEReranker
from .metrics import Metrics
from .scoring import Job, Overloaded, Pair, ScoredPairs, score_jobs

logger = logging.getLogger(__name__)

#: Default bound of pairs per merged call: on CUDA/MPS, and on CPU.
ACCELERATOR_BATCH_PAIRS = 256
CPU_BATCH_PAIRS = 32


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future
    enqueued: float


class DynamicBatcher:
    """A ``Scorer`` that merges concurrent requests into shared model calls on one worker thread.

    >>> batcher = DynamicBatcher(BGEReranker("tests/fixtures/checkpoints/encoder", device="cpu"))
    >>> async def score_once(batcher):
    ...     await batcher.start()
    ...     try:
    ...         return await batcher.score([("q", "a"), ("q", "b")], {"normalize": True})
    ...     finally:
    ...         await batcher.stop()
    >>> asyncio.run(score_once(batcher))
    ScoredPairs(scores=[0.74..., 0.70...], tokens=[7, 7], spans=[None, None])
    """

    def __init__(
        self,
        reranker: BGEReranker,
        *,
        max_batch_pairs: int | None = None,
        max_wait_ms: float = 5.0,
        max_queue_pairs: int = 8192,
        metrics: Metrics | None = None,
    ) -> None:
        if max_batch_pairs is None:
            max_batch_pairs = CPU_BATCH_PAIRS if reranker.device.type == "cpu" else ACCELERATOR_BATCH_PAIRS
        if max_batch_pairs < 1 or max_queue_pairs < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_pairs and max_queue_pairs must be >= 1 and max_wait_ms >= 0.")
        self.reranker = reranker
        self.max_batch_pairs = max_batch_pairs
        self.max_wait = max_wait_ms / 1000
        self.max_queue_pairs = max_queue_pairs
        self.metrics = metrics or Metrics()
        self.ready = False
        self.queued_pairs = 0
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()  # replaced by start()'s, made on the serving loop
        self._dispatcher: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Load the model (in the worker thread) and start dispatching."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bge-rerank-model")
        self._wakeup = asyncio.Event()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.reranker.load)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="bge-rerank-dispatcher")
        self.ready = True

    async def stop(self) -> None:
        """Finish what is queued, then stop the dispatcher and the worker thread."""
        self.ready = False
        while self._queue and self._dispatcher is not None and not self._dispatcher.done():
            await asyncio.sleep(0.01)
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def describe(self) -> dict[str, Any]:
        """The batching limits, for ``/info``."""
        return {
            "max_batch_pairs": self.max_batch_pairs,
            "max_wait_ms": self.max_wait * 1000,
            "max_queue_pairs": self.max_queue_pairs,
        }

    async def score(self, pairs: Sequence[Pair], options: Mapping[str, Any]) -> ScoredPairs:
        """Queue ``pairs`` and wait for their scores; cancelling the wait drops them from the queue."""
        if not self.ready:
            raise Overloaded("The model is not ready (loading or shutting down).")
        if self.queued_pairs and self.queued_pairs + len(pairs) > self.max_queue_pairs:
            raise Overloaded(
                f"The queue is full ({self.queued_pairs} pairs waiting, at most {self.max_queue_pairs}): retry shortly."
            )
        loop = asyncio.get_running_loop()
        pending = _Pending(Job(list(pairs), dict(options)), loop.create_future(), loop.time())
        self._queue.append(pending)
        self._set_queued(self.queued_pairs + len(pairs))
        self._wakeup.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            if pending in self._queue:
                self._queue.remove(pending)
                self._set_queued(self.queued_pairs - len(pairs))
                self.metrics.cancelled_pairs.inc(len(pairs))
                logger.info("Client went away: dropped %d queued pairs.", len(pairs))
            raise

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._queue[0].enqueued + self.max_wait
            while self._queue and self.queued_pairs < self.max_batch_pairs and deadline > loop.time():
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            self.metrics.batch_pairs.observe(sum(len(p.job.pairs) for p in batch))
            self.metrics.batch_requests.observe(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, score_jobs, self.reranker, [p.job for p in batch])
            except Exception as error:  # noqa: BLE001 - score_jobs reports per job; this is the executor failing
                results = [error] * len(batch)
            for pending, result in zip(batch, results):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    self.metrics.pairs.inc(len(result.scores))
                    pending.future.set_result(result)

    def _take(self) -> list[_Pending]:
        """The oldest request and those behind it, up to ``max_batch_pairs`` pairs (at least one request)."""
        batch: list[_Pending] = []
        size = 0
        while self._queue:
            count = len(self._queue[0].job.pairs)
            if batch and size + count > self.max_batch_pairs:
                break
            batch.append(self._queue.popleft())
            size += count
        self._set_queued(self.queued_pairs - size)
        return batch

    def _set_queued(self, pairs: int) -> None:
        self.queued_pairs = pairs
        self.metrics.queue_pairs.set(pairs)
