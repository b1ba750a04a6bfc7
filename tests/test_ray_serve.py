"""``build_app`` on a local Ray Serve: two replicas give in-process scores, and survive a killed replica."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bge_rerank_integrations import BGEReranker

from .conftest import checkpoint
from .serve_support import metric

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.ray
from ray import serve

from bge_rerank_integrations.ray import build_app
from bge_rerank_integrations.ray.serve import free_port

ENCODER = checkpoint("encoder")
APP = "bge-rerank"


@pytest.fixture(scope="module")
def endpoint(local_ray):
    """Two replicas (half a CPU each) behind Serve's proxy on 127.0.0.1 and a free port; shut down after."""
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(ENCODER, num_replicas=2, ray_actor_options={"num_cpus": 0.5}), name=APP, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _request(number: int) -> dict:
    return {
        "query": f"question {number % 5}?",
        "texts": [f"passage {number} " * (k + 1) for k in range(4)],
        "raw_scores": True,
    }


def _expected(number: int) -> list[float]:
    request = _request(number)
    return BGEReranker(ENCODER, device="cpu").compute_score([(request["query"], text) for text in request["texts"]])


def _scores(response: list[dict]) -> list[float]:
    """TEI's answer (best first) back in input order."""
    return [item["score"] for item in sorted(response, key=lambda item: item["index"])]


def _post(base: str, number: int, retry_until: float | None = None) -> tuple[list[float], int]:
    """Scores for request ``number``, and how many tries it took (retrying 5xx and dropped connections until ``retry_until``)."""
    tries = 0
    while True:
        tries += 1
        try:
            response = httpx.post(f"{base}/rerank", json=_request(number), timeout=60)
            if response.status_code < 500:
                assert response.status_code == 200, response.text
                return _scores(response.json()), tries
        except httpx.TransportError:
            pass
        if retry_until is None or time.monotonic() > retry_until:
            raise AssertionError(f"request {number} failed after {tries} tries")
        time.sleep(0.5)


def test_two_replicas_answer_concurrent_requests_with_in_process_scores(endpoint):
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda number: _post(endpoint, number)[0], range(32)))
    for number, scores in enumerate(answers):
        assert scores == pytest.approx(_expected(number), abs=1e-4)
    assert httpx.get(f"{endpoint}/health", timeout=10).status_code == 200
    merged = []  # each /metrics answer is one replica's: some model call there served several requests
    for _ in range(6):
        text = httpx.get(f"{endpoint}/metrics", timeout=10).text
        merged.append(metric(text, "bge_rerank_batch_requests_sum") > metric(text, "bge_rerank_batch_requests_count"))
    assert any(merged)


def _replicas() -> list[str]:
    import ray

    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["name"].startswith("SERVE_REPLICA::")
    )


def test_killed_replica_is_replaced_and_every_request_is_answered(endpoint):
    import ray

    before = _replicas()
    assert len(before) == 2
    deadline = time.monotonic() + 180
    done = 0

    def one(number: int) -> list[float]:
        nonlocal done
        scores, _ = _post(endpoint, number, retry_until=deadline)
        done += 1
        return scores

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, number) for number in range(48)]
        while done < 8:  # some load has been served: now kill one replica's actor mid-load
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
        answers = [future.result(timeout=max(1.0, deadline - time.monotonic())) for future in futures]
    for number, scores in enumerate(answers):
        assert scores == pytest.approx(_expected(number), abs=1e-4)
    while True:  # the deployment is back to two running replicas, one of them new
        replicas = _replicas()
        states = serve.status().applications[APP].deployments["BGEReranker"].replica_states
        if len(replicas) == 2 and before[0] not in replicas and states.get("RUNNING") == 2:
            break
        assert time.monotonic() < deadline, (replicas, states)
        time.sleep(0.5)
    assert _post(endpoint, 0)[0] == pytest.approx(_expected(0), abs=1e-4)
