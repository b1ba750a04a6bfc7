"""Connection-level limits uvicorn lacks: a deadline for a request's headers.

uvicorn closes a connection left idle after a response (``timeout_keep_alive``), but not one
that never completes its headers (a client that connects and sends nothing, or a few bytes a
minute): such sockets would be held forever. ``with_header_timeout`` wraps uvicorn's HTTP
protocol so that each request's headers must arrive within ``seconds`` of the connection
opening or the previous response ending; otherwise the connection is closed. The body's own
deadline is the ``Guard``'s (``--body-timeout``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

#: Default seconds for a request's headers to arrive (``--header-timeout``).
DEFAULT_HEADER_TIMEOUT = 10.0


class _HeaderDeadline:
    """Mixin for uvicorn's ``H11Protocol`` / ``HttpToolsProtocol``: close connections whose headers are late."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

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
            logger.info("Closing a connection whose request headers did not arrive within %g s (--header-timeout).", self.header_timeout)
            self.transport.close()  # type: ignore[attr-defined]


def with_header_timeout(seconds: float) -> type:
    """uvicorn's default HTTP protocol class (httptools if installed, else h11) with a header deadline."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type(f"HeaderDeadline{AutoHTTPProtocol.__name__}", (_HeaderDeadline, AutoHTTPProtocol), {"header_timeout": seconds})
