"""``RemoteReranker`` against stand-ins for TEI, Infinity, vLLM and Cohere (tests/stand_in_servers.py).

Scores, order and request bodies per API; splitting over TEI's 32-text limit and reassembly in
order; retries on 503/429 (``Retry-After`` honoured) and connection errors; one clear error for a
4xx; timeouts that fail the whole call; 50 concurrent async calls through one client, no thread
per call. Hostile servers (issue 19): answers that are not exactly one finite score per document,
a trickle of one byte at a time, Retry-After beyond the deadline, a gzip bomb, 413 halves beyond
max_concurrent_requests, an API key in a validation error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import re
import socket
import threading
import time
import tracemalloc

import pytest

from bge_rerank_integrations import RemoteReranker, RemoteRerankError, RemoteRerankTimeout, RerankResult
from bge_rerank_integrations.ranking import rank

from .stand_in_servers import (
    COHERE_KEY,
    TEI_MAX_TEXTS,
    MisbehavingServer,
    StandInServer,
    gzip_bomb,
    normalized_score,
    raw_score,
    trickle,
)

QUERY = "what is panda?"
TEXTS = [
    "Bamboo makes up almost all of a giant panda's diet.",
    "hello",
    "Red pandas are smaller than giant pandas and not closely related.",
    "The Eiffel Tower is in Paris.",
    "Pandas spend 10 to 16 hours a day feeding.",
]
MANY = [f"passage number {i} about pandas and bamboo" for i in range(75)]


@pytest.fixture(scope="module")
def stand_in():
    server = StandInServer().start()
    yield server
    server.stop()


@pytest.fixture
def server(stand_in):
    stand_in.reset()
    yield stand_in
    stand_in.reset()


def client(server: StandInServer, api: str, **kwargs) -> RemoteReranker:
    """A RemoteReranker on the stand-in of ``api`` (Cohere: its key, a model and normalized scores)."""
    if api == "cohere":
        kwargs = {"model": "rerank-v3.5", "api_key": COHERE_KEY, "normalize": True, **kwargs}
    return RemoteReranker(f"{server.url}/{api}", api=api, **kwargs)


def expected_scores(texts, normalize=False, query=QUERY) -> list[float]:
    score = normalized_score if normalize else raw_score
    return [score(query, text) for text in texts]


API_CASES = [
    ("tei", False, {"raw_scores": True, "truncate": True}),
    ("tei", True, {"raw_scores": False}),
    ("infinity", False, {"raw_scores": True}),
    ("infinity", True, {"raw_scores": False}),
    ("vllm", False, {"use_activation": False}),
    ("vllm", True, {"use_activation": True}),
    ("cohere", True, {"model": "rerank-v3.5"}),
]


# --- scores, order and request shapes ---------------------------------------------------------------


@pytest.mark.parametrize("api, normalize, fields", API_CASES)
def test_scores_in_input_order_and_the_scale_asked_for(server, api, normalize, fields):
    reranker = client(server, api, normalize=normalize)
    scores = reranker.compute_score([[QUERY, text] for text in TEXTS])
    assert scores == pytest.approx(expected_scores(TEXTS, normalize), abs=1e-12)
    assert reranker.compute_score([QUERY, TEXTS[1]]) == pytest.approx(
        expected_scores(TEXTS[1:2], normalize)[0], abs=1e-12
    )
    body = server.requests[0]["body"]
    assert body["query"] == QUERY and body["texts" if api == "tei" else "documents"] == TEXTS
    assert {name: body.get(name) for name in fields} == fields
    assert "top_n" not in body  # every score comes back; the ranking is ours
    reranker.close()


@pytest.mark.parametrize("api, normalize, fields", API_CASES)
async def test_async_scores_equal_the_sync_ones(server, api, normalize, fields):
    reranker = client(server, api, normalize=normalize)
    scores = await reranker.acompute_score([[QUERY, text] for text in TEXTS])
    assert scores == pytest.approx(expected_scores(TEXTS, normalize), abs=1e-12)
    assert await reranker.arerank(QUERY, TEXTS, top_n=2) == rank(TEXTS, scores, 2, None)
    await reranker.aclose()


def test_rerank_ranks_like_the_in_process_reranker(server):
    reranker = client(server, "tei")
    scores = expected_scores(TEXTS)
    results = reranker.rerank(QUERY, TEXTS)
    assert [r.index for r in results] == sorted(range(len(TEXTS)), key=lambda i: -scores[i])
    assert all(isinstance(r, RerankResult) and r.text == TEXTS[r.index] for r in results)
    assert reranker.rerank(QUERY, TEXTS, top_n=2) == results[:2]
    threshold = results[2].score
    assert reranker.rerank(QUERY, TEXTS, score_threshold=threshold) == results[:3]
    assert reranker.rerank(QUERY, TEXTS, top_n=0) == []
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank(QUERY, TEXTS, top_n=-1)
    with pytest.raises(TypeError, match="query must be a string"):
        reranker.rerank(None, TEXTS)
    reranker.close()


def test_per_call_normalize_overrides_the_default(server):
    reranker = client(server, "infinity")
    assert reranker.compute_score([[QUERY, t] for t in TEXTS], normalize=True) == pytest.approx(
        expected_scores(TEXTS, True)
    )
    assert server.requests[-1]["body"]["raw_scores"] is False
    assert reranker.compute_score([[QUERY, t] for t in TEXTS]) == pytest.approx(expected_scores(TEXTS))
    reranker.close()


def test_pairs_with_several_queries_are_grouped_per_query_and_reassembled(server):
    reranker = client(server, "tei")
    pairs = [[QUERY if i % 3 else "capital of France", text] for i, text in enumerate(TEXTS * 2)]
    scores = reranker.compute_score(pairs)
    assert scores == pytest.approx([raw_score(q, t) for q, t in pairs], abs=1e-12)
    assert sorted(r["body"]["query"] for r in server.requests) == ["capital of France", QUERY]
    reranker.close()


def test_full_endpoint_urls_are_used_as_given(server):
    for path in ("/vllm/rerank", "/vllm/v1/rerank"):
        reranker = RemoteReranker(server.url + path, api="vllm")
        assert reranker.endpoint == server.url + path
        assert reranker.compute_score([QUERY, "hi"]) == pytest.approx(raw_score(QUERY, "hi"))
        assert server.requests[-1]["path"] == path
        reranker.close()
    assert RemoteReranker("http://127.0.0.1:9/", api="vllm").endpoint == "http://127.0.0.1:9/v2/rerank"


def test_no_pairs_sends_nothing(server):
    reranker = client(server, "tei")
    assert reranker.compute_score([]) == []
    assert reranker.rerank(QUERY, []) == []
    assert server.requests == []


# --- splitting ------------------------------------------------------------------------------------


def test_tei_requests_are_split_at_32_sent_concurrently_and_reassembled_in_order(server):
    server.delay = 0.5  # so that concurrent requests overlap at the server
    reranker = client(server, "tei")
    results = reranker.rerank(QUERY, MANY)
    scores = expected_scores(MANY)
    assert [(r.index, r.score) for r in results] == [(r.index, r.score) for r in rank(MANY, scores, None, None)]
    assert sorted(server.sizes()) == [11, TEI_MAX_TEXTS, TEI_MAX_TEXTS]
    assert server.max_in_flight == 3
    reranker.close()


def test_max_concurrent_requests_bounds_the_requests_in_flight(server):
    server.delay = 0.3
    reranker = client(server, "infinity", max_documents_per_request=10, max_concurrent_requests=2)
    assert reranker.compute_score([[QUERY, text] for text in MANY]) == pytest.approx(expected_scores(MANY))
    assert sorted(server.sizes()) == [5] + [10] * 7
    assert server.max_in_flight == 2
    reranker.close()


def test_a_413_halves_the_request(server, caplog):
    reranker = client(server, "tei", max_documents_per_request=100)  # more than this TEI takes
    with caplog.at_level(logging.WARNING, logger="bge_rerank_integrations.remote"):
        scores = reranker.compute_score([[QUERY, text] for text in MANY])
    assert scores == pytest.approx(expected_scores(MANY), abs=1e-12)
    assert server.sizes()[0] == 75 and sorted(server.sizes()[1:]) == [18, 19, 19, 19, 37, 38]
    assert "413" in caplog.text and "max_documents_per_request" in caplog.text
    reranker.close()


# --- retries --------------------------------------------------------------------------------------


def test_503_with_retry_after_is_waited_out_and_retried(server, caplog):
    server.fail_next(1, 503, {"error": "Model is overloaded", "error_type": "overloaded"}, {"Retry-After": "1"})
    reranker = client(server, "tei")
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="bge_rerank_integrations.remote"):
        scores = reranker.compute_score([[QUERY, text] for text in TEXTS])
    assert time.monotonic() - start >= 0.95
    assert "retry 1 of 3 in 1.00s" in caplog.text
    assert scores == pytest.approx(expected_scores(TEXTS))
    assert len(server.requests) == 2
    reranker.close()


async def test_429_is_retried_with_backoff_on_the_async_path(server):
    server.fail_next(2, 429, {"error": "Model is overloaded", "error_type": "overloaded"})
    reranker = client(server, "vllm")
    assert await reranker.acompute_score([[QUERY, text] for text in TEXTS]) == pytest.approx(expected_scores(TEXTS))
    assert len(server.requests) == 3
    await reranker.aclose()


def test_retries_give_up_with_the_servers_message(server):
    server.fail_next(3, 503, {"error": "Model is overloaded", "error_type": "overloaded"}, {"Retry-After": "0"})
    reranker = client(server, "tei", retries=2)
    with pytest.raises(
        RemoteRerankError, match="503 Service Unavailable: Model is overloaded .after 3 attempts"
    ) as caught:
        reranker.compute_score([QUERY, "hi"])
    assert caught.value.status_code == 503
    assert len(server.requests) == 3
    reranker.close()


def test_connection_errors_are_retried_then_reported():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reranker = RemoteReranker(f"http://127.0.0.1:{port}", api="tei", retries=1)
    with pytest.raises(
        RemoteRerankError, match=r"Could not reach http://127.0.0.1:\d+/rerank after 2 attempt\(s\): ConnectError"
    ):
        reranker.compute_score([QUERY, "hi"])
    reranker.close()


# --- errors ---------------------------------------------------------------------------------------


def test_a_4xx_is_one_error_with_the_servers_message_and_no_retry(server):
    reranker = client(server, "cohere", api_key="wrong")
    with pytest.raises(RemoteRerankError, match="401 Unauthorized: invalid api token. Check api_key") as caught:
        reranker.compute_score([QUERY, "hi"])
    assert caught.value.status_code == 401 and len(server.requests) == 1
    server.fail_next(1, 422, {"detail": [{"loc": ["body", "query"], "msg": "too long"}]})
    with pytest.raises(RemoteRerankError, match=r"422 Unprocessable (Entity|Content): \[\{\"loc\""):
        client(server, "tei").compute_score([QUERY, "hi"])
    with pytest.raises(RemoteRerankError, match="404 Not Found.*Check url and api"):
        RemoteReranker(f"{server.url}/nowhere", api="tei").compute_score([QUERY, "hi"])
    reranker.close()


def test_a_single_document_too_large_for_the_server_is_an_error(server):
    server.fail_next(1, 413, {"error": "payload too large", "error_type": "validation"})
    with pytest.raises(
        RemoteRerankError, match="413 Payload Too Large|413 Request Entity Too Large|413 Content Too Large"
    ):
        client(server, "tei").compute_score([QUERY, "hi"])


@pytest.mark.parametrize(
    "answer",
    [
        [{"index": 0, "score": 1.0}],  # one of two missing
        [{"index": 0, "score": 1.0}, {"index": 0, "score": 2.0}],  # a duplicate
        [{"index": 0, "score": 1.0}, {"index": 1, "score": "high"}],  # not a number
        {"results": []},  # another API's shape
    ],
)
def test_incomplete_or_malformed_answers_are_errors_not_partial_results(server, answer):
    server.fail_next(1, 200, answer)
    with pytest.raises(RemoteRerankError, match="answered"):
        client(server, "tei").compute_score([[QUERY, "a"], [QUERY, "b"]])


def test_a_timeout_fails_the_whole_call(server):
    server.delay = 1.5
    reranker = client(server, "tei", timeout=0.3, max_documents_per_request=2)
    with pytest.raises(RemoteRerankTimeout, match="did not answer within timeout=0.3s"):
        reranker.compute_score([[QUERY, text] for text in TEXTS])
    assert len(server.requests) == 3  # the three chunks were sent; none was retried
    reranker.close()


async def test_a_timeout_fails_the_whole_async_call(server):
    server.delay = 1.5
    reranker = client(server, "infinity", timeout=0.3)
    with pytest.raises(TimeoutError):
        await reranker.arerank(QUERY, TEXTS)
    await reranker.aclose()


# --- hostile servers: a wrong answer never becomes a score ------------------------------------------

ALL_APIS = ["bge", "tei", "infinity", "vllm", "cohere"]
#: Answers for three documents, as (index, score) JSON texts, with what the error must say.
BAD_RESULTS = {
    "an extra duplicate": (
        [("0", "0.1"), ("1", "0.2"), ("2", "0.3"), ("0", "999.0")],
        r"index 0 appears twice \(again in result 3\)",
    ),
    "one missing": ([("0", "0.1"), ("2", "0.3")], r"it has 2 result\(s\) for 3 document\(s\)"),
    "a duplicate": ([("0", "0.1"), ("0", "999.0"), ("2", "0.3")], "index 0 appears twice"),
    "index true": ([("0", "0.1"), ("true", "0.2"), ("2", "0.3")], "index True, not an integer"),
    "index 1.0": ([("0", "0.1"), ("1.0", "0.2"), ("2", "0.3")], "index 1.0, not an integer"),
    "index null": ([("0", "0.1"), ("null", "0.2"), ("2", "0.3")], "index None, not an integer"),
    "index out of range": ([("0", "0.1"), ("1", "0.2"), ("3", "0.3")], r"index 3, outside 0\.\.2"),
    "negative index": ([("-1", "0.1"), ("1", "0.2"), ("2", "0.3")], r"index -1, outside 0\.\.2"),
    "401-digit score": (
        [("0", "1" + "0" * 400), ("1", "0.2"), ("2", "0.3")],
        "an integer of 401 digits, not a finite number",
    ),
    "NaN score": ([("0", "NaN"), ("1", "0.2"), ("2", "0.3")], "nan, not a finite number"),
    "overflowing float": ([("0", "1e999"), ("1", "0.2"), ("2", "0.3")], "inf, not a finite number"),
    "score true": ([("0", "true"), ("1", "0.2"), ("2", "0.3")], "True, not a finite number"),
    "score string": ([("0", '"0.5"'), ("1", "0.2"), ("2", "0.3")], "'0.5', not a finite number"),
    "score missing": ([("0", None), ("1", "0.2"), ("2", "0.3")], "None, not a finite number"),
}
BAD_BODIES = {
    "over-nested JSON": (b"[" * 100_000 + b"]" * 100_000, "not JSON .RecursionError"),
    "not JSON": (b"<html>busy</html>", "not JSON .JSONDecodeError"),
    "results not objects": (None, "result 0 is 1, not an object"),
}


def bad_answer(api: str, results: list[tuple[str, str | None]]) -> bytes:
    """``results`` in the answer shape of ``api`` (bare array or ``{"results": [...]}``), as raw JSON."""
    score_key = "score" if api in ("bge", "tei") else "relevance_score"
    items = ", ".join(
        '{{"index": {}{}}}'.format(index, "" if score is None else f', "{score_key}": {score}')
        for index, score in results
    )
    return f"[{items}]".encode() if api in ("bge", "tei") else f'{{"id": "x", "results": [{items}]}}'.encode()


def hostile_client(server: StandInServer, api: str, **kwargs) -> RemoteReranker:
    """``client`` for every API; ``bge`` talks to the TEI stand-in's path (same answer shape)."""
    if api == "bge":
        return RemoteReranker(f"{server.url}/tei/rerank", api="bge", **kwargs)
    return client(server, api, **kwargs)


@pytest.mark.parametrize("api", ALL_APIS)
@pytest.mark.parametrize("case", [*BAD_RESULTS, *BAD_BODIES])
def test_an_answer_that_is_not_one_finite_score_per_document_is_an_error_naming_the_server(server, api, case):
    if case in BAD_RESULTS:
        results, message = BAD_RESULTS[case]
        body = bad_answer(api, results)
    else:
        body, message = BAD_BODIES[case]
        if body is None:
            body = b"[1, 2, 3]" if api in ("bge", "tei") else b'{"results": [1, 2, 3]}'
    server.fail_next(1, 200, body)
    reranker = hostile_client(server, api)
    with pytest.raises(RemoteRerankError) as caught:
        reranker.compute_score([[QUERY, text] for text in TEXTS[:3]])
    assert type(caught.value) is RemoteRerankError and caught.value.status_code == 200
    assert re.search(
        f"^{re.escape(reranker.endpoint)} \\({api} API\\) answered 200 with an unusable answer: .*{message}",
        str(caught.value),
    )
    assert len(server.requests) == 1  # a wrong answer is not retried
    reranker.close()


@pytest.mark.parametrize("api", ALL_APIS)
async def test_a_right_answer_in_any_order_with_integer_scores_is_taken(server, api):
    reranker = hostile_client(server, api)
    server.fail_next(1, 200, bad_answer(api, [("2", "3"), ("0", "-1.5e2"), ("1", "0")]))
    assert await reranker.acompute_score([[QUERY, text] for text in TEXTS[:3]]) == [-150.0, 0.0, 3.0]
    await reranker.aclose()


# --- hostile servers: timeout is the deadline of the whole call ---------------------------------------


def test_a_server_that_trickles_one_byte_at_a_time_is_cut_off_at_the_deadline():
    with MisbehavingServer(trickle(every=0.5, count=40)) as slow:  # 20 s of bytes, each well within a read timeout
        reranker = RemoteReranker(slow.url, api="tei", timeout=2, retries=0)
        with pytest.raises(
            RemoteRerankTimeout, match="did not answer within timeout=2s, the deadline of the whole call"
        ):
            reranker.compute_score([[QUERY, text] for text in TEXTS])
        assert slow.sent < 40  # the call ended before the server finished trickling
        reranker.close()


async def test_a_server_that_trickles_is_cut_off_at_the_deadline_on_the_async_path():
    with MisbehavingServer(trickle(every=0.5, count=40)) as slow:
        reranker = RemoteReranker(slow.url, api="infinity", timeout=2, retries=0)
        with pytest.raises(RemoteRerankTimeout, match="timeout=2s"):
            await reranker.arerank(QUERY, TEXTS)
        assert slow.sent < 40
        await reranker.aclose()


def test_a_retry_after_beyond_the_deadline_fails_at_once_with_the_servers_wait(server):
    server.fail_next(1, 503, {"error": "Model is overloaded", "error_type": "overloaded"}, {"Retry-After": "3600"})
    reranker = client(server, "tei", timeout=5)
    with pytest.raises(RemoteRerankTimeout) as caught:
        reranker.compute_score([[QUERY, text] for text in TEXTS])
    message = str(caught.value)
    assert (
        "answered 503 Service Unavailable: Model is overloaded and asked to retry after 3600s (Retry-After: 3600)"
        in message
    )
    assert "left of timeout=5s" in message and caught.value.status_code == 503
    assert len(server.requests) == 1  # no capped waits and retries
    reranker.close()


async def test_retries_and_their_waits_count_against_the_deadline(server):
    server.fail_next(20, 503, {"error": "Model is overloaded", "error_type": "overloaded"}, {"Retry-After": "1"})
    reranker = client(server, "vllm", timeout=2.5, retries=10)
    with pytest.raises(
        RemoteRerankTimeout,
        match="asked to retry after 1s .Retry-After: 1., more than the [01]\\.\\ds left of timeout=2.5s",
    ):
        await reranker.acompute_score([[QUERY, text] for text in TEXTS])
    assert 2 <= len(server.requests) <= 3  # not the 11 attempts that retries=10 allows
    await reranker.aclose()


# --- hostile servers: bounded responses ----------------------------------------------------------------


def test_a_gzip_bomb_fails_at_the_limit_with_a_small_peak_memory():
    inflated = 384 << 20
    with MisbehavingServer(gzip_bomb(b"[", inflated)) as bomb:
        reranker = RemoteReranker(bomb.url, api="tei", retries=0)
        tracemalloc.start()
        try:
            limit = (1 << 20) + 1024 * 3 + 8 * sum(len(text.encode()) for text in TEXTS[:3])  # the documented default
            with pytest.raises(
                RemoteRerankError,
                match=rf"answered more than {limit} bytes \(decompressed\) for 3 document\(s\), the default limit",
            ):
                reranker.compute_score([[QUERY, text] for text in TEXTS[:3]])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB while reading a bomb of {inflated >> 20} MiB"
        reranker.close()


def test_max_response_bytes_bounds_an_answer_and_the_default_scales_with_the_documents(server):
    with pytest.raises(
        RemoteRerankError, match="answered more than 100 bytes .decompressed. for 5 document.s., max_response_bytes=100"
    ):
        client(server, "vllm", max_response_bytes=100).compute_score([[QUERY, text] for text in TEXTS])
    long_texts = [f"{i} " + "bamboo " * 60_000 for i in range(3)]  # vLLM echoes each: an answer of 1.3 MB
    assert client(server, "vllm").compute_score([[QUERY, text] for text in long_texts]) == pytest.approx(
        expected_scores(long_texts)
    )
    assert client(server, "vllm", max_response_bytes=2_000_000).settings()["max_response_bytes"] == 2_000_000
    with pytest.raises(ValueError, match="max_response_bytes must be a positive"):
        client(server, "vllm", max_response_bytes=0)


# --- hostile servers: max_concurrent_requests bounds every request in flight ---------------------------


def test_max_concurrent_requests_bounds_the_halves_of_a_413_too():
    server = StandInServer().start()  # its own: no request of an earlier test is still in flight there
    try:
        server.delay = 0.2  # so that requests in flight overlap at the server
        texts = [f"passage {i} about bamboo" for i in range(256)]
        reranker = client(server, "tei", max_documents_per_request=256, max_concurrent_requests=2)
        assert reranker.compute_score([[QUERY, text] for text in texts]) == pytest.approx(
            expected_scores(texts), abs=1e-12
        )
        assert sorted(server.sizes()) == [32] * 8 + [64] * 4 + [128] * 2 + [256]
        assert server.max_in_flight == 2
        reranker.close()
    finally:
        server.stop()


# --- construction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"url": "127.0.0.1:8080"}, "url must be an http:// or https:// address"),
        ({"url": "http://h", "api": "openai"}, "api must be one of"),
        ({"url": "http://h", "api": "cohere", "model": "m"}, "returns only normalized scores.*normalize=True"),
        ({"url": "http://h", "api": "cohere", "normalize": True}, "needs model="),
        ({"url": "http://h", "api": "tei", "model": "m"}, "takes no model="),
        ({"url": "http://h", "api": "tei", "max_length": 256}, "max_length are BGE scoring options"),
        ({"url": "http://h", "api": "vllm", "prompt": "p", "cutoff_layers": [8]}, "cutoff_layers, prompt are BGE"),
        ({"url": "http://h", "api": "bge", "cutoff_layers": [8, 12]}, "one score per document"),
        ({"url": "http://h", "api": "bge", "batch_size": 0}, "batch_size must be a positive integer"),
        ({"url": "http://h", "api": "bge", "batch_size": 8}, "batch_size is the server's own setting"),
        ({"url": "http://h", "api": "bge", "colour": "red"}, "Unknown scoring option"),
        ({"url": "http://h", "timeout": 0}, "timeout must be a positive number"),
        ({"url": "http://h", "max_documents_per_request": 0}, "max_documents_per_request must be a positive"),
        ({"url": "http://h", "retries": -1}, "retries must be"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        RemoteReranker(**kwargs)


def test_per_call_options_are_checked_like_the_constructors(server):
    reranker = client(server, "cohere")
    with pytest.raises(ValueError, match="normalize=True"):
        reranker.compute_score([QUERY, "hi"], normalize=False)
    with pytest.raises(ValueError, match="prompt are BGE scoring options"):
        client(server, "tei").rerank(QUERY, TEXTS, prompt="Yes or No?")
    assert server.requests == []


def test_the_api_key_is_sent_but_never_shown_or_serialized(server, monkeypatch):
    monkeypatch.setenv("BGE_RERANK_API_KEY", COHERE_KEY)
    reranker = RemoteReranker(f"{server.url}/cohere", api="cohere", model="rerank-v3.5", normalize=True)
    assert reranker.compute_score([QUERY, "hi"]) == pytest.approx(normalized_score(QUERY, "hi"))
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {COHERE_KEY}"
    assert COHERE_KEY not in repr(reranker) + str(reranker.settings())
    assert RemoteReranker(**reranker.settings()).settings() == reranker.settings()
    copied = pickle.loads(pickle.dumps(reranker))  # a copy works (fresh connections)
    assert copied.compute_score([QUERY, "hi"]) == pytest.approx(normalized_score(QUERY, "hi"))
    monkeypatch.delenv("BGE_RERANK_API_KEY")
    explicit = RemoteReranker(f"{server.url}/tei", api="tei", api_key="k1")
    explicit.compute_score([QUERY, "hi"])
    assert server.requests[-1]["headers"]["authorization"] == "Bearer k1"
    client(server, "tei").compute_score([QUERY, "hi"])
    assert "authorization" not in server.requests[-1]["headers"]
    for each in (reranker, copied, explicit):
        each.close()


def test_sync_calls_from_many_threads_share_one_loop_thread(server, monkeypatch):
    reranker = client(server, "tei")
    results: list = [None] * 8
    started: list[threading.Thread] = []
    original_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self), original_start(self)))

    def work(i: int) -> None:
        results[i] = reranker.compute_score([[QUERY, text] for text in TEXTS])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r == pytest.approx(expected_scores(TEXTS)) for r in results)
    loop_threads = [thread for thread in started if thread not in threads]
    assert [thread.name for thread in loop_threads] == ["bge-rerank-remote"]  # one for the reranker, none per call
    reranker.close()
    assert not loop_threads[0].is_alive()


# --- concurrency ----------------------------------------------------------------------------------


async def test_50_concurrent_async_calls_through_one_client_without_a_thread_per_call(server, monkeypatch):
    server.delay = 0.05
    reranker = client(server, "tei")
    started = []
    original_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), original_start(self)))
    queries = [f"question {i} about pandas" for i in range(50)]
    results = await asyncio.gather(*(reranker.arerank(q, TEXTS, top_n=3) for q in queries))
    for query, result in zip(queries, results):
        assert result == rank(TEXTS, expected_scores(TEXTS, query=query), 3, None)
    assert started == []
    assert len(server.requests) == 50 and server.max_in_flight > 1
    await reranker.aclose()


# --- the adapters over a server ---------------------------------------------------------------------

langchain_documents = pytest.importorskip("langchain_core.documents")
llama_schema = pytest.importorskip("llama_index.core.schema")


def lc_rerank(**settings):
    from bge_rerank_integrations.langchain import BGERerank

    return BGERerank(**settings)


def li_rerank(**settings):
    from bge_rerank_integrations.llama_index import BGERerank

    return BGERerank(**settings)


ADAPTERS = {"langchain": lc_rerank, "llama_index": li_rerank}


async def adapter_ranking(adapter, use_async: bool) -> list[tuple[int, float]]:
    """(input position, score) best first, through the adapter's sync or async path."""
    if hasattr(adapter, "compress_documents"):
        docs = [langchain_documents.Document(page_content=text, id=str(i)) for i, text in enumerate(TEXTS)]
        out = await adapter.acompress_documents(docs, QUERY) if use_async else adapter.compress_documents(docs, QUERY)
        return [(int(d.id), d.metadata["relevance_score"]) for d in out]
    nodes = [
        llama_schema.NodeWithScore(node=llama_schema.TextNode(text=text, id_=str(i)), score=0.0)
        for i, text in enumerate(TEXTS)
    ]
    if use_async:
        out = await adapter.apostprocess_nodes(nodes, query_str=QUERY)
    else:
        out = adapter.postprocess_nodes(nodes, query_str=QUERY)
    return [(int(n.node.node_id), n.score) for n in out]


@pytest.mark.parametrize("name", ADAPTERS)
@pytest.mark.parametrize("api", ["tei", "infinity", "vllm"])
async def test_adapters_score_through_a_server_url(server, name, api, monkeypatch):
    adapter = ADAPTERS[name](model=f"{server.url}/{api}", api=api, top_n=3)
    assert isinstance(adapter.reranker, RemoteReranker) and adapter.reranker.api == api
    want = [(r.index, r.score) for r in rank(TEXTS, expected_scores(TEXTS), 3, None)]
    assert await adapter_ranking(adapter, use_async=False) == want

    def sync_path(*args, **kwargs):
        raise AssertionError("the async path used the synchronous client")

    monkeypatch.setattr(RemoteReranker, "compute_score", sync_path)
    assert await adapter_ranking(adapter, use_async=True) == want


@pytest.mark.parametrize("name", ADAPTERS)
async def test_adapters_share_a_remote_reranker_and_serialize_it_without_its_key(server, name, monkeypatch):
    remote = RemoteReranker(
        f"{server.url}/cohere", api="cohere", model="rerank-v3.5", api_key=COHERE_KEY, normalize=True, timeout=5
    )
    adapter = ADAPTERS[name](model=remote, top_n=None)
    assert adapter.reranker is remote
    want = [(r.index, r.score) for r in rank(TEXTS, expected_scores(TEXTS, normalize=True), None, None)]
    assert await adapter_ranking(adapter, use_async=True) == want
    saved = adapter.to_dict() if hasattr(adapter, "to_dict") else adapter.model_dump()
    assert {k: saved[k] for k in ("model", "api", "remote_model", "timeout", "normalize")} == {
        "model": f"{server.url}/cohere",
        "api": "cohere",
        "remote_model": "rerank-v3.5",
        "timeout": 5.0,
        "normalize": True,
    }
    assert "api_key" not in saved and COHERE_KEY not in repr(saved) + repr(adapter)
    saved.pop("class_name", None)
    monkeypatch.setenv("BGE_RERANK_API_KEY", COHERE_KEY)
    rebuilt = ADAPTERS[name](**saved)
    assert await adapter_ranking(rebuilt, use_async=False) == want


@pytest.mark.parametrize("name", ADAPTERS)
def test_the_adapters_api_key_setting_is_used_and_never_dumped(server, name):
    adapter = ADAPTERS[name](
        model=f"{server.url}/cohere", api="cohere", remote_model="rerank-v3.5", api_key=COHERE_KEY, normalize=True
    )
    asyncio.run(adapter_ranking(adapter, use_async=False))
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {COHERE_KEY}"
    saved = adapter.to_json() if hasattr(adapter, "to_json") else adapter.model_dump_json()
    assert COHERE_KEY not in saved + repr(adapter) and "api_key" not in saved


@pytest.mark.parametrize("name", [*ADAPTERS, "cross_encoder"])
def test_an_api_key_never_shows_in_a_validation_error(server, name):
    secret = "sk-live-0123456789abcdef"
    if name == "cross_encoder":
        from bge_rerank_integrations.langchain import BGECrossEncoder as build
    else:
        build = ADAPTERS[name]
    url = f"{server.url}/cohere"
    attempts = [
        lambda: build(model=url, api="cohere", remote_model="rerank-v3.5", normalize=True, apikey=secret),  # misspelled
        lambda: build(
            model=url, api="cohere", remote_model="rerank-v3.5", normalize=True, api_key=[secret]
        ),  # wrong type
        lambda: setattr(build(model=url, api="tei"), "api_key", secret),  # frozen once built
    ]
    for attempt in attempts:
        with pytest.raises(ValueError) as caught:
            attempt()
        assert secret not in str(caught.value) + repr(caught.value)
        assert re.search("apikey|api_key", str(caught.value))  # the field is still named


@pytest.mark.parametrize("name", ADAPTERS)
@pytest.mark.parametrize(
    "settings, message",
    [
        ({"model": "http://127.0.0.1:9", "device": "cpu"}, "device.*model is a server URL"),
        ({"model": "tests/fixtures/checkpoints/encoder", "api": "tei"}, "apply to a rerank server"),
        ({"model": "http://127.0.0.1:9", "api": "tei", "max_length": 128}, "max_length are BGE scoring options"),
        ({"model": "http://127.0.0.1:9", "api": "cohere", "remote_model": "m"}, "normalize=True"),
        ({"model": "http://127.0.0.1:9", "api": "grpc"}, "api must be one of"),
    ],
)
def test_adapter_settings_that_do_not_fit_a_server_fail_at_construction(name, settings, message):
    with pytest.raises(ValueError, match=message):
        ADAPTERS[name](**settings)


@pytest.mark.parametrize("name", ADAPTERS)
def test_remote_settings_with_a_shared_remote_reranker_are_an_error(name):
    with pytest.raises(ValueError, match="existing RemoteReranker"):
        ADAPTERS[name](model=RemoteReranker("http://127.0.0.1:9", api="tei"), timeout=3)


# --- the command line -----------------------------------------------------------------------------


def test_the_command_line_ranks_through_a_server(server, capsys):
    from bge_rerank_integrations.cli import main

    assert main(["--url", f"{server.url}/tei", "--api", "tei", "-q", QUERY, "--json", "--top-n", "3", *TEXTS]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == [
        {"index": r.index, "score": r.score, "text": r.text} for r in rank(TEXTS, expected_scores(TEXTS), 3, None)
    ]
    assert server.requests[-1]["body"]["raw_scores"] is True
    assert (
        main(["--url", f"{server.url}/infinity", "--api", "infinity", "-q", QUERY, "--normalize", "--json", *TEXTS])
        == 0
    )
    assert [r["score"] for r in json.loads(capsys.readouterr().out)] == sorted(
        expected_scores(TEXTS, True), reverse=True
    )


@pytest.mark.parametrize(
    "args, status, message",
    [
        (
            ["--url", "http://127.0.0.1:9", "--device", "cpu", "--fp16"],
            2,
            "device, use_fp16 choose how a local model is loaded",
        ),
        (["--url", "http://127.0.0.1:9", "--api", "cohere", "--remote-model", "m"], 2, "normalize=True"),
        (["--url", "http://127.0.0.1:9", "--api", "tei", "--prompt", "p"], 2, "prompt are BGE scoring options"),
        ([], 2, "give a local model with --model, or a rerank server with --url"),
        (["--url", "http://127.0.0.1:9", "-m", "x"], 2, "one of them"),
    ],
)
def test_the_command_line_refuses_what_does_not_fit_a_server(args, status, message, capsys):
    from bge_rerank_integrations.cli import main

    with contextlib.suppress(SystemExit):
        assert main([*args, "-q", QUERY, "hi"]) == status
    assert message in capsys.readouterr().err


def test_the_command_line_reports_a_server_error(server, capsys):
    from bge_rerank_integrations.cli import main

    assert main(["--url", f"{server.url}/nowhere", "--api", "tei", "-q", QUERY, "hi"]) == 1
    assert "404 Not Found" in capsys.readouterr().err


def test_the_command_line_bounds_the_answer_with_max_response_bytes(server, capsys):
    from bge_rerank_integrations.cli import main

    assert main(["--url", f"{server.url}/tei", "--api", "tei", "-q", QUERY, "--max-response-bytes", "10", *TEXTS]) == 1
    assert "more than 10 bytes (decompressed)" in capsys.readouterr().err
