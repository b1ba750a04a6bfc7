"""Long passages through ``bge-rerank serve``, its clients and the CLI: the core's scores and best windows.

Per request (``max_chunks_per_passage``, Cohere v1's ``max_chunks_per_doc``, Cohere v2's and vLLM's
``max_tokens_per_doc``), as the server's default (``--max-chunks-per-passage``), usage counting
every window, and ``RemoteReranker(api="bge")`` sending the options.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.remote import RemoteReranker

from .conftest import checkpoint
from .serve_support import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("one_torch_thread")]

ENCODER = checkpoint("encoder")
QUERY = "What is the capital of France?"
LONG = (
    "The giant panda lives in the mountains of central China and eats bamboo. "
    "Photosynthesis converts light energy into chemical energy in plants. "
    * 4
    + "Paris is the capital and largest city of France."
)
TEXTS = [LONG, "Paris is in France.", "hi"]


@pytest.fixture(scope="module")
def server():
    process = ServerProcess(ENCODER, "--max-length", "64", "--no-normalize")
    try:
        yield process.url
    finally:
        assert process.terminate() == 0, process.output()


@pytest.fixture(scope="module")
def core() -> BGEReranker:
    return BGEReranker(ENCODER, device="cpu", max_length=64)


def _cohere(results):
    return [(r["index"], r["relevance_score"], r.get("relevance_span")) for r in results]


def _expected(core, **options):
    return [(r.index, r.score, None if r.span is None else list(r.span)) for r in core.rerank(QUERY, TEXTS, **options)]


def test_per_request_windows_on_every_schema_give_the_cores_scores_and_spans(server, core):
    want = _expected(core, max_chunks_per_passage=4)
    (group,) = core.score_groups([[(QUERY, text) for text in TEXTS]], max_chunks_per_passage=4)
    body = {"query": QUERY, "documents": TEXTS, "max_chunks_per_passage": 4}
    for path in ("/v1/rerank", "/v2/rerank"):
        answer = httpx.post(f"{server}{path}", json=body, timeout=30).json()
        assert _close(_cohere(answer["results"]), want)
        assert (
            answer["usage"]["total_tokens"]
            == sum(group.tokens)
            > sum(core.score_groups([[(QUERY, t) for t in TEXTS]])[0].tokens)
        )
    cohere_v1 = httpx.post(
        f"{server}/v1/rerank", json={"query": QUERY, "documents": TEXTS, "max_chunks_per_doc": 4}, timeout=30
    )
    assert _close(_cohere(cohere_v1.json()["results"]), want)
    tei = httpx.post(
        f"{server}/rerank", json={"query": QUERY, "texts": TEXTS, "max_chunks_per_passage": 4}, timeout=30
    ).json()
    assert _close([(r["index"], r["score"], r.get("span")) for r in tei], want)
    assert any(r.get("span") for r in tei) and all(
        "span" not in r
        for r in httpx.post(f"{server}/rerank", json={"query": QUERY, "texts": TEXTS}, timeout=30).json()
    )


def test_max_tokens_per_doc_cuts_each_document(server, core):
    cut = _expected(core, max_tokens_per_passage=12)
    assert cut != _expected(core)
    for extra in ({"max_tokens_per_doc": 12}, {"max_tokens_per_passage": 12}):
        answer = httpx.post(
            f"{server}/v2/rerank", json={"query": QUERY, "documents": TEXTS, **extra}, timeout=30
        ).json()
        assert _close(_cohere(answer["results"]), cut)
    off = httpx.post(
        f"{server}/v2/rerank", json={"query": QUERY, "documents": TEXTS, "max_tokens_per_doc": 0}, timeout=30
    )
    assert _close(_cohere(off.json()["results"]), _expected(core))  # vLLM: 0 = no cut


@pytest.mark.parametrize(
    "body, message",
    [
        ({"max_chunks_per_passage": 0}, "max_chunks_per_passage must be a positive integer"),
        ({"chunk_overlap": -1}, "chunk_overlap must be a non-negative integer"),
        (
            {"max_chunks_per_doc": 3, "max_chunks_per_passage": 2},
            "max_chunks_per_doc=3 contradicts max_chunks_per_passage=2",
        ),
        ({"chunk_overlap": 64, "max_chunks_per_passage": 2}, "leaves a window no room"),
    ],
)
def test_bad_chunk_options_are_422s_that_say_so(server, body, message):
    answer = httpx.post(f"{server}/v1/rerank", json={"query": QUERY, "documents": TEXTS, **body}, timeout=30)
    assert answer.status_code == 422 and message in answer.json()["error"]


def test_the_servers_default_and_the_remote_client(core):
    process = ServerProcess(ENCODER, "--max-length", "64", "--no-normalize", "--max-chunks-per-passage", "4")
    try:
        answer = httpx.post(f"{process.url}/v1/rerank", json={"query": QUERY, "documents": TEXTS}, timeout=30).json()
        assert _close(_cohere(answer["results"]), _expected(core, max_chunks_per_passage=4))
        one = httpx.post(
            f"{process.url}/v1/rerank",
            json={"query": QUERY, "documents": TEXTS, "max_chunks_per_passage": 1},
            timeout=30,
        ).json()
        assert _close(_cohere(one["results"]), _expected(core))
        with RemoteReranker(process.url, normalize=False) as remote:
            got = remote.compute_score([[QUERY, text] for text in TEXTS], max_chunks_per_passage=2, chunk_overlap=4)
        want = core.compute_score([[QUERY, text] for text in TEXTS], max_chunks_per_passage=2, chunk_overlap=4)
        assert max(abs(a - b) for a, b in zip(got, want)) <= 1e-4
    finally:
        assert process.terminate() == 0, process.output()


def test_cli_flags_and_json_span(core):
    command = [
        sys.executable,
        "-m",
        "bge_rerank_integrations.cli",
        "--model",
        ENCODER,
        "--device",
        "cpu",
        "--max-length",
        "64",
        "--max-chunks-per-passage",
        "4",
        "--chunk-overlap",
        "6",
        "--json",
        "--query",
        QUERY,
        *TEXTS,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""}
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    want = _expected(core, max_chunks_per_passage=4, chunk_overlap=6)
    assert _close([(r["index"], r["score"], r.get("span")) for r in records], want)


def _close(got, want, tolerance=1e-4) -> bool:
    return [(i, s) for i, _, s in got] == [(i, s) for i, _, s in want] and all(
        abs(a - b) <= tolerance for (_, a, _), (_, b, _) in zip(got, want)
    )


def test_the_remote_client_and_adapters_on_a_url_report_the_servers_best_window(core):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from bge_rerank_integrations.langchain import BGERerank

    process = ServerProcess(ENCODER, "--max-length", "64", "--no-normalize")
    try:
        want = _expected(core, max_chunks_per_passage=4)
        with RemoteReranker(process.url, normalize=False) as remote:
            got = [
                (r.index, r.score, None if r.span is None else list(r.span))
                for r in remote.rerank(QUERY, TEXTS, max_chunks_per_passage=4)
            ]
        assert _close(got, want) and any(span for _, _, span in got)
        compressor = BGERerank(model=process.url, normalize=False, top_n=None, max_chunks_per_passage=4)
        docs = compressor.compress_documents([Document(text) for text in TEXTS], QUERY)
        assert [d.metadata.get("relevance_span") for d in docs] == [span for _, _, span in want]
    finally:
        assert process.terminate() == 0, process.output()
