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
from dataclasses import dataclass
from typing import Any, Awaitable
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

__all__ = ["RemoteReranker", "RemoteRerankError", "RemoteRerankTimeout", "API_KEY_ENV", "APIS"]

logger = logging.getLogger(__name__)

#: Environment variable read for the API key when ``api_key`` is not given.
API_KEY_ENV = "BGE_RERANK_API_KEY"
#: Statuses retried (with backoff, or after ``Retry-After``); connection errors are retried too.
RETRY_STATUSES = frozenset({429, 503})
#: First backoff in seconds (doubled each retry), and the longest wait between two attempts.
BACKOFF_SECONDS = 0.5
MAX_WAIT_SECONDS = 30.0


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
    halves a request.
    Connection errors, 429 and 503 are retried ``retries`` times with backoff (honouring
    ``Retry-After``); any other error status raises ``RemoteRerankError`` with the server's message,
    and no answer within ``timeout`` seconds raises ``RemoteRerankTimeout``. Scoring options
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
        {'url': 'http://127.0.0.1:8080', 'api': 'tei', 'model': None, 'timeout': 60.0, 'max_documents_per_request': None, 'retries': 3, 'max_concurrent_requests': 4, 'normalize': False}
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
        scores = self._run(self._score(pairs, merged))
        return scores[0] if single else scores

    async def acompute_score(self, sentence_pairs: Any, **options: Any) -> Scores:
        """``compute_score`` on the running event loop (no thread): the requests are awaited."""
        pairs, single = as_pairs(sentence_pairs)
        merged = self._checked(options)
        if not pairs:
            return []
        scores = await self._score(pairs, merged)
        return scores[0] if single else scores

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

    def __enter__(self) -> "RemoteReranker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "RemoteReranker":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # --- requests ------------------------------------------------------------------------------------

    def _run(self, coroutine: Awaitable[list[float]]) -> list[float]:
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
                headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
                client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), headers=headers)
                self._clients[loop] = client
        return client

    async def _score(self, pairs: list[tuple[str, str]], options: dict[str, Any]) -> list[float]:
        """Scores of ``pairs`` in input order: one request per query and chunk, sent concurrently."""
        by_query: dict[str, list[int]] = {}
        for index, (query, _) in enumerate(pairs):
            by_query.setdefault(query, []).append(index)
        size = self.max_documents_per_request or len(pairs)
        chunks = [
            (query, indices[start : start + size]) for query, indices in by_query.items() for start in range(0, len(indices), size)
        ]
        semaphore = asyncio.Semaphore(self.max_concurrent_requests)
        client = self._client()

        async def send(query: str, indices: list[int]) -> list[float]:
            async with semaphore:
                return await self._post(client, query, [pairs[i][1] for i in indices], options)

        chunk_scores = await _gather_or_cancel([send(query, indices) for query, indices in chunks])
        scores: list[float] = [0.0] * len(pairs)
        for (_, indices), values in zip(chunks, chunk_scores):
            for index, value in zip(indices, values):
                scores[index] = value
        return scores

    async def _post(self, client: Any, query: str, texts: list[str], options: dict[str, Any]) -> list[float]:
        """One request's scores, in ``texts`` order; retried on connection errors, 429 and 503; halved on 413."""
        httpx = _httpx()
        body = self._body(query, texts, options)
        for attempt in range(self.retries + 1):
            try:
                response = await client.post(self.endpoint, json=body)
            except httpx.TimeoutException as error:
                raise RemoteRerankTimeout(
                    f"{self.endpoint} did not answer within timeout={self.timeout:g}s ({type(error).__name__}); "
                    "nothing was returned. Raise timeout= or lower max_documents_per_request."
                ) from None
            except httpx.TransportError as error:
                if attempt == self.retries:
                    raise RemoteRerankError(
                        f"Could not reach {self.endpoint} after {attempt + 1} attempt(s): {type(error).__name__}: {error}"
                    ) from error
                await asyncio.sleep(self._wait(attempt, None, f"{type(error).__name__}: {error}"))
                continue
            if response.status_code == 413 and len(texts) > 1:
                half = len(texts) // 2
                logger.warning(
                    "%s refused %d documents in one request (413); splitting. Set max_documents_per_request to skip this.",
                    self.endpoint,
                    len(texts),
                )
                first, second = await _gather_or_cancel(
                    [self._post(client, query, texts[:half], options), self._post(client, query, texts[half:], options)]
                )
                return first + second
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                await asyncio.sleep(self._wait(attempt, response.headers.get("Retry-After"), f"{response.status_code}"))
                continue
            if response.status_code != 200:
                raise self._status_error(response, attempt)
            return self._scores(response, len(texts))
        raise AssertionError("unreachable")  # pragma: no cover

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
                {name: list(value) if isinstance(value, tuple) else value for name, value in options.items() if name != "normalize"}
            )
        return body

    def _wait(self, attempt: int, retry_after: str | None, reason: str) -> float:
        """Seconds to wait before the next attempt: ``Retry-After`` if the server gave one, else backoff."""
        wait = _retry_after_seconds(retry_after)
        if wait is None:
            wait = BACKOFF_SECONDS * 2**attempt * (1 + random.random() / 4)
        wait = min(wait, MAX_WAIT_SECONDS)
        logger.warning("%s: %s; retry %d of %d in %.2fs.", self.endpoint, reason, attempt + 1, self.retries, wait)
        return wait

    def _status_error(self, response: Any, attempt: int) -> RemoteRerankError:
        status = response.status_code
        message = f"{self.endpoint} ({self.api} API) answered {status} {response.reason_phrase}: {_server_message(response)}"
        if status in RETRY_STATUSES:
            message += f" (after {attempt + 1} attempts)"
        elif status in (401, 403):
            message += f". Check api_key (or the {API_KEY_ENV} environment variable)."
        elif status in (404, 405):
            message += f". Check url and api: {self.endpoint} is not a {self.api} rerank endpoint."
        elif status == 413:
            message += ". One document is larger than the server accepts."
        return RemoteRerankError(message, status)

    def _scores(self, response: Any, count: int) -> list[float]:
        """The scores of a 200 answer, in request order; anything malformed or incomplete is an error."""
        try:
            body = response.json()
            items = body if self._api.results_key is None else body[self._api.results_key]
            found = {item["index"]: item[self._api.score_key] for item in items}
        except (ValueError, KeyError, TypeError) as error:
            raise RemoteRerankError(
                f"{self.endpoint} answered 200 but not with the {self.api} API's results ({type(error).__name__}: {error}): "
                f"{response.text[:300]!r}. Check api=."
            ) from None
        scores = [found.get(index) for index in range(count)]
        if len(found) != count or any(
            isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) for score in scores
        ):
            raise RemoteRerankError(
                f"{self.endpoint} answered {len(found)} result(s) for {count} document(s), or a score that is not a finite number: "
                f"{response.text[:300]!r}."
            )
        return [float(score) for score in scores]


RemoteReranker.__init__.__signature__ = signature_with_options(
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

    def run(self, coroutine: Awaitable[Any]) -> Any:
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


async def _gather_or_cancel(coroutines: list[Awaitable[Any]]) -> list[Any]:
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


def _server_message(response: Any) -> str:
    """The server's own explanation: TEI's ``error``, FastAPI's ``detail``, vLLM's and Cohere's ``message``."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or "(empty body)"
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            value = body.get(key)
            if isinstance(value, dict) and "message" in value:
                value = value["message"]
            if value:
                return value if isinstance(value, str) else json.dumps(value)[:500]
    return json.dumps(body)[:500]
