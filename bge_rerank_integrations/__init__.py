"""BGE rerankers scored exactly like FlagEmbedding, with LangChain and LlamaIndex adapters.

>>> from bge_rerank_integrations import BGEReranker
>>> reranker = BGEReranker("BAAI/bge-reranker-v2-m3")          # doctest: +SKIP
>>> reranker.compute_score(["what is panda?", "hi"])             # doctest: +SKIP
-8.1875

``RemoteReranker`` has the same methods (``Reranker``: ``compute_score``, ``rerank``, their async
twins ``acompute_score`` / ``arerank``, ``options``, ``check_options``) and scores through a
rerank server: ``bge-rerank serve``, TEI, vLLM, Infinity or a Cohere-compatible one; it never
imports torch. Every option is defined once, in ``bge_rerank_integrations.options``.

The adapters live in ``bge_rerank_integrations.langchain`` and
``bge_rerank_integrations.llama_index`` and import their framework only there. The public names
below are imported on first use, so that importing the package (or its command line, for
``--help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "BGEReranker": ".reranker",
    "RemoteReranker": ".remote",
    "RemoteRerankError": ".remote",
    "RemoteRerankTimeout": ".remote",
    "RerankResult": ".ranking",
    "ScoreOptions": ".options",
    "Reranker": ".contract",
    "KNOWN_MODELS": ".families",
    "ModelNotFoundError": ".loading",
    "CheckpointError": ".loading",
    "clear_model_cache": ".model_cache",
}

__all__ = [
    "KNOWN_MODELS",
    "BGEReranker",
    "CheckpointError",
    "ModelNotFoundError",
    "RemoteRerankError",
    "RemoteRerankTimeout",
    "RemoteReranker",
    "RerankResult",
    "Reranker",
    "ScoreOptions",
    "clear_model_cache",
]

if TYPE_CHECKING:  # pragma: no cover
    from .contract import Reranker
    from .families import KNOWN_MODELS
    from .loading import CheckpointError, ModelNotFoundError
    from .model_cache import clear_model_cache
    from .options import ScoreOptions
    from .ranking import RerankResult
    from .remote import RemoteReranker, RemoteRerankError, RemoteRerankTimeout
    from .reranker import BGEReranker


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
