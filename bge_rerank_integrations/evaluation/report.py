"""The readable side of the results: results.md (the table, best first) and pareto.png (quality against latency).

Both are made from results.json's content alone, so a results folder can be re-plotted or
re-tabled later. The first metric of ``--metrics`` is the quality axis and orders the table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..extras import needs_extra

logger = logging.getLogger(__name__)

REPORT = "results.md"
PLOT = "pareto.png"


def ranked(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The configurations best first: by the first metric (higher first), then by median latency (lower first)."""
    primary = next(iter(results["first_stage"]["metrics"]))
    return sorted(results["configurations"], key=lambda row: (-row["metrics"][primary], row["latency"]["p50_ms"]))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, quality) that no other point beats on both, fastest first.

    A point is on the frontier when every faster (or equally fast) point has lower quality.

    >>> pareto_front([(10.0, 0.5), (20.0, 0.4), (30.0, 0.7), (5.0, 0.2)])
    [3, 0, 2]
    """
    front, best = [], float("-inf")
    for index in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def configuration_label(row: Mapping[str, Any]) -> str:
    """``run`` file name without folder and suffix: the configuration's name."""
    return Path(row["run"]).stem


def markdown_table(results: Mapping[str, Any]) -> str:
    """results.md's content: the first stage's figures, then every configuration best first."""
    stage = results["first_stage"]
    names = list(stage["metrics"])
    lines = [
        f"First stage: **{stage['name']}**: "
        + ", ".join(f"{name} {value:.4f}" for name, value in stage["metrics"].items()),
        "",
        "| # | configuration | "
        + " | ".join(f"{name} (Δ)" for name in names)
        + " | p50 ms | p95 ms | pairs/s | peak RSS MB | load s |",
        "|---:|---|" + "---:|" * len(names) + "---:|---:|---:|---:|---:|",
    ]
    for number, row in enumerate(ranked(results), 1):
        cells = [f"{row['metrics'][name]:.4f} ({row['metrics'][name] - stage['metrics'][name]:+.4f})" for name in names]
        timing = row["latency"]
        lines.append(
            f"| {number} | `{configuration_label(row)}` | "
            + " | ".join(cells)
            + f" | {timing['p50_ms']:.1f} | {timing['p95_ms']:.1f} | {_figure(timing['pairs_per_s'], '.0f')}"
            + f" | {_figure(row['peak_rss_mb'], '.0f')} | {_figure(row['load_s'], '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def write_report(results: Mapping[str, Any], folder: str | os.PathLike[str]) -> None:
    """Write results.md and pareto.png into ``folder``."""
    folder = Path(folder)
    (folder / REPORT).write_text(markdown_table(results), encoding="utf-8")
    if results["configurations"]:
        plot_pareto(results, folder / PLOT)


def plot_pareto(results: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Quality (the first metric) against median latency per query, one point per configuration, the frontier drawn."""
    with needs_extra("eval", "bge_rerank_integrations.evaluation"):
        from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched

    stage = results["first_stage"]
    primary = next(iter(stage["metrics"]))
    rows = results["configurations"]
    points = [(row["latency"]["p50_ms"], row["metrics"][primary]) for row in rows]
    front = pareto_front(points)
    figure = Figure(figsize=(7, 4.5), dpi=100)
    axes = figure.subplots()
    axes.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=3, label="configuration")
    axes.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        drawstyle="steps-post",
        color="tab:orange",
        marker="o",
        markersize=11,
        markerfacecolor="none",
        zorder=2,
        label="Pareto frontier",
    )
    for row, (x, y) in zip(rows, points, strict=True):
        axes.annotate(configuration_label(row), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.axhline(stage["metrics"][primary], color="grey", linestyle="--", label=f"first stage ({stage['name']})")
    axes.margins(x=0.2, y=0.1)  # room for the labels
    axes.set_xlabel("median latency per query (ms)")
    axes.set_ylabel(primary)
    axes.set_title(f"{primary} against latency")
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path)


def _figure(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
