"""The one error of the evaluation: bad input (a file, a line, an option), said so that it can be fixed."""

from __future__ import annotations

import os


class EvaluationError(ValueError):
    """Bad evaluation input: a missing or malformed file, a line naming an unknown id, an empty split, a bad option.

    The message names the file and line where there is one, and what to do about it.
    """


def at(path: str | os.PathLike[str], line: int | None = None) -> str:
    """Where a problem is, for messages: the file, and the line when there is one.

    >>> at("data/qrels/test.tsv", 4)
    'data/qrels/test.tsv line 4'
    """
    return f"{os.fspath(path)} line {line}" if line is not None else os.fspath(path)


class ScoringError(RuntimeError):
    """A configuration could not be scored meaningfully (NaN scores from broken weights or precision)."""
