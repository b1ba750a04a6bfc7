"""``BGERerank`` through LlamaIndex's own machinery: query engines, serialization, callbacks, instrumentation.

Scores are checked for exact equality against ``BGEReranker.compute_score`` on the text LlamaIndex
embeds; the small random checkpoints make every score distinct, so order is checked too.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

import bge_rerank_integrations
from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.adapter_support import LOAD_SETTINGS, SCORE_SETTINGS
from bge_rerank_integrations.llama_index import BGERerank

from .conftest import TOLERANCE, checkpoint, reference_score

ENCODER = checkpoint("encoder")
QUERY = "what is a panda?"
TEXTS = [
    "Paris is the capital of France.",
    "The giant panda is a bear native to China.",
    "hi",
    "Pandas eat bamboo almost exclusively.",
    "A red panda is not a bear.",
]


def make_nodes() -> list[TextNode]:
    """Nodes whose embed text differs from their raw text and from their LLM text."""
    return [
        TextNode(
            id_=f"node-{i}",
            text=text,
            metadata={"title": f"doc {i}", "secret": f"llm-only {i}"},
            excluded_embed_metadata_keys=["secret"],
        )
        for i, text in enumerate(TEXTS)
    ]


def scored(nodes: list[TextNode]) -> list[NodeWithScore]:
    return [NodeWithScore(node=node, score=0.1 * (i + 1)) for i, node in enumerate(nodes)]


_SCORES: dict = {}


def core_scores(query: str, **options: Any) -> list[float]:
    """The core's scores for ``make_nodes()``'s embed texts, in input order (cached: every call costs a forward)."""
    key = (query, tuple(sorted(options.items())))
    if key not in _SCORES:
        texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in make_nodes()]
        _SCORES[key] = BGEReranker(ENCODER, device="cpu").compute_score([(query, text) for text in texts], **options)
    return _SCORES[key]


def expected(query: str, top_n: int | None = 3, threshold: float | None = None, **options: Any):
    """(node id, score) best first, scored by the core on the embed text, threshold then top_n."""
    ranked = sorted(zip((node.node_id for node in make_nodes()), core_scores(query, **options)), key=lambda p: -p[1])
    if threshold is not None:
        ranked = [pair for pair in ranked if pair[1] >= threshold]
    return ranked[:top_n]


def ids_scores(nodes: list[NodeWithScore]):
    return [(item.node.node_id, item.score) for item in nodes]


def query_engine(rerank: BGERerank, callback_manager: CallbackManager | None = None):
    """A vector index over ``make_nodes()`` (mock embeddings, all retrieved) answering with MockLLM."""
    index = VectorStoreIndex(make_nodes(), embed_model=MockEmbedding(embed_dim=8))
    return RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=len(TEXTS)),
        llm=MockLLM(),
        node_postprocessors=[rerank],
        callback_manager=callback_manager,
    )


class Collect(BaseEventHandler):
    """Instrumentation handler that keeps every rerank event."""

    events: list[BaseEvent] = []  # noqa: RUF012 - pydantic field: copied per instance

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
            self.events.append(event)


@pytest.fixture
def instrumented():
    handler = Collect(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def test_guard_ranking_differs_from_input_order_and_embed_text_matters():
    # Guards the ordering assertions below: the reranked order must differ from retrieval order.
    order = [node_id for node_id, _ in expected(QUERY, top_n=None)]
    assert order != [node.node_id for node in make_nodes()]
    assert len({score for _, score in expected(QUERY, top_n=None)}) == len(TEXTS)
    # ... and scoring any other text than the embed text would change the scores.
    core = BGEReranker(ENCODER, device="cpu")
    for mode in (MetadataMode.NONE, MetadataMode.LLM):
        texts = [node.get_content(metadata_mode=mode) for node in make_nodes()]
        assert core.compute_score([(QUERY, text) for text in texts]) != core_scores(QUERY)


def test_is_a_node_postprocessor_with_every_setting_as_a_field():
    rerank = BGERerank(model=ENCODER, device="cpu", callback_manager=CallbackManager([]))
    assert isinstance(rerank, BaseNodePostprocessor)
    assert BGERerank.class_name() == "BGERerank"
    fields = set(BGERerank.model_fields)
    assert {"model", "top_n", "score_threshold", "keep_retrieval_score", *LOAD_SETTINGS, *SCORE_SETTINGS} <= fields
    assert rerank.top_n == 3 and rerank.keep_retrieval_score is False
    assert "callback_manager" not in rerank.to_dict()
    assert BGERerank(model=Path(ENCODER), device="cpu").to_dict()["model"] == ENCODER


def test_query_engine_reranks_source_nodes():
    rerank = BGERerank(model=ENCODER, device="cpu")
    response = query_engine(rerank).query(QUERY)
    assert ids_scores(response.source_nodes) == expected(QUERY)


async def test_aquery_runs_the_model_off_the_event_loop(monkeypatch):
    threads = []
    original = BGEReranker.score_groups  # rerank scores through score_groups (scores and best windows)

    def recording(self, *args, **kwargs):
        threads.append(threading.current_thread())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BGEReranker, "score_groups", recording)
    rerank = BGERerank(model=ENCODER, device="cpu", top_n=2)
    response = await query_engine(rerank).aquery(QUERY)
    seen = list(threads)  # before expected(), which scores on this thread
    assert ids_scores(response.source_nodes) == expected(QUERY, top_n=2)
    assert seen and all(thread is not threading.current_thread() for thread in seen)


async def test_concurrent_aqueries_each_get_their_own_ranking():
    engine = query_engine(BGERerank(model=ENCODER, device="cpu", top_n=None))
    queries = [QUERY, "capital of France", "bamboo", "red panda", "hello"]
    responses = await asyncio.gather(*(engine.aquery(query) for query in queries))
    for query, response in zip(queries, responses):
        assert ids_scores(response.source_nodes) == expected(query, top_n=None)


@pytest.mark.parametrize(
    "top_n, threshold_rank",
    [(None, None), (2, None), (0, None), (3, 1), (2, 3), (None, 4)],
)
def test_threshold_then_top_n(top_n, threshold_rank):
    everything = expected(QUERY, top_n=None)
    threshold = None if threshold_rank is None else everything[threshold_rank][1]
    rerank = BGERerank(model=ENCODER, device="cpu", top_n=top_n, score_threshold=threshold)
    result = rerank.postprocess_nodes(scored(make_nodes()), query_str=QUERY)
    assert ids_scores(result) == expected(QUERY, top_n=top_n, threshold=threshold)


def test_scoring_settings_are_forwarded():
    rerank = BGERerank(model=ENCODER, device="cpu", normalize=True, max_length=12, query_max_length=4, batch_size=2)
    result = rerank.postprocess_nodes(scored(make_nodes()), query_str=QUERY)
    options = dict(normalize=True, max_length=12, query_max_length=4, batch_size=2)
    assert ids_scores(result) == expected(QUERY, **options)
    assert ids_scores(result) != expected(QUERY, normalize=True)  # the lengths mattered


def test_keep_retrieval_score_copies_the_node_and_hides_the_key():
    nodes = scored(make_nodes())
    rerank = BGERerank(model=ENCODER, device="cpu", top_n=None, keep_retrieval_score=True)
    result = rerank.postprocess_nodes(nodes, query_str=QUERY)
    retrieval = {item.node.node_id: item.score for item in nodes}
    assert ids_scores(result) == expected(QUERY, top_n=None)
    for item in result:
        assert item.node.metadata["retrieval_score"] == retrieval[item.node.node_id]
        assert item.node.metadata["title"].startswith("doc ")
        for mode in (MetadataMode.EMBED, MetadataMode.LLM):
            assert "retrieval_score" not in item.node.get_content(metadata_mode=mode)
        assert "title" in item.node.get_content(metadata_mode=MetadataMode.EMBED)
    assert all("retrieval_score" not in item.node.metadata for item in nodes)

    plain = BGERerank(model=ENCODER, device="cpu").postprocess_nodes(scored(make_nodes()), query_str=QUERY)
    assert all("retrieval_score" not in item.node.metadata for item in plain)


@pytest.mark.parametrize("keep", [False, True])
def test_input_nodes_are_not_mutated(keep):
    nodes = scored(make_nodes())
    before = copy.deepcopy([item.model_dump() for item in nodes])
    rerank = BGERerank(model=ENCODER, device="cpu", top_n=None, keep_retrieval_score=keep)
    result = rerank.postprocess_nodes(nodes, query_str=QUERY)
    assert [item.model_dump() for item in nodes] == before
    assert not any(new is old for new in result for old in nodes)
    assert [item.score for item in result] != [item.score for item in nodes]


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("use_async", [False, True])
def test_edits_of_the_returned_nodes_never_reach_the_callers_nodes(keep, use_async):
    nodes = scored(make_nodes())
    for item in nodes:
        item.node.metadata["tags"] = ["panda"]  # a nested value, shared by a shallow copy (not scored)
        item.node.excluded_embed_metadata_keys.append("tags")
    before = copy.deepcopy([item.model_dump() for item in nodes])
    rerank = BGERerank(model=ENCODER, device="cpu", top_n=None, keep_retrieval_score=keep)
    if use_async:
        result = asyncio.run(rerank.apostprocess_nodes(nodes, query_str=QUERY))
    else:
        result = rerank.postprocess_nodes(nodes, query_str=QUERY)
    assert ids_scores(result) == expected(QUERY, top_n=None)
    for item in result:  # what a later step may do to the nodes it gets
        item.node.metadata["title"] = "edited"
        item.node.metadata["tags"].append("edited")
        item.node.excluded_embed_metadata_keys.append("title")
        item.node.text = "edited"
    assert [item.model_dump() for item in nodes] == before
    assert not any(new.node is old.node for new in result for old in nodes)


def test_serialization_round_trip_rebuilds_a_working_postprocessor():
    options = dict(normalize=True, batch_size=2, max_length=40, query_max_length=16)
    threshold = expected(QUERY, top_n=None, **options)[1][1]  # keeps two of five
    settings = dict(model=ENCODER, model_class="encoder", device="cpu", top_n=3, score_threshold=threshold)
    settings["keep_retrieval_score"] = True
    rerank = BGERerank(**settings, **options)
    data = rerank.to_dict()
    assert {name: data[name] for name in [*settings, *options]} == {**settings, **options}
    assert data["class_name"] == "BGERerank"
    assert json.loads(rerank.to_json()) == data

    result = rerank.postprocess_nodes(scored(make_nodes()), query_str=QUERY)
    assert ids_scores(result) == expected(QUERY, top_n=3, threshold=threshold, **options)
    assert len(result) == 2 and all("retrieval_score" in item.node.metadata for item in result)
    for rebuilt in (BGERerank.from_dict(data), BGERerank.from_json(rerank.to_json())):
        assert rebuilt.to_dict() == data
        again = rebuilt.postprocess_nodes(scored(make_nodes()), query_str=QUERY)
        assert ids_scores(again) == ids_scores(result)
        assert [item.node.metadata for item in again] == [item.node.metadata for item in result]


def test_load_settings_are_frozen_and_assignments_are_checked():
    rerank = BGERerank(model=ENCODER, device="cpu")
    frozen = [("model", BGEReranker(ENCODER)), ("device", "cuda"), ("use_fp16", True), ("model_class", "llm")]
    for name, value in frozen:
        with pytest.raises(ValueError, match="frozen"):
            setattr(rerank, name, value)
    with pytest.raises(ValueError, match="one score per layer"):
        rerank.cutoff_layers = [20, 28]
    rerank.top_n, rerank.normalize = 1, True  # scoring settings apply from the next call
    assert ids_scores(rerank.postprocess_nodes(scored(make_nodes()), query_str=QUERY)) == expected(
        QUERY, top_n=1, normalize=True
    )


@pytest.mark.parametrize("use_async", [False, True])
def test_callback_and_instrumentation_events(instrumented, use_async):
    debug = LlamaDebugHandler()
    rerank = BGERerank(model=ENCODER, device="cpu")
    engine = query_engine(rerank, callback_manager=CallbackManager([debug]))
    response = asyncio.run(engine.aquery(QUERY)) if use_async else engine.query(QUERY)

    ((start, end),) = debug.get_event_pairs(CBEventType.RERANKING)
    retrieved = start.payload[EventPayload.NODES]
    assert sorted(item.node.node_id for item in retrieved) == sorted(node.node_id for node in make_nodes())
    assert start.payload[EventPayload.MODEL_NAME] == ENCODER
    assert start.payload[EventPayload.QUERY_STR] == QUERY
    assert start.payload[EventPayload.TOP_K] == 3
    assert ids_scores(end.payload[EventPayload.NODES]) == ids_scores(response.source_nodes)

    starts = [event for event in instrumented.events if isinstance(event, ReRankStartEvent)]
    ends = [event for event in instrumented.events if isinstance(event, ReRankEndEvent)]
    assert len(starts) == len(ends) == 1
    assert starts[0].query.query_str == QUERY
    assert (starts[0].model_name, starts[0].top_n) == (ENCODER, 3)
    assert starts[0].nodes == retrieved
    assert ids_scores(ends[0].nodes) == expected(QUERY) == ids_scores(response.source_nodes)


def test_missing_query_is_an_error():
    rerank = BGERerank(model=ENCODER, device="cpu")
    with pytest.raises(ValueError, match="needs a query"):
        rerank.postprocess_nodes(scored(make_nodes()))
    with pytest.raises(ValueError, match="needs a query"):
        asyncio.run(rerank.apostprocess_nodes(scored(make_nodes())))
    assert rerank.postprocess_nodes([], query_str=" ") == []


def test_blank_nodes_and_query_are_scored_as_the_reference_scores_them():
    """A node without text is scored like any other (goldens: encoder blank_texts)."""
    rerank = BGERerank(model=ENCODER, device="cpu")
    nodes = scored([TextNode(id_="empty", text=""), TextNode(id_="spaces", text="   ")])
    result = rerank.postprocess_nodes(nodes, query_str="what is panda?")
    assert dict(ids_scores(result)) == {
        "empty": pytest.approx(reference_score("encoder", "blank_texts", "what is panda?", ""), abs=TOLERANCE),
        "spaces": pytest.approx(reference_score("encoder", "blank_texts", "what is panda?", "   "), abs=TOLERANCE),
    }
    (blank_query,) = rerank.postprocess_nodes(scored([TextNode(id_="hi", text="hi")]), query_str="")
    assert blank_query.score == pytest.approx(reference_score("encoder", "blank_texts", "", "hi"), abs=TOLERANCE)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model=ENCODER, cutoff_layers=[20, 28]), "one score per layer"),
        (dict(model="shared", device="cpu"), "existing BGEReranker"),
        (dict(model="shared", use_fp16=True), "existing BGEReranker"),
        (dict(model=ENCODER, topn=2), "topn"),
        (dict(model=ENCODER, top_n=-1), "top_n"),
        (dict(model=""), "model must be"),
        (dict(model=ENCODER, score_threshold="0.5"), "score_threshold"),
        (dict(model=ENCODER, normalize="yes"), "normalize"),
        (dict(model=ENCODER, batch_size=0), "batch_size"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, message):
    if kwargs["model"] == "shared":
        kwargs["model"] = BGEReranker(ENCODER)
    with pytest.raises(ValueError, match=message):
        BGERerank(**kwargs)


def test_empty_nodes_return_empty_without_loading(monkeypatch, instrumented):
    def fail(self):
        raise AssertionError("the model must not load for no nodes")

    monkeypatch.setattr(BGEReranker, "load", fail)
    debug = LlamaDebugHandler()
    rerank = BGERerank(model=ENCODER, device="cpu", callback_manager=CallbackManager([debug]))
    assert rerank.postprocess_nodes([], query_str=QUERY) == []
    assert asyncio.run(rerank.apostprocess_nodes([], query_str=QUERY)) == []
    assert rerank.reranker._model is None
    assert debug.get_event_pairs(CBEventType.RERANKING) == [] and instrumented.events == []


def test_only_the_adapter_imports_llama_index():
    package = Path(bge_rerank_integrations.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "llama_index.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(name.split(".")[0] == "llama_index" for name in names), path


# Family-specific settings, forwarded through the adapter (checkpoints are built by tools/; skip when absent).
DECODER_OPTIONS = {
    "llm": dict(prompt="Is B relevant to A? Answer Yes or No."),
    "layerwise": dict(prompt="Is B relevant to A?", cutoff_layers=[4]),
    "lightweight": dict(prompt="Is B relevant to A?", cutoff_layers=[6], compress_ratio=2, compress_layers=[4]),
}


@pytest.mark.parametrize("family", sorted(DECODER_OPTIONS))
def test_decoder_families_with_their_settings(family):
    path = checkpoint(family)
    if not (Path(path) / "config.json").exists():
        pytest.skip(f"no {family} checkpoint at {path}")
    options = DECODER_OPTIONS[family]
    nodes = scored(make_nodes())
    rerank = BGERerank(model=path, device="cpu", top_n=None, **options)
    result = rerank.postprocess_nodes(nodes, query_str=QUERY)

    core = BGEReranker(path, device="cpu")
    pairs = [(QUERY, item.node.get_content(metadata_mode=MetadataMode.EMBED)) for item in nodes]
    scores = core.compute_score(pairs, **options)
    assert ids_scores(result) == sorted(zip((item.node.node_id for item in nodes), scores), key=lambda p: -p[1])
    for name in options:  # each setting changes the scores, so each one was really forwarded
        without = {key: value for key, value in options.items() if key != name}
        assert core.compute_score(pairs, **without) != scores, name
