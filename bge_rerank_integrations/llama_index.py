"""LlamaIndex adapter: ``BGERerank``, a node postprocessor that reorders nodes with a BGE reranker.

Only this module imports ``llama_index.core``; install it with ``pip install bge-rerank-integrations[llama-index]``.

>>> from bge_rerank_integrations.llama_index import BGERerank
>>> rerank = BGERerank(model="BAAI/bge-reranker-v2-m3", top_n=2)          # doctest: +SKIP
>>> engine = index.as_query_engine(node_postprocessors=[rerank], similarity_top_k=10)  # doctest: +SKIP
>>> [round(n.score, 2) for n in engine.query("what is panda?").source_nodes]          # doctest: +SKIP
[5.26, -3.1]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from .extras import needs_extra

with needs_extra("llama-index", __name__):
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.callbacks.base import EventContext
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import ConfigDict, Field, StrictBool

from .adapter_support import RerankSettings
from .inputs import check_text
from .ranking import RerankResult

__all__ = ["RETRIEVAL_SCORE_KEY", "SPAN_KEY", "BGERerank"]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

#: Metadata key that holds a node's retrieval score when ``keep_retrieval_score`` is set.
RETRIEVAL_SCORE_KEY = "retrieval_score"
#: Metadata key that holds ``[start, end]``, the characters of the best window, for a node scored in windows.
SPAN_KEY = "relevance_span"


class BGERerank(RerankSettings, BaseNodePostprocessor):
    """Rerank retrieved nodes with a BGE reranker (encoder, llm, layerwise or lightweight), best first.

    Scores the text LlamaIndex embeds (``MetadataMode.EMBED``), keeps nodes scoring at least
    ``score_threshold``, then the best ``top_n``, and returns new ``NodeWithScore`` objects whose
    ``score`` is the rerank score and whose ``node`` is a deep copy of yours: the input nodes are left
    untouched, also by later edits of the returned ones (the cost: one copy per kept node). The settings are
    ``RerankSettings``' fields, shared with the LangChain adapter, plus ``keep_retrieval_score``.
    Scoring settings left at ``None`` use the reranker's own defaults and may be changed later;
    ``model`` and the load settings are fixed once built. ``model`` may be a server URL (scored
    through a ``RemoteReranker``; async postprocessing and ``aquery`` await its requests) or an
    existing ``BGEReranker`` to share: it then serializes as its name or path plus its own settings, so
    ``from_dict`` rebuilds an equivalent postprocessor (sharing the same loaded model via the cache).

    >>> from llama_index.core.schema import NodeWithScore, TextNode
    >>> rerank = BGERerank(model="tests/fixtures/checkpoints/encoder", top_n=1, device="cpu")
    >>> nodes = [NodeWithScore(node=TextNode(text=text)) for text in ("hi", "The giant panda is a bear.")]
    >>> [(item.node.text, item.score) for item in rerank.postprocess_nodes(nodes, query_str="what is panda?")]
    [('The giant panda is a bear.', 2.26...)]
    >>> BGERerank.from_dict(rerank.to_dict()).top_n
    1
    """

    model_config = ConfigDict(protected_namespaces=(), extra="forbid", validate_assignment=True)

    keep_retrieval_score: StrictBool = Field(
        default=False, description=f"Keep the retriever's score in the node's metadata under {RETRIEVAL_SCORE_KEY!r}."
    )

    @classmethod
    def class_name(cls) -> str:
        """Stable name used by LlamaIndex serialization: ``"BGERerank"``."""
        return "BGERerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _query_str(query_bundle)
        if not _check_nodes(nodes):
            return []
        assert query_bundle is not None  # _query_str raised otherwise
        with self._reranking_event(nodes, query_bundle) as event:
            reranked = self._to_nodes(nodes, self._rerank(query, nodes))
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = _query_str(query_bundle)
        if not _check_nodes(nodes):
            return []
        assert query_bundle is not None  # _query_str raised otherwise
        with self._reranking_event(nodes, query_bundle) as event:
            results = await self.arank_texts(query, _texts(nodes))
            reranked = self._to_nodes(nodes, results)
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    def _rerank(self, query: str, nodes: list[NodeWithScore]) -> list[RerankResult]:
        logger.debug("Reranking %d nodes with %s.", len(nodes), self.reranker.model_name_or_path)
        return self.rank_texts(query, _texts(nodes))

    def _reranking_event(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle
    ) -> AbstractContextManager[EventContext]:
        """Emit ``ReRankStartEvent`` and open the ``CBEventType.RERANKING`` callback event."""
        model_name = self.reranker.model_name_or_path
        top_n = len(nodes) if self.top_n is None else self.top_n
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=model_name))
        return self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: model_name,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        )

    def _to_nodes(self, nodes: list[NodeWithScore], results: list[RerankResult]) -> list[NodeWithScore]:
        """New ``NodeWithScore`` objects for ``results``, each holding a deep copy of its node.

        The copy (``model_copy(deep=True)``: metadata, relationships, key lists, embedding) keeps a
        later step's edits off the caller's nodes; only the kept nodes are copied. A node scored in
        windows (``max_chunks_per_passage``) gets ``[start, end]`` of its text under ``relevance_span``.
        """
        reranked = []
        for result in results:
            source = nodes[result.index]
            node = source.node.model_copy(deep=True)
            if self.keep_retrieval_score:
                node.metadata[RETRIEVAL_SCORE_KEY] = source.score
                node.excluded_embed_metadata_keys = _with_key(node.excluded_embed_metadata_keys, RETRIEVAL_SCORE_KEY)
                node.excluded_llm_metadata_keys = _with_key(node.excluded_llm_metadata_keys, RETRIEVAL_SCORE_KEY)
            if result.span is not None:
                node.metadata[SPAN_KEY] = _span_in_text(source.node, result.span)
                node.excluded_embed_metadata_keys = _with_key(node.excluded_embed_metadata_keys, SPAN_KEY)
                node.excluded_llm_metadata_keys = _with_key(node.excluded_llm_metadata_keys, SPAN_KEY)
            reranked.append(NodeWithScore(node=node, score=result.score))
        return reranked


def _texts(nodes: list[NodeWithScore]) -> list[str]:
    """What is scored: the text LlamaIndex embeds."""
    return [item.node.get_content(metadata_mode=MetadataMode.EMBED) for item in nodes]


def _query_str(query_bundle: QueryBundle | None) -> str:
    if query_bundle is None:
        raise ValueError("BGERerank needs a query: pass query_str=... or query_bundle=... to postprocess_nodes.")
    return check_text(query_bundle.query_str, "query")


def _check_nodes(nodes: Any) -> Sequence[NodeWithScore]:
    """``nodes`` if it is a list of ``NodeWithScore``, else a clear error (before any event is emitted)."""
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence):
        raise TypeError(f"nodes must be a list of NodeWithScore, got {type(nodes).__name__}.")
    for index, item in enumerate(nodes):
        if not isinstance(item, NodeWithScore):
            raise TypeError(
                f"nodes[{index}] is a {type(item).__name__}, not a NodeWithScore: wrap each node, "
                "e.g. NodeWithScore(node=node), or pass the retriever's results as they are."
            )
    return nodes


def _span_in_text(node: Any, span: tuple[int, int]) -> list[int]:
    """``span`` (in the scored text: metadata header + text) moved into the node's own text (``get_content()``).

    When the text cannot be found in the scored text (a custom template), the span stays in the scored one.
    """
    scored, text = node.get_content(metadata_mode=MetadataMode.EMBED), node.get_content(metadata_mode=MetadataMode.NONE)
    offset = len(scored) - len(text) if scored.endswith(text) else scored.find(text)
    if offset < 0:
        return list(span)
    return [min(max(position - offset, 0), len(text)) for position in span]


def _with_key(keys: list[str], key: str) -> list[str]:
    return list(keys) if key in keys else [*keys, key]
