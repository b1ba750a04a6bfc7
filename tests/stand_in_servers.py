"""Small stand-ins for the rerank servers users run, for testing ``RemoteReranker`` without them.

One FastAPI app answers in the shapes the engines document (see /work/shared/reference/rerank-apis.md):

- ``POST /tei/rerank``: text-embeddings-inference. ``{"query", "texts", "raw_scores", "truncate"}`` ->
  a bare array ``[{"index", "score"}]`` best first; more than 32 texts -> 413 ``{"error", "error_type"}``.
- ``POST /infinity/rerank``: Infinity. ``{"query", "documents", "raw_scores"}`` -> ``{"object": "rerank",
  "results": [{"relevance_score", "index", "document"}], "model", "usage", "id", "created"}``.
- ``POST /vllm/rerank``, ``/vllm/v1/rerank``, ``/vllm/v2/rerank``: vLLM. ``{"model", "query", "documents",
  "use_activation"}`` -> ``{"id", "model", "usage", "results": [{"index", "document": {"text"}, "relevance_score"}]}``.
- ``POST /cohere/v2/rerank``: Cohere v2 (``model`` required, bearer key required) -> ``{"id", "results":
  [{"index", "relevance_score"}], "meta"}``, scores in [0, 1] only.

Scores are a fixed function of (query, text) (``raw_score``), normalized with a sigmoid. The
server runs in a daemon thread on 127.0.0.1 on an ephemeral port, records every request, and can
be told to fail (``fail_next``) or to answer slowly (``delay``). It stops when the test ends, and
by itself after ``LIFETIME_SECONDS`` in any case.

``MisbehavingServer`` is a bare HTTP/1.1 server whose answers a test scripts byte by byte: a
trickle of one byte at a time after the headers (``trickle``), a gzip bomb (``gzip_bomb``). It
counts the requests in flight too, and stops by itself after ``LIFETIME_SECONDS``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

#: TEI's default --max-client-batch-size.
TEI_MAX_TEXTS = 32
#: The Cohere stand-in's API key.
COHERE_KEY = "cohere-test-key"
LIFETIME_SECONDS = 300


def raw_score(query: str, text: str) -> float:
    """The stand-ins' raw score of (query, text): a fixed number in [-10, 10), distinct for distinct texts."""
    return (zlib.crc32(f"{query}\x00{text}".encode()) % 2_000_000) / 100_000 - 10


def normalized_score(query: str, text: str) -> float:
    return 1 / (1 + math.exp(-raw_score(query, text)))


class StandInServer:
    """The stand-in app, served in a thread; ``url`` is its base address."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.faults: deque[tuple[int, dict[str, str], Any]] = deque()
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._server = uvicorn.Server(
            uvicorn.Config(_app(self), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, name="stand-in-server", daemon=True)
        self._stopper = threading.Timer(LIFETIME_SECONDS, self.stop)
        self._stopper.daemon = True

    def start(self) -> StandInServer:
        self._thread.start()
        self._stopper.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in server did not start")
            time.sleep(0.02)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._stopper.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def reset(self) -> None:
        self.requests.clear()
        self.faults.clear()
        self.delay = 0.0
        self.max_in_flight = 0

    def fail_next(self, times: int, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``headers``, ``body``) instead of scores.

        A ``bytes`` body is sent as it is (JSON no encoder writes: ``NaN``, a 401-digit number...).
        """
        for _ in range(times):
            self.faults.append((status, headers or {}, body if body is not None else {"error": f"status {status}"}))

    def sizes(self) -> list[int]:
        """How many documents each recorded request carried, in arrival order."""
        return [len(r["body"].get("texts", r["body"].get("documents", []))) for r in self.requests]


def _app(server: StandInServer) -> FastAPI:
    app = FastAPI()

    def endpoint(*paths: str):
        """Register ``handler(body, headers)`` at ``paths``: requests are recorded, delayed and failed as told first."""

        def register(handler):
            async def serve(request: Request):
                body = await request.json()
                server.requests.append({"path": request.url.path, "body": body, "headers": dict(request.headers)})
                fault = server.faults.popleft() if server.faults else None  # at arrival: a late request takes none
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.delay:
                        await asyncio.sleep(server.delay)
                finally:
                    server.in_flight -= 1
                if fault is not None:
                    status, headers, content = fault
                    if isinstance(content, bytes):
                        return Response(content, status_code=status, headers=headers, media_type="application/json")
                    return JSONResponse(content, status_code=status, headers=headers)
                return handler(body, request.headers)

            for path in paths:
                app.post(path)(serve)
            return handler

        return register

    def ranked(query: str, texts: list[str], normalized: bool, top_n: int | None = None) -> list[tuple[int, float]]:
        score = normalized_score if normalized else raw_score
        return sorted(((i, score(query, text)) for i, text in enumerate(texts)), key=lambda item: -item[1])[
            : top_n or None
        ]

    def usage(docs: list[str]) -> dict[str, int]:
        return {"prompt_tokens": 7 * len(docs), "total_tokens": 7 * len(docs)}

    @endpoint("/tei/rerank")
    def tei(body: dict, headers) -> Any:
        texts = body["texts"]
        if not texts:
            return JSONResponse({"error": "`texts` cannot be empty", "error_type": "validation"}, status_code=413)
        if len(texts) > TEI_MAX_TEXTS:
            message = f"batch size {len(texts)} > maximum allowed batch size {TEI_MAX_TEXTS}"
            return JSONResponse({"error": message, "error_type": "validation"}, status_code=413)
        ranks = ranked(body["query"], texts, not body.get("raw_scores", False))
        return [{"index": i, "score": s, **({"text": texts[i]} if body.get("return_text") else {})} for i, s in ranks]

    @endpoint("/infinity/rerank")
    def infinity(body: dict, headers) -> Any:
        docs = body["documents"]
        return {
            "object": "rerank",
            "results": [
                {"relevance_score": s, "index": i, "document": docs[i] if body.get("return_documents") else None}
                for i, s in ranked(body["query"], docs, not body.get("raw_scores", False), body.get("top_n"))
            ],
            "model": body.get("model") or "bge-reranker",
            "usage": usage(docs),
            "id": f"infinity-{uuid.uuid4()}",
            "created": int(time.time()),
        }

    @endpoint("/vllm/rerank", "/vllm/v1/rerank", "/vllm/v2/rerank")
    def vllm(body: dict, headers) -> Any:
        docs = body["documents"]
        ranks = ranked(body["query"], docs, body.get("use_activation", True), body.get("top_n"))
        return {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": body.get("model") or "BAAI/bge-reranker-v2-m3",
            "usage": usage(docs),
            "results": [{"index": i, "document": {"text": docs[i]}, "relevance_score": s} for i, s in ranks],
        }

    @endpoint("/cohere/v2/rerank")
    def cohere(body: dict, headers) -> Any:
        if headers.get("authorization") != f"Bearer {COHERE_KEY}":
            return JSONResponse({"message": "invalid api token"}, status_code=401)
        if not body.get("model"):
            return JSONResponse({"message": "invalid request: model is required"}, status_code=400)
        return {
            "id": str(uuid.uuid4()),
            "results": [
                {"index": i, "relevance_score": s}
                for i, s in ranked(body["query"], body["documents"], True, body.get("top_n"))
            ],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        }

    return app


#: A scripted answer: given the server, the request (``{"head": bytes, "body": bytes}``) and the connection's writer.
Answer = Callable[["MisbehavingServer", dict[str, Any], asyncio.StreamWriter], Awaitable[None]]


class MisbehavingServer:
    """A bare HTTP/1.1 server on 127.0.0.1 (ephemeral port, own thread) that answers every request with ``answer``.

    Records each request, the most requests in flight at once (``max_in_flight``) and, for
    answers that use it, ``sent``: the bytes of body written so far. Stops after ``LIFETIME_SECONDS``.
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.sent = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="misbehaving-server", daemon=True)
        self._stopper = threading.Timer(LIFETIME_SECONDS, self.stop)
        self._stopper.daemon = True

    def start(self) -> MisbehavingServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(timeout=20)
        self._stopper.start()
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def stop(self) -> None:
        self._stopper.cancel()
        if self._loop.is_closed():
            return

        async def close() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> MisbehavingServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = {"head": head, "body": await reader.readexactly(length)}
                self.requests.append(request)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await self.answer(self, request, writer)
                finally:
                    self.in_flight -= 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # stopped: end quietly (asyncio would log a cancelled handler)
            pass
        finally:
            writer.close()


def trickle(every: float, count: int) -> Answer:
    """An answer that sends its headers, then one byte of a ``count``-byte body every ``every`` seconds (counted in ``sent``)."""

    async def answer(server: MisbehavingServer, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % count)
        await writer.drain()
        for _ in range(count):
            await asyncio.sleep(every)
            if writer.is_closing() or writer.transport.get_extra_info("socket") is None:
                raise ConnectionResetError
            writer.write(b" ")
            await writer.drain()
            server.sent += 1

    return answer


_BOMBS: dict[tuple[bytes, int], bytes] = {}


def gzip_bomb_body(prefix: bytes, inflated: int) -> bytes:
    """``prefix`` then spaces up to ``inflated`` bytes, gzipped (made in 1 MiB steps, cached): ~260 KB for 384 MB."""
    key = (prefix, inflated)
    if key not in _BOMBS:
        compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        parts = [compressor.compress(prefix)]
        block = b" " * (1 << 20)
        left = inflated - len(prefix)
        while left > 0:
            parts.append(compressor.compress(block[: min(left, len(block))]))
            left -= len(block)
        parts.append(compressor.flush())
        _BOMBS[key] = b"".join(parts)
    return _BOMBS[key]


def gzip_bomb(prefix: bytes, inflated: int) -> Answer:
    """An answer of 200 with ``Content-Encoding: gzip`` whose body inflates to ``inflated`` bytes of JSON whitespace."""

    async def answer(server: MisbehavingServer, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        body = gzip_bomb_body(prefix, inflated)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            % len(body)
        )
        writer.write(body)
        await writer.drain()

    return answer
