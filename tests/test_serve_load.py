"""``bge-rerank serve`` under bounded load over real HTTP: 503 when the queue is full, disconnects, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from bge_rerank_integrations import BGEReranker

from .conftest import checkpoint
from .serve_support import ServerProcess, metric

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("one_torch_thread")]

#: A passage of about 256 tokens: each pair costs about the same, a few ms on one thread.
LONG = "Rerankers read the query and the passage together and output one relevance score. " * 10
BATCH_PAIRS = 16
MAX_QUEUE = 96
WAIT = 60


@pytest.fixture(scope="module")
def server():
    """One encoder server for the module; the last test stops it with SIGTERM."""
    server = ServerProcess(checkpoint("encoder"), "--max-batch-pairs", str(BATCH_PAIRS), "--max-queue", str(MAX_QUEUE))
    try:
        yield server
    finally:
        status = server.terminate()
        assert status == 0, f"exit status {status}:\n{server.output()}"
        server.close()


@pytest.fixture
def url(server):
    return server.url


def texts(count: int, tag: str, repeat: int = 1) -> list[str]:
    return [f"{tag} {i}. {LONG * repeat}" for i in range(count)]


def wait_for_metrics(client: httpx.Client, condition, what: str) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if condition(text):
            return text
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_full_queue_is_a_503_with_retry_after_and_the_rest_are_served(url):
    requests = [texts(32, f"r{i}") for i in range(8)]

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=WAIT) as client:
            sends = (client.post("/rerank", json={"query": "q", "texts": t, "raw_scores": True}) for t in requests)
            return await asyncio.wait_for(asyncio.gather(*sends), WAIT)

    responses = asyncio.run(main())
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 503}, statuses
    reranker = BGEReranker(checkpoint("encoder"), device="cpu")
    for response, documents in zip(responses, requests):
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error_type"] == "overloaded"
            assert f"at most {MAX_QUEUE}): retry shortly." in response.json()["error"]
        else:
            expected = reranker.compute_score([("q", text) for text in documents])
            assert {hit["index"]: hit["score"] for hit in response.json()} == pytest.approx(
                dict(enumerate(expected)), abs=1e-4
            )


def test_a_client_that_disconnects_leaves_no_work_behind(url):
    host, port = urlsplit(url).hostname, urlsplit(url).port
    big, small = texts(128, "big", repeat=2), texts(7, "small")
    with httpx.Client(base_url=url, timeout=WAIT) as client:
        before = client.get("/metrics").text
        dispatched = metric(before, "bge_rerank_batch_requests_sum")

        async def big_request():
            async with httpx.AsyncClient(base_url=url, timeout=WAIT) as other:
                return await other.post("/rerank", json={"query": "q", "texts": big})

        def run_big():
            return asyncio.run(big_request())

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(run_big)
            wait_for_metrics(
                client, lambda m: metric(m, "bge_rerank_batch_requests_sum") > dispatched, "the big request to start"
            )
            body = json.dumps({"query": "q", "texts": small}).encode()
            with socket.create_connection((host, port), timeout=WAIT) as raw:
                raw.sendall(
                    b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                wait_for_metrics(
                    client, lambda m: metric(m, "bge_rerank_queue_pairs") == len(small), "the small request to queue"
                )
            after = wait_for_metrics(
                client,
                lambda m: (
                    metric(m, "bge_rerank_cancelled_pairs_total") - metric(before, "bge_rerank_cancelled_pairs_total")
                    == len(small)
                ),
                "the small request to be dropped",
            )
            assert metric(after, "bge_rerank_queue_pairs") == 0
            assert pending.result(timeout=WAIT).status_code == 200
        final = client.get("/metrics").text
    assert metric(final, "bge_rerank_pairs_total") - metric(before, "bge_rerank_pairs_total") == len(big)
    assert metric(final, "bge_rerank_batch_requests_sum") - dispatched == 1
    assert metric(final, "bge_rerank_requests_total", path="/rerank", status="499") >= 1


def test_sigterm_finishes_every_accepted_request_then_exits_0(server):
    """Runs last in this module: it stops the module's server."""
    requests = [texts(BATCH_PAIRS, f"r{i}") for i in range(MAX_QUEUE // BATCH_PAIRS)]  # all fit in the queue
    reranker = BGEReranker(checkpoint("encoder"), device="cpu")

    async def main():
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, timeout=WAIT, limits=no_keepalive) as client:
            dispatched = metric((await client.get("/metrics")).text, "bge_rerank_batch_requests_sum")
            tasks = [asyncio.ensure_future(client.post("/rerank", json={"query": "q", "texts": t})) for t in requests]
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:  # every request is in the server: queued or dispatched
                m = (await client.get("/metrics")).text
                taken = (
                    metric(m, "bge_rerank_queue_pairs") / BATCH_PAIRS
                    + metric(m, "bge_rerank_batch_requests_sum")
                    - dispatched
                )
                if taken >= len(requests):
                    break
                await asyncio.sleep(0.01)
            unfinished = sum(not task.done() for task in tasks)
            server.process.send_signal(signal.SIGTERM)
            late = None
            while time.monotonic() < deadline:  # once the server stops listening, new connections are refused
                await asyncio.sleep(0.1)
                try:
                    answered = await client.post("/rerank", json={"query": "q", "texts": ["late"]})
                except httpx.TransportError as error:
                    late = error
                    break
                assert answered.status_code == 200, "a request taken while shutting down must still be answered"
            responses = await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
            return unfinished, late, responses

    unfinished, late, responses = asyncio.run(main())
    assert unfinished > 1, "(almost) every request had finished before SIGTERM: the test did not test shutdown"
    assert isinstance(late, httpx.ConnectError), f"the server kept taking new connections after SIGTERM: {late!r}"
    for response, documents in zip(responses, requests):
        assert response.status_code == 200, response.text
        expected = reranker.compute_score([("q", text) for text in documents], normalize=True)
        assert {hit["index"]: hit["score"] for hit in response.json()} == pytest.approx(
            dict(enumerate(expected)), abs=1e-4
        )
    assert server.process.wait(timeout=WAIT) == 0, server.output()
    assert "stopped by SIGTERM" in server.output()
