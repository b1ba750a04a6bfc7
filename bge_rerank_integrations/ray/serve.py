"""``build_app``: the ``bge-rerank serve`` HTTP API on Ray Serve replicas, requests batched with ``serve.batch``."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ray import serve

from ..reranker import BGEReranker
from ..serving import Job, Metrics, ScoredPairs, ServerSettings, create_app, score_jobs
from .options import actor_reranker_options

logger = logging.getLogger(__name__)

#: The deployment's name in Serve (``serve status``, logs, replica actor names).
DEPLOYMENT_NAME = "BGEReranker"
#: The application's name when ``bge-rerank serve --ray`` runs it.
APP_NAME = "bge-rerank"


@serve.ingress()
class RerankDeployment:
    """One replica: one ``BGEReranker`` behind ``create_app``; concurrent requests share model calls.

    The replica is the app's scorer: ``score`` queues a request's pairs as a ``Job`` and
    ``serve.batch`` hands up to ``max_batch_size`` waiting jobs to one ``score_jobs`` call.
    ``/metrics`` answers with the figures of the replica the request reached.
    """

    def __init__(
        self,
        model: str,
        options: dict[str, Any],
        settings: ServerSettings,
        max_batch_size: int,
        batch_wait_timeout_s: float,
    ) -> None:
        self.reranker = BGEReranker(model, **options)
        self.reranker.load()  # the replica is ready only once its model is
        self.settings = settings
        self.metrics = Metrics()
        # serve.batch's stubs type the decorated method as the plain function; it has these setters at run time.
        self._score_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self._score_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]
        logger.info("Replica loaded %r.", self.reranker)

    def __serve_build_asgi_app__(self):
        return create_app(self, settings=self.settings)

    async def score(self, pairs: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> ScoredPairs:
        result = await self._score_batch(Job(list(pairs), dict(options)))
        if isinstance(result, BaseException):
            raise result
        return result

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _score_batch(self, jobs: list[Job]) -> list[ScoredPairs | BaseException]:
        self.metrics.batch_requests.observe(len(jobs))
        self.metrics.batch_pairs.observe(sum(len(job.pairs) for job in jobs))
        results = await asyncio.to_thread(score_jobs, self.reranker, jobs)
        self.metrics.pairs.inc(sum(len(result.scores) for result in results if isinstance(result, ScoredPairs)))
        return results


def build_app(
    model: str,
    *,
    num_replicas: int | str | None = None,
    autoscaling_config: Mapping[str, Any] | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    max_ongoing_requests: int = 64,
    max_batch_size: int = 16,
    batch_wait_timeout_s: float = 0.005,
    settings: ServerSettings | None = None,
    **options: Any,
) -> serve.Application:
    """A Ray Serve application with the HTTP API of ``bge-rerank serve`` on each replica.

    Each replica loads ``BGEReranker(model, **options)`` (load and scoring options, as for
    ``bge-rerank serve``; scores are sigmoid-normalized unless ``normalize=False`` or a request
    asks raw ones). ``num_replicas`` is a count (default 1) or ``"auto"``; ``autoscaling_config``
    (``min_replicas``, ``max_replicas``, ``target_ongoing_requests``) makes Serve scale them.
    ``ray_actor_options={"num_gpus": 1}`` gives each replica a GPU (then the model goes on it;
    without a GPU replicas run on CPU). Up to ``max_batch_size`` requests waiting at most
    ``batch_wait_timeout_s`` share one model call. ``settings`` are the app's limits (documents
    per request, body size, API key, served model name).

    >>> from ray import serve
    >>> serve.run(build_app("BAAI/bge-reranker-v2-m3", num_replicas=4, ray_actor_options={"num_gpus": 1}),
    ...           route_prefix="/")                                              # doctest: +SKIP
    """
    ray_actor_options = dict(ray_actor_options or {})
    options.setdefault("normalize", True)
    options = actor_reranker_options(model, options, ray_actor_options.get("num_gpus", 0))
    config: dict[str, Any] = dict(
        name=DEPLOYMENT_NAME, ray_actor_options=ray_actor_options, max_ongoing_requests=max_ongoing_requests
    )
    if autoscaling_config is not None:
        config["autoscaling_config"] = dict(autoscaling_config)
    if num_replicas is not None or autoscaling_config is None:
        config["num_replicas"] = 1 if num_replicas is None else num_replicas
    deployment = serve.deployment(**config)(RerankDeployment)
    return deployment.bind(model, options, settings or ServerSettings(), max_batch_size, batch_wait_timeout_s)


def serve_on_ray(
    model: str,
    options: dict[str, Any],
    settings: ServerSettings,
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    num_replicas: int | str = 1,
    num_gpus: float = 0,
    num_cpus: float = 1,
    max_batch_size: int = 16,
    batch_wait_timeout_s: float = 0.005,
) -> int:
    """``bge-rerank serve --ray``: run ``build_app`` on the Ray cluster at ``address`` until SIGTERM/SIGINT.

    ``address=None`` joins ``$RAY_ADDRESS`` when set, else starts a local Ray. Serve's HTTP proxy
    listens on ``host:port`` (port 0: a free one, logged) on every node. On exit the application
    is deleted; a Ray started here stops with it.
    """
    import ray

    app = build_app(
        model,
        num_replicas=num_replicas,
        ray_actor_options={"num_gpus": num_gpus, "num_cpus": num_cpus},
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        settings=settings,
        **options,
    )
    ray.init(address=address, include_dashboard=False)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # after ray.init, whose handlers these replace
        signal.signal(signum, lambda *_: stop.set())
    try:
        port = port or free_port(host)
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        logger.info("bge-rerank serve --ray: %s, %s replica(s) on http://%s:%d", model, num_replicas, host, port)
        stop.wait()
        logger.info("Stopping: deleting the application %r.", APP_NAME)
        serve.delete(APP_NAME)
    finally:
        ray.shutdown()
    return 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (Serve's proxy takes a port number, not 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
