"""The first stage: the candidates each query's reranking starts from, from a TREC run file or from BM25.

Either way the candidates are the run's top ``top_k`` per evaluated query, in trec_eval's order;
that truncated run is the baseline every configuration is compared with (its metrics are the
"first stage" row), and the candidates are what every configuration reranks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..extras import needs_extra
from .data import Dataset
from .errors import EvaluationError
from .trec import Run, read_run, trec_order

logger = logging.getLogger(__name__)

#: First stages computed here (``--first-stage``).
FIRST_STAGES = ("bm25",)


@dataclass(frozen=True)
class FirstStage:
    """The candidates of each evaluated query (passage id -> first-stage score, at most ``top_k``).

    ``notes``: what is worth knowing about the run -> how many queries (queries of other splits
    that a run file names and that are not reranked; evaluated queries without any candidate, which
    score 0 on every metric, as with ``trec_eval -c``).
    """

    name: str
    top_k: int
    candidates: Run
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def pairs(self) -> int:
        """How many (query, passage) pairs a configuration scores."""
        return sum(len(scores) for scores in self.candidates.values())


def first_stage(
    dataset: Dataset, run: str | os.PathLike[str] | None = None, method: str = "bm25", top_k: int = 100
) -> FirstStage:
    """The first stage of ``dataset``: the TREC run file ``run`` if given, else ``method`` (``"bm25"``)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise EvaluationError(f"top_k must be a positive number of candidates per query, got {top_k!r}.")
    notes: dict[str, int] = {}
    if run is not None:
        full = read_run(run, dataset.query_ids, dataset.corpus)
        outside = sum(1 for query_id in full if query_id not in dataset.queries)
        if outside:
            notes[f"named by the run but not evaluated in {dataset.split}: not reranked"] = outside
        name = os.path.basename(os.fspath(run))
    elif method == "bm25":
        full = bm25(dataset, top_k)
        name = "bm25"
    else:
        raise EvaluationError(
            f"unknown first stage {method!r}: choose one of {', '.join(FIRST_STAGES)}, or give a run file."
        )
    candidates = {}
    for query_id in dataset.queries:
        scores = full.get(query_id, {})
        candidates[query_id] = {doc_id: scores[doc_id] for doc_id in trec_order(scores)[:top_k]}
    empty = sum(1 for scores in candidates.values() if not scores)
    if empty:
        notes["evaluated with no candidate from the first stage: they score 0"] = empty
    if empty == len(candidates):
        raise EvaluationError(
            f"the first stage ({name}) gives no candidate for any query of the {dataset.split} split."
        )
    return FirstStage(name, top_k, candidates, notes)


def bm25(dataset: Dataset, top_k: int) -> Run:
    """BM25 (bm25s, Lucene's variant, k1=1.5, b=0.75) over the corpus for each evaluated query.

    English stopwords are removed and words stemmed with the Snowball English stemmer (PyStemmer).
    Only passages sharing a term with the query are returned (as Lucene does), at most ``top_k``.
    """
    with needs_extra("eval", "bge_rerank_integrations.evaluation"):
        import bm25s  # type: ignore[import-untyped]
        import Stemmer  # type: ignore[import-not-found]

    stemmer = Stemmer.Stemmer("english")
    doc_ids = list(dataset.corpus)
    query_ids = list(dataset.queries)
    quiet = logging.getLogger("bm25s")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))  # bm25s logs each index build at DEBUG on its own logger
    try:
        index = bm25s.BM25()
        index.index(
            bm25s.tokenize([dataset.corpus[d] for d in doc_ids], stopwords="en", stemmer=stemmer, show_progress=False),
            show_progress=False,
        )
        tokens = bm25s.tokenize(
            [dataset.queries[q] for q in query_ids], stopwords="en", stemmer=stemmer, show_progress=False
        )
        found, scores = index.retrieve(tokens, k=min(top_k, len(doc_ids)), show_progress=False, n_threads=1)
    finally:
        quiet.setLevel(level)
    logger.info(
        "BM25 retrieved the top %d of %d passages for %d queries.",
        min(top_k, len(doc_ids)),
        len(doc_ids),
        len(query_ids),
    )
    return {
        query_id: {doc_ids[int(i)]: float(s) for i, s in zip(found[row], scores[row], strict=True) if s > 0}
        for row, query_id in enumerate(query_ids)
    }
