"""BGE rerankers scored exactly like FlagEmbedding, with LangChain and LlamaIndex adapters.

>>> from bge_rerank_integrations import BGEReranker
>>> reranker = BGEReranker("BAAI/bge-reranker-v2-m3")          # doctest: +SKIP
>>> reranker.compute_score(["what is panda?", "hi"])             # doctest: +SKIP
-8.1875

The adapters live in ``bge_rerank_integrations.langchain`` and
``bge_rerank_integrations.llama_index`` and import their framework only there.
"""

from .families import KNOWN_MODELS, ScoreOptions
from .loading import CheckpointError, ModelNotFoundError
from .model_cache import clear_model_cache
from .reranker import BGEReranker, RerankResult

__all__ = [
    "BGEReranker",
    "RerankResult",
    "ScoreOptions",
    "ModelNotFoundError",
    "CheckpointError",
    "KNOWN_MODELS",
    "clear_model_cache",
]
__version__ = "0.1.0"
