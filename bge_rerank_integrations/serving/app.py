"""The FastAPI app: rerank endpoints over a scorer, with limits, errors, health, info and metrics.

``create_app(scorer, settings=ServerSettings(...))`` builds the app; the scorer owns the model
(see ``scoring.Scorer``). The app validates requests, turns them into (query, text) pairs and
``BGEReranker`` options, checks the options exactly like the core, awaits ``scorer.score`` and
shapes the result for the API that was called.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..inputs import check_text
from ..options import check_single_score, options_not_taken
from ..ranking import rank
from .guard import DEFAULT_BODY_TIMEOUT, Guard, error_body
from .metrics import Metrics
from .schemas import (
    SCHEMA_TAGS,
    AnyRerankRequest,
    Document,
    ErrorResponse,
    RankedDocument,
    RerankRequest,
    RerankResponse,
    TEIRank,
    TEIRerankRequest,
    Usage,
)
from .scoring import Overloaded, ScoredPairs, Scorer

#: Status of a request whose client went away before its answer (nginx's convention; nobody reads it).
CLIENT_CLOSED = 499


@dataclass(frozen=True)
class ServerSettings:
    """What the app enforces; the model and its scoring defaults belong to the scorer's ``BGEReranker``.

    ``model_name`` is the name responses and ``/info`` give (default: the reranker's model path).
    ``body_timeout`` bounds, in seconds, how long a request body may take to arrive (else 408).
    ``api_key`` never shows in ``repr``; an empty one is refused (it would silently mean "open").
    """

    model_name: str | None = None
    max_documents: int = 1024
    max_request_bytes: int = 2_000_000
    api_key: str | None = field(default=None, repr=False)
    body_timeout: float = DEFAULT_BODY_TIMEOUT

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("The API key is empty: set a non-empty key, or none at all for an open server.")
        for name in ("max_documents", "max_request_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not self.body_timeout > 0:
            raise ValueError(f"body_timeout must be a positive number of seconds, got {self.body_timeout!r}.")


class ApiError(Exception):
    """An error answered as ``{"error", "error_type"}`` with ``status``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


class _ClientGone(Exception):
    pass


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong API key"},
    408: {"model": ErrorResponse, "description": "the body did not arrive within --body-timeout"},
    413: {
        "model": ErrorResponse,
        "description": "body over --max-request-bytes or more documents than --max-documents",
    },
    422: {
        "model": ErrorResponse,
        "description": "malformed JSON, invalid UTF-8, JSON nested too deeply, wrong types, or options/inputs the model cannot take",
    },
    500: {
        "model": ErrorResponse,
        "description": "the server itself failed while scoring (never caused by the request)",
    },
    503: {
        "model": ErrorResponse,
        "description": "queue full (see Retry-After), model not ready, or over --max-connections",
    },
}


def create_app(scorer: Scorer, *, settings: ServerSettings | None = None, metrics: Metrics | None = None) -> FastAPI:
    """The rerank app over ``scorer``.

    >>> from bge_rerank_integrations.serving import DynamicBatcher, create_app
    >>> app = create_app(DynamicBatcher(BGEReranker("BAAI/bge-reranker-v2-m3")))   # doctest: +SKIP
    """
    settings = settings or ServerSettings()
    metrics = metrics or getattr(scorer, "metrics", None) or Metrics()
    reranker = scorer.reranker
    model_name = settings.model_name or reranker.model_name_or_path

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if hasattr(scorer, "start"):
            await scorer.start()
        yield
        if hasattr(scorer, "stop"):
            await scorer.stop()

    app = FastAPI(
        title="bge-rerank",
        version=__version__,
        description="BGE rerankers with FlagEmbedding-exact scores behind TEI's and Cohere/Jina/vLLM's rerank APIs.",
        lifespan=lifespan,
    )
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_request_bytes=settings.max_request_bytes,
        metrics=metrics,
        body_timeout=settings.body_timeout,
    )
    app.state.scorer, app.state.settings, app.state.metrics = scorer, settings, metrics

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.kind, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, "validation", readable_validation_error(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        unreadable = _unreadable_body(error)
        if unreadable is not None:
            return _error(422, "validation", unreadable)
        return _error(error.status_code, "http", str(error.detail), getattr(error, "headers", None))

    async def score(request: Request, query: Any, texts: Sequence[str], options: dict[str, Any]) -> ScoredPairs:
        if len(texts) > settings.max_documents:
            raise ApiError(
                413,
                "too_many_documents",
                f"{len(texts)} documents are more than the server's limit of {settings.max_documents} per request "
                "(--max-documents): split them over several requests.",
            )
        try:
            check_text(query, "query")
            for index, text in enumerate(texts):
                check_text(text, f"document at index {index}")
            check_single_score(options.get("cutoff_layers"))
            reranker.check_options(**options)
        except (ValueError, TypeError) as error:
            raise ApiError(422, "invalid_request", str(error)) from None
        if not texts:
            return ScoredPairs([], [])
        try:
            return await _until_disconnected(request, scorer.score([(query, text) for text in texts], options))
        except Overloaded as error:
            raise ApiError(503, "overloaded", str(error), {"Retry-After": str(error.retry_after)}) from None
        except _ClientGone:
            raise ApiError(CLIENT_CLOSED, "client_closed", "The client closed the connection.") from None
        except (ValueError, TypeError) as error:
            # The core raises these for inputs it cannot score (e.g. a prompt longer than the model's
            # positions): the request's fault, so a 4xx a client will not retry, with the core's message.
            raise ApiError(422, "invalid_request", str(error)) from None
        except Exception as error:  # noqa: BLE001 - the scorer's failure: this request fails, the server goes on
            raise ApiError(500, "scoring_failed", f"Scoring failed: {type(error).__name__}: {error}") from None

    @app.post(
        "/rerank",
        response_model=Union[list[TEIRank], RerankResponse],
        response_model_exclude_none=True,
        responses=_ERRORS,
    )
    async def rerank_tei(body: Annotated[AnyRerankRequest, Body()], request: Request) -> list[TEIRank] | RerankResponse:
        """TEI's rerank: ``{query, texts}`` -> ``[{index, score, text?}]`` best first; sigmoid scores unless ``raw_scores``.

        With ``documents`` (and no ``texts``) it is vLLM's and Infinity's ``/rerank``: answered as
        ``/v1/rerank`` is, except that ``return_documents`` defaults to false (Infinity's default).
        """
        if isinstance(body, RerankRequest):
            return await rerank_documents(body, request, return_documents=False)
        options = _options(body)
        scored = await score(request, body.query, body.texts, options)
        return [
            TEIRank(
                index=ranked.index,
                score=ranked.score,
                text=ranked.text if body.return_text else None,
                span=_span(ranked),
            )
            for ranked in rank(body.texts, scored.scores, None, None, scored.spans)
        ]

    async def rerank_documents(body: RerankRequest, request: Request, *, return_documents: bool) -> RerankResponse:
        options = _options(body, body.use_activation)
        texts = body.texts()
        scored = await score(request, body.query, texts, options)
        if body.return_documents is not None:
            return_documents = body.return_documents
        results = [
            RankedDocument(
                index=ranked.index,
                relevance_score=ranked.score,
                document=Document(text=ranked.text) if return_documents else None,
                relevance_span=_span(ranked),
            )
            for ranked in rank(texts, scored.scores, body.top_n or None, None, scored.spans)
        ]
        tokens = sum(scored.tokens)
        return RerankResponse(
            id=f"rerank-{uuid.uuid4().hex}",
            model=model_name,
            results=results,
            usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def rerank_cohere(body: RerankRequest, request: Request) -> RerankResponse:
        """Cohere/Jina/vLLM's rerank: ``{id, model, results, usage}``, results best first, at most ``top_n``; documents returned unless ``return_documents: false``."""
        return await rerank_documents(body, request, return_documents=True)

    for path in ("/v1/rerank", "/v2/rerank"):
        app.post(path, response_model=RerankResponse, response_model_exclude_none=True, responses=_ERRORS)(
            rerank_cohere
        )

    @app.get("/health", responses={503: {"model": ErrorResponse, "description": "loading or shutting down"}})
    async def health() -> JSONResponse:
        """200 once the model is loaded and the server takes requests, else 503."""
        if getattr(scorer, "ready", True):
            return JSONResponse({"status": "ok"})
        return _error(503, "not_ready", "The model is loading or the server is shutting down.", {"Retry-After": "1"})

    @app.get("/info", responses={401: _ERRORS[401]})
    async def info() -> dict[str, Any]:
        """Model, family, device, dtype, max positions, scoring defaults, limits and version."""
        family = reranker.load().family
        defaults = {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(reranker.options).items()
        }
        limits = {"max_documents": settings.max_documents, "max_request_bytes": settings.max_request_bytes}
        limits.update(getattr(scorer, "describe", dict)())
        return {
            "model": model_name,
            "model_path": reranker.model_name_or_path,
            "family": family.name,
            "device": str(reranker.device),
            "dtype": str(reranker.dtype).removeprefix("torch."),
            "max_positions": family.max_positions,
            "defaults": defaults,
            "limits": limits,
            "auth": bool(settings.api_key),
            "version": __version__,
        }

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
            401: _ERRORS[401],
        },
    )
    async def prometheus() -> Response:
        """Prometheus metrics: requests, pairs, latency and batch-size histograms, queue depth."""
        content, content_type = metrics.render()
        return Response(content, media_type=content_type)

    def openapi() -> dict[str, Any]:
        """The OpenAPI document, stating this server's own bounds once the model is loaded."""
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        app.openapi_schema = None  # FastAPI caches it; we cache the finished document only
        if settings.api_key:
            _declare_bearer_auth(schema)
        loaded = getattr(scorer, "ready", True)
        if loaded:
            _declare_model_bounds(schema, reranker.load().family, settings.max_documents)
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _declare_bearer_auth(schema: dict[str, Any]) -> None:
    """Declare ``Authorization: Bearer`` on every path the key guards."""
    from .guard import PUBLIC_PATHS

    schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
    }
    for path, operations in schema.get("paths", {}).items():
        if path not in PUBLIC_PATHS:
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]


def _declare_model_bounds(schema: dict[str, Any], family: Any, max_documents: int) -> None:
    """State what the served model takes: ``max_length`` up to its positions, only its family's options
    (the others may only be null), and at most ``max_documents`` documents (413 beyond)."""
    for name in ("TEIRerankRequest", "RerankRequest"):
        properties = schema.get("components", {}).get("schemas", {}).get(name, {}).get("properties", {})
        for option in options_not_taken(family.name):
            if option in properties:
                properties[option] = {
                    "type": "null",
                    "description": f"not taken by the {family.name} family served here",
                }
        for option in ("max_length", "query_max_length"):
            for branch in properties.get(option, {}).get("anyOf", []):
                if branch.get("type") == "integer":
                    branch["maximum"] = family.max_positions
        texts = "texts" if name == "TEIRerankRequest" else "documents"
        if texts in properties:
            properties[texts]["maxItems"] = max_documents


def readable_validation_error(errors: Sequence[dict[str, Any]]) -> str:
    """One line per problem, e.g. ``texts.1: Input should be a valid string``; malformed JSON says where."""
    lines = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        if location and location[0] in SCHEMA_TAGS:
            location = location[1:]  # the /rerank body's schema (TEI's or vLLM's), not a field
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error", "")
            lines.append(f"Malformed JSON body: {detail} (at character {location[0] if location else '?'}).")
            continue
        lines.append(f"{'.'.join(location) or 'body'}: {error.get('msg', 'invalid value')}")
    return "; ".join(lines) or "Invalid request."


def _options(body: TEIRerankRequest | RerankRequest, use_activation: bool | None = None) -> dict[str, Any]:
    try:
        return body.call_options(use_activation)
    except ValueError as error:
        raise ApiError(422, "invalid_request", str(error)) from None


def _unreadable_body(error: StarletteHTTPException) -> str | None:
    """The message for a body FastAPI could not decode (invalid UTF-8, JSON nested too deeply), else None."""
    cause = error.__cause__
    if error.status_code != 400 or cause is None:
        return None
    if isinstance(cause, UnicodeDecodeError):
        return f"The body is not valid UTF-8 (byte {cause.object[cause.start]:#04x} at position {cause.start}): send UTF-8 JSON."
    if isinstance(cause, RecursionError):
        return "Malformed JSON body: nested too deeply to parse; send flat JSON (a list of strings per field)."
    return f"The body could not be read as JSON ({type(cause).__name__}): send UTF-8 JSON."


def _span(ranked: Any) -> list[int] | None:
    """A ranked text's best window as ``[start, end]``, or ``None`` when it was scored whole."""
    return None if ranked.span is None else list(ranked.span)


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(kind, message), status_code=status, headers=headers)


async def _until_disconnected(request: Request, work: Awaitable[ScoredPairs]) -> ScoredPairs:
    """Await ``work``, cancelling it (dropping queued pairs) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise _ClientGone()


async def _disconnect(receive: Callable[[], Awaitable[object]]) -> None:
    """Return when the client disconnects (never, if the server cannot tell)."""
    while True:
        try:
            message = await receive()
        except Exception:  # noqa: BLE001 - a receive that cannot be watched: wait for the work instead
            message = await asyncio.Event().wait()
        if isinstance(message, dict) and message.get("type") == "http.disconnect":
            return
