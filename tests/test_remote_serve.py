"""Both adapters through a real ``bge-rerank serve`` process give the in-process reranker's ranking and scores.

The server runs the fixture checkpoints on 127.0.0.1 (an ephemeral port, an API key; stopped
when the module ends, see serve_support.py); every ranking is compared with ``BGEReranker`` on the same
pairs: same order, scores within 1e-4 (the server batches pairs from concurrent requests
together, which may move a float32 score in its last bits), raw and normalized, sync and async.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
yaml = pytest.importorskip("yaml")

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, TextNode

from bge_rerank_integrations import BGEReranker, RemoteReranker, RemoteRerankError
from bge_rerank_integrations.langchain import BGERerank as LangChainRerank
from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank
from bge_rerank_integrations.options import REQUEST_OPTIONS

from .conftest import checkpoint
from .serve_support import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("one_torch_thread")]

KEY = "serve-test-key"
TOLERANCE = 1e-4
QUERIES = ["what is panda?", "capital of France"]
TEXTS = [
    "Giant pandas live in the mountain forests of central China.",
    "ok",
    "France's capital, Paris, lies on the Seine.",
    "A newborn panda weighs about as much as a stick of butter.",
    "The Louvre is the most visited museum in the world.",
    "Pandas eat bamboo. " * 20 + "They also eat small animals now and then.",
]
#: The lightweight model's own options, sent with every request.
LIGHTWEIGHT = {"cutoff_layers": 6, "compress_ratio": 2, "compress_layers": [4, 8]}


@pytest.fixture(scope="module")
def encoder_url() -> Iterator[str]:
    server = ServerProcess(checkpoint("encoder"), "--api-key", KEY)
    yield server.url
    server.close()


@pytest.fixture(scope="module")
def lightweight_url() -> Iterator[str]:
    server = ServerProcess(checkpoint("lightweight"))
    yield server.url
    server.close()


@pytest.fixture
def api_key(monkeypatch):
    """The key reaches the adapters through the environment only, as in deployments."""
    monkeypatch.setenv("BGE_RERANK_API_KEY", KEY)


def in_process(family: str, pairs, **options) -> list[float]:
    return BGEReranker(checkpoint(family), device="cpu").compute_score([list(pair) for pair in pairs], **options)


def assert_same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [key for key, _ in got] == [key for key, _ in want]
    assert max((abs(g - w) for (_, g), (_, w) in zip(got, want)), default=0.0) <= TOLERANCE


def ranked(keys: list[str], scores: list[float], top_n: int | None = None) -> list[tuple[str, float]]:
    order = sorted(range(len(keys)), key=lambda i: -scores[i])[:top_n]
    return [(keys[i], scores[i]) for i in order]


# --- RemoteReranker -------------------------------------------------------------------------------


def test_the_client_sends_exactly_the_options_the_server_takes():
    from bge_rerank_integrations.serving.schemas import BGEOptions

    every = dict(
        max_length=64,
        query_max_length=16,
        prompt="p",
        cutoff_layers=[2],
        compress_ratio=2,
        compress_layers=[1],
        query_instruction_for_rerank="q: ",
        query_instruction_format="{}{}",
        passage_instruction_for_rerank="p: ",
        passage_instruction_format="{}{}",
        max_chunks_per_passage=2,
        chunk_overlap=4,
        max_tokens_per_passage=100,
    )
    assert set(every) == set(REQUEST_OPTIONS)  # every option a request may carry, once
    remote = RemoteReranker("http://127.0.0.1:1", api="bge", **every)
    body = remote._body("q", ["a"], remote._checked({}))
    assert set(body) - {"query", "texts", "raw_scores", "truncate"} == set(REQUEST_OPTIONS)
    assert set(BGEOptions.model_fields) - {"raw_scores"} == set(REQUEST_OPTIONS)


@pytest.mark.parametrize("normalize", [False, True])
async def test_remote_reranker_scores_like_the_in_process_one(encoder_url, lightweight_url, api_key, normalize):
    pairs = [(query, text) for query in QUERIES for text in TEXTS]
    for url, family, options in ((encoder_url, "encoder", {}), (lightweight_url, "lightweight", LIGHTWEIGHT)):
        want = in_process(family, pairs, normalize=normalize, **options)
        remote = RemoteReranker(url, api="bge", normalize=normalize, **options)
        got_sync = remote.compute_score([list(pair) for pair in pairs])
        got_async = await remote.acompute_score([list(pair) for pair in pairs])
        for got in (got_sync, got_async):
            assert max(abs(g - w) for g, w in zip(got, want)) <= TOLERANCE, family
        keys = [str(i) for i in range(len(TEXTS))]
        assert_same_ranking(
            [(str(r.index), r.score) for r in remote.rerank(QUERIES[0], TEXTS)], ranked(keys, want[: len(TEXTS)])
        )
        remote.close()
        await remote.aclose()


def test_the_servers_refusal_comes_back_as_one_clear_error(encoder_url, api_key):
    remote = RemoteReranker(encoder_url, prompt="Does B answer A?")
    with pytest.raises(
        RemoteRerankError, match="422 Unprocessable.*prompt does not apply to the encoder family"
    ) as caught:
        remote.compute_score([QUERIES[0], "hi"])
    assert caught.value.status_code == 422
    remote.close()


def test_a_missing_api_key_is_a_401_that_says_what_to_set(encoder_url):
    remote = RemoteReranker(encoder_url)
    with pytest.raises(
        RemoteRerankError, match="401 Unauthorized: Missing or wrong API key.*Check api_key .or the BGE_RERANK_API_KEY"
    ):
        remote.compute_score([QUERIES[0], "hi"])
    remote.close()


# --- LangChain ------------------------------------------------------------------------------------


class FixedRetriever(BaseRetriever):
    """Hands every document over, in a fixed order, natively sync and async (no thread of its own)."""

    documents: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return list(self.documents)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return list(self.documents)


def documents() -> list[Document]:
    return [Document(page_content=text, id=f"doc-{i}", metadata={"source": f"s{i}"}) for i, text in enumerate(TEXTS)]


def langchain_expected(family: str, query: str, top_n: int | None, **options) -> list[tuple[str, float]]:
    docs = documents()
    return ranked([d.id for d in docs], in_process(family, [(query, d.page_content) for d in docs], **options), top_n)


def ids_scores(docs: list[Document]) -> list[tuple[str, float]]:
    return [(d.id, d.metadata["relevance_score"]) for d in docs]


@pytest.mark.parametrize("normalize", [False, True])
async def test_langchain_retriever_through_the_server_ranks_like_in_process(encoder_url, api_key, normalize):
    compressor = LangChainRerank(model=encoder_url, api="bge", top_n=4, normalize=normalize)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=FixedRetriever(documents=documents())
    )
    for query in QUERIES:
        want = langchain_expected("encoder", query, 4, normalize=normalize)
        assert_same_ranking(ids_scores(retriever.invoke(query)), want)
        assert_same_ranking(ids_scores(await retriever.ainvoke(query)), want)


async def test_langchain_with_the_lightweight_models_options(lightweight_url):
    config = {"model": lightweight_url, "top_n": None, "normalize": True, **LIGHTWEIGHT}
    compressor = LangChainRerank(**yaml.safe_load(yaml.safe_dump(config)))
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=FixedRetriever(documents=documents())
    )
    want = langchain_expected("lightweight", QUERIES[0], None, normalize=True, **LIGHTWEIGHT)
    assert_same_ranking(ids_scores(await retriever.ainvoke(QUERIES[0])), want)
    assert_same_ranking(ids_scores(retriever.invoke(QUERIES[0])), want)


async def test_50_concurrent_ainvoke_calls_through_one_client_without_a_thread_per_call(
    encoder_url, api_key, monkeypatch
):
    compressor = LangChainRerank(model=encoder_url, top_n=3)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=FixedRetriever(documents=documents())
    )
    queries = [f"{QUERIES[i % 2]} ({i})" for i in range(50)]
    pairs = [(query, text) for query in queries for text in TEXTS]
    scores = in_process("encoder", pairs)
    keys = [f"doc-{i}" for i in range(len(TEXTS))]
    started = []
    original_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), original_start(self)))
    results = await asyncio.gather(*(retriever.ainvoke(query) for query in queries))
    monkeypatch.undo()
    for i, result in enumerate(results):
        assert_same_ranking(ids_scores(result), ranked(keys, scores[i * len(TEXTS) : (i + 1) * len(TEXTS)], 3))
    assert started == []
    assert len({id(compressor.reranker)}) == 1 and isinstance(compressor.reranker, RemoteReranker)


# --- LlamaIndex -----------------------------------------------------------------------------------


def nodes() -> list[TextNode]:
    return [TextNode(id_=f"node-{i}", text=text, metadata={"title": f"doc {i}"}) for i, text in enumerate(TEXTS)]


def query_engine(rerank: LlamaIndexRerank) -> RetrieverQueryEngine:
    index = VectorStoreIndex(nodes(), embed_model=MockEmbedding(embed_dim=8))
    return RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=len(TEXTS)), llm=MockLLM(), node_postprocessors=[rerank]
    )


def llama_expected(query: str, top_n: int | None, **options) -> list[tuple[str, float]]:
    texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes()]
    return ranked(
        [node.node_id for node in nodes()], in_process("encoder", [(query, t) for t in texts], **options), top_n
    )


@pytest.mark.parametrize("normalize", [False, True])
async def test_llama_index_query_engine_through_the_server_ranks_like_in_process(
    encoder_url, api_key, normalize, monkeypatch
):
    engine = query_engine(LlamaIndexRerank(model=encoder_url, api="bge", top_n=3, normalize=normalize))
    for query in QUERIES:
        want = llama_expected(query, 3, normalize=normalize)
        assert_same_ranking([(n.node.node_id, n.score) for n in engine.query(query).source_nodes], want)
        with monkeypatch.context() as patch:  # aquery must await the client, not call its synchronous side
            patch.setattr(RemoteReranker, "compute_score", lambda *a, **k: pytest.fail("aquery used the sync client"))
            response = await engine.aquery(query)
        assert_same_ranking([(n.node.node_id, n.score) for n in response.source_nodes], want)


# --- configuration --------------------------------------------------------------------------------


def test_configurations_keep_the_url_and_settings_but_never_the_key(encoder_url, monkeypatch):
    secret = KEY
    rerank = LlamaIndexRerank(model=encoder_url, api="bge", api_key=secret, timeout=30, top_n=2, normalize=True)
    compressor = LangChainRerank(model=RemoteReranker(encoder_url, api_key=secret, retries=1), top_n=2, normalize=True)
    dumps = [
        json.dumps(rerank.to_dict()),
        rerank.to_json(),
        yaml.safe_dump(rerank.to_dict()),
        json.dumps(compressor.model_dump()),
    ]
    assert all(secret not in text for text in dumps)
    assert secret not in repr(rerank) + repr(compressor) + repr(compressor.reranker)
    saved = rerank.to_dict()
    assert (saved["model"], saved["api"], saved["timeout"]) == (encoder_url, "bge", 30.0) and "api_key" not in saved
    shared = compressor.model_dump()
    assert (shared["model"], shared["api"], shared["retries"]) == (encoder_url, "bge", 1) and "api_key" not in shared

    want = llama_expected(QUERIES[0], 2, normalize=True)
    monkeypatch.setenv("BGE_RERANK_API_KEY", secret)  # where the rebuilt adapters find the key
    for config in (saved, json.loads(rerank.to_json()), yaml.safe_load(yaml.safe_dump(saved))):
        rebuilt = LlamaIndexRerank.from_dict(config)
        assert_same_ranking(
            [(n.node.node_id, n.score) for n in query_engine(rebuilt).query(QUERIES[0]).source_nodes], want
        )
    rebuilt = LangChainRerank(**json.loads(json.dumps(shared)))
    docs = documents()
    assert_same_ranking(
        ids_scores(rebuilt.compress_documents(docs, QUERIES[0])),
        langchain_expected("encoder", QUERIES[0], 2, normalize=True),
    )
