"""``bge-rerank serve`` over real HTTP, one uvicorn process per fixture family: scores, schemas, batching, metrics."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from bge_rerank_integrations import BGEReranker

from .conftest import FAMILIES, checkpoint
from .serve_support import ServerProcess, metric

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("one_torch_thread")]

TOLERANCE = 1e-4
QUERIES = ["what is panda?", "capital of France", "how do rerankers score passages in a retrieval pipeline?"]
TEXTS = [
    "hi",
    "The giant panda is a bear species endemic to China.",
    "Paris is the capital and most populous city of France.",
    "Rerankers read the query and the passage together and output one relevance score. " * 6,
    "Bamboo makes up almost all of the giant panda's diet.",
    "A cross-encoder is slower than a bi-encoder but more accurate.",
    "Le chat dort sur le canapé.",
    "Numbers: 3.14159 2.71828 1.41421 " * 10,
]
#: Per-request BGE options each family takes (besides raw_scores, which every test varies).
VARIANTS = {
    "encoder": [{}, {"max_length": 24}, {"query_max_length": 6}, {"passage_instruction_for_rerank": "passage: "}],
    "llm": [
        {},
        {"max_length": 40},
        {"prompt": "Is passage B relevant to query A?"},
        {"query_instruction_for_rerank": "Q: "},
    ],
    "layerwise": [{}, {"cutoff_layers": 4}, {"cutoff_layers": [3], "max_length": 40}, {"prompt": "Relevant?"}],
    "lightweight": [
        {},
        {"cutoff_layers": 6},
        {"compress_ratio": 2, "compress_layers": [4]},
        {"cutoff_layers": [8], "compress_ratio": 4, "compress_layers": [2, 5], "max_length": 48},
    ],
}
#: An option each family cannot take; the server must answer the core's own message.
BAD_OPTIONS = {
    "encoder": {"prompt": "Relevant?"},
    "llm": {"cutoff_layers": 1},
    "layerwise": {"cutoff_layers": 99},
    "lightweight": {"compress_ratio": 3},
}


@pytest.fixture(scope="module", params=FAMILIES)
def served(request):
    """(family, base url, in-process reranker) with one server process per family for the whole module."""
    server = ServerProcess(checkpoint(request.param))
    reranker = BGEReranker(checkpoint(request.param), device="cpu")
    reranker.load()
    try:
        yield request.param, server.url, reranker
    finally:
        assert server.terminate() == 0, server.output()
        server.close()


def expected_scores(reranker: BGEReranker, query: str, texts: list[str], options: dict, raw: bool) -> list[float]:
    return reranker.compute_score([(query, text) for text in texts], normalize=not raw, **options)


def check_ranking(indices: list[int], scores: list[float], expected: list[float]) -> None:
    """Every index once, best first, and each score within TOLERANCE of the in-process score.

    Requests merged with others keep their own call's scores (``BGEReranker.score_groups``): only
    float rounding from other batch shapes separates them, well inside TOLERANCE.
    """
    assert sorted(indices) == list(range(len(expected)))
    assert scores == sorted(scores, reverse=True)
    for index, score in zip(indices, scores):
        assert abs(score - expected[index]) <= TOLERANCE, (index, score, expected[index])


@pytest.mark.parametrize("raw", [False, True], ids=["normalized", "raw"])
def test_both_schemas_give_the_in_process_scores(served, raw):
    family, url, reranker = served
    texts = TEXTS[:6]
    with httpx.Client(base_url=url, timeout=30) as client:
        for options in VARIANTS[family]:
            expected = expected_scores(reranker, QUERIES[0], texts, options, raw)
            tei = client.post("/rerank", json={"query": QUERIES[0], "texts": texts, "raw_scores": raw, **options})
            assert tei.status_code == 200, tei.text
            check_ranking([hit["index"] for hit in tei.json()], [hit["score"] for hit in tei.json()], expected)
            assert all("text" not in hit for hit in tei.json())

            v1 = client.post("/v1/rerank", json={"query": QUERIES[0], "documents": texts, "raw_scores": raw, **options})
            v2 = client.post(
                "/v2/rerank",
                json={
                    "model": "any",
                    "query": QUERIES[0],
                    "documents": [{"text": t} for t in texts],
                    "use_activation": not raw,
                    **options,
                },
            )
            for response in (v1, v2):
                assert response.status_code == 200, response.text
                results = response.json()["results"]
                check_ranking([r["index"] for r in results], [r["relevance_score"] for r in results], expected)
                assert [r["document"]["text"] for r in results] == [texts[r["index"]] for r in results]
            (scored,) = reranker.score_groups([[(QUERIES[0], text) for text in texts]], **options)
            tokens = scored.tokens
            assert v1.json()["usage"] == {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}
            if not raw:
                assert all(0 < r["relevance_score"] < 1 for r in v1.json()["results"])


def test_top_n_return_text_and_return_documents(served):
    family, url, reranker = served
    expected = expected_scores(reranker, QUERIES[1], TEXTS, {}, raw=False)
    best = sorted(range(len(TEXTS)), key=lambda i: -expected[i])
    with httpx.Client(base_url=url, timeout=30) as client:
        cohere = client.post(
            "/v1/rerank", json={"query": QUERIES[1], "documents": TEXTS, "top_n": 3, "return_documents": False}
        )
        tei = client.post("/rerank", json={"query": QUERIES[1], "texts": TEXTS, "return_text": True, "truncate": True})
        empty = client.post("/v1/rerank", json={"query": QUERIES[1], "documents": []})
    assert [r["index"] for r in cohere.json()["results"]] == best[:3]
    assert all("document" not in r for r in cohere.json()["results"])
    assert cohere.json()["model"] == checkpoint(family)
    assert [(hit["index"], hit["text"]) for hit in tei.json()] == [(i, TEXTS[i]) for i in best]
    assert empty.status_code == 200 and empty.json()["results"] == []


def test_an_option_the_model_cannot_take_is_a_422_with_the_core_message(served):
    family, url, reranker = served
    with pytest.raises(ValueError) as core_error:
        reranker.check_options(**BAD_OPTIONS[family])
    with httpx.Client(base_url=url, timeout=30) as client:
        for path, texts_field in (("/rerank", "texts"), ("/v1/rerank", "documents")):
            response = client.post(path, json={"query": "q", texts_field: ["a"], **BAD_OPTIONS[family]})
            assert response.status_code == 422
            message = str(core_error.value)
            assert response.json() == {"error": message, "error_type": "invalid_request", "detail": message}


def test_info_health_and_metrics(served):
    family, url, reranker = served
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/health").json() == {"status": "ok"}
        info = client.get("/info").json()
        before = client.get("/metrics").text
        assert client.post("/rerank", json={"query": "q", "texts": TEXTS[:5]}).status_code == 200
        after = client.get("/metrics").text
    assert (info["family"], info["device"], info["dtype"]) == (family, "cpu", "float32")
    assert info["max_positions"] == reranker.load().family.max_positions
    assert info["defaults"]["normalize"] is True and info["defaults"]["max_length"] == 512
    assert metric(after, "bge_rerank_pairs_total") - metric(before, "bge_rerank_pairs_total") == 5
    requests = metric(after, "bge_rerank_requests_total", path="/rerank", status="200")
    assert requests - metric(before, "bge_rerank_requests_total", path="/rerank", status="200") == 1
    assert metric(after, "bge_rerank_batch_pairs_count") > metric(before, "bge_rerank_batch_pairs_count")
    assert metric(after, "bge_rerank_queue_pairs") == 0


def test_64_concurrent_requests_of_mixed_sizes_and_options_get_their_own_scores(served):
    family, url, reranker = served
    rng = random.Random(family)
    requests = []
    for _ in range(64):
        texts = rng.sample(TEXTS, rng.randint(1, len(TEXTS)))
        options, raw = rng.choice(VARIANTS[family]), rng.random() < 0.5
        query = rng.choice(QUERIES)
        requests.append((rng.choice(["/rerank", "/v1/rerank", "/v2/rerank"]), query, texts, options, raw))

    async def send(client: httpx.AsyncClient, path: str, query: str, texts: list[str], options: dict, raw: bool):
        if path == "/rerank":
            body = {"query": query, "texts": texts, "raw_scores": raw, **options}
        else:
            body = {"query": query, "documents": texts, "raw_scores": raw, **options}
        return await client.post(path, json=body)

    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            before = (await client.get("/metrics")).text
            responses = await asyncio.wait_for(asyncio.gather(*(send(client, *r) for r in requests)), 120)
            after = (await client.get("/metrics")).text
        return before, responses, after

    before, responses, after = asyncio.run(main())
    for (path, query, texts, options, raw), response in zip(requests, responses):
        assert response.status_code == 200, response.text
        expected = expected_scores(reranker, query, texts, options, raw)
        hits = response.json() if path == "/rerank" else response.json()["results"]
        key = "score" if path == "/rerank" else "relevance_score"
        check_ranking([hit["index"] for hit in hits], [hit[key] for hit in hits], expected)
    batches = metric(after, "bge_rerank_batch_requests_count") - metric(before, "bge_rerank_batch_requests_count")
    merged = metric(after, "bge_rerank_batch_requests_sum") - metric(before, "bge_rerank_batch_requests_sum")
    assert merged == 64
    assert batches < 64, "concurrent requests were never merged into one model call"
    pairs = metric(after, "bge_rerank_pairs_total") - metric(before, "bge_rerank_pairs_total")
    assert pairs == sum(len(r[2]) for r in requests)
