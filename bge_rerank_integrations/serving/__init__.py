"""HTTP serving: any BGE reranker behind TEI's and Cohere/Jina/vLLM's rerank APIs (``pip install ...[serve]``).

Nothing here is imported by the core; FastAPI, uvicorn and prometheus-client are the ``serve`` extra.

Contract (kept stable; later changes only add):

``create_app(scorer, *, settings=ServerSettings(), metrics=None) -> fastapi.FastAPI``
    ``scorer`` (``scoring.Scorer``) has ``reranker`` (the ``BGEReranker``: option checks, ``/info``)
    and ``async score(pairs: list[tuple[str, str]], options: dict) -> ScoredPairs(scores, tokens)``,
    where ``options`` are ``BGEReranker.compute_score`` keyword arguments already checked by the app
    (``normalize`` included) and ``scores`` holds one float per pair. It raises ``Overloaded`` when
    full (503 + Retry-After); a ``ValueError`` / ``TypeError`` is the request's fault (422 with its message);
    any other error fails that request only (500). Optional members:
    ``ready`` (``/health`` is 503 while false), ``async start()`` / ``async stop()`` (run by the
    app's lifespan), ``describe() -> dict`` (added to ``/info``'s limits), ``metrics``.
    ``DynamicBatcher(reranker, max_batch_pairs=, max_wait_ms=, max_queue_pairs=, metrics=)`` is the
    built-in scorer; under Ray Serve, a scorer whose ``@serve.batch`` method calls
    ``score_jobs(reranker, [Job(pairs, options), ...])`` (one result or exception per job) is another.
    ``ServerSettings(model_name=None, max_documents=1024, max_request_bytes=2_000_000, api_key=None,
    body_timeout=30.0)`` (the key is left out of ``repr``; an empty key is a ValueError).

Endpoints (errors are always ``{"error": str, "error_type": str, "detail": str}``, ``detail`` = ``error``):

- ``POST /rerank`` (TEI): ``{query, texts: [str], raw_scores?, return_text?, truncate?,
  truncation_direction?: "right"}`` -> ``[{index, score, text?}]`` best first. With ``documents``
  and no ``texts`` (vLLM's and Infinity's ``/rerank``) it answers as ``/v1/rerank`` does, except
  that ``return_documents`` defaults to false.
- ``POST /v1/rerank``, ``POST /v2/rerank`` (Cohere/Jina/vLLM): ``{model?, query, documents: [str |
  {text}], top_n?, return_documents? (true), raw_scores? | use_activation?}`` -> ``{id, model,
  results: [{index, relevance_score, document?: {text}}], usage: {prompt_tokens, total_tokens}}``
  best first, at most ``top_n`` (0 or absent: all). Every path ranks with ``ranking.rank`` (NaN last).
- Both take the BGE options ``max_length``, ``query_max_length``, ``prompt``, ``cutoff_layers``
  (one layer), ``compress_ratio``, ``compress_layers``, ``query_instruction_for_rerank``,
  ``query_instruction_format``, ``passage_instruction_for_rerank``, ``passage_instruction_format``.
  Scores are sigmoid-normalized unless ``raw_scores: true`` / ``use_activation: false`` (then they
  equal ``BGEReranker.compute_score``); the server's ``--no-normalize`` flips the default.
- ``GET /health`` (200 ``{"status": "ok"}`` once loaded), ``GET /info``, ``GET /metrics`` (Prometheus),
  ``/docs`` (OpenAPI).
- 401 (API key set, Bearer token missing or wrong; ``/health`` and the docs stay open), 408 (body
  slower than ``body_timeout``), 413 (body over ``max_request_bytes``, more documents than
  ``max_documents``), 422 (malformed JSON, invalid UTF-8, nesting too deep, wrong or coerced types,
  options or inputs the model cannot take: the core's message), 503 + ``Retry-After``. A 5xx is
  never caused by the request.
"""

from .app import ServerSettings, create_app
from .batcher import DynamicBatcher
from .metrics import Metrics
from .scoring import Job, Overloaded, ScoredPairs, Scorer, score_jobs

__all__ = [
    "DynamicBatcher",
    "Job",
    "Metrics",
    "Overloaded",
    "ScoredPairs",
    "Scorer",
    "ServerSettings",
    "create_app",
    "score_jobs",
]
