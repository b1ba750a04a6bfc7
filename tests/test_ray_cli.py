"""``bge-rerank serve --ray``: the flags reach ``build_app``, and the command serves and stops on SIGTERM."""

from __future__ import annotations

import pytest

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.serving.serve import main

from . import serve_support
from .conftest import checkpoint

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")
pytestmark = [pytest.mark.ray, pytest.mark.server]

from bge_rerank_integrations.ray import serve as ray_serve

ENCODER = checkpoint("encoder")


def test_ray_flags_reach_the_ray_server(monkeypatch):
    calls = []
    monkeypatch.setattr(ray_serve, "serve_on_ray", lambda *args, **kwargs: calls.append((args, kwargs)) or 0)
    status = main(
        [
            "--model",
            ENCODER,
            "--ray",
            "--replicas",
            "auto",
            "--gpus-per-replica",
            "1",
            "--max-length",
            "256",
            "--ray-address",
            "auto",
            "--port",
            "9000",
            "--max-wait-ms",
            "20",
            "--max-batch-requests",
            "8",
        ]
    )
    assert status == 0
    (model, options, _settings), kwargs = calls[0]
    assert model == ENCODER and options["max_length"] == 256 and options["normalize"] is True
    assert kwargs == dict(
        address="auto",
        host="127.0.0.1",
        port=9000,
        num_replicas="auto",
        num_gpus=1.0,
        num_cpus=1.0,
        max_batch_size=8,
        batch_wait_timeout_s=0.02,
    )


def test_replicas_must_be_a_number_or_auto(capsys):
    with pytest.raises(SystemExit):
        main(["--model", ENCODER, "--ray", "--replicas", "many"])
    assert "'auto'" in capsys.readouterr().err


def test_serve_ray_command_answers_and_stops_on_sigterm(monkeypatch):
    monkeypatch.setattr(serve_support, "START_TIMEOUT", 240)  # a local Ray and Serve start first
    server = serve_support.ServerProcess(ENCODER, "--ray", "--cpus-per-replica", "0.5", "--no-normalize")
    try:
        response = httpx.post(f"{server.url}/rerank", json={"query": "q?", "texts": ["a", "b b"]}, timeout=60)
        assert response.status_code == 200, response.text
        expected = BGEReranker(ENCODER, device="cpu").compute_score([("q?", "a"), ("q?", "b b")])
        assert [item["score"] for item in sorted(response.json(), key=lambda item: item["index"])] == pytest.approx(
            expected, abs=1e-4
        )
        assert server.terminate() == 0, server.output()[-3000:]
    finally:
        server.close()
