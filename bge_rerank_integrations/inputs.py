"""Checking what callers pass in: pairs, texts and option values. Nothing here mutates its input."""

from __future__ import annotations

from typing import Any, Sequence


def as_pairs(sentence_pairs: Any) -> tuple[list[tuple[str, str]], bool]:
    """Return ``(pairs, single)``: the pairs as tuples, and whether one bare pair was given.

    >>> as_pairs(["what is panda?", "hi"])
    ([('what is panda?', 'hi')], True)
    >>> as_pairs([])
    ([], False)
    """
    if isinstance(sentence_pairs, (str, bytes)) or not isinstance(sentence_pairs, Sequence):
        raise TypeError(
            f"sentence_pairs must be a [query, passage] pair or a list of such pairs, got {type(sentence_pairs).__name__}."
        )
    if len(sentence_pairs) == 2 and all(isinstance(item, str) for item in sentence_pairs):
        return [_check_pair(sentence_pairs, None)], True
    return [_check_pair(pair, index) for index, pair in enumerate(sentence_pairs)], False


def _check_pair(pair: Any, index: int | None) -> tuple[str, str]:
    where = "" if index is None else f" at index {index}"
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ValueError(f"Malformed pair{where}: expected [query, passage] (two strings), got {pair!r:.120}.")
    query, passage = pair
    return check_text(query, f"query{where}"), check_text(passage, f"passage{where}")


def check_text(text: Any, what: str) -> str:
    """Return ``text`` if it is a string, else raise a TypeError naming ``what``.

    Blank and whitespace-only texts are valid: they are scored as the reference scores them.

    >>> check_text("", "query")
    ''
    """
    if not isinstance(text, str):
        raise TypeError(f"The {what} must be a string, got {type(text).__name__}.")
    return text


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def check_layers(value: Any, name: str) -> tuple[int, ...] | None:
    """A layer list as a tuple of ints (``None`` stays ``None``); a bare int is one layer."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} must be a non-empty list of layer numbers, got {value!r}.")
    for layer in value:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"{name} must hold integers, got {layer!r} in {value!r}.")
    return tuple(value)
