"""Long passages: cutting a passage's tokens into overlapping windows, each scored as its own pair.

With ``max_chunks_per_passage=N > 1`` a passage whose tokens exceed the room its pair leaves it
(what the reference's truncation keeps, after query, instructions, prompt and special tokens under
``max_length``) becomes up to N windows of that room. Window 0 is exactly what truncation keeps;
each next window starts ``chunk_overlap`` tokens before the previous one ends; tokens past the N-th
window are dropped. A passage instruction ("B: ") heads every window, so each window reads as
``instruction + part of the passage``. The families assemble each window as the pair
(query, window ids), through the same code as a truncated pair: a window's score is the score
of that pair.

The passage is tokenized once, bounded to what N windows can use (``N * max_length`` ids), so
memory and time of the windows are bounded by N, not by the passage; the tokenizer itself still
reads the whole text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..inputs import MAX_INT
from .base import Encoded

#: The default overlap, as a share of a window: one eighth (see :func:`default_overlap`).
DEFAULT_OVERLAP_DIVISOR = 8


@dataclass(frozen=True)
class Window:
    """One window of a passage: the passage-segment ids (instruction + part of the passage) and its span.

    ``span`` is the ``(start, end)`` character range of the window's passage tokens in the passage
    (without its instruction), from the tokenizer's offsets, which refer to the original text even
    through a normalizer.
    """

    ids: list[int]
    span: tuple[int, int]


def default_overlap(width: int) -> int:
    """The overlap used when ``chunk_overlap`` is unset: an eighth of a window's passage tokens.

    Why an eighth: a sentence cut by one window's end is read whole by the next when it is shorter
    than the overlap (an eighth of 500 tokens is ~60 tokens, two or three sentences), while the
    overlap adds only 1/7 more windows for the same coverage. It scales with ``max_length`` and
    never leaves a window without room.

    >>> default_overlap(496), default_overlap(5)
    (62, 0)
    """
    return max(width, 0) // DEFAULT_OVERLAP_DIVISOR


def token_bound(max_chunks: int, max_length: int) -> int:
    """How many passage ids N windows can use at most: every window holds at most ``max_length`` of them."""
    return min(max_chunks * max_length, MAX_INT)


def tokenize_passages(
    tokenizer: Any, texts: Sequence[str], bound: int
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Ids and character offsets of ``texts`` (no special tokens), each cut to ``bound`` ids.

    The first ``max_length`` ids are those of the truncating tokenization (a right cut of the
    same list), so window 0 is exactly what truncation keeps.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "max_chunks_per_passage > 1 needs a fast tokenizer (a tokenizer.json) for the windows' character "
            "offsets; this checkpoint has only a slow tokenizer: use max_chunks_per_passage=1."
        )
    if getattr(tokenizer, "truncation_side", "right") != "right":
        raise ValueError(
            "max_chunks_per_passage > 1 needs a tokenizer that truncates on the right (window 0 is what truncation "
            "keeps); this tokenizer truncates on the left: use max_chunks_per_passage=1."
        )
    encoded = tokenizer(
        list(texts), add_special_tokens=False, truncation=True, max_length=bound, return_offsets_mapping=True
    )
    return [list(ids) for ids in encoded["input_ids"]], [[tuple(pair) for pair in o] for o in encoded["offset_mapping"]]


def split_windows(
    ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    kept: int,
    passage_start: int,
    passage_length: int,
    max_chunks: int,
    overlap: int | None,
) -> list[Window] | None:
    """The windows of one passage, or ``None`` when truncation keeps it whole (it is scored as today).

    ``ids``/``offsets``: the tokenized passage text (instruction included), bounded by
    :func:`token_bound`; ``kept``: how many of its ids truncation keeps in the pair (window 0);
    ``passage_start``: where the passage starts in that text (after its instruction).

    >>> ids, offsets = list(range(10)), [(i, i + 1) for i in range(10)]
    >>> [(w.ids, w.span) for w in split_windows(ids, offsets, 4, 0, 10, 3, 1)]
    [([0, 1, 2, 3], (0, 4)), ([3, 4, 5, 6], (3, 7)), ([6, 7, 8, 9], (6, 10))]
    """
    if len(ids) <= kept:
        return None
    head = 0
    if passage_start > 0:  # the instruction's own tokens head every window
        while head < len(ids) and offsets[head][1] <= passage_start:
            head += 1
    head = min(head, kept)
    width = kept - head
    overlap = default_overlap(width) if overlap is None else overlap
    if width <= overlap:
        raise ValueError(
            f"chunk_overlap={overlap} leaves a window no room: this pair leaves {max(width, 0)} passage tokens per window "
            "(max_length minus query, instructions, prompt and special tokens). Lower chunk_overlap, shorten the "
            "query (query_max_length) or raise max_length."
        )
    content = ids[head:]
    windows, start = [], 0
    for _ in range(max_chunks):
        end = min(start + width, len(content))
        first, last = offsets[head + start], offsets[head + end - 1]
        span = (_clamp(first[0] - passage_start, passage_length), _clamp(last[1] - passage_start, passage_length))
        windows.append(Window([*ids[:head], *content[start:end]], span))
        if end == len(content):
            break
        start = end - overlap
    return windows


def passage_windows(
    first: Encoded,
    kept: int,
    ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    passage_start: int,
    passage_length: int,
    max_chunks: int,
    overlap: int | None,
    assemble: Callable[[list[int]], tuple[Encoded, bool]],
) -> list[tuple[Encoded, bool, int]]:
    """Every window of one passage as a pair: ``(Encoded, capped, passage-segment length)`` each.

    ``first`` is the truncated pair (window 0, its ``capped`` flag already counted: ``False`` here);
    when truncation keeps the passage whole it is the only one (span ``None``). Later windows are
    ``assemble(window ids)``, the family's own pair assembly.
    """
    windows = split_windows(ids, offsets, kept, passage_start, passage_length, max_chunks, overlap)
    if windows is None:
        return [(first, False, kept)]
    pairs = [(dataclasses.replace(first, span=windows[0].span), False, kept)]
    for number, window in enumerate(windows[1:], start=1):
        item, capped = assemble(window.ids)
        pairs.append((dataclasses.replace(item, window=number, span=window.span), capped, len(window.ids)))
    return pairs


def _clamp(value: int, length: int) -> int:
    return min(max(value, 0), length)
