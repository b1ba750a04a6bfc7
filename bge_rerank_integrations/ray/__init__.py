"""Ray scale-out: rerank a Ray Dataset on a pool of actors (``rerank_dataset``), or serve replicas
behind one endpoint (``build_app``, the ``bge-rerank serve`` HTTP API on Ray Serve).

Needs the ``ray`` extra (``pip install "bge-rerank-integrations[ray]"``).

>>> import ray.data
>>> from bge_rerank_integrations.ray import rerank_dataset
>>> pairs = ray.data.from_items([{"id": 0, "query": "what is panda?", "text": "hi"}])   # doctest: +SKIP
>>> rerank_dataset(pairs, "BAAI/bge-reranker-v2-m3", num_actors=2).take_all()          # doctest: +SKIP
[{'id': 0, 'query': 'what is panda?', 'text': 'hi', 'score': -8.1875}]
"""

from __future__ import annotations

try:
    import ray  # noqa: F401  (the Ray package, not this one: imports are absolute)
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError('bge_rerank_integrations.ray needs Ray: pip install "bge-rerank-integrations[ray]"') from error

from .data import rerank_dataset

__all__ = ["build_app", "rerank_dataset"]


def __getattr__(name: str):
    if name == "build_app":  # Serve and the HTTP app load only when asked for
        from .serve import build_app

        return build_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
