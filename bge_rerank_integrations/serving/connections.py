"""Connection-level limits uvicorn lacks or answers in its own way: a deadline for a request's
headers, and a cap on open connections answered with the server's JSON error body.

uvicorn closes a connection left idle after a response (``timeout_keep_alive``), but not one
that never completes its headers (a client that connects and sends nothing, or a few bytes a
minute): such sockets would be held forever. ``http_protocol`` wraps uvicorn's HTTP protocol
so that each request's headers must arrive within ``header_timeout`` seconds of the connection
opening or the previous response ending; otherwise the connection is closed. The body's own
deadline is the ``Guard``'s (``--body-timeout``).

A request that arrives while more than ``max_connections`` connections are open is answered
503 with ``{"error", "error_type", "detail"}`` and the connection is closed (uvicorn's own
``limit_concurrency`` answers a plain-text 503 and counts the request's own connection).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .guard import Receive, Scope, Send, send_error

logger = logging.getLogger(__name__)

#: Default seconds for a request's headers to arrive (``--header-timeout``).
DEFAULT_HEADER_TIMEOUT = 10.0


#: Default most open connections (``--max-connections``).
DEFAULT_MAX_CONNECTIONS = 512


class _ConnectionLimits:
    """Mixin for uvicorn's ``H11Protocol`` / ``HttpToolsProtocol``: close connections whose headers
    are late, and answer 503 to requests over the connection cap."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._app_within_cap = self.app  # type: ignore[has-type]
        self.app = self._app_or_over_cap
        self._arm_header_timer()

    async def _app_or_over_cap(self, scope: Scope, receive: Receive, send: Send) -> None:
        open_connections = len(self.connections)  # type: ignore[attr-defined]  # this one included
        if scope["type"] != "http" or open_connections <= self.max_connections:
            await self._app_within_cap(scope, receive, send)
            return
        logger.warning(
            "Answering 503: %d connections are open, over --max-connections %d.", open_connections, self.max_connections
        )
        message = (
            f"The server has {open_connections} open connections, more than its limit of {self.max_connections} "
            "(--max-connections); retry later."
        )
        await send_error(send, 503, "overloaded", message, {"Retry-After": "1", "Connection": "close"})

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue)  # type: ignore[attr-defined]

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        cycle = getattr(self, "cycle", None)
        waiting_for_headers = cycle is None or cycle.response_complete
        if waiting_for_headers and not self.transport.is_closing():  # type: ignore[attr-defined]
            logger.info(
                "Closing a connection whose request headers did not arrive within %g s (--header-timeout).",
                self.header_timeout,
            )
            self.transport.close()  # type: ignore[attr-defined]


def http_protocol(header_timeout: float, max_connections: int) -> type:
    """uvicorn's default HTTP protocol class (httptools if installed, else h11) with these limits."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    limits = {"header_timeout": header_timeout, "max_connections": max_connections}
    return type(f"Limited{AutoHTTPProtocol.__name__}", (_ConnectionLimits, AutoHTTPProtocol), limits)
