"""LangChain adapter: ``BGERerank``, a document compressor that reranks with a BGE reranker, and
``BGECrossEncoder``, a ``BaseCrossEncoder`` for LangChain's ``CrossEncoderReranker``.

Needs the ``langchain`` extra (``langchain-core``; ``langchain-classic`` for the retrievers);
the rest of the package imports without it. All scoring happens in ``BGEReranker``; this module
turns ``Document`` objects into texts and the ranked results back into new documents.

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
from collections.abc import Sequence
from typing import cast

from .extras import needs_extra

with needs_extra("langchain", __name__):
    from langchain_core.callbacks import Callbacks
    from langchain_core.cross_encoders import BaseCrossEncoder
    from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict

from .adapter_support import RerankSettings, ScoringSettings
from .inputs import check_text
from .ranking import RerankResult

__all__ = ["BGECrossEncoder", "BGERerank"]

logger = logging.getLogger(__name__)

#: Metadata key that holds each returned document's score.
SCORE_KEY = "relevance_score"
#: Metadata key that holds ``[start, end]``, the characters of the best window, for a document scored in windows.
SPAN_KEY = "relevance_span"


class BGERerank(RerankSettings, BaseDocumentCompressor):
    """Rerank LangChain documents with a BGE reranker (scores exactly as FlagEmbedding computes them).

    Every returned document is a new ``Document`` (the caller's are never changed) with the
    same ``id`` and a copy of its metadata, plus the score under ``metadata["relevance_score"]``,
    best first. With ``max_chunks_per_passage > 1`` a long document is scored as windows, and
    ``metadata["relevance_span"]`` holds ``[start, end]``: ``page_content[start:end]`` scored best. Documents scoring below ``score_threshold`` are dropped first, then at most
    ``top_n`` are kept (``None`` keeps all). ``page_content`` is what is scored.

    The settings (``model``, ``top_n``, ``score_threshold``, the load settings ``model_class``,
    ``device``, ``use_fp16``, ``use_bf16``, ``cache_dir``, ``local_files_only``, ``show_progress``,
    the remote settings ``api``, ``api_key``, ``remote_model``... for a server URL, and every
    scoring option) are ``RerankSettings``' fields, shared with the LlamaIndex adapter.

    >>> compressor = BGERerank(model="BAAI/bge-reranker-v2-m3", top_n=2, normalize=True)
    >>> [d.metadata["relevance_score"] for d in compressor.compress_documents(docs, "what is panda?")]  # doctest: +SKIP
    [0.9948, 0.0003]
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=True)

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
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
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """``compress_documents`` without blocking the event loop.

        A ``RemoteReranker`` (``model`` a server URL) awaits its requests on the loop; an
        in-process model runs in a worker thread.

        >>> await compressor.acompress_documents(docs, "what is panda?")  # doctest: +SKIP
        [Document(metadata={'src': 'wiki', 'relevance_score': 5.26171875}, page_content='The giant panda is a bear.')]
        """
        documents = self._check(documents, query)
        if not documents:
            return []
        results = await self.arank_texts(query, [document.page_content for document in documents])
        return self._scored(documents, results)

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
        return self._scored(documents, self.rank_texts(query, [document.page_content for document in documents]))

    @staticmethod
    def _scored(documents: list[Document], results: list[RerankResult]) -> list[Document]:
        logger.debug("Reranked %d documents, kept %d.", len(documents), len(results))
        return [_scored_copy(documents[result.index], result) for result in results]


class BGECrossEncoder(ScoringSettings, BaseCrossEncoder):
    """A LangChain ``BaseCrossEncoder`` over any BGE reranker: scores (query, text) pairs, as FlagEmbedding does.

    A drop-in for ``HuggingFaceCrossEncoder`` in ``CrossEncoderReranker`` (from
    ``langchain_classic.retrievers.document_compressors``), with every setting of ``BGERerank``
    but ``top_n`` and ``score_threshold`` (the reranker keeps its own ``top_n``).

    >>> from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    >>> encoder = BGECrossEncoder(model="BAAI/bge-reranker-v2-m3", normalize=True)
    >>> encoder.score([("what is panda?", "hi"), ("what is panda?", "The giant panda is a bear.")])  # doctest: +SKIP
    [0.0003, 0.9948]
    >>> compressor = CrossEncoderReranker(model=encoder, top_n=3)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", validate_assignment=True)

    def score(self, text_pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per ``(query, text)`` pair, in input order."""
        if (
            isinstance(text_pairs, (str, bytes))
            or not isinstance(text_pairs, Sequence)
            or any(isinstance(pair, (str, bytes)) for pair in text_pairs)
        ):
            raise TypeError(f"text_pairs must be a list of (query, text) pairs, got {text_pairs!r:.120}.")
        if not text_pairs:
            return []
        # A list of pairs and at most one cutoff layer (checked by the settings): one float per pair.
        return cast("list[float]", self.reranker.compute_score(list(text_pairs), **self.call_options()))


def _scored_copy(document: Document, result: RerankResult) -> Document:
    """A new document like ``document`` (same id, type and a deep copy of its metadata) plus its score and,
    when it was scored in windows (``max_chunks_per_passage``), its best window's ``[start, end]``."""
    metadata = copy.deepcopy(document.metadata)
    metadata[SCORE_KEY] = float(result.score)
    if result.span is not None:
        metadata[SPAN_KEY] = list(result.span)
    return document.model_copy(update={"metadata": metadata})
