"""``RemoteReranker``: ``BGEReranker``'s scoring interface, answered by a rerank server over HTTP.

Speaks the rerank APIs of ``bge-rerank serve`` (``api="bge"``), text-embeddings-inference
(``"tei"``), Infinity (``"infinity"``), vLLM's Cohere/Jina-compatible endpoint (``"vllm"``) and
Cohere-compatible servers (``"cohere"``). Scores come on the in-process scale: raw logits unless
``normalize=True``. Needs ``httpx`` (``pip install "bge-rerank-integrations[remote]"``), imported
on first use.

>>> reranker = RemoteReranker("http://127.0.0.1:8080", api="tei")
>>> reranker.rerank("what is panda?", ["hi", "The giant panda is a bear."], top_n=1)   # doctest: +SKIP
[RerankResult(index=1, score=5.26171875, text='The giant panda is a bear.')]
>>> await reranker.arerank("what is panda?", ["hi", "The giant panda is a bear."])    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import random
import threading
import time
import weakref
import zlib
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

from .contract import Reranker, Scores
from .inputs import as_pairs, check_positive_int
from .options import (
    DEFAULT_OPTIONS,
    REQUEST_OPTIONS,
    ScoreOptions,
    check_defaults,
    check_single_score,
    parse_score_options,
    signature_with_options,
)

__all__ = ["APIS", "API_KEY_ENV", "RemoteRerankError", "RemoteRerankTimeout", "RemoteReranker"]

logger = logging.getLogger(__name__)

#: A passage's best window as ``(start, end)`` characters, or ``None`` (scored whole; see ``RerankResult.span``).
Span = Optional[tuple[int, int]]

#: Environment variable read for the API key when ``api_key`` is not given.
API_KEY_ENV = "BGE_RERANK_API_KEY"
#: Statuses retried (with backoff, or after ``Retry-After``); connection errors are retried too.
RETRY_STATUSES = frozenset({429, 503})
#: First backoff in seconds (doubled each retry), and the longest wait between two attempts.
BACKOFF_SECONDS = 0.5
MAX_WAIT_SECONDS = 30.0
#: The default limit on a response's decompressed size: this many bytes, plus RESPONSE_BYTES_PER_DOCUMENT per
#: document and RESPONSE_TEXT_FACTOR times the documents' UTF-8 size (servers that echo documents); see max_response_bytes.
RESPONSE_BASE_BYTES = 1 << 20
RESPONSE_BYTES_PER_DOCUMENT = 1024
RESPONSE_TEXT_FACTOR = 8
#: An error answer is read up to this many (decompressed) bytes; the rest is not read (only its message is shown).
ERROR_BODY_BYTES = 64 * 1024
#: The encodings the client asks for; it decodes them itself, in pieces of at most DECODE_PIECE_BYTES, within the limit.
ACCEPT_ENCODING = "gzip, deflate"
DECODE_PIECE_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Api:
    """How one rerank API is spoken."""

    path: str  # appended to a URL that does not already end in /rerank
    texts_field: str  # "texts" (TEI) or "documents"
    raw_field: str | None  # the request field that asks for raw scores; None: the API cannot
    raw_value: bool  # that field's value for raw scores
    max_documents: int | None  # documents per request unless max_documents_per_request says otherwise
    results_key: str | None  # None: the response is a bare array (TEI); else the key of its list
    score_key: str
    model: str  # "required", "optional" or "none": whether requests carry model=
    bge_options: bool = False  # takes the BGE scoring options (our server only)


#: The APIs ``api=`` names.
APIS: dict[str, _Api] = {
    # bge-rerank serve's default --max-documents is 1024; TEI's --max-client-batch-size is 32.
    "bge": _Api("/rerank", "texts", "raw_scores", True, 1024, None, "score", "none", bge_options=True),
    "tei": _Api("/rerank", "texts", "raw_scores", True, 32, None, "score", "none"),
    "infinity": _Api("/rerank", "documents", "raw_scores", True, None, "results", "relevance_score", "optional"),
    "vllm": _Api("/v2/rerank", "documents", "use_activation", False, None, "results", "relevance_score", "optional"),
    "cohere": _Api("/v2/rerank", "documents", None, False, 1000, "results", "relevance_score", "required"),
}


class RemoteRerankError(RuntimeError):
    """A rerank server refused a request, answered something unusable, or could not be reached.

    ``status_code`` is the HTTP status when the server answered (else ``None``).
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RemoteRerankTimeout(RemoteRerankError, TimeoutError):
    """A rerank server did not answer within ``timeout``: the whole call fails, nothing partial is returned."""


class RemoteReranker(Reranker):
    """Score (query, passage) pairs through a rerank server, with ``BGEReranker``'s methods and results.

    ``url`` is the server's base URL (``http://host:port``; the API's path is added) or its full
    rerank endpoint (ending in ``/rerank``). ``api`` says which API it speaks: ``"bge"`` (``bge-rerank
    serve``: TEI's ``/rerank`` plus every BGE scoring option), ``"tei"``, ``"infinity"``, ``"vllm"``
    (``/v2/rerank`` with ``use_activation``) or ``"cohere"`` (Cohere, Jina and compatible servers:
    normalized scores only, so ``normalize=True`` is required). ``model`` is the model name sent to
    servers that take one (required by Cohere). The API key comes from ``api_key`` or the
    ``BGE_RERANK_API_KEY`` environment variable and is sent as a bearer token; it is never shown
    or serialized.

    Calls larger than ``max_documents_per_request`` (TEI: 32, ours: 1024, Cohere: 1000) are split,
    sent at most ``max_concurrent_requests`` at a time, and reassembled in input order; a 413
    halves a request (every request, halves included, counts against ``max_concurrent_requests``).
    Connection errors, 429 and 503 are retried ``retries`` times with backoff (honouring
    ``Retry-After``); any other error status raises ``RemoteRerankError`` with the server's message.
    ``timeout`` is the deadline of the whole call (every request, retry and wait): past it, or when
    the server asks for a ``Retry-After`` longer than what is left, ``RemoteRerankTimeout`` is
    raised. Every answer is validated (each index once, finite scores, the right count) and read
    up to ``max_response_bytes`` decompressed bytes (default: 1 MiB + 1 KiB per document + 8 times
    the documents' UTF-8 size); anything else raises ``RemoteRerankError``. Scoring options
    (``normalize`` for every API; ``max_length``, ``prompt``, ``cutoff_layers``... for ``"bge"``
    only: ``options.REQUEST_OPTIONS``) are defaults that each call can override.

    >>> reranker = RemoteReranker("http://127.0.0.1:8080", api="tei")
    >>> reranker.compute_score([["what is panda?", "hi"], ["what is panda?", "The giant panda ..."]])  # doctest: +SKIP
    [-8.1875, 5.26171875]
    """

    def __init__(
        self,
        url: str,
        *,
        api: str = "bge",
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 60.0,
        max_documents_per_request: int | None = None,
        retries: int = 3,
        max_concurrent_requests: int = 4,
        max_response_bytes: int | None = None,
        **options: Any,
    ) -> None:
        self.url = _check_url(url)
        if api not in APIS:
            raise ValueError(f"api must be one of {sorted(APIS)}, got {api!r}.")
        self.api = api
        self._api = APIS[api]
        full = urlsplit(self.url).path.rstrip("/").endswith("/rerank")
        self.endpoint = self.url if full else self.url.rstrip("/") + self._api.path
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ValueError(f"model must be the model name the server knows, got {model!r}.")
        if model is None and self._api.model == "required":
            raise ValueError(f"api={api!r} needs model=: the name of the served model (the Cohere API requires it).")
        if model is not None and self._api.model == "none":
            raise ValueError(f"api={api!r} serves one model and takes no model=; drop model={model!r}.")
        self.model = model
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
        self.timeout = float(timeout)
        if max_documents_per_request is not None:
            check_positive_int(max_documents_per_request, "max_documents_per_request")
        self.max_documents_per_request = max_documents_per_request or self._api.max_documents
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}.")
        self.retries = retries
        self.max_concurrent_requests = check_positive_int(max_concurrent_requests, "max_concurrent_requests")
        if max_response_bytes is not None:
            check_positive_int(max_response_bytes, "max_response_bytes")
        self.max_response_bytes = max_response_bytes
        self._given_max_documents = max_documents_per_request
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        check_defaults(options)
        self._options: dict[str, Any] = {"normalize": False}
        self._options = self._checked(options)
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._loop_thread: _LoopThread | None = None

    def __repr__(self) -> str:
        return f"RemoteReranker({self.url!r}, api={self.api!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles carry the settings, not the open connections."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_clients", "_loop_thread")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    @property
    def options(self) -> ScoreOptions:
        """The scoring options calls start from; those not set are the server's own (shown as ``BGEReranker``'s defaults)."""
        return ScoreOptions(**self._options)

    @property
    def model_name_or_path(self) -> str:
        """What scores, for logs and events: the endpoint, plus the model name when one is sent."""
        return self.endpoint if self.model is None else f"{self.model} at {self.endpoint}"

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments, without the API key: ``RemoteReranker(**settings)`` rebuilds it.

        >>> RemoteReranker("http://127.0.0.1:8080", api="tei").settings()
        {'url': 'http://127.0.0.1:8080', 'api': 'tei', 'model': None, 'timeout': 60.0, 'max_documents_per_request': None, 'retries': 3, 'max_concurrent_requests': 4, 'max_response_bytes': None, 'normalize': False}
        """
        options = {name: list(value) if isinstance(value, tuple) else value for name, value in self._options.items()}
        return {
            "url": self.url,
            "api": self.api,
            "model": self.model,
            "timeout": self.timeout,
            "max_documents_per_request": self._given_max_documents,
            "retries": self.retries,
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_response_bytes": self.max_response_bytes,
            **options,
        }

    def check_options(self, **options: Any) -> ScoreOptions:
        """Check per-call scoring ``options`` now and return the options a call with them would use.

        Every API takes ``normalize``; only ``api="bge"`` (our server) takes the BGE options. An
        API without raw scores (Cohere) needs ``normalize=True``.
        """
        return ScoreOptions(**self._checked(options))

    def _checked(self, options: dict[str, Any]) -> dict[str, Any]:
        """The constructor's options overridden by a call's, checked: what the call sends (only those set)."""
        merged = {**self._options, **parse_score_options(options)}
        bge_only = sorted(name for name in merged if name != "normalize")
        not_sent = [name for name in bge_only if name not in REQUEST_OPTIONS]
        if not_sent:
            raise ValueError(
                f"{', '.join(not_sent)} is the server's own setting (bge-rerank serve --batch-size, --max-batch-pairs), "
                "not a request option: drop it, or use max_documents_per_request to size requests."
            )
        if bge_only and not self._api.bge_options:
            raise ValueError(
                f"{', '.join(bge_only)} are BGE scoring options that only bge-rerank serve (api='bge') takes; "
                f"a {self.api} server scores with its own settings: drop them."
            )
        check_single_score(merged.get("cutoff_layers"))
        if not merged["normalize"] and self._api.raw_field is None:
            raise ValueError(
                f"The {self.api} API returns only normalized scores (0 to 1), not the raw scores of normalize=False: "
                "pass normalize=True, or api='vllm' if the server is vLLM (it returns raw scores)."
            )
        return merged

    # --- scoring -----------------------------------------------------------------------------------

    def compute_score(self, sentence_pairs: Any, **options: Any) -> Scores:
        """Score one ``[query, passage]`` pair (-> float) or a list of pairs (-> list of floats, input order).

        >>> reranker.compute_score(["what is panda?", "hi"])  # doctest: +SKIP
        -8.1875
        """
        pairs, single = as_pairs(sentence_pairs)
        merged = self._checked(options)
        if not pairs:
            return []
        scores, _ = self._run(self._score(pairs, merged))
        return scores[0] if single else scores

    async def acompute_score(self, sentence_pairs: Any, **options: Any) -> Scores:
        """``compute_score`` on the running event loop (no thread): the requests are awaited."""
        pairs, single = as_pairs(sentence_pairs)
        merged = self._checked(options)
        if not pairs:
            return []
        scores, _ = await self._score(pairs, merged)
        return scores[0] if single else scores

    def _scores_and_spans(self, pairs: list[tuple[str, str]], **options: Any) -> tuple[list[float], list[Span]]:
        """``rerank``'s scores with each passage's best window, as ``bge-rerank serve`` reports it."""
        return self._run(self._score(pairs, self._checked(options))) if pairs else ([], [])

    async def _ascores_and_spans(self, pairs: list[tuple[str, str]], **options: Any) -> tuple[list[float], list[Span]]:
        """``_scores_and_spans`` on the running event loop (no thread)."""
        return await self._score(pairs, self._checked(options)) if pairs else ([], [])

    # --- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections of the synchronous methods (async ones: ``aclose``). Calls reopen them."""
        with self._lock:
            loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is not None:
            client = self._clients.pop(loop_thread.loop, None)
            if client is not None:
                loop_thread.run(client.aclose())
            loop_thread.stop()

    async def aclose(self) -> None:
        """Close the connections opened on the running event loop."""
        with self._lock:
            client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def __enter__(self) -> RemoteReranker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> RemoteReranker:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # --- requests ------------------------------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` on this reranker's own event loop thread (one per reranker, not per call)."""
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
                weakref.finalize(self, self._loop_thread.stop)
            loop_thread = self._loop_thread
        return loop_thread.run(coroutine)

    def _client(self):
        """The ``httpx.AsyncClient`` of the running event loop (one per loop, reused by every call on it)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                httpx = _httpx()
                headers = {"Accept-Encoding": ACCEPT_ENCODING}  # only what _Decoder reads within the limit
                if self._api_key:
                    headers["Authorization"] = f"Bearer {self._api_key}"
                client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), headers=headers)
                self._clients[loop] = client
        return client

    async def _score(self, pairs: list[tuple[str, str]], options: dict[str, Any]) -> tuple[list[float], list[Span]]:
        """Scores of ``pairs`` in input order, and each passage's best window (``None``: scored whole, or an API
        without windows), within ``timeout`` for the whole call (requests, retries, waits)."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            return await asyncio.wait_for(self._score_all(pairs, options, deadline), self.timeout)
        except RemoteRerankError:
            raise
        except (asyncio.TimeoutError, TimeoutError):
            raise RemoteRerankTimeout(self._timeout_message("the deadline passed")) from None

    async def _score_all(
        self, pairs: list[tuple[str, str]], options: dict[str, Any], deadline: float
    ) -> tuple[list[float], list[Span]]:
        """Scores of ``pairs`` in input order: one request per query and chunk, sent concurrently."""
        by_query: dict[str, list[int]] = {}
        for index, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(index)
        size = self.max_documents_per_request or len(pairs)
        chunks = [
            (query, indices[start : start + size])
            for query, indices in by_query.items()
            for start in range(0, len(indices), size)
        ]
        call = _Call(self._client(), options, deadline, asyncio.Semaphore(self.max_concurrent_requests))
        chunk_scores = await _gather_or_cancel(
            [self._post(call, query, [pairs[i][1] for i in indices]) for query, indices in chunks]
        )
        scores: list[float] = [0.0] * len(pairs)
        spans: list[Span] = [None] * len(pairs)
        for (_, indices), values in zip(chunks, chunk_scores):
            for index, (value, span) in zip(indices, values):
                scores[index], spans[index] = value, span
        return scores, spans

    async def _post(self, call: _Call, query: str, texts: list[str]) -> list[tuple[float, Span]]:
        """One request's scores, in ``texts`` order; retried on connection errors, 429 and 503; halved on 413.

        Each attempt holds one of the call's ``max_concurrent_requests`` slots while it is in flight
        (not while it waits to retry, nor while its halves are sent).
        """
        httpx = _httpx()
        body = self._body(query, texts, call.options)
        limit = self._response_limit(texts)
        for attempt in range(self.retries + 1):
            try:
                async with call.slots:
                    answer = await self._request(call, body, limit, len(texts))
            except httpx.TimeoutException as error:
                raise RemoteRerankTimeout(self._timeout_message(type(error).__name__)) from None
            except httpx.TransportError as error:
                reason = f"{type(error).__name__}: {error}"
                if attempt == self.retries:
                    message = f"Could not reach {self.endpoint} after {attempt + 1} attempt(s): {reason}"
                    raise RemoteRerankError(message) from error
                await self._wait(call, attempt, None, reason)
                continue
            if answer.status == 413 and len(texts) > 1:
                half = len(texts) // 2
                logger.warning(
                    "%s refused %d documents in one request (413); splitting. Set max_documents_per_request to skip this.",
                    self.endpoint,
                    len(texts),
                )
                halves = [self._post(call, query, texts[:half]), self._post(call, query, texts[half:])]
                first, second = await _gather_or_cancel(halves)
                return first + second
            if answer.status in RETRY_STATUSES and attempt < self.retries:
                await self._wait(call, attempt, answer, f"{answer.status}")
                continue
            if answer.status != 200:
                raise self._status_error(answer, attempt)
            return self._scores(answer.content, texts)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(self, call: _Call, body: dict[str, Any], limit: int, count: int) -> _Answer:
        """Send one request and read its answer incrementally, decompressing as it comes.

        A 200 is read up to ``limit`` bytes (beyond: an error); an error answer up to
        ``ERROR_BODY_BYTES`` (the rest is left unread).
        """
        left = call.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise RemoteRerankTimeout(self._timeout_message("the deadline passed"))
        async with call.client.stream("POST", self.endpoint, json=body, timeout=left) as response:
            decoder = _Decoder(response.headers.get("Content-Encoding"))
            if decoder.error is not None:
                raise RemoteRerankError(
                    f"{self.endpoint} answered {response.status_code} {decoder.error}", response.status_code
                )
            ok = response.status_code == 200
            cap = limit if ok else ERROR_BODY_BYTES
            content = bytearray()
            try:
                async for raw in response.aiter_raw():
                    for piece in decoder.decode(raw):
                        content += piece
                        if len(content) > cap:
                            if ok:
                                raise RemoteRerankError(self._too_large_message(cap, count), response.status_code)
                            del content[cap:]
                            break
                    if len(content) >= cap and not ok:
                        break
                content += decoder.flush()
            except zlib.error as error:
                raise RemoteRerankError(
                    f"{self.endpoint} answered {response.status_code} with a body that is not valid "
                    f"{response.headers.get('Content-Encoding')} ({error}); nothing was returned.",
                    response.status_code,
                ) from None
            if len(content) > cap and ok:
                raise RemoteRerankError(self._too_large_message(cap, count), response.status_code)
            retry_after = response.headers.get("Retry-After")
            return _Answer(response.status_code, response.reason_phrase, retry_after, bytes(content[:cap]))

    def _response_limit(self, texts: list[str]) -> int:
        """The most decompressed bytes one answer for ``texts`` may have: ``max_response_bytes``, else the default."""
        if self.max_response_bytes is not None:
            return self.max_response_bytes
        text_bytes = sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
        return RESPONSE_BASE_BYTES + RESPONSE_BYTES_PER_DOCUMENT * len(texts) + RESPONSE_TEXT_FACTOR * text_bytes

    def _too_large_message(self, cap: int, count: int) -> str:
        setting = (
            f"max_response_bytes={self.max_response_bytes}"
            if self.max_response_bytes is not None
            else "the default limit"
        )
        return (
            f"{self.endpoint} ({self.api} API) answered more than {cap} bytes (decompressed) for {count} document(s), "
            f"{setting}; reading stopped and nothing was returned. If the server is right to answer this much "
            "(it echoes long documents), raise max_response_bytes=."
        )

    def _timeout_message(self, reason: str) -> str:
        return (
            f"{self.endpoint} did not answer within timeout={self.timeout:g}s, the deadline of the whole call "
            f"(every request, retry and wait; {reason}); nothing was returned. "
            "Raise timeout= or lower max_documents_per_request."
        )

    def _body(self, query: str, texts: list[str], options: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, self._api.texts_field: texts}
        if self.model is not None:
            body["model"] = self.model
        if self._api.raw_field is not None:
            body[self._api.raw_field] = self._api.raw_value if not options["normalize"] else not self._api.raw_value
        if self._api.texts_field == "texts":
            body["truncate"] = True  # as in-process: long passages are truncated, never refused
        if self._api.bge_options:
            body.update(
                {
                    name: list(value) if isinstance(value, tuple) else value
                    for name, value in options.items()
                    if name != "normalize"
                }
            )
        return body

    async def _wait(self, call: _Call, attempt: int, answer: _Answer | None, reason: str) -> None:
        """Wait before the next attempt: ``Retry-After`` if the server gave one, else backoff, never past the deadline.

        A wait longer than what is left of ``timeout`` fails now with ``RemoteRerankTimeout`` (with
        the server's ``Retry-After`` in the message) instead of sleeping into the deadline.
        """
        asked = _retry_after_seconds(answer.retry_after) if answer is not None else None
        wait = asked if asked is not None else BACKOFF_SECONDS * 2**attempt * (1 + random.random() / 4)
        left = call.deadline - asyncio.get_running_loop().time()
        if wait > left:
            status = answer.status if answer is not None else None
            if asked is not None and answer is not None:  # asked comes from answer
                message = (
                    f"{self.endpoint} ({self.api} API) answered {answer.status} {answer.reason}: "
                    f"{_server_message(answer.content)} and asked to retry after {asked:g}s (Retry-After: {answer.retry_after}), more than the {max(left, 0):.1f}s "
                    f"left of timeout={self.timeout:g}s; nothing was returned. Retry later, or raise timeout=."
                )
            else:
                message = self._timeout_message(
                    f"last attempt: {reason}; the next retry, in {wait:.2f}s, would come after it"
                )
            raise RemoteRerankTimeout(message, status)
        wait = min(wait, MAX_WAIT_SECONDS)
        logger.warning("%s: %s; retry %d of %d in %.2fs.", self.endpoint, reason, attempt + 1, self.retries, wait)
        await asyncio.sleep(wait)

    def _status_error(self, answer: _Answer, attempt: int) -> RemoteRerankError:
        status = answer.status
        message = (
            f"{self.endpoint} ({self.api} API) answered {status} {answer.reason}: {_server_message(answer.content)}"
        )
        if status in RETRY_STATUSES:
            message += f" (after {attempt + 1} attempts)"
        elif status in (401, 403):
            message += f". Check api_key (or the {API_KEY_ENV} environment variable)."
        elif status in (404, 405):
            message += f". Check url and api: {self.endpoint} is not a {self.api} rerank endpoint."
        elif status == 413:
            message += ". One document is larger than the server accepts."
        return RemoteRerankError(message, status)

    def _scores(self, content: bytes, texts: list[str]) -> list[tuple[float, Span]]:
        """The scores (and spans) of a 200 answer, in request order; anything malformed, incomplete or ambiguous is an error.

        Exactly ``len(texts)`` results, each an object whose index is an integer (not a bool, not a
        float) in ``range(len(texts))`` given once, and whose score is a number (not a bool) that is
        finite as a float. From ``bge-rerank serve`` (``api="bge"``), a result's ``span`` (its best
        window, for a text scored in windows) is ``[start, end]``, integers with
        ``0 <= start <= end <= len(text)``, or absent.
        """
        count = len(texts)
        try:
            body = json.loads(content)
        except (ValueError, RecursionError) as error:
            raise self._bad_answer(
                f"it is not JSON ({type(error).__name__}: {str(error)[:200]}). Check api=", content
            ) from None
        key, score_key = self._api.results_key, self._api.score_key
        if key is None:
            items = body
            shape = "a JSON array of results"
        else:
            items = body.get(key) if isinstance(body, dict) else None
            shape = f"an object with a {key!r} array"
        if not isinstance(items, list):
            raise self._bad_answer(f"it is not {shape}, as the {self.api} API answers. Check api=", content)
        scores: list[float | None] = [None] * count
        spans: list[Span] = [None] * count
        for position, item in enumerate(items):
            where = f"result {position}"
            if not isinstance(item, dict):
                raise self._bad_answer(f"{where} is {_short(item)}, not an object. Check api=", content)
            index, score = item.get("index"), item.get(score_key)
            if type(index) is not int:
                raise self._bad_answer(f"{where} has index {_short(index)}, not an integer", content)
            if not 0 <= index < count:
                raise self._bad_answer(f"{where} has index {index}, outside 0..{count - 1}", content)
            if scores[index] is not None:
                raise self._bad_answer(f"index {index} appears twice (again in {where})", content)
            value = _finite_float(score)
            if value is None:
                raise self._bad_answer(
                    f"{where} has {score_key} {_short(score)}, not a finite number that fits a float", content
                )
            span = item.get("span") if self._api.bge_options else None
            if span is not None and not (
                isinstance(span, list)
                and len(span) == 2
                and all(type(x) is int for x in span)
                and 0 <= span[0] <= span[1] <= len(texts[index])
            ):
                raise self._bad_answer(f"{where} has span {_short(span)}, not [start, end] within its text", content)
            scores[index] = value
            spans[index] = None if span is None else (span[0], span[1])
        if len(items) != count:  # fewer: some index is missing (more would have repeated one)
            raise self._bad_answer(f"it has {len(items)} result(s) for {count} document(s)", content)
        return list(zip(scores, spans))  # type: ignore[arg-type]  # every index in range(count) was given exactly once

    def _bad_answer(self, problem: str, content: bytes) -> RemoteRerankError:
        start = content[:200].decode("utf-8", "replace")
        return RemoteRerankError(
            f"{self.endpoint} ({self.api} API) answered 200 with an unusable answer: {problem}. Nothing was returned. "
            f"The answer began {start!r}.",
            200,
        )


@dataclass
class _Call:
    """What the requests of one call share: the client, the options, the deadline and the concurrency slots."""

    client: Any
    options: dict[str, Any]
    deadline: float  # event loop time
    slots: asyncio.Semaphore


@dataclass
class _Answer:
    """A server's answer, read within its limit."""

    status: int
    reason: str
    retry_after: str | None
    content: bytes


class _Decoder:
    """Decodes a body in the ``Content-Encoding``s the client asks for, in pieces of at most ``DECODE_PIECE_BYTES``.

    ``error`` says why a body cannot be decoded (an encoding that was not asked for); else ``None``.
    """

    def __init__(self, encoding: str | None) -> None:
        self.error: str | None = None
        self.encoding = (encoding or "identity").strip().lower()
        self._zlib: Any = None
        self._raw_fallback = False
        if self.encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif self.encoding == "deflate":
            self._zlib = zlib.decompressobj()
            self._raw_fallback = True  # some servers send raw deflate: tried if the zlib header is missing
        elif self.encoding not in ("identity", ""):
            self.error = (
                f"with Content-Encoding {encoding!r}, which the client did not ask for (it asks for {ACCEPT_ENCODING})"
            )

    def decode(self, data: bytes):
        """Yield the decoded bytes of ``data`` in pieces of at most ``DECODE_PIECE_BYTES`` (a bomb never inflates at once)."""
        if self._zlib is None:
            yield data
            return
        try:
            piece = self._zlib.decompress(data, DECODE_PIECE_BYTES)
        except zlib.error:
            if not self._raw_fallback:
                raise
            self._zlib, self._raw_fallback = zlib.decompressobj(-zlib.MAX_WBITS), False
            piece = self._zlib.decompress(data, DECODE_PIECE_BYTES)
        self._raw_fallback = False
        yield piece
        while self._zlib.unconsumed_tail:
            yield self._zlib.decompress(self._zlib.unconsumed_tail, DECODE_PIECE_BYTES)

    def flush(self) -> bytes:
        """What is left once the body has ended (bounded: everything was fed through ``decode``)."""
        return b"" if self._zlib is None else self._zlib.flush(DECODE_PIECE_BYTES)


RemoteReranker.__init__.__signature__ = signature_with_options(  # type: ignore[attr-defined]
    RemoteReranker.__init__,
    ["normalize", *(name for name in REQUEST_OPTIONS if name in DEFAULT_OPTIONS)],
    defaults=dict.fromkeys(REQUEST_OPTIONS),  # None: the server's default
)


class _LoopThread:
    """An event loop in a daemon thread, where a reranker's synchronous calls run their requests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bge-rerank-remote", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join()
            self.loop.close()


async def _gather_or_cancel(coroutines: Sequence[Awaitable[Any]]) -> list[Any]:
    """Results of ``coroutines`` run concurrently; the first failure cancels the rest (never a partial result)."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def _check_url(url: Any) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"url must be an http:// or https:// address such as 'http://127.0.0.1:8080', got {url!r}.")
    return url


def _httpx():
    try:
        import httpx
    except ImportError:
        raise ImportError(
            'RemoteReranker needs httpx: pip install "bge-rerank-integrations[remote]" (or pip install httpx).'
        ) from None
    return httpx


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; ``None`` if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _server_message(content: bytes) -> str:
    """The server's own explanation: TEI's ``error``, FastAPI's ``detail``, vLLM's and Cohere's ``message``."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return content.decode("utf-8", "replace").strip()[:500] or "(empty body)"
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            value = body.get(key)
            if isinstance(value, dict) and "message" in value:
                value = value["message"]
            if value:
                return value if isinstance(value, str) else json.dumps(value)[:500]
    return json.dumps(body)[:500]


def _finite_float(value: Any) -> float | None:
    """``value`` as a float if it is a JSON number (not a bool) that is finite as a float, else ``None``."""
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    """A short ``repr`` of a value from an answer, for messages."""
    if type(value) is int and abs(value) >= 10**30:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
