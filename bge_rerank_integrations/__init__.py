"""BGE rerankers scored exactly like FlagEmbedding, with LangChain and LlamaIndex adapters.

>>> from bge_rerank_integrations import BGEReranker
>>> reranker = BGEReranker("BAAI/bge-reranker-v2-m3")          # doctest: +SKIP
>>> reranker.compute_score(["what is panda?", "hi"])             # doctest: +SKIP
-8.1875

``RemoteReranker`` has the same methods (plus ``acompute_score`` / ``arerank``) and scores
through a rerank server: ``bge-rerank serve``, TEI, vLLM, Infinity or a Cohere-compatible one.

The adapters live in ``bge_rerank_integrations.langchain`` and
``bge_rerank_integrations.llama_index`` and import their framework only there.
"""

from .families import KNOWN_MODELS, ScoreOptions
from .loading import ModelNotFoundError
from .model_cache import clear_model_cache
from .ranking import RerankResult
from .remote import RemoteReranker, RemoteRerankError, RemoteRerankTimeout
from .reranker import BGEReranker

__all__ = [
    "BGEReranker",
    "RemoteReranker",
    "RerankResult",
    "ScoreOptions",
    "ModelNotFoundError",
    "RemoteRerankError",
    "RemoteRerankTimeout",
    "KNOWN_MODELS",
    "clear_model_cache",
]
__version__ = "0.1.0"
