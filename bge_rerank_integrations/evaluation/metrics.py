"""Quality metrics, computed by ir-measures (trec_eval's definitions, through pytrec_eval).

``--metrics`` names are ours (``ndcg@10``, ``mrr@10``, ``recall@100``, ``precision@5``, ``map``)
or any ir-measures name (``nDCG@10``, ``RR(rel=2)@10``, ``R@1000``...). Each query's value counts
once in the mean over the evaluated queries; a query the run has no candidate for scores 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..extras import needs_extra
from .errors import EvaluationError
from .trec import trec_order

#: The default ``--metrics``.
DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100")

#: Our lower-case names -> ir-measures' measure names (trec_eval: ndcg_cut, recip_rank, recall, P, map).
ALIASES = {
    "ndcg": "nDCG",
    "mrr": "RR",
    "rr": "RR",
    "recall": "R",
    "r": "R",
    "precision": "P",
    "p": "P",
    "map": "AP",
    "ap": "AP",
}


def parse_metrics(names: str | Sequence[str]) -> dict[str, Any]:
    """``"ndcg@10,mrr@10"`` (or a list of names) -> {name as given: ir-measures measure}, in order.

    >>> parse_metrics("ndcg@10,mrr@10,recall@100")
    {'ndcg@10': nDCG@10, 'mrr@10': RR@10, 'recall@100': R@100}
    """
    with needs_extra("eval", "bge_rerank_integrations.evaluation"):
        import ir_measures

    if isinstance(names, str):
        names = [name.strip() for name in names.split(",")]
    measures: dict[str, Any] = {}
    for name in names:
        if not name:
            raise EvaluationError("an empty metric name: give comma-separated names such as ndcg@10,mrr@10,recall@100.")
        if name in measures:
            raise EvaluationError(f"the metric {name!r} is asked for twice.")
        base, at, cutoff = name.partition("@")
        if base.lower() in ALIASES and (not at or (cutoff.isdigit() and int(cutoff) > 0)):
            spelled = ALIASES[base.lower()] + (f"@{cutoff}" if at else "")
        else:
            spelled = name
        try:
            measures[name] = ir_measures.parse_measure(spelled)
        except (ValueError, TypeError, NameError, SyntaxError) as error:
            raise EvaluationError(
                f"unknown metric {name!r} ({error}): use ndcg@K, mrr@K, recall@K, precision@K, map, "
                "or an ir-measures name such as nDCG@10 or RR(rel=2)@10."
            ) from None
    return measures


def evaluate_run(
    run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], measures: Mapping[str, Any]
) -> dict[str, float]:
    """The mean of each metric over the queries of ``qrels`` (queries the run lacks score 0), keyed as in ``measures``.

    ``run``'s passages are ranked as trec_eval ranks them (score descending, ties by id descending).
    """
    with needs_extra("eval", "bge_rerank_integrations.evaluation"):
        import ir_measures

    names = {measure: name for name, measure in measures.items()}
    totals = dict.fromkeys(measures, 0.0)
    # Each measure sees trec_eval's ranking: the run's scores become distinct descending ranks here, so that
    # providers that break ties otherwise (ir-measures computes RR@k with the MS MARCO script) rank alike.
    present = {
        query_id: {doc_id: float(len(scores) - position) for position, doc_id in enumerate(trec_order(scores))}
        for query_id, scores in run.items()
        if query_id in qrels and scores
    }
    if present:
        judged = {query_id: dict(qrels[query_id]) for query_id in present}
        for value in ir_measures.iter_calc(list(measures.values()), judged, present):
            totals[names[value.measure]] += value.value
    return {name: total / len(qrels) for name, total in totals.items()}
