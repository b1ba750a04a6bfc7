"""Length-sorted batching with out-of-memory back-off."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from .device import is_out_of_memory

logger = logging.getLogger(__name__)

T = TypeVar("T")


def run_batches(
    items: Sequence[T],
    lengths: Sequence[int],
    batch_size: int,
    score: Callable[[list[T]], torch.Tensor],
    progress: Callable[[int], None] | None = None,
    max_padding: float | None = None,
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Score ``items`` in batches, longest first, and return the scores in input order.

    ``score`` maps a batch to a float tensor of shape ``(outputs, len(batch))``. Each batch is
    computed once. On an out-of-memory error the batch size is halved and the same batch is
    retried; the smaller size is kept for the rest of the call. Any other error propagates.

    ``max_padding`` (a fraction, e.g. 0.2) also ends a batch before the item that would make
    more than that share of its padded tokens padding. Where padded positions cost as much as
    real ones (CPU), this splits a call with passages of very different lengths into a few
    batches of similar lengths instead of padding every pair to the longest; ``None`` keeps
    batches of ``batch_size`` (better on GPUs, where fewer, larger launches win).

    ``max_tokens`` also ends a batch before its padded tokens (rows x the longest) would exceed
    it (a batch keeps at least one item): on CPU this bounds the activations a forward holds at
    once (a Gemma-2B MLP holds three ``tokens x 16,384`` float tensors) at no cost in speed.

    >>> run_batches(["a", "bbb", "cc"], [1, 3, 2], 2, lambda b: torch.tensor([[len(x) for x in b]]))
    tensor([[1., 3., 2.]])
    """
    if not items:
        raise ValueError("run_batches needs at least one item")
    order = sorted(range(len(items)), key=lambda i: -lengths[i])
    result: torch.Tensor | None = None
    size = batch_size
    start = 0
    while start < len(order):
        chunk = _next_chunk(order, start, size, lengths, max_padding, max_tokens)
        try:
            scores = score([items[i] for i in chunk])
        except Exception as error:  # anything but out-of-memory is re-raised
            if not is_out_of_memory(error) or len(chunk) == 1:
                raise
            size = len(chunk) // 2
            logger.warning("Out of memory on a batch of %d pairs: retrying with batches of %d.", len(chunk), size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        if result is None:
            result = torch.empty(scores.shape[0], len(items), dtype=torch.float32)
        result[:, chunk] = scores.float()
        start += len(chunk)
        if progress is not None:
            progress(len(chunk))
    assert result is not None  # items is not empty, so the loop scored at least one batch
    return result


def _next_chunk(
    order: list[int],
    start: int,
    size: int,
    lengths: Sequence[int],
    max_padding: float | None,
    max_tokens: int | None = None,
) -> list[int]:
    """The next batch: up to ``size`` items of ``order`` from ``start`` (longest first), cut where padding would
    exceed ``max_padding`` or padded tokens ``max_tokens``.

    >>> _next_chunk([0, 1, 2, 3], 0, 4, [300, 290, 280, 270], None, max_tokens=1000)
    [0, 1, 2]
    """
    chunk = order[start : start + size]
    width = max(lengths[chunk[0]], 1) if chunk else 1
    if max_tokens is not None:
        chunk = chunk[: max(1, max_tokens // width)]
    if max_padding is None or len(chunk) < 2:
        return chunk
    real = 0
    for count, index in enumerate(chunk):
        real += lengths[index]
        if count and 1 - real / (width * (count + 1)) > max_padding:
            return chunk[:count]
    return chunk
