"""LangChain adapter: ``BGERerank``, a document compressor that reranks with a BGE reranker.

Needs ``langchain-core`` only (``pip install "bge-rerank-integrations[langchain]"``); the rest
of the package imports without it. All scoring happens in ``BGEReranker``; this module turns
``Document`` objects into texts and the ranked results back into new documents.

>>> from bge_rerank_integrations.langchain import BGERerank
>>> from langchain_core.documents import Document
>>> compressor = BGERerank(model="BAAI/bge-reranker-v2-m3", top_n=1)
>>> docs = [Document("hi"), Document("The giant panda is a bear.", metadata={"src": "wiki"})]
>>> compressor.compress_documents(docs, "what is panda?")        # doctest: +SKIP
[Document(metadata={'src': 'wiki', 'relevance_score': 5.26171875}, page_content='The giant panda is a bear.')]
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Optional, Sequence, Union

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables.config import run_in_executor
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from .adapter_support import (
    LOAD_SETTINGS,
    SCORE_SETTINGS,
    ScoreThreshold,
    build_reranker,
    check_single_score,
    score_options,
    shared_reranker_settings,
)
from .inputs import check_text
from .reranker import BGEReranker, RerankResult

__all__ = ["BGERerank"]

logger = logging.getLogger(__name__)

#: Metadata key that holds each returned document's score.
SCORE_KEY = "relevance_score"

Layers = Union[StrictInt, list[StrictInt]]


class BGERerank(BaseDocumentCompressor):
    """Rerank LangChain documents with a BGE reranker (scores exactly as FlagEmbedding computes them).

    Every returned document is a new ``Document`` (the caller's are never changed) with the
    same ``id`` and a copy of its metadata, plus the score under ``metadata["relevance_score"]``,
    best first. Documents scoring below ``score_threshold`` are dropped first, then at most
    ``top_n`` are kept (``None`` keeps all). ``page_content`` is what is scored.

    ``model`` is a Hub id or local checkpoint (built into a ``BGEReranker`` at construction,
    loaded on the first call and shared through the package's model cache), or an existing
    ``BGEReranker`` to share; the load settings (``model_class``, ``device``, ``use_fp16``,
    ``use_bf16``) only apply to a name or path. Scoring settings left ``None`` use the
    reranker's own defaults; set ones go to ``BGEReranker.rerank`` unchanged.

    >>> compressor = BGERerank(model="BAAI/bge-reranker-v2-m3", top_n=2, normalize=True)
    >>> [d.metadata["relevance_score"] for d in compressor.compress_documents(docs, "what is panda?")]  # doctest: +SKIP
    [0.9948, 0.0003]
    """

    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )

    model: Union[str, BGEReranker] = Field(default="BAAI/bge-reranker-v2-m3", frozen=True)
    """Hub id or local checkpoint directory, or an existing ``BGEReranker`` to share."""
    top_n: Optional[StrictInt] = Field(default=3, ge=0)
    """Keep at most this many documents (applied after ``score_threshold``); ``None`` keeps all."""
    score_threshold: ScoreThreshold = None
    """Drop documents scoring below this (on the normalized scale when ``normalize`` is set)."""

    # Load settings: only with a name or path, and fixed once built (make a new BGERerank to change them).
    model_class: Optional[str] = Field(default=None, frozen=True)
    """Model family ("encoder", "llm", "layerwise", "lightweight" or a FlagEmbedding alias); default: detected."""
    device: Optional[str] = Field(default=None, frozen=True)
    """"cuda", "cuda:1", "mps", "cpu"...; default: the best available."""
    use_fp16: StrictBool = Field(default=False, frozen=True)
    """Load in float16."""
    use_bf16: StrictBool = Field(default=False, frozen=True)
    """Load in bfloat16."""

    # Scoring settings (None = the reranker's own default), forwarded to every call unchanged.
    normalize: Optional[StrictBool] = None
    """Map scores to (0, 1) with a sigmoid."""
    batch_size: Optional[StrictInt] = Field(default=None, ge=1)
    """Pairs per forward pass."""
    max_length: Optional[StrictInt] = Field(default=None, ge=1)
    """Maximum tokens per (query, passage) pair."""
    query_max_length: Optional[StrictInt] = Field(default=None, ge=1)
    """Maximum tokens of the query."""
    query_instruction_for_rerank: Optional[str] = None
    """Text put before each query (decoders default to "A: "; "" means none)."""
    query_instruction_format: Optional[str] = None
    """How instruction and query are joined (default "{}{}")."""
    passage_instruction_for_rerank: Optional[str] = None
    """Text put before each passage (decoders default to "B: "; "" means none)."""
    passage_instruction_format: Optional[str] = None
    """How instruction and passage are joined (default "{}{}")."""
    prompt: Optional[str] = None
    """Decoder families: the prompt that asks whether the passage answers the query."""
    cutoff_layers: Optional[Layers] = None
    """Layerwise / lightweight: the (single) layer whose score is used."""
    compress_ratio: Optional[StrictInt] = Field(default=None, ge=1)
    """Lightweight: token compression ratio (1, 2, 4 or 8)."""
    compress_layers: Optional[Layers] = None
    """Lightweight: layers where tokens are compressed."""

    _reranker: Optional[BGEReranker] = PrivateAttr(default=None)

    @field_validator("model", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("cutoff_layers")
    @classmethod
    def _one_layer(cls, value: Optional[Layers]) -> Optional[Layers]:
        check_single_score(value)
        return value

    @model_validator(mode="after")
    def _build(self) -> "BGERerank":
        """Build the reranker once, at construction (the model itself loads on first use)."""
        if self._reranker is None:
            self._reranker = build_reranker(self.model, self._settings())
        return self

    @field_serializer("model")
    def _serialize_model(self, model: Union[str, BGEReranker]) -> str:
        return model.model_name_or_path if isinstance(model, BGEReranker) else model

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The settings as plain data; a shared ``BGEReranker`` becomes its path plus its own settings."""
        data = handler(self)
        if isinstance(self.model, BGEReranker):
            data.update(shared_reranker_settings(self.model, data))
        return data

    @property
    def reranker(self) -> BGEReranker:
        """The ``BGEReranker`` that scores (pass it as ``model`` to another compressor to share it)."""
        return self._reranker

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Optional[Callbacks] = None,
    ) -> Sequence[Document]:
        """Score ``documents`` against ``query`` and return new documents, best first.

        >>> BGERerank(model="BAAI/bge-reranker-v2-m3", top_n=1).compress_documents(docs, "what is panda?")  # doctest: +SKIP
        [Document(metadata={'src': 'wiki', 'relevance_score': 5.26171875}, page_content='The giant panda is a bear.')]
        """
        documents = self._check(documents, query)
        if not documents:
            return []
        return self._rerank(documents, query)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Optional[Callbacks] = None,
    ) -> Sequence[Document]:
        """``compress_documents`` run in a worker thread, so the event loop is never blocked.

        >>> await compressor.acompress_documents(docs, "what is panda?")  # doctest: +SKIP
        [Document(metadata={'src': 'wiki', 'relevance_score': 5.26171875}, page_content='The giant panda is a bear.')]
        """
        documents = self._check(documents, query)
        if not documents:
            return []
        return await run_in_executor(None, self._rerank, documents, query)

    def _settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (*LOAD_SETTINGS, *SCORE_SETTINGS)}

    @staticmethod
    def _check(documents: Sequence[Document], query: str) -> list[Document]:
        """Reject a query or page_content that is not a string, and non-documents, before anything is loaded."""
        check_text(query, "query")
        if isinstance(documents, (str, bytes, Document)) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of Document, got {type(documents).__name__}.")
        for index, document in enumerate(documents):
            if not isinstance(document, Document):
                raise TypeError(f"documents[{index}] must be a langchain Document, got {type(document).__name__}.")
            check_text(document.page_content, f"page_content of documents[{index}]")
        return list(documents)

    def _rerank(self, documents: list[Document], query: str) -> list[Document]:
        results = self._reranker.rerank(
            query,
            [document.page_content for document in documents],
            top_n=self.top_n,
            score_threshold=self.score_threshold,
            **score_options(self._settings()),
        )
        logger.debug("Reranked %d documents, kept %d.", len(documents), len(results))
        return [_scored_copy(documents[result.index], result) for result in results]


def _scored_copy(document: Document, result: RerankResult) -> Document:
    """A new document like ``document`` (same id, type and a deep copy of its metadata) plus its score."""
    metadata = copy.deepcopy(document.metadata)
    metadata[SCORE_KEY] = float(result.score)
    return document.model_copy(update={"metadata": metadata})
