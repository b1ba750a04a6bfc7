"""TREC run files (``qid Q0 docid rank score tag``, one line per candidate): reading, writing, and trec_eval's order."""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from .data import check_known_ids, numbered_lines
from .errors import EvaluationError, at

#: A run: query id -> {passage id: score}.
Run = dict[str, dict[str, float]]


def trec_order(scores: Mapping[str, float]) -> list[str]:
    """Passage ids best first, as trec_eval ranks them: score descending, ties by id descending.

    The rank column of a run file is ignored by trec_eval; this order is what it evaluates.

    >>> trec_order({"a": 1.0, "b": 2.0, "c": 1.0})
    ['b', 'c', 'a']
    """
    return sorted(scores, key=lambda doc_id: (scores[doc_id], doc_id), reverse=True)


def read_run(path: str | os.PathLike[str], query_ids: Collection[str], corpus: Collection[str]) -> Run:
    """Read the TREC run ``path``; every query and passage it names must be in the dataset.

    Malformed lines, scores that are not finite numbers, unknown ids and a (query, passage) named
    twice are errors naming the file and line.
    """
    run: Run = {}
    path = Path(path)
    with numbered_lines(path) as lines:
        for number, line in lines:
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise EvaluationError(
                    f"{at(path, number)}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}."
                )
            query_id, _, doc_id, rank, score_text, _ = fields
            try:
                int(rank)
                score = float(score_text)
            except ValueError:
                raise EvaluationError(
                    f"{at(path, number)}: rank {rank!r} must be an integer and score {score_text!r} a number."
                ) from None
            if not math.isfinite(score):
                raise EvaluationError(f"{at(path, number)}: the score {score_text!r} is not a finite number.")
            check_known_ids(at(path, number), query_id, doc_id, query_ids, corpus)
            scores = run.setdefault(query_id, {})
            if doc_id in scores:
                raise EvaluationError(f"{at(path, number)}: ({query_id!r}, {doc_id!r}) appears twice in the run.")
            scores[doc_id] = score
    if not run:
        raise EvaluationError(f"{os.fspath(path)} holds no run lines.")
    return run


def write_run(
    path: str | os.PathLike[str], run: Mapping[str, Mapping[str, float]], tag: str, queries: Sequence[str] | None = None
) -> None:
    """Write ``run`` as a TREC run file: per query (in ``queries`` order, else the run's) every passage in trec_order.

    Scores are written in full precision, so reading the file back gives the same floats.
    """
    if not tag or any(ch.isspace() for ch in tag):
        raise ValueError(f"a run tag must be one word, got {tag!r}.")
    lines = []
    for query_id in run if queries is None else queries:
        scores = run.get(query_id, {})
        for rank, doc_id in enumerate(trec_order(scores), 1):
            lines.append(f"{query_id} Q0 {doc_id} {rank} {scores[doc_id]!r} {tag}\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(lines), encoding="utf-8")
    os.replace(partial, path)
