"""Reading a BEIR-format directory: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

Every malformed line, duplicate id or judgement naming an unknown id is an ``EvaluationError``
naming the file and line; nothing is dropped silently. The queries evaluated are those of the
split's judgements that have at least one relevant (score > 0) document: a query judged with no
relevant document has no defined nDCG or recall and would score 0 under every configuration, so
it is left out and counted in ``Dataset.skipped``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EvaluationError, at

logger = logging.getLogger(__name__)

#: The header line of a BEIR qrels file.
QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass(frozen=True)
class Dataset:
    """A BEIR split ready to evaluate.

    ``corpus``: passage id -> text (title and text joined by a space, as BEIR and FlagEmbedding do);
    ``queries``: the evaluated queries, id -> text; ``qrels``: their judgements, query id ->
    {passage id: grade}; ``skipped``: why other queries are not evaluated -> how many.
    ``query_ids``: every id of ``queries.jsonl`` (a run may name queries of other splits).
    """

    path: Path
    split: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    query_ids: frozenset[str] = frozenset()
    skipped: dict[str, int] = field(default_factory=dict)


def load_beir(path: str | os.PathLike[str], split: str = "test") -> Dataset:
    """Read the BEIR directory ``path`` and its ``split``'s judgements.

    >>> data = load_beir("tests/fixtures/beir-mini")
    >>> len(data.queries), data.skipped
    (6, {'judged in test but no relevant document': 1})
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise EvaluationError(
            f"{os.fspath(path)!r} is not a directory: give a BEIR-format directory "
            "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."
        )
    corpus = {
        doc_id: _passage(record, root / "corpus.jsonl", line)
        for doc_id, record, line in _records(root / "corpus.jsonl")
    }
    all_queries = {
        query_id: _text(record, "text", root / "queries.jsonl", line)
        for query_id, record, line in _records(root / "queries.jsonl")
    }
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        present = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise EvaluationError(
            f"{os.fspath(qrels_path)} does not exist: the split {split!r} has no judgements "
            f"(splits here: {', '.join(present) or 'none'}); choose one with --split."
        )
    judged = read_qrels(qrels_path, all_queries, corpus)
    if not judged:
        raise EvaluationError(f"{os.fspath(qrels_path)} has no judgements: the split {split!r} is empty.")
    qrels = {query_id: grades for query_id, grades in judged.items() if any(grade > 0 for grade in grades.values())}
    skipped = {}
    if len(qrels) < len(judged):
        skipped[f"judged in {split} but no relevant document"] = len(judged) - len(qrels)
    if not qrels:
        raise EvaluationError(
            f"{os.fspath(qrels_path)}: no query has a relevant document (score > 0), nothing to evaluate."
        )
    queries = {query_id: all_queries[query_id] for query_id in qrels}
    return Dataset(root, split, corpus, queries, qrels, frozenset(all_queries), skipped)


def check_known_ids(
    where: str, query_id: str, doc_id: str, query_ids: Collection[str], corpus: Collection[str]
) -> None:
    """A qrels or run line (``where``) names a query of ``queries.jsonl`` and a passage of ``corpus.jsonl``."""
    if query_id not in query_ids:
        raise EvaluationError(f"{where}: query id {query_id!r} is not in queries.jsonl.")
    if doc_id not in corpus:
        raise EvaluationError(f"{where}: corpus id {doc_id!r} is not in corpus.jsonl.")


def read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, str]) -> dict[str, dict[str, int]]:
    """``qrels/<split>.tsv`` (header ``query-id corpus-id score``, then one tab-separated judgement a line)."""
    qrels: dict[str, dict[str, int]] = {}
    with numbered_lines(path) as lines:
        for number, line in lines:
            fields = line.rstrip("\r\n").split("\t")
            if number == 1:
                if tuple(field.strip() for field in fields) != QRELS_HEADER:
                    raise EvaluationError(
                        f"{at(path, 1)}: expected the header 'query-id<TAB>corpus-id<TAB>score', "
                        f"got {line.strip()[:80]!r}."
                    )
                continue
            if not line.strip():
                continue
            if len(fields) != 3:
                raise EvaluationError(
                    f"{at(path, number)}: expected 3 tab-separated fields "
                    f"(query-id, corpus-id, score), got {len(fields)}."
                )
            query_id, doc_id, grade = (field.strip() for field in fields)
            try:
                score = int(grade)
            except ValueError:
                raise EvaluationError(f"{at(path, number)}: the score {grade!r} is not an integer grade.") from None
            check_known_ids(at(path, number), query_id, doc_id, queries, corpus)
            grades = qrels.setdefault(query_id, {})
            if doc_id in grades:
                raise EvaluationError(f"{at(path, number)}: ({query_id!r}, {doc_id!r}) is judged twice.")
            grades[doc_id] = score
    return qrels


def _records(path: Path) -> Iterator[tuple[str, dict, int]]:
    """(id, record, line number) of each JSON line of ``path``; duplicate ids are an error."""
    seen: set[str] = set()
    with numbered_lines(path) as lines:
        for number, line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as error:
                raise EvaluationError(f"{at(path, number)} is not valid JSON ({error}).") from None
            if not isinstance(record, dict):
                raise EvaluationError(f"{at(path, number)}: expected a JSON object, got {type(record).__name__}.")
            record_id = record.get("_id")
            if isinstance(record_id, int) and not isinstance(record_id, bool):
                record_id = str(record_id)
            if not isinstance(record_id, str) or not record_id or any(ch.isspace() for ch in record_id):
                raise EvaluationError(
                    f"{at(path, number)}: '_id' must be a non-empty string without spaces "
                    f"(TREC runs and qrels separate fields by spaces), got {record.get('_id')!r}."
                )
            if record_id in seen:
                raise EvaluationError(f"{at(path, number)}: the id {record_id!r} appears twice.")
            seen.add(record_id)
            yield record_id, record, number
    if not seen:
        raise EvaluationError(f"{os.fspath(path)} holds no records.")


def _text(record: dict, key: str, path: Path, line: int) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise EvaluationError(f"{at(path, line)}: {key!r} must be a string, got {value!r}.")
    return value


def _passage(record: dict, path: Path, line: int) -> str:
    """A corpus record's text: its ``title`` (optional) and ``text`` joined by a space."""
    text = _text(record, "text", path, line)
    title = record.get("title") or ""
    if not isinstance(title, str):
        raise EvaluationError(f"{at(path, line)}: 'title' must be a string, got {title!r}.")
    passage = f"{title} {text}".strip()
    if not passage:
        raise EvaluationError(f"{at(path, line)}: the passage has neither title nor text.")
    return passage


@contextmanager
def numbered_lines(path: Path) -> Iterator[Iterator[tuple[int, str]]]:
    """The numbered lines of the UTF-8 text file ``path``.

    A missing, unreadable or non-UTF-8 file is an ``EvaluationError`` naming it (and the line).
    """
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the with below, after the errors are told apart
    except FileNotFoundError:
        raise EvaluationError(f"{os.fspath(path)} does not exist.") from None
    except OSError as error:
        raise EvaluationError(f"{os.fspath(path)} cannot be read ({error.strerror or error}).") from None
    with handle:
        yield _numbered(handle, path)


def _numbered(handle: Iterator[str], path: Path) -> Iterator[tuple[int, str]]:
    number = 0
    try:
        for number, line in enumerate(handle, 1):
            yield number, line
    except UnicodeDecodeError:
        raise EvaluationError(f"{at(path, number + 1)} is not UTF-8 text.") from None
