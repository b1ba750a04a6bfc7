"""The example notebooks: committed clean, and executed top to bottom against the small checkpoints.

Each notebook runs in a fresh python3 kernel of this interpreter, with ``BGE_RERANK_MODEL`` set
to the encoder fixture and ``BGE_RERANK_CHECKPOINTS`` to the fixture directory (the model tour
runs a second time with a directory that holds only the encoder, to exercise its skip notes).
All runs happen once per session, concurrently. Any cell error fails that notebook's test.

Key results are checked against ``BGEReranker`` computed here: the test appends a probe cell
that prints the notebook's own variables as JSON, and also parses the rankings the notebook
printed, so both what the notebook computed and what a user sees are covered.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from bge_rerank_integrations import BGEReranker  # noqa: E402

from .conftest import CHECKPOINTS, FAMILIES, TOLERANCE, checkpoint  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ENCODER = str(Path(checkpoint("encoder")).resolve())
PROBE_MARKER = "__NOTEBOOK_PROBE__"
CELL_TIMEOUT = 300
# Scores computed in the kernel (one torch thread) and here may differ in the last float bits.

LANGCHAIN = "01_langchain_rag.ipynb"
LLAMA_INDEX = "02_llama_index_rag.ipynb"
MODEL_TOUR = "03_model_tour.ipynb"

# Appended to a copy of each notebook: prints what the notebook computed, for the checks below.
PROBES = {
    LANGCHAIN: """
print("{marker}" + json.dumps({{
    "model": MODEL,
    "query": QUERY,
    "retrieved": [[d.id, d.page_content] for d in retrieved],
    "reranked": [[d.id, d.metadata["relevance_score"]] for d in reranked],
    "full": [[d.id, d.metadata["relevance_score"]] for d in full_ranking],
    "retriever": [d.id for d in final_documents],
    "from_config": from_config.model_dump(),
}}))
""",
    LLAMA_INDEX: """
print("{marker}" + json.dumps({{
    "model": MODEL,
    "query": QUERY,
    "retrieved": [[n.node.ref_doc_id, n.node.get_content(metadata_mode="embed")] for n in retrieved],
    "reranked": [[n.node.ref_doc_id, n.score] for n in reranked],
    "full": [[n.node.ref_doc_id, n.score] for n in full_ranking],
    "source_nodes": [[n.node.ref_doc_id, n.score] for n in response.source_nodes],
    "config": config,
    "loaded": loaded.to_dict(),
    "from_yaml_scores": [[n.node.ref_doc_id, n.score] for n in from_yaml.postprocess_nodes(retrieved, query_str=QUERY)],
}}))
""",
    MODEL_TOUR: """
print("{marker}" + json.dumps({{
    "available": available,
    "pairs": PAIRS,
    "raw": raw_scores,
    "normalized": normalized_scores,
    "layerwise": {{str(k): v for k, v in layer_scores.items()}} if rerankers["layerwise"] is not None else None,
    "lightweight": [[settings[name], setting_scores[name]] for name in settings] if rerankers["lightweight"] is not None else None,
}}))
""",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------
# Running the notebooks (once per session, concurrently)
# ------------------------------------------------------------------------------------------
def _kernel_manager(kernel_dir: Path):
    """A kernel manager whose only ``python3`` kernel is this interpreter (no user kernelspec can interfere)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = kernel_dir / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


async def _execute(name: str, checkpoints_dir: str, kernel_dir: Path, limit: asyncio.Semaphore) -> dict:
    """Run notebook ``name`` (plus its probe) and return its cells, probe data, or the error."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    notebook.cells.append(
        nbformat.v4.new_code_cell("import json\n" + PROBES[name].format(marker=PROBE_MARKER))
    )
    env = {
        **os.environ,
        "BGE_RERANK_MODEL": ENCODER,
        "BGE_RERANK_CHECKPOINTS": checkpoints_dir,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # tiny models: one thread is faster, and the runs share the cores
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    client = nbclient.NotebookClient(
        notebook,
        km=_kernel_manager(kernel_dir),
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    async with limit:
        try:
            await client.async_execute(env=env)
        except Exception as error:  # noqa: BLE001 - reported by the notebook's own test
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # no terminal colours in the report
            return {"cells": notebook.cells, "error": f"{type(error).__name__}: {message}"}
    return {"cells": notebook.cells, "error": None, "probe": _probe(notebook.cells[-1])}


def _probe(cell) -> dict:
    text = "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")
    line = next(line for line in text.splitlines() if line.startswith(PROBE_MARKER))
    return json.loads(line[len(PROBE_MARKER):])


@pytest.fixture(scope="session")
def executed(tmp_path_factory) -> dict:
    """Every notebook run once with all four checkpoints, and the model tour with the encoder only."""
    encoder_only = tmp_path_factory.mktemp("encoder_only")
    try:
        (encoder_only / "encoder").symlink_to(ENCODER, target_is_directory=True)
    except OSError:
        import shutil

        shutil.copytree(ENCODER, encoder_only / "encoder")
    full = str(CHECKPOINTS.resolve())
    runs = {
        LANGCHAIN: (LANGCHAIN, full),
        LLAMA_INDEX: (LLAMA_INDEX, full),
        MODEL_TOUR: (MODEL_TOUR, full),
        "tour_encoder_only": (MODEL_TOUR, str(encoder_only)),
    }

    async def run_all() -> dict:
        limit = asyncio.Semaphore(max(2, os.cpu_count() or 2))
        jobs = [
            _execute(name, checkpoints_dir, tmp_path_factory.mktemp("kernels"), limit)
            for name, checkpoints_dir in runs.values()
        ]
        return dict(zip(runs, await asyncio.gather(*jobs)))

    return asyncio.run(run_all())


def _result(executed: dict, key: str) -> dict:
    result = executed[key]
    if result["error"]:
        pytest.fail(f"{key} failed to run top to bottom:\n{result['error']}")
    return result


def _stdout(cells) -> str:
    return "".join(
        output.get("text", "")
        for cell in cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )


def _printed_ranking(cells, title: str) -> list[tuple[str, float]]:
    """The (id, score) rows a notebook printed under the line starting with ``title``."""
    lines = _stdout(cells).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 1 :]:
        match = re.match(r"^\s*\d+\.\s+(\S+)\s+(-?\d+\.\d+)\s", line)
        if not match:
            break
        rows.append((match.group(1), float(match.group(2))))
    return rows


def _images(cells) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def _assert_ranking(got: list, expected: list[tuple[str, float]]) -> None:
    assert [item[0] for item in got] == [item[0] for item in expected]
    for (doc_id, score), (_, want) in zip(got, expected):
        assert _close(score, want), (doc_id, score, want)


def _expected_ranking(model: str, query: str, retrieved: list, top_n=None) -> list[tuple[str, float]]:
    """What BGEReranker gives for the retrieved texts, as (id, score) best first."""
    ids = [doc_id for doc_id, _ in retrieved]
    results = BGEReranker(model, device="cpu").rerank(query, [text for _, text in retrieved], top_n=top_n)
    return [(ids[result.index], result.score) for result in results]


# ------------------------------------------------------------------------------------------
# The committed files
# ------------------------------------------------------------------------------------------
def _generator():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_is_executed_here():
    names = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(PROBES), "a notebook was added or removed: give it a probe and a test here"


@pytest.mark.parametrize("name", [LANGCHAIN, LLAMA_INDEX, MODEL_TOUR])
def test_notebook_is_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    if name == MODEL_TOUR:
        assert 'os.environ.get("BGE_RERANK_CHECKPOINTS")' in code
    else:
        assert 'os.environ.get("BGE_RERANK_MODEL", "BAAI/bge-reranker-v2-m3")' in code


@pytest.mark.parametrize("name", [LANGCHAIN, LLAMA_INDEX, MODEL_TOUR])
def test_notebook_matches_its_generator(name):
    assert (NOTEBOOKS / name).read_text(encoding="utf-8") == _generator().render(name), (
        f"{name} differs from notebooks/build_notebooks.py: edit the cells there and run "
        "`python notebooks/build_notebooks.py`."
    )


# ------------------------------------------------------------------------------------------
# Executed
# ------------------------------------------------------------------------------------------
def test_langchain_notebook(executed):
    result = _result(executed, LANGCHAIN)
    probe, cells = result["probe"], result["cells"]
    assert probe["model"] == ENCODER
    assert len(probe["retrieved"]) == 8

    everything = _expected_ranking(ENCODER, probe["query"], probe["retrieved"])
    _assert_ranking(probe["reranked"], everything[:3])
    _assert_ranking(probe["full"], everything)
    assert probe["retriever"] == [doc_id for doc_id, _ in everything[:3]]
    assert probe["from_config"]["normalize"] is True and probe["from_config"]["top_n"] == 3

    # What the user sees: the rankings printed before and after, in the order BGEReranker gives.
    _assert_ranking(_printed_ranking(cells, "After reranking"), everything[:3])
    _assert_ranking(_printed_ranking(cells, "ContextualCompressionRetriever"), everything[:3])
    before = _printed_ranking(cells, "Before reranking")
    assert [doc_id for doc_id, _ in before] == [doc_id for doc_id, _ in probe["retrieved"]]
    prompt = _stdout(cells).split("Human: ", 1)[1]
    assert [prompt.index(f"[{doc_id}]") for doc_id, _ in everything[:3]] == sorted(
        prompt.index(f"[{doc_id}]") for doc_id, _ in everything[:3]
    )


def test_llama_index_notebook(executed):
    result = _result(executed, LLAMA_INDEX)
    probe, cells = result["probe"], result["cells"]
    assert probe["model"] == ENCODER
    assert len(probe["retrieved"]) == 8

    everything = _expected_ranking(ENCODER, probe["query"], probe["retrieved"])
    _assert_ranking(probe["reranked"], everything[:3])
    _assert_ranking(probe["full"], everything)
    _assert_ranking(probe["source_nodes"], everything[:3])
    _assert_ranking(_printed_ranking(cells, "After reranking"), everything[:3])
    _assert_ranking(_printed_ranking(cells, "Query engine source nodes"), everything[:3])

    # Saving and loading the configuration: the same settings, and normalized scores.
    assert probe["config"]["class_name"] == "BGERerank"
    assert probe["config"]["model"] == ENCODER and probe["config"]["normalize"] is True
    assert probe["loaded"] == probe["config"]
    _assert_ranking(probe["from_yaml_scores"], [(doc_id, 1 / (1 + math.exp(-s))) for doc_id, s in everything[:3]])
    _assert_ranking(_printed_ranking(cells, "Rebuilt from YAML"), [(d, 1 / (1 + math.exp(-s))) for d, s in everything[:3]])
    assert "What the LLM received:" in _stdout(cells)


def test_model_tour_notebook(executed):
    result = _result(executed, MODEL_TOUR)
    probe, cells, printed = result["probe"], result["cells"], _stdout(result["cells"])
    assert probe["available"] == list(FAMILIES)
    assert "SKIPPED" not in printed
    assert _images(cells) == 3  # families, layerwise sweep, lightweight settings

    pairs = probe["pairs"]
    for family in FAMILIES:
        expected = BGEReranker(checkpoint(family), device="cpu").compute_score(pairs)
        assert all(_close(a, b) for a, b in zip(probe["raw"][family], expected)), family
        assert all(_close(a, 1 / (1 + math.exp(-b))) for a, b in zip(probe["normalized"][family], expected)), family

    layerwise = BGEReranker(checkpoint("layerwise"), device="cpu")
    assert len(probe["layerwise"]) >= 2
    for layer, scores in probe["layerwise"].items():
        expected = layerwise.compute_score(pairs, cutoff_layers=[int(layer)])
        assert all(_close(a, b) for a, b in zip(scores, expected)), layer

    lightweight = BGEReranker(checkpoint("lightweight"), device="cpu")
    knobs = set()
    for options, scores in probe["lightweight"]:
        knobs.update(options)
        expected = lightweight.compute_score(pairs, **options)
        assert all(_close(a, b) for a, b in zip(scores, expected)), options
    assert knobs == {"cutoff_layers", "compress_ratio", "compress_layers"}


def test_model_tour_skips_missing_families_with_a_note(executed):
    result = _result(executed, "tour_encoder_only")
    probe, printed = result["probe"], _stdout(result["cells"])
    assert probe["available"] == ["encoder"]
    for family in ("llm", "layerwise", "lightweight"):
        assert f"SKIPPED {family}" in printed
    assert probe["layerwise"] is None and probe["lightweight"] is None
    assert list(probe["raw"]) == ["encoder"]
    assert _images(result["cells"]) == 1  # only the families plot, with the encoder alone
