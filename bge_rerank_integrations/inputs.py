"""Checking what callers pass in: pairs, texts and option values. Nothing here mutates its input."""

from __future__ import annotations

import decimal
import math
import numbers
import os
import string
from collections.abc import Sequence
from typing import Any

#: Largest length accepted for max_length and the like (tokenizers take lengths as machine integers).
MAX_INT = 2**31 - 1


def describe_layers(layers: Sequence[int]) -> str:
    """``8..42`` for a contiguous range of layers, else the list.

    >>> describe_layers([2, 3, 4, 5, 6]), describe_layers([4, 8])
    ('2..6', '4, 8')
    """
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))


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
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"The {what} holds a lone surrogate {text[error.start]!r} at character {error.start}, which is not "
            "valid Unicode: decode the text properly (e.g. errors='replace') before scoring."
        ) from None
    return text


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is an integer in ``[1, MAX_INT]``, else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= int(value) <= MAX_INT:
        raise ValueError(f"{name} must be a positive integer (at most {MAX_INT}), got {value!r:.60}.")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` if it is True or False (a string such as "no" would silently count as true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r:.60}.")
    return value


def check_score_threshold(value: Any) -> float | None:
    """``None``, or the threshold as a float: any real number (int, numpy float32, Decimal...), never NaN.

    >>> check_score_threshold(1), check_score_threshold(None)
    (1.0, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        raise ValueError(f"score_threshold must be a number or None, got {value!r:.60}.")
    threshold = float(value)
    if math.isnan(threshold):
        raise ValueError("score_threshold is NaN, which no score passes: pass a number or None.")
    return threshold


def check_instruction_format(value: Any, name: str) -> str:
    """Return ``value`` if it formats exactly ``(instruction, text)``: two plain ``{}`` fields, any literal ``{{ }}``.

    Fields take no name, index, format spec or conversion (a spec such as ``{:>99999999}`` would
    let a few bytes allocate gigabytes).

    >>> check_instruction_format("{}: {}{{x}}", "query_instruction_format")
    '{}: {}{{x}}'
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}.")
    try:
        fields = [
            (field, spec, conversion)
            for _, field, spec, conversion in string.Formatter().parse(value)
            if field is not None
        ]
    except ValueError as error:
        raise ValueError(f"{name}={value!r:.200} is not a valid format string ({error}).") from None
    if len(fields) != 2 or any(field != "" for field, _, _ in fields):
        raise ValueError(
            f"{name} must have exactly two '{{}}' fields (instruction, then text) and no named or numbered ones; "
            f"write literal braces as '{{{{' and '}}}}'. Got {value!r:.200}."
        )
    if any(spec or conversion is not None for _, spec, conversion in fields):
        # A spec such as {:>99999999} pads to any size: one short string could exhaust memory.
        raise ValueError(
            f"{name} fields take no format spec or conversion (such as '{{:>10}}' or '{{!r}}'): write plain '{{}}'; "
            f"got {value!r:.200}."
        )
    try:
        value.format("", "")
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name}={value!r} cannot format two texts ({error}).") from None
    return value


def check_cache_dir(value: Any) -> str | None:
    """``None`` or the directory as a string (a path-like is accepted)."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise TypeError(f"cache_dir must be a directory path or None, got {value!r:.60}.")
    return os.fspath(value)


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
