"""Evaluate rerankers on a BEIR-format dataset: quality (trec_eval's metrics) and latency of every model and setting.

>>> from bge_rerank_integrations.evaluation import evaluate
>>> results = evaluate(                                                     # doctest: +SKIP
...     "my-beir-dataset", ["BAAI/bge-reranker-v2-minicpm-layerwise"],
...     sweep={"cutoff_layers": [20, 28, 40]}, first_stage_method="bm25", top_k=100, output="eval-out",
... )
>>> print(results.table())                                                  # doctest: +SKIP

``bge-rerank eval`` is the same on the command line. Needs the ``eval`` extra
(``pip install "bge-rerank-integrations[eval]"``: ir-measures, bm25s, PyStemmer, matplotlib).
"""

from __future__ import annotations

from .configurations import Configuration, configurations, parse_sweep
from .data import Dataset, load_beir
from .errors import EvaluationError, ScoringError
from .first_stage import FirstStage, first_stage
from .metrics import DEFAULT_METRICS, evaluate_run, parse_metrics
from .report import markdown_table, pareto_front, plot_pareto
from .runner import Results, evaluate
from .trec import read_run, trec_order, write_run

__all__ = [
    "DEFAULT_METRICS",
    "Configuration",
    "Dataset",
    "EvaluationError",
    "FirstStage",
    "Results",
    "ScoringError",
    "configurations",
    "evaluate",
    "evaluate_run",
    "first_stage",
    "load_beir",
    "markdown_table",
    "pareto_front",
    "parse_metrics",
    "parse_sweep",
    "plot_pareto",
    "read_run",
    "trec_order",
    "write_run",
]
