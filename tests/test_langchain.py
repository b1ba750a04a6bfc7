"""The LangChain adapter, directly and through LangChain's own retriever, LCEL and callback machinery.

Every score is compared exactly with ``BGEReranker.compute_score`` on the same pairs (the
adapter holds no model logic, so it must give the core's numbers bit for bit).
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import threading
from pathlib import Path

import pytest
import torch
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ValidationError

import bge_rerank_integrations.reranker as core
from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.langchain import BGERerank

from .conftest import CHECKPOINTS, TOLERANCE, checkpoint, reference_score

ENCODER = checkpoint("encoder")
QUERY = "what is panda?"
QUERIES = [QUERY, "capital of France", "population of China", "hi"]
TEXTS = [
    "hi",
    "The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China.",
    "Paris is the capital of France.",
    "The population of China is over 1.4 billion people.",
    "The panda eats bamboo.",
    "Paris is the capital of France. " * 12 + "The giant panda is a bear.",
]


def make_docs() -> list[Document]:
    """Documents with ids, nested metadata and a stale score that the adapter must overwrite only in its copies."""
    return [
        Document(
            page_content=text,
            id=f"doc-{i}",
            metadata={"source": f"s{i}", "tags": ["a", {"n": i}], **({"relevance_score": -99.0} if i == 2 else {})},
        )
        for i, text in enumerate(TEXTS)
    ]


def core_scores(query: str, texts: list[str], **options) -> list[float]:
    """The core's scores for (query, text) pairs, from an independent BGEReranker."""
    return BGEReranker(ENCODER, device="cpu").compute_score([[query, text] for text in texts], **options)


def expected(query: str, docs: list[Document], top_n=None, score_threshold=None, **options) -> list[tuple]:
    """(id, score) best first, threshold first then top_n, as the spec says."""
    scores = core_scores(query, [d.page_content for d in docs], **options)
    ranked = sorted(range(len(docs)), key=lambda i: -scores[i])
    if score_threshold is not None:
        ranked = [i for i in ranked if scores[i] >= score_threshold]
    return [(docs[i].id, scores[i]) for i in ranked[:top_n]]


def got(documents) -> list[tuple]:
    return [(d.id, d.metadata["relevance_score"]) for d in documents]


def make_retriever(compressor: BGERerank, docs: list[Document] | None = None) -> ContextualCompressionRetriever:
    docs = make_docs() if docs is None else docs
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(docs)
    base = store.as_retriever(search_kwargs={"k": len(docs)})  # every document, so the rerank decides the result
    return ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)


def retrieved(retriever: ContextualCompressionRetriever, query: str) -> list[Document]:
    """What the vector store hands the compressor, in its order.

    Expected scores are computed on these pairs in this order: like FlagEmbedding, the core
    batches by length, so a different input order can change a score in the last float32 bit.
    """
    return retriever.base_retriever.invoke(query)


@pytest.fixture
def no_loading(monkeypatch):
    """Make any model load fail the test."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(core, "get_model", fail)


# --- scores, order, threshold, top_n -------------------------------------------------------------


def test_scores_and_order_equal_the_core_exactly():
    docs = make_docs()
    result = BGERerank(model=ENCODER, device="cpu", top_n=None).compress_documents(docs, QUERY)
    want = expected(QUERY, docs)
    assert got(result) == want
    scores = [score for _, score in want]
    assert len(set(scores)) == len(scores), "fixture texts must score differently for the order to mean something"
    assert scores == sorted(scores, reverse=True)
    assert all(type(d.metadata["relevance_score"]) is float for d in result)


def test_top_n_keeps_the_best():
    docs = make_docs()
    assert got(BGERerank(model=ENCODER, device="cpu").compress_documents(docs, QUERY)) == expected(QUERY, docs)[:3]
    assert (
        got(BGERerank(model=ENCODER, device="cpu", top_n=1).compress_documents(docs, QUERY))
        == expected(QUERY, docs)[:1]
    )
    assert BGERerank(model=ENCODER, device="cpu", top_n=0).compress_documents(docs, QUERY) == []


def test_threshold_drops_below_it_then_top_n_applies():
    docs = make_docs()
    ranked = [score for _, score in expected(QUERY, docs)]
    threshold = ranked[2]  # exactly three documents score >= it
    compressor = BGERerank(model=ENCODER, device="cpu", top_n=None, score_threshold=threshold)
    assert got(compressor.compress_documents(docs, QUERY)) == expected(QUERY, docs)[:3]
    compressor.top_n = 2
    assert got(compressor.compress_documents(docs, QUERY)) == expected(QUERY, docs)[:2]
    compressor.top_n, compressor.score_threshold = 5, ranked[0]
    assert got(compressor.compress_documents(docs, QUERY)) == expected(QUERY, docs)[:1]
    compressor.score_threshold = ranked[0] + 1.0
    assert compressor.compress_documents(docs, QUERY) == []


def test_normalize_gives_the_sigmoid_of_raw_scores():
    docs = make_docs()
    result = BGERerank(model=ENCODER, device="cpu", top_n=None, normalize=True).compress_documents(docs, QUERY)
    raw = dict(expected(QUERY, docs))
    assert got(result) == expected(QUERY, docs, normalize=True)
    assert [d.id for d in result] == list(raw)  # the sigmoid keeps the order
    for doc_id, score in got(result):
        assert 0.0 < score < 1.0
        assert score == torch.sigmoid(torch.tensor(raw[doc_id], dtype=torch.float64)).item()
        assert score == pytest.approx(1 / (1 + math.exp(-raw[doc_id])), rel=1e-12)


def test_scoring_options_go_to_the_core_unchanged(monkeypatch):
    shared = BGEReranker(ENCODER, device="cpu")
    calls = []
    original = shared.rerank

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(shared, "rerank", spy)
    options = dict(normalize=True, batch_size=2, max_length=16, query_max_length=6)
    docs = make_docs()
    result = BGERerank(model=shared, top_n=4, score_threshold=0.1, **options).compress_documents(docs, QUERY)
    assert calls == [dict(top_n=4, score_threshold=0.1, **options)]
    assert got(result) == expected(QUERY, docs, top_n=4, score_threshold=0.1, **options)
    # the lengths really reach the model: truncation changes the long document's score
    assert core_scores(QUERY, TEXTS[-1:], max_length=16) != core_scores(QUERY, TEXTS[-1:])


def test_unset_options_keep_the_shared_rerankers_defaults():
    shared = BGEReranker(ENCODER, device="cpu", normalize=True, max_length=16)
    docs = make_docs()
    result = BGERerank(model=shared, top_n=None).compress_documents(docs, QUERY)
    assert got(result) == expected(QUERY, docs, normalize=True, max_length=16)


# --- documents are copied, never mutated -------------------------------------------------------------


def test_new_documents_keep_id_and_metadata_and_inputs_are_unchanged():
    docs = make_docs()
    before = copy.deepcopy(docs)
    result = BGERerank(model=ENCODER, device="cpu", top_n=None).compress_documents(docs, QUERY)
    assert docs == before
    assert [d.model_dump() for d in docs] == [d.model_dump() for d in before]
    by_id = {d.id: d for d in docs}
    assert sorted(d.id for d in result) == sorted(by_id)
    for out in result:
        original = by_id[out.id]
        assert out is not original and out.metadata is not original.metadata
        assert out.page_content == original.page_content and out.type == original.type
        assert {k: v for k, v in out.metadata.items() if k != "relevance_score"} == {
            k: v for k, v in original.metadata.items() if k != "relevance_score"
        }
        out.metadata["tags"][1]["n"] = "changed downstream"  # nested values are copies too
    assert docs == before
    assert by_id["doc-2"].metadata["relevance_score"] == -99.0


# --- loading: never for empty input, once, shared ------------------------------------------------------


async def test_empty_input_returns_empty_without_loading(no_loading):
    compressor = BGERerank(model=ENCODER, device="cpu")
    assert compressor.compress_documents([], QUERY) == []
    assert await compressor.acompress_documents([], QUERY) == []
    assert compressor.reranker._model is None


def test_model_loads_once_not_per_call(monkeypatch):
    loads = []
    real = core.get_model
    monkeypatch.setattr(core, "get_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    compressor = BGERerank(model=ENCODER, device="cpu")
    assert compressor.reranker._model is None and loads == []  # built at construction, loaded on first use
    for query in QUERIES:
        compressor.compress_documents(make_docs(), query)
    assert len(loads) == 1


def test_two_compressors_share_one_model():
    shared = BGEReranker(ENCODER, device="cpu")
    a, b = BGERerank(model=shared), BGERerank(model=shared, top_n=1)
    assert a.reranker is shared and b.reranker is shared
    c, d = BGERerank(model=ENCODER, device="cpu"), BGERerank(model=ENCODER, device="cpu", top_n=1)
    assert c.reranker is not d.reranker
    for compressor in (a, b, c, d):
        compressor.compress_documents(make_docs(), QUERY)
    assert c.reranker.load() is d.reranker.load() is shared.load()  # one cached model behind all four
    assert c.reranker.load().family.model is shared.load().family.model


# --- construction and input errors -------------------------------------------------------------------


def test_construction_errors():
    with pytest.raises(ValidationError, match="one score per document"):
        BGERerank(model=ENCODER, cutoff_layers=[2, 3])
    with pytest.raises(ValidationError, match="existing BGEReranker"):
        BGERerank(model=BGEReranker(ENCODER, device="cpu"), device="cpu")
    with pytest.raises(ValidationError, match="existing BGEReranker"):
        BGERerank(model=BGEReranker(ENCODER, device="cpu"), use_fp16=True)
    with pytest.raises(ValidationError, match="Unknown model_class"):
        BGERerank(model=ENCODER, model_class="nope")
    with pytest.raises(ValidationError, match="top_n"):
        BGERerank(model=ENCODER, top_n=-1)
    with pytest.raises(ValidationError, match="top_k"):
        BGERerank(model=ENCODER, top_k=2)  # a typo is not silently ignored
    with pytest.raises(ValidationError, match="model"):
        BGERerank(model="  ")
    compressor = BGERerank(model=ENCODER, device="cpu")
    with pytest.raises(ValidationError, match="one score per document"):
        compressor.cutoff_layers = [2, 3]
    with pytest.raises(ValidationError, match="frozen"):
        compressor.device = "meta"  # load settings are fixed once the reranker is built
    assert compressor.cutoff_layers is None and compressor.device == "cpu"


@pytest.mark.parametrize(
    "documents, query, error, match",
    [
        (make_docs(), None, TypeError, "query must be a string"),
        ("not a list", QUERY, TypeError, "list of Document"),
        (Document("one"), QUERY, TypeError, "list of Document"),
        ([*make_docs(), "plain text"], QUERY, TypeError, r"documents\[6\] must be a langchain Document"),
        (
            [Document.model_construct(page_content=42)],
            QUERY,
            TypeError,
            "page_content of documents.0. must be a string",
        ),
    ],
)
async def test_bad_input_is_a_clear_error_before_loading(no_loading, documents, query, error, match):
    before = copy.deepcopy(documents)
    compressor = BGERerank(model=ENCODER, device="cpu")
    with pytest.raises(error, match=match):
        compressor.compress_documents(documents, query)
    with pytest.raises(error, match=match):
        await compressor.acompress_documents(documents, query)
    assert documents == before


def test_config_from_a_plain_dict():
    config = json.loads(
        json.dumps(
            {
                "model": ENCODER,
                "device": "cpu",
                "top_n": 2,
                "score_threshold": 0.2,
                "normalize": True,
                "batch_size": 2,
                "max_length": 32,
                "query_max_length": 8,
            }
        )
    )
    compressor = BGERerank(**config)
    assert {name: getattr(compressor, name) for name in config} == config
    again = BGERerank(**compressor.model_dump())
    assert again.model_dump() == compressor.model_dump()
    docs = make_docs()
    options = {k: config[k] for k in ("normalize", "batch_size", "max_length", "query_max_length")}
    want = expected(QUERY, docs, top_n=2, score_threshold=0.2, **options)
    assert got(compressor.compress_documents(docs, QUERY)) == want
    assert got(again.compress_documents(docs, QUERY)) == want
    assert BGERerank(model=Path(ENCODER), device="cpu").model == ENCODER


# --- through LangChain: retriever, async, LCEL, callbacks ----------------------------------------------


def test_blank_documents_and_query_are_scored_as_the_reference_scores_them():
    """One empty chunk from the vector store must not break the RAG query (goldens: encoder blank_texts)."""
    docs = [Document("", id="empty"), Document("   ", id="spaces"), Document("hi", id="hi")]
    result = make_retriever(BGERerank(model=ENCODER, device="cpu"), docs).invoke(QUERY)
    assert {d.id: d.metadata["relevance_score"] for d in result} == {
        "empty": pytest.approx(reference_score("encoder", "blank_texts", QUERY, ""), abs=TOLERANCE),
        "spaces": pytest.approx(reference_score("encoder", "blank_texts", QUERY, "   "), abs=TOLERANCE),
        "hi": pytest.approx(reference_score("encoder", "panda_seed", QUERY, "hi"), abs=TOLERANCE),
    }
    (scored,) = BGERerank(model=ENCODER, device="cpu").compress_documents([Document("hi")], "")
    assert scored.metadata["relevance_score"] == pytest.approx(
        reference_score("encoder", "blank_texts", "", "hi"), abs=TOLERANCE
    )


def test_contextual_compression_retriever_invoke():
    retriever = make_retriever(BGERerank(model=ENCODER, device="cpu", top_n=3))
    for query in QUERIES:
        result = retriever.invoke(query)
        assert got(result) == expected(query, retrieved(retriever, query), top_n=3)
        assert all(d.metadata["source"] == f"s{d.id[-1]}" for d in result)


async def test_concurrent_ainvoke_equals_sequential_invoke():
    retriever = make_retriever(BGERerank(model=ENCODER, device="cpu", top_n=None, batch_size=2))
    sequential = [retriever.invoke(query) for query in QUERIES * 3]
    concurrent = await asyncio.gather(*(retriever.ainvoke(query) for query in QUERIES * 3))
    assert concurrent == sequential
    assert [got(r) for r in concurrent] == [expected(q, retrieved(retriever, q), batch_size=2) for q in QUERIES * 3]


async def test_acompress_runs_off_the_event_loop(monkeypatch):
    shared = BGEReranker(ENCODER, device="cpu")
    original, seen = shared.score_groups, {}  # rerank scores through score_groups (scores and best windows)
    loop_ran = threading.Event()

    def blocking_rerank(*args, **kwargs):
        seen["thread"] = threading.current_thread()
        # only set by a coroutine on the loop: if this ran on the loop thread, it would time out
        seen["loop_free"] = loop_ran.wait(timeout=5)
        return original(*args, **kwargs)

    async def on_the_loop():
        await asyncio.sleep(0)
        loop_ran.set()

    monkeypatch.setattr(shared, "score_groups", blocking_rerank)
    docs = make_docs()
    result, _ = await asyncio.gather(BGERerank(model=shared).acompress_documents(docs, QUERY), on_the_loop())
    assert seen["loop_free"] and seen["thread"] is not threading.main_thread()
    assert got(result) == expected(QUERY, docs, top_n=3)


def test_lcel_chain():
    retriever = make_retriever(BGERerank(model=ENCODER, device="cpu", top_n=2))
    chain = retriever | RunnableLambda(lambda docs: "\n".join(f"[{d.id}] {d.page_content}" for d in docs))
    by_id = {d.id: d.page_content for d in make_docs()}
    for query in QUERIES:
        ranked = expected(query, retrieved(retriever, query), top_n=2)
        want = "\n".join(f"[{doc_id}] {by_id[doc_id]}" for doc_id, _ in ranked)
        assert chain.invoke(query) == want
    assert chain.batch(QUERIES) == [chain.invoke(query) for query in QUERIES]


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts, self.ends = [], []

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kwargs):
        self.starts.append((run_id, parent_run_id, query))

    def on_retriever_end(self, documents, *, run_id, parent_run_id=None, **kwargs):
        self.ends.append((run_id, parent_run_id, list(documents)))


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
async def test_callbacks_see_the_retriever_run(use_async):
    retriever = make_retriever(BGERerank(model=ENCODER, device="cpu", top_n=2))
    recorder = Recorder()
    config = {"callbacks": [recorder]}
    result = await retriever.ainvoke(QUERY, config=config) if use_async else retriever.invoke(QUERY, config=config)
    top = [(run, query) for run, parent, query in recorder.starts if parent is None]
    assert top == [(top[0][0], QUERY)]
    assert len(recorder.starts) == 2  # the compression retriever and, as its child, the vector store's
    ends = {run: docs for run, _, docs in recorder.ends}
    assert ends[top[0][0]] == result
    assert got(result) == expected(QUERY, retrieved(retriever, QUERY), top_n=2)


# --- decoder families (when their checkpoints exist) ------------------------------------------------------


def _family_options(family: str) -> dict:
    config = json.loads((CHECKPOINTS / family / "config.json").read_text())
    last = config["num_hidden_layers"]
    options = {"prompt": "Does the passage answer the query? Answer Yes or No."}
    if family == "layerwise":
        options["cutoff_layers"] = [last]
    if family == "lightweight":
        options.update(cutoff_layers=[last], compress_ratio=2, compress_layers=[config.get("start_layer", 1)])
    return options


@pytest.mark.parametrize("family", ["llm", "layerwise", "lightweight"])
async def test_decoder_families(family, monkeypatch):
    if not (CHECKPOINTS / family / "config.json").exists():
        pytest.skip(f"no {family} checkpoint at {CHECKPOINTS / family}")
    options = _family_options(family)
    shared = BGEReranker(checkpoint(family), device="cpu")
    calls, original = [], shared.rerank
    monkeypatch.setattr(shared, "rerank", lambda *a, **k: calls.append(k) or original(*a, **k))
    compressor = BGERerank(model=shared, top_n=None, **options)
    docs = make_docs()[:4]  # short texts keep the decoders fast
    result = compressor.compress_documents(docs, QUERY)
    assert calls == [dict(top_n=None, score_threshold=None, **options)]
    scores = BGEReranker(checkpoint(family), device="cpu").compute_score(
        [[QUERY, d.page_content] for d in docs], **options
    )
    ranked = sorted(range(len(docs)), key=lambda i: -scores[i])
    assert got(result) == [(docs[i].id, scores[i]) for i in ranked]
    assert await compressor.acompress_documents(docs, QUERY) == result
    retriever = make_retriever(compressor, docs)
    assert got(retriever.invoke(QUERY)) == got(compressor.compress_documents(retrieved(retriever, QUERY), QUERY))


def test_instructions_reach_the_core():
    options = {
        "query_instruction_for_rerank": "Q:",
        "query_instruction_format": "{}\\n{}",
        "passage_instruction_for_rerank": "P: ",
    }
    compressor = BGERerank(model=ENCODER, device="cpu", top_n=None, **options)
    docs = make_docs()
    assert got(compressor.compress_documents(docs, QUERY)) == expected(QUERY, docs, **options)
    assert got(compressor.compress_documents(docs, QUERY)) != expected(QUERY, docs)


# --- BGECrossEncoder: LangChain's CrossEncoderReranker over the same core ---------------------------


def test_cross_encoder_in_langchains_cross_encoder_reranker():
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_core.cross_encoders import BaseCrossEncoder

    from bge_rerank_integrations.langchain import BGECrossEncoder

    encoder = BGECrossEncoder(model=ENCODER, device="cpu", normalize=True, max_length=64)
    assert isinstance(encoder, BaseCrossEncoder)
    docs = make_docs()
    pairs = [(QUERY, d.page_content) for d in docs]
    assert encoder.score(pairs) == core_scores(QUERY, [d.page_content for d in docs], normalize=True, max_length=64)
    assert encoder.score([]) == []

    compressor = CrossEncoderReranker(model=encoder, top_n=3)
    want = [doc_id for doc_id, _ in expected(QUERY, docs, top_n=3, normalize=True, max_length=64)]
    assert [d.id for d in compressor.compress_documents(docs, QUERY)] == want
    retriever = make_retriever(compressor)
    assert [d.id for d in retriever.invoke(QUERY)] == [
        doc_id for doc_id, _ in expected(QUERY, retrieved(retriever, QUERY), top_n=3, normalize=True, max_length=64)
    ]


def test_cross_encoder_settings_and_errors():
    from bge_rerank_integrations.adapter_support import ScoringSettings
    from bge_rerank_integrations.langchain import BGECrossEncoder

    assert set(BGECrossEncoder.model_fields) == set(ScoringSettings.model_fields)
    assert "top_n" not in BGECrossEncoder.model_fields  # CrossEncoderReranker keeps its own
    shared = BGEReranker(ENCODER, device="cpu")
    encoder = BGECrossEncoder(model=shared)
    assert encoder.reranker is shared and encoder.model_dump()["model"] == ENCODER
    with pytest.raises(ValidationError, match="top_n"):
        BGECrossEncoder(model=ENCODER, top_n=3)
    with pytest.raises(TypeError, match="list of \\(query, text\\) pairs"):
        encoder.score((QUERY, "hi"))  # one bare pair, not a list of pairs
    with pytest.raises(TypeError, match="passage at index 1 must be a string"):
        encoder.score([(QUERY, "hi"), (QUERY, None)])
    blank = encoder.score([(QUERY, "hi"), (QUERY, " ")])  # blank texts are scored, as the reference does
    assert blank == pytest.approx(shared.compute_score([(QUERY, "hi"), (QUERY, " ")]))
