"""Running an evaluation: the first stage, then each configuration reranking its candidates, timed and measured.

Configurations that share a model and its load options share one load (its time is each one's
``load_s``); the model is freed before the next model loads, so each figure is that model's own.
Each configuration's results are written as soon as it finishes, so an interrupted sweep keeps them
and ``resume=True`` skips them.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configurations import Configuration, configurations
from .data import Dataset, load_beir
from .errors import EvaluationError, ScoringError
from .first_stage import FirstStage, first_stage
from .measure import latency, peak_rss_mb, reset_peak_rss
from .metrics import DEFAULT_METRICS, evaluate_run, parse_metrics
from .report import write_report
from .trec import write_run

logger = logging.getLogger(__name__)

RESULTS = "results.json"
SETUP = "setup.json"
RUNS = "runs"


@dataclass
class Results:
    """An evaluation's results: ``data`` is results.json's content; ``output`` the folder it was written to.

    ``queries``: how many were evaluated; ``notes``: queries not evaluated, or scoring 0 for want of
    candidates, by reason -> count (say them with the figures).
    """

    data: dict[str, Any]
    output: Path | None = None
    queries: int = 0
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def configurations(self) -> list[dict[str, Any]]:
        return self.data["configurations"]

    def table(self) -> str:
        """The results as a Markdown table, best first, with each metric's change against the first stage."""
        from .report import markdown_table

        return markdown_table(self.data)


def evaluate(
    dataset: str | os.PathLike[str] | Dataset,
    models: Sequence[str],
    *,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    split: str = "test",
    run: str | os.PathLike[str] | None = None,
    first_stage_method: str = "bm25",
    top_k: int = 100,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    output: str | os.PathLike[str] | None = None,
    resume: bool = False,
    device: str | None = None,
    api: str = "bge",
    progress: bool = True,
) -> Results:
    """Evaluate every model at every point of ``sweep`` on a BEIR ``dataset`` and return (and write) the results.

    ``models``: Hub ids, local checkpoint directories or rerank server URLs (``api``: the server's
    API). ``sweep``: option -> values (the grid of all combinations). The candidates are the top
    ``top_k`` of ``run`` (a TREC run file) or of ``first_stage_method`` (``"bm25"``). ``metrics``:
    ``"ndcg@10,mrr@10,recall@100"`` or a list of names. With ``output``, results.json, runs/,
    results.md and pareto.png are written there; ``resume`` keeps the configurations already there.

    >>> models = ["tests/fixtures/checkpoints/encoder"]
    >>> results = evaluate("tests/fixtures/beir-mini", models, progress=False)  # doctest: +SKIP
    >>> print(results.table())  # doctest: +SKIP
    """
    measures = parse_metrics(metrics)
    grid = configurations(models, sweep, device)
    data = dataset if isinstance(dataset, Dataset) else load_beir(dataset, split)
    rerankers = {configuration.name: _checked(configuration, api) for configuration in grid}
    stage = first_stage(data, run, first_stage_method, top_k)
    notes = {**data.skipped, **stage.notes}
    for reason, count in notes.items():
        logger.warning("Queries %s: %d.", reason, count)
    setup = {
        "dataset": str(data.path.resolve()),
        "split": data.split,
        "first_stage": stage.name,
        "top_k": stage.top_k,
        "metrics": list(measures),
        "queries": len(data.queries),
    }
    results: dict[str, Any] = {
        "first_stage": {"name": stage.name, "metrics": evaluate_run(stage.candidates, data.qrels, measures)},
        "configurations": [],
    }
    folder = Path(output) if output is not None else None
    done: dict[str, dict[str, Any]] = {}
    if folder is not None:
        done = _previous(folder, setup) if resume else {}
        if not resume and (folder / RESULTS).exists():
            logger.warning(
                "%s holds earlier results: they are replaced (pass resume=True / --resume to keep them).", folder
            )
        results["configurations"] = list(done.values())
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / SETUP, setup)
        _write_json(folder / RESULTS, results)
    todo = [c for c in grid if _key(c.record()) not in done]
    if len(todo) < len(grid):
        logger.warning("Resuming: %d of %d configurations are already in %s.", len(grid) - len(todo), len(grid), folder)
    bar = _progress(len(todo), "configurations", "config", progress)
    try:
        for group in _by_load(todo):
            for configuration, row in _run_group(group, rerankers, data, stage, measures, progress):
                results["configurations"].append(row)
                if folder is not None:
                    write_run(folder / row["run"], row.pop("_run"), tag=configuration.name, queries=list(data.queries))
                    _write_json(folder / RESULTS, results)
                else:
                    row.pop("_run")
                bar.update(1)
    finally:
        bar.close()
    if folder is not None:
        write_report(results, folder)
    return Results(results, folder, len(data.queries), notes)


def _by_load(configurations: Sequence[Configuration]) -> list[list[Configuration]]:
    """The configurations grouped by model and load options (one load each), groups and members in grid order."""
    groups: dict[str, list[Configuration]] = {}
    for configuration in configurations:
        groups.setdefault(_key({"model": configuration.model, "options": configuration.load_options}), []).append(
            configuration
        )
    return list(groups.values())


def _checked(configuration: Configuration, api: str) -> Any:
    """The configuration's reranker, built (not loaded) with its load options; its scoring options checked now.

    Scoring options go with each call (``compute_score(pairs, **options)``); checking them here
    rejects an option the model's family lacks (known from an official id or the checkpoint's
    config.json, without loading weights) before anything runs.
    """
    scoring = configuration.score_options
    cutoff = scoring.get("cutoff_layers")
    if isinstance(cutoff, (list, tuple)) and len(cutoff) > 1:
        raise EvaluationError(
            f"{configuration.name}: cutoff_layers={list(cutoff)} scores at several layers; "
            f"a configuration ranks by one: sweep them instead (cutoff_layers={','.join(map(str, cutoff))})."
        )
    try:
        if configuration.remote:
            load = sorted(configuration.load_options)
            if load:
                raise EvaluationError(
                    f"{configuration.name}: {', '.join(load)} choose how a model is loaded; "
                    "a server was loaded with its own: set them on the server."
                )
            from ..remote import RemoteReranker

            reranker: Any = RemoteReranker(configuration.model, api=api)
        else:
            from ..loading import resolve_checkpoint
            from ..reranker import BGEReranker

            reranker = BGEReranker(str(resolve_checkpoint(configuration.model)), **configuration.load_options)
        reranker.check_options(**scoring)
        return reranker
    except (ValueError, TypeError) as error:
        if isinstance(error, EvaluationError):
            raise
        raise EvaluationError(f"{configuration.name}: {error}") from None


def _run_group(
    group: list[Configuration],
    rerankers: dict[str, Any],
    data: Dataset,
    stage: FirstStage,
    measures: Mapping[str, Any],
    progress: bool,
) -> Iterator[tuple[Configuration, dict[str, Any]]]:
    """Configurations sharing one model load, in turn; the model is freed afterwards."""
    load_s, load_peak = None, None
    try:
        for configuration in group:
            reranker = rerankers[configuration.name]
            reset_peak_rss()
            try:
                if not configuration.remote and load_s is None:
                    _import_model_code(reranker.model_name_or_path)
                    started = time.perf_counter()
                    reranker.load()
                    load_s = round(time.perf_counter() - started, 3)
                    load_peak = peak_rss_mb()
                    logger.info("Loaded %s in %.2fs.", configuration.model, load_s)
                run, seconds = _score(configuration, reranker, data, stage, progress)
            except (
                ValueError,
                TypeError,
            ) as error:  # an option the loaded model cannot take (a layer beyond its depth)
                if isinstance(error, EvaluationError):
                    raise
                raise EvaluationError(f"{configuration.name}: {error}") from None
            row = {
                "model": configuration.model,
                "options": dict(configuration.options),
                "metrics": evaluate_run(run, data.qrels, measures),
                "latency": latency(seconds, stage.pairs),
                "peak_rss_mb": None if configuration.remote else max(peak_rss_mb(), load_peak or 0.0),
                "load_s": load_s,
                "run": f"{RUNS}/{configuration.name}.trec",
                "_run": run,
            }
            yield configuration, row
    finally:
        for configuration in group:  # drop this group's rerankers: the model is freed before the next one loads
            reranker = rerankers.pop(configuration.name)
            if configuration.remote:
                reranker.close()
        del reranker
        if not group[0].remote:
            from ..model_cache import clear_model_cache

            clear_model_cache()
            gc.collect()


def _import_model_code(path: str) -> None:
    """Import the model's code (its family, transformers' modeling module) before its load is timed.

    Importing e.g. transformers' XLM-RoBERTa module, or torch's compiler (which torch imports the
    first time a module initialises its parameters under a device context, as our decoder models
    do), takes seconds once per process: a cost of the first model evaluated, not of any model's load.
    """
    import torch._dynamo  # noqa: F401
    import transformers

    from ..families import detect_family, family_class
    from ..loading import read_config

    config = read_config(path)
    family_class(detect_family(path, config))
    for architecture in config.get("architectures") or []:
        getattr(transformers, architecture, None)


def _score(
    configuration: Configuration, reranker: Any, data: Dataset, stage: FirstStage, progress: bool
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Rerank each query's candidates (one call per query, timed); the run and the per-query seconds."""
    queries = [query_id for query_id in data.queries if stage.candidates[query_id]]
    first = queries[0]
    options = configuration.score_options
    reranker.compute_score(
        [(data.queries[first], data.corpus[next(iter(stage.candidates[first]))])], **options
    )  # warm-up
    run: dict[str, dict[str, float]] = {}
    seconds: list[float] = []
    bar = _progress(len(queries), configuration.name, "query", progress, leave=False)
    try:
        for query_id in queries:
            doc_ids = list(stage.candidates[query_id])
            pairs = [(data.queries[query_id], data.corpus[doc_id]) for doc_id in doc_ids]
            started = time.perf_counter()
            scores = reranker.compute_score(pairs, **options)
            seconds.append(time.perf_counter() - started)
            nan = sum(1 for score in scores if math.isnan(score))
            if nan:
                raise ScoringError(
                    f"{configuration.name}: {nan} of {len(scores)} scores of query {query_id!r} are NaN: "
                    "the model's weights or its precision are broken (try float32)."
                )
            run[query_id] = dict(zip(doc_ids, scores, strict=True))
            bar.update(1)
    finally:
        bar.close()
    return run, seconds


def _previous(folder: Path, setup: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The configurations already in ``folder`` (key -> row) whose run file is there, for ``resume``."""
    if not (folder / RESULTS).exists():
        return {}
    try:
        earlier_setup = json.loads((folder / SETUP).read_text(encoding="utf-8"))
        earlier = json.loads((folder / RESULTS).read_text(encoding="utf-8"))
        rows = earlier["configurations"]
        keys = [_key(row) for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EvaluationError(
            f"--resume: {folder} does not hold readable results ({error}); choose another --output."
        ) from None
    if earlier_setup != setup:
        changed = sorted(name for name in setup if earlier_setup.get(name) != setup[name])
        raise EvaluationError(
            f"--resume: {folder} holds results of another setup ({', '.join(changed)} differ); "
            "choose another --output, or drop --resume to replace them."
        )
    return {key: row for key, row in zip(keys, rows, strict=True) if (folder / row["run"]).is_file()}


def _key(record: Mapping[str, Any]) -> str:
    return json.dumps({"model": record["model"], "options": record["options"]}, sort_keys=True)


def _write_json(path: Path, content: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _progress(total: int, description: str, unit: str, enabled: bool, leave: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, leave=leave, disable=not enabled)
