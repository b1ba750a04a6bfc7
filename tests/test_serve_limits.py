"""``bge-rerank serve`` limits and bad input over real HTTP: 401, 413, 422 (never 500), with their messages."""

from __future__ import annotations

import httpx
import pytest

from bge_rerank_integrations.serving.serve import main as serve_main

from .conftest import checkpoint
from .serve_support import ServerProcess, metric

KEY = "test-key-1234"
MAX_DOCUMENTS = 8
MAX_BYTES = 4096

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def url():
    """An encoder server whose key comes from BGE_RERANK_API_KEY, with small document and body limits."""
    server = ServerProcess(
        checkpoint("encoder"),
        "--max-documents",
        str(MAX_DOCUMENTS),
        "--max-request-bytes",
        str(MAX_BYTES),
        env={"BGE_RERANK_API_KEY": KEY},
    )
    try:
        yield server.url
    finally:
        assert server.terminate() == 0, server.output()
        server.close()


@pytest.fixture
def client(url):
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def test_the_api_key_is_required_except_for_health(url):
    body = {"query": "q", "texts": ["a"]}
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        missing = anonymous.post("/rerank", json=body)
        wrong = anonymous.post(
            "/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={"Authorization": "Bearer nope"}
        )
        basic = anonymous.get("/info", headers={"Authorization": f"Basic {KEY}"})
        metrics = anonymous.get("/metrics")
        health = anonymous.get("/health")
        right = anonymous.post("/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"})
    for response in (missing, wrong, basic, metrics):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        message = "Missing or wrong API key: send 'Authorization: Bearer <key>'."
        assert response.json() == {"error": message, "error_type": "unauthorized", "detail": message}
    assert health.status_code == 200
    assert right.status_code == 200


def test_a_body_over_the_limit_is_a_413_declared_or_streamed(client):
    big = {"query": "q", "texts": ["x" * MAX_BYTES]}
    declared = client.post("/rerank", json=big)
    payload = httpx.Request("POST", "/", json=big).content

    def chunks():
        for start in range(0, len(payload), 1000):
            yield payload[start : start + 1000]

    streamed = client.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in streamed.request.headers
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error_type"] == "payload_too_large"
        assert f"over the server's limit of {MAX_BYTES} bytes (--max-request-bytes)" in response.json()["error"]


def test_more_documents_than_the_limit_is_a_413(client):
    for path, field in (("/rerank", "texts"), ("/v2/rerank", "documents")):
        response = client.post(path, json={"query": "q", field: ["a"] * (MAX_DOCUMENTS + 1)})
        assert response.status_code == 413
        message = (
            f"{MAX_DOCUMENTS + 1} documents are more than the server's limit of {MAX_DOCUMENTS} per request "
            "(--max-documents): split them over several requests."
        )
        assert response.json() == {"error": message, "error_type": "too_many_documents", "detail": message}
    assert client.post("/rerank", json={"query": "q", "texts": ["a"] * MAX_DOCUMENTS}).status_code == 200


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/rerank", b'{"query": "q", "texts": ["a"', "Malformed JSON body:"),
        ("/rerank", b"not json", "Malformed JSON body:"),
        ("/rerank", b'["q", "a"]', "body: Input should be a valid dictionary"),
        ("/rerank", {"texts": ["a"]}, "query: Field required"),
        ("/rerank", {"query": "q", "texts": "a"}, "texts: Input should be a valid list"),
        ("/rerank", {"query": "q", "texts": ["a", 3]}, "texts.1: Input should be a valid string"),
        (
            "/rerank",
            {"query": "q", "texts": ["a"], "raw_scores": "maybe"},
            "raw_scores: Input should be a valid boolean",
        ),
        (
            "/rerank",
            {"query": "q", "texts": ["a"], "truncation_direction": "left"},
            "truncation_direction: Input should be 'right'",
        ),
        (
            "/v1/rerank",
            {"query": "q", "documents": [{"title": "a"}]},
            "documents.0.DocumentObject.text: Field required",
        ),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a"], "top_n": -1},
            "top_n: Input should be greater than or equal to 0",
        ),
        (
            "/v1/rerank",
            b'{"query": "q", "documents": ["a", "\\ud800"]}',
            "The document at index 1 holds a lone surrogate",
        ),
        ("/v1/rerank", b'{"query": "\\ud800", "documents": ["a"]}', "The query holds a lone surrogate"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "max_length": 0}, "max_length must be a positive integer"),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a"], "max_length": 100000},
            "max_length=100000 is beyond what this model can take",
        ),
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a"], "query_instruction_format": "{}"},
            "query_instruction_format must have exactly two '{}' fields",
        ),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "cutoff_layers": [2, 3]}, "gives one score per layer"),
        (
            "/v2/rerank",
            {"query": "q", "documents": ["a"], "raw_scores": True, "use_activation": True},
            "raw_scores=true contradicts use_activation=true: give one of them.",
        ),
    ],
)
def test_bad_input_is_a_readable_422(client, path, body, message):
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] in {"validation", "invalid_request"}
    assert message in response.json()["error"]


def test_blank_texts_are_scored_as_the_reference_does(client):
    response = client.post("/v1/rerank", json={"query": " ", "documents": ["a", "", "  "], "raw_scores": True})
    assert response.status_code == 200, response.text
    assert sorted(result["index"] for result in response.json()["results"]) == [0, 1, 2]


def test_unknown_paths_and_methods_answer_in_the_error_shape(client):
    missing = client.get("/nope")
    wrong_method = client.get("/rerank")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "Not Found", "error_type": "http", "detail": "Not Found"},
    )
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"error": "Method Not Allowed", "error_type": "http", "detail": "Method Not Allowed"},
    )


def test_rejected_requests_are_counted(client):
    before = client.get("/metrics").text
    client.post("/rerank", content=b"{", headers={"content-type": "application/json"})
    client.post("/rerank", json={"query": "q", "texts": ["a"] * (MAX_DOCUMENTS + 1)})
    client.post("/rerank", json={"query": "q", "texts": ["a"]}, headers={"Authorization": "Bearer wrong"})
    after = client.get("/metrics").text
    for status in ("422", "413", "401"):
        counted = metric(after, "bge_rerank_requests_total", path="/rerank", status=status)
        assert counted - metric(before, "bge_rerank_requests_total", path="/rerank", status=status) == 1
    assert metric(after, "bge_rerank_pairs_total") == metric(before, "bge_rerank_pairs_total")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cutoff-layers", "2"], "cutoff_layers does not apply to the encoder family"),
        (["--model-class", "layerwise", "--cutoff-layers", "2,3"], "gives one score per layer"),
        (["--max-length", "0"], "max_length must be a positive integer"),
    ],
)
def test_serve_rejects_bad_defaults_before_listening(capsys, args, message):
    assert serve_main(["--model", checkpoint("encoder"), "--device", "cpu", "--port", "0", *args]) == 2
    assert message in capsys.readouterr().err
