"""Input assembly shared by every decoder family (llm, layerwise, lightweight).

The reference tokenizes every piece on its own (no special tokens) and joins the ids::

    first  = [bos] + tok(query)[:query_max_length]
    second = tok(sep) + tok(passage)[:max_length]
    pair   = first + second, only ``second`` cut to max_length + len(sep) + len(prompt)
    ids    = pair + tok(sep) + tok(prompt)

then pads each batch to a multiple of 8 on the tokenizer's padding side, and scores the
last real token. Instructions ("A: " / "B: ") are already part of query and passage here.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .base import Encoded
from .chunking import passage_windows, token_bound, tokenize_passages

logger = logging.getLogger(__name__)

#: Prompt of the llm and layerwise rerankers.
DEFAULT_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)
#: Instructions the decoder rerankers apply when the caller gives none.
DEFAULT_QUERY_INSTRUCTION = "A: "
DEFAULT_PASSAGE_INSTRUCTION = "B: "
#: Text between query, passage and prompt.
SEPARATOR = "\n"
#: Padded batches are this many tokens long, or a multiple of it.
PAD_MULTIPLE = 8

BosRule = Literal["auto", "always", "never"]
Side = Literal["left", "right"]


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def bos_ids(tokenizer: Any, rule: BosRule) -> list[int]:
    """The BOS prefix under ``rule``.

    ``"auto"`` (llm): BOS only when the tokenizer has one that differs from its pad token.
    ``"always"`` (layerwise, lightweight): the reference always prepends it, so a tokenizer
    without one is an error. ``"never"``: no prefix.
    """
    bos, pad = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "pad_token_id", None)
    if rule == "never":
        return []
    if rule == "auto":
        return [bos] if bos is not None and bos != pad else []
    if bos is None:
        raise ValueError("This reranker prepends a BOS token, but the checkpoint's tokenizer defines none.")
    return [bos]


@dataclass(frozen=True)
class PromptPieces:
    """Token ids of the fixed pieces around query and passage."""

    bos: tuple[int, ...]
    sep: tuple[int, ...]
    prompt: tuple[int, ...]

    @classmethod
    def build(cls, tokenizer: Any, prompt: str, bos: BosRule = "auto", separator: str = SEPARATOR) -> PromptPieces:
        """Tokenize ``prompt`` and ``separator`` and pick the BOS prefix by ``bos``."""
        return cls(
            tuple(bos_ids(tokenizer, bos)), tuple(token_ids(tokenizer, separator)), tuple(token_ids(tokenizer, prompt))
        )

    @property
    def tail(self) -> list[int]:
        """What follows the passage: separator then prompt."""
        return [*self.sep, *self.prompt]


def _cut(ids: list[int], keep: int, side: str) -> list[int]:
    """Keep ``keep`` ids, dropping from the right (or the left when ``side == "left"``)."""
    keep = max(keep, 0)
    if keep >= len(ids):
        return ids
    return ids[len(ids) - keep :] if side == "left" else ids[:keep]


def assemble(
    query_ids: Sequence[int],
    passage_ids: Sequence[int],
    template: PromptPieces,
    max_length: int,
    max_positions: int | None = None,
    truncation_side: str = "right",
) -> tuple[Encoded, bool]:
    """Join already-truncated query and passage ids as the reference does; also tell whether the pair was cut.

    ``query_length`` is ``len(bos + query + sep)`` and ``prompt_length`` is ``len(sep + prompt)``,
    the reference lightweight reranker's segment lengths. The result never exceeds ``max_positions``
    (the returned flag says whether the pair had to be cut to it).
    """
    first = [*template.bos, *query_ids]
    second = [*template.sep, *passage_ids]
    budget = max_length + len(template.sep) + len(template.prompt)
    excess = len(first) + len(second) - budget
    # The reference's "only_second" truncation: when the second part is not longer than the
    # excess it is left whole (the reference only logs an error), so the pair stays over budget.
    if 0 < excess < len(second):
        second = _cut(second, len(second) - excess, truncation_side)
    tail = template.tail
    if max_positions is not None and len(first) + len(second) + len(tail) > max_positions:
        # Divergence from the reference, which would feed more tokens than the model has
        # positions (a long query_max_length, or max_length near the model's limit). We cap the
        # query so the pair fits: it keeps at least half of the room (or all it needs), the
        # passage takes the rest, and separator and prompt stay whole.
        room = max_positions - len(tail)
        if room < len(template.bos) + len(template.sep):
            raise ValueError(
                f"The prompt is {len(tail)} tokens long: it leaves no room for a pair in {max_positions} positions."
            )
        reserve = min(len(second), room // 2)
        first = first[: max(room - reserve, len(template.bos))]
        second = _cut(second, room - len(first), truncation_side)
        return Encoded(
            first + second + tail, query_length=len(first) + len(template.sep), prompt_length=len(tail)
        ), True
    query_length = len(template.bos) + len(query_ids) + len(template.sep)
    return Encoded(first + second + tail, query_length=query_length, prompt_length=len(tail)), False


def encode_pairs(
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    prompt: str,
    max_length: int,
    query_max_length: int,
    max_positions: int | None = None,
    bos: BosRule = "auto",
    separator: str = SEPARATOR,
    batch_size: int | None = None,
    max_chunks: int = 1,
    chunk_overlap: int | None = None,
    passage_starts: Sequence[int] | None = None,
) -> list[Encoded]:
    """Tokenize and assemble ``pairs`` (instructions already applied) for a decoder reranker.

    Query and passage are truncated on their own to ``query_max_length`` and ``max_length`` on
    the tokenizer's truncation side, then joined by :func:`assemble`. No result exceeds
    ``max_positions`` when it is given. With ``batch_size`` and left padding, each pair also
    carries the position offset the reference's batches of that size give it
    (:func:`reference_position_offsets`), so that scores do not depend on how we batch.

    With ``max_chunks > 1`` a passage that truncation cuts gives up to that many windows
    (:mod:`.chunking`), each assembled as the pair (query, window ids), prompt and all; position
    offsets are then those of the reference's batches over every window as its own pair, window 0
    keyed as the truncated pair (the reference given the whole passage), the others by their ids.
    """
    if not pairs:
        return []
    template = PromptPieces.build(tokenizer, prompt, bos=bos, separator=separator)
    queries = tokenizer([q for q, _ in pairs], add_special_tokens=False, truncation=True, max_length=query_max_length)[
        "input_ids"
    ]
    texts = [p for _, p in pairs]
    if max_chunks == 1:
        passages, offsets = (
            tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"],
            None,
        )
    else:
        passages, offsets = tokenize_passages(tokenizer, texts, token_bound(max_chunks, max_length))
    side = getattr(tokenizer, "truncation_side", "right")
    results, keys = [], []
    for index, (query, passage) in enumerate(zip(queries, passages)):
        first_window = passage[:max_length]
        item, cut = assemble(query, first_window, template, max_length, max_positions, side)
        results.append((item, cut))
        keys.append(len(query) + len(first_window))  # window 0 is keyed as the truncated pair
        if offsets is None:
            continue
        start = passage_starts[index] if passage_starts is not None else 0
        windows = passage_windows(
            item,
            max(len(item) - item.query_length - item.prompt_length, 0),
            passage,
            offsets[index],
            start,
            len(texts[index]) - start,
            max_chunks,
            chunk_overlap,
            functools.partial(
                assemble,
                query,
                template=template,
                max_length=max_length,
                max_positions=max_positions,
                truncation_side=side,
            ),
        )
        results[-1] = (windows[0][0], cut)
        results.extend(window[:2] for window in windows[1:])
        keys.extend(len(query) + length for _, _, length in windows[1:])
    capped = sum(cut for _, cut in results)
    if capped:
        logger.warning(
            "%d of %d pairs were longer than the model's %d positions and were cut (the query was capped); "
            "lower query_max_length or max_length to avoid it.",
            capped,
            len(results),
            max_positions,
        )
    encoded = [item for item, _ in results]
    if batch_size is None or padding_side(tokenizer) != "left":
        return encoded
    offsets_ = reference_position_offsets(keys, [len(item) for item in encoded], batch_size)
    return [dataclasses.replace(item, position_offset=offset) for item, offset in zip(encoded, offsets_)]


def reference_position_offsets(keys: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[int]:
    """The left padding each sequence gets in the reference's batches, which fixes its RoPE positions.

    The reference sorts pairs by ``len(query ids) + len(passage ids)`` (numpy's argsort of the
    negated keys), cuts batches of ``batch_size`` and left-pads each batch to a multiple of 8,
    numbering positions from the first pad. A pair's score therefore depends on its batch; we
    batch differently (by padding cost), so we give each row the positions it had there.

    >>> reference_position_offsets([5, 9, 7], [6, 10, 8], batch_size=2)
    [2, 6, 8]
    """
    import numpy as np

    order = np.argsort([-key for key in keys]).tolist()
    offsets = [0] * len(keys)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = padded_length(max(lengths[i] for i in batch))
        for i in batch:
            offsets[i] = width - lengths[i]
    return offsets


@dataclass(frozen=True)
class PaddedBatch:
    """A padded batch: ids, 0/1 mask, each token's position, and where each row's last real token is."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    last_index: torch.Tensor
    lengths: torch.Tensor
    position_ids: torch.Tensor


def padded_length(longest: int, multiple_of: int = PAD_MULTIPLE) -> int:
    """``longest`` rounded up to a multiple of ``multiple_of``.

    >>> padded_length(13), padded_length(16)
    (16, 16)
    """
    return -(-longest // multiple_of) * multiple_of


def pad_batch(
    sequences: Sequence[Sequence[int]] | Sequence[Encoded],
    pad_id: int,
    side: Side = "left",
    multiple_of: int = PAD_MULTIPLE,
    device: torch.device | str | None = None,
    mask_dtype: torch.dtype = torch.long,
) -> PaddedBatch:
    """Pad id sequences (or :class:`Encoded`) to a common length that is a multiple of ``multiple_of``.

    Real tokens are numbered from each :class:`Encoded`'s ``position_offset`` (0 for plain id
    lists); padding gets position 0.

    >>> b = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left", multiple_of=4)
    >>> b.input_ids.tolist(), b.attention_mask.tolist(), b.last_index.tolist(), b.position_ids.tolist()
    ([[0, 5, 6, 7], [0, 0, 0, 8]], [[0, 1, 1, 1], [0, 0, 0, 1]], [3, 3], [[0, 0, 1, 2], [0, 0, 0, 0]])
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    rows = [list(s.input_ids) if isinstance(s, Encoded) else list(s) for s in sequences]
    if not rows or not all(rows):
        raise ValueError("pad_batch needs at least one sequence and no empty sequence")
    offsets = [s.position_offset if isinstance(s, Encoded) else 0 for s in sequences]
    width = padded_length(max(len(r) for r in rows), multiple_of)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=mask_dtype)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, offset) in enumerate(zip(rows, offsets)):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
        positions[i, span] = torch.arange(offset, offset + len(row))
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    last = torch.full_like(lengths, width - 1) if side == "left" else lengths - 1
    return PaddedBatch(ids.to(device), mask.to(device), last.to(device), lengths.to(device), positions.to(device))


def pad_token_id(tokenizer: Any) -> int:
    """The id to pad with: the pad token, else EOS, else 0 (padded positions are masked anyway)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def padding_side(tokenizer: Any) -> Side:
    """The tokenizer's padding side (left when unset, as for Gemma and Llama tokenizers)."""
    return "right" if getattr(tokenizer, "padding_side", "left") == "right" else "left"
