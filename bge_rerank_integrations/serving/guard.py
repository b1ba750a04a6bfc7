"""The ASGI middleware in front of every route: API key, body size and time limits, request metrics.

It runs before FastAPI reads a body, so a wrong key is a 401, an oversized body a 413 and a body
that stalls a 408 without the body being parsed (or, past the limit, even read).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .metrics import Metrics

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Paths served without the API key: liveness probes and the API docs.
PUBLIC_PATHS = frozenset({"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})

#: Default seconds a request body may take to arrive in full (``--body-timeout``).
DEFAULT_BODY_TIMEOUT = 30.0


def error_body(kind: str, message: str) -> dict[str, str]:
    """Every error's body: the message as ``error`` (TEI) and ``detail`` (FastAPI, Jina), and its kind."""
    return {"error": message, "error_type": kind, "detail": message}


async def send_error(send: Send, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer with the server's error body ``{"error", "error_type", "detail"}``."""
    body = json.dumps(error_body(kind, message)).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Checks ``Authorization: Bearer <api_key>`` (when a key is set), ``max_request_bytes`` and
    ``body_timeout`` (seconds for the whole body); counts every response."""

    def __init__(
        self,
        app: Callable,
        *,
        api_key: str | None,
        max_request_bytes: int,
        metrics: Metrics,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        self.app = app
        # Compared as UTF-8 bytes, so a non-ASCII key authenticates too.
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_request_bytes = max_request_bytes
        self.metrics = metrics
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, counting_send)
        finally:
            self.metrics.observe_request(scope["path"], status["code"], time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.api_key and scope["path"] not in PUBLIC_PATHS and not self._authorized(scope):
            await send_error(
                send,
                401,
                "unauthorized",
                "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_request_bytes:
            await send_error(send, 413, "payload_too_large", self._too_large(f"{declared} bytes"))
            return
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                await send_error(
                    send,
                    408,
                    "request_timeout",
                    f"The request body did not arrive within the server's {self.body_timeout:g} s (--body-timeout): "
                    f"{size} bytes came. Send the whole body at once.",
                    {"Connection": "close"},
                )
                return
            if message["type"] != "http.request":
                return  # the client went away before its body arrived
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_request_bytes:
                await send_error(send, 413, "payload_too_large", self._too_large(f"more than {size} bytes"))
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)
        return False

    def _too_large(self, size: str) -> str:
        return (
            f"The request body ({size}) is over the server's limit of {self.max_request_bytes} bytes "
            "(--max-request-bytes): send fewer or shorter documents per request."
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already-read body once, then the client's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
