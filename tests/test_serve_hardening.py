"""``bge-rerank serve`` against hostile requests and peers (issue 19), over real HTTP on 127.0.0.1.

Each test starts from one hole found on the old server: format specs that allocate gigabytes,
bad input answered with a 5xx, stalled and idle sockets held forever, API key leaks, protocol
gaps real clients hit, and a ranking of its own that put NaN in the middle.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.inputs import check_instruction_format
from bge_rerank_integrations.serving import ScoredPairs, ServerSettings, create_app
from bge_rerank_integrations.serving.serve import main as serve_main

from .conftest import checkpoint
from .serve_support import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("one_torch_thread")]

#: A key with non-ASCII characters: it must authenticate (compared as UTF-8 bytes).
KEY = "clé-ü-1234"
AUTH = {"Authorization": b"Bearer " + KEY.encode("utf-8")}
#: Socket reads in these tests never wait longer than this.
SOCKET_TIMEOUT = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An encoder server with its key in a file and short connection timeouts."""
    key_file = tmp_path_factory.mktemp("key") / "key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    server = ServerProcess(
        checkpoint("encoder"),
        "--api-key-file",
        str(key_file),
        "--header-timeout",
        "1",
        "--body-timeout",
        "1",
        "--keep-alive-timeout",
        "1",
        "--max-connections",
        "4",
    )
    try:
        yield server
    finally:
        assert server.terminate() == 0, server.output()
        server.close()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
        yield client


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _connect(url: str) -> socket.socket:
    sock = socket.create_connection(_address(url), timeout=SOCKET_TIMEOUT)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


# 1. Instruction formats: two plain {} fields, in the core, so every entry point inherits it.


@pytest.mark.parametrize("value", ["{:>99999999}{}", "{}{!r}", "{!s:>5}{}", "{0}{1}", "{a}{}", "{}{}{}"])
def test_instruction_formats_take_two_plain_fields_only_in_process(value):
    with pytest.raises(ValueError, match="query_instruction_format"):
        check_instruction_format(value, "query_instruction_format")
    reranker = BGEReranker(checkpoint("encoder"), device="cpu")
    with pytest.raises(ValueError, match="query_instruction_format"):
        reranker.compute_score(["q", "a"], query_instruction_for_rerank="x", query_instruction_format=value)


@pytest.mark.parametrize("value", ["{}: {}", "{{literal}} {}{}", "{}\\n{}"])
def test_plain_instruction_formats_still_work(value):
    assert check_instruction_format(value, "passage_instruction_format") == value


def test_a_format_spec_is_a_422_that_says_so_and_allocates_nothing(client):
    response = client.post(
        "/rerank",
        json={
            "query": "q",
            "texts": ["a"],
            "query_instruction_for_rerank": "x",
            "query_instruction_format": "{:>99999999}{}",
        },
    )
    assert response.status_code == 422, response.text
    assert "fields take no format spec or conversion" in response.json()["error"]
    response = client.post(
        "/v1/rerank", json={"query": "q", "documents": ["a"], "passage_instruction_format": "{!r}{}"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("passage_instruction_format fields take no format spec or conversion")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("compress_layers", list(range(129)), "List should have at most 128 items"),
        ("cutoff_layers", [], "List should have at least 1 item"),
        ("max_length", 2**31, "max_length must be a positive integer (at most 2147483647)"),
        ("max_length", 100000, "max_length=100000 is beyond what this model can take"),
        ("top_n", 2**31, "top_n: Input should be less than or equal to 2147483647"),
    ],
)
def test_fields_that_could_multiply_work_are_bounded(client, field, value, message):
    response = client.post("/v1/rerank", json={"query": "q", "documents": ["a"], field: value})
    assert response.status_code == 422, response.text
    assert message in response.json()["error"]


# 2. Bad input is never a 5xx.


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"query": "\xff", "texts": ["a"]}', "The body is not valid UTF-8 (byte 0xff at position 11)"),
        (b"[" * 100_000, "Malformed JSON body: nested too deeply to parse"),
        (b'{"query": "q", "texts": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "Malformed JSON body: nested too deeply"),
    ],
)
def test_undecodable_bodies_are_a_422_as_documented(client, body, message):
    response = client.post("/rerank", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": response.json()["detail"],
        "error_type": "validation",
        "detail": response.json()["detail"],
    }
    assert message in response.json()["detail"]


def test_a_prompt_longer_than_the_model_is_a_422_with_the_core_message():
    server = ServerProcess(checkpoint("llm"))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"], "prompt": "word " * 5000})
            assert response.status_code == 422, response.text
            assert response.json()["error_type"] == "invalid_request"
            assert "it leaves no room for a pair in" in response.json()["detail"]
            assert client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200
    finally:
        assert server.terminate() == 0, server.output()
        server.close()


# 3. Stalled and idle clients.


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server):
    with _connect(server.url) as idle:
        assert _read_until_closed(idle) == b""


def test_headers_sent_a_byte_at_a_time_do_not_hold_the_connection(server):
    with _connect(server.url) as slow:
        slow.sendall(b"POST /rerank HTTP/1.1\r\nHost: x\r\n")
        assert _read_until_closed(slow) == b""


def test_a_body_that_stalls_is_a_408(server):
    with _connect(server.url) as stalled:
        stalled.sendall(
            b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            b"Authorization: Bearer " + KEY.encode("utf-8") + b'\r\n\r\n{"query": '
        )
        answer = _read_until_closed(stalled)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"did not arrive within the server's 1 s (--body-timeout): 10 bytes came" in answer


def test_over_the_connection_cap_is_a_503_and_capacity_returns(server, client):
    held = [_connect(server.url) for _ in range(4)]
    try:
        over = httpx.post(f"{server.url}/rerank", json={"query": "q", "texts": ["a"]}, headers=AUTH, timeout=30)
        assert over.status_code == 503, over.text
        assert over.json()["error_type"] == "overloaded"
        assert "more than its limit of 4 (--max-connections)" in over.json()["detail"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while True:  # the server notices the closed sockets on its next loop turns
        status = httpx.post(
            f"{server.url}/rerank", json={"query": "q", "texts": ["a"]}, headers=AUTH, timeout=30
        ).status_code
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200


def test_sigterm_with_a_stalled_client_exits_0_after_the_shutdown_deadline():
    server = ServerProcess(
        checkpoint("encoder"), "--body-timeout", "300", "--header-timeout", "300", "--shutdown-timeout", "1"
    )
    stalled = _connect(server.url)
    try:
        stalled.sendall(
            b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        idle = _connect(server.url)
        time.sleep(0.5)  # both connections are open server-side before the signal
        assert server.terminate() == 0, server.output()  # STOP_TIMEOUT (30 s) bounds the wait
        answer = _read_until_closed(stalled)  # a socket.timeout here: the server kept the connection open
        assert not answer.startswith(b"HTTP/1.1 2"), answer
        assert _read_until_closed(idle) == b""
    finally:
        stalled.close()
        server.close()


def test_connection_flags_are_checked_before_listening(capsys):
    for args, message in [
        (["--header-timeout", "0"], "expected a positive number of seconds"),
        (["--shutdown-timeout", "nan"], "expected a positive number of seconds"),
    ]:
        with pytest.raises(SystemExit):
            serve_main(["--model", checkpoint("encoder"), "--device", "cpu", "--port", "0", *args])
        assert message in capsys.readouterr().err
    assert (
        serve_main(["--model", checkpoint("encoder"), "--device", "cpu", "--port", "0", "--max-connections", "0"]) == 2
    )
    assert "--max-connections must be at least 1" in capsys.readouterr().err


# 4. The API key.


def test_a_key_from_a_file_with_non_ascii_characters_authenticates(server, client):
    assert client.post("/rerank", json={"query": "q", "texts": ["a"]}).status_code == 200
    wrong = httpx.post(
        f"{server.url}/rerank", json={"query": "q", "texts": ["a"]}, headers={"Authorization": "Bearer cle"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == wrong.json()["error"]
    assert KEY not in server.output()


def test_an_empty_key_is_refused_at_start_naming_the_variable(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("BGE_RERANK_API_KEY", "")
    assert serve_main(["--model", checkpoint("encoder"), "--device", "cpu", "--port", "0"]) == 2
    assert "$BGE_RERANK_API_KEY is empty, which would start an open server" in capsys.readouterr().err
    monkeypatch.delenv("BGE_RERANK_API_KEY")
    (tmp_path / "key").write_text("\n", encoding="utf-8")
    assert (
        serve_main(
            [
                "--model",
                checkpoint("encoder"),
                "--device",
                "cpu",
                "--port",
                "0",
                "--api-key-file",
                str(tmp_path / "key"),
            ]
        )
        == 2
    )
    assert "is empty" in capsys.readouterr().err
    with pytest.raises(ValueError, match="The API key is empty"):
        ServerSettings(api_key="")


def test_the_settings_repr_never_shows_the_key():
    settings = ServerSettings(api_key="sk-secret-value")
    assert "sk-secret-value" not in repr(settings)
    assert "sk-secret-value" not in str(settings)


def test_openapi_declares_the_bearer_scheme_when_a_key_is_set(server):
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert document["paths"]["/v1/rerank"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in document["paths"]["/health"]["get"]


# 5. Protocol gaps.


def test_rerank_takes_the_vllm_and_infinity_body_and_answers_in_their_shape(client):
    tei = client.post("/rerank", json={"query": "q", "texts": ["a", "b", "c"], "raw_scores": True}).json()
    vllm = client.post(
        "/rerank", json={"model": "m", "query": "q", "documents": ["a", "b", "c"], "top_n": 2, "raw_scores": True}
    )
    assert vllm.status_code == 200, vllm.text
    body = vllm.json()
    assert set(body) == {"id", "model", "results", "usage"}
    assert [(r["index"], r["relevance_score"]) for r in body["results"]] == [(r["index"], r["score"]) for r in tei[:2]]
    assert all("document" not in r for r in body["results"])  # Infinity's default: no documents
    with_documents = client.post(
        "/rerank", json={"query": "q", "documents": ["a", "b"], "return_documents": True}
    ).json()
    assert {r["index"]: r["document"] for r in with_documents["results"]} == {0: {"text": "a"}, 1: {"text": "b"}}
    cohere = client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]}).json()
    assert all("document" in r for r in cohere["results"])  # Cohere's and vLLM's default: documents


@pytest.mark.parametrize(
    "path, field, value",
    [
        ("/v1/rerank", "top_n", True),
        ("/v2/rerank", "use_activation", 0),
        ("/rerank", "truncate", 0),
        ("/rerank", "raw_scores", 1),
        ("/v1/rerank", "max_length", 12.5),
        ("/v1/rerank", "top_n", "1"),
        ("/rerank", "return_text", "true"),
    ],
)
def test_types_are_strict(client, path, field, value):
    body = {"query": "q", "texts": ["a"]} if path == "/rerank" else {"query": "q", "documents": ["a"]}
    response = client.post(path, json={**body, field: value})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{field}: Input should be a valid")


def test_every_error_carries_detail(server, client):
    for response in (
        httpx.post(f"{server.url}/rerank", json={"query": "q", "texts": ["a"]}),
        client.post("/rerank", json={"query": "q"}),
        client.get("/nope"),
        client.post("/rerank", content=b"{", headers={"content-type": "application/json"}),
    ):
        body = response.json()
        assert set(body) == {"error", "error_type", "detail"} and body["detail"] == body["error"], body


def test_openapi_states_bounds_errors_and_metrics_as_text(server):
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    options = document["components"]["schemas"]["RerankRequest"]["properties"]
    assert (options["max_length"]["minimum"], options["max_length"]["maximum"]) == (1, 2**31 - 1)
    assert options["max_length"]["anyOf"][0]["maximum"] == 512  # the served model's positions
    assert options["top_n"]["anyOf"][0]["minimum"] == 0
    assert {"401", "408", "413", "422", "500", "503"} <= set(document["paths"]["/rerank"]["post"]["responses"])
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


# 6. Order: the core's one ranking step, NaN last.


class _FixedScorer:
    """A scorer that answers fixed scores (NaN included) for the real app, over real HTTP."""

    def __init__(self, scores: list[float]) -> None:
        self.reranker = BGEReranker(checkpoint("encoder"), device="cpu")
        self.scores = scores

    async def score(self, pairs, options):
        return ScoredPairs(self.scores[: len(pairs)], [1] * len(pairs))


@pytest.fixture
def nan_server():
    app = create_app(_FixedScorer([1.0, float("nan"), 2.0, 1.0]))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_every_path_ranks_nan_last_with_ties_in_input_order(nan_server):
    texts = ["a", "b", "c", "d"]
    tei = httpx.post(f"{nan_server}/rerank", json={"query": "q", "texts": texts}, timeout=30).json()
    assert [item["index"] for item in tei] == [2, 0, 3, 1]
    assert tei[-1]["score"] is None or math.isnan(tei[-1]["score"])
    for path, body in (("/v1/rerank", {"documents": texts}), ("/rerank", {"documents": texts})):
        results = httpx.post(f"{nan_server}{path}", json={"query": "q", **body}, timeout=30).json()["results"]
        assert [item["index"] for item in results] == [2, 0, 3, 1]


# The OpenAPI document against the server: schemathesis, every check.

#: Negative data is rejected with these (schemathesis's defaults plus 413: more documents than
#: --max-documents, which the document states as maxItems, is a 413 as in TEI, and clients split on it).
NEGATIVE_DATA_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


def test_schemathesis_finds_nothing_in_the_openapi_document(server, tmp_path):
    pytest.importorskip("schemathesis", reason="the test extra's schemathesis is not installed")
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.negative_data_rejection]\nexpected-statuses = ["
        + ", ".join(f'"{s}"' for s in NEGATIVE_DATA_STATUSES)
        + "]\n",
        encoding="utf-8",
    )
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "10",
        "--generation-deterministic",
        "--workers",
        "1",
        "--no-color",
        "--request-timeout",
        "30",
        "--header",
        f"Authorization: Bearer {KEY}",
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"}
    )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
