"""LlamaIndex adapter: ``BGERerank``, a node postprocessor that reorders nodes with a BGE reranker.

Only this module imports ``llama_index.core``; install it with ``pip install bge-rerank-integrations[llama-index]``.

>>> from bge_rerank_integrations.llama_index import BGERerank
>>> rerank = BGERerank(model="BAAI/bge-reranker-v2-m3", top_n=2)          # doctest: +SKIP
>>> engine = index.as_query_engine(node_postprocessors=[rerank], similarity_top_k=10)  # doctest: +SKIP
>>> [round(n.score, 2) for n in engine.query("what is panda?").source_nodes]          # doctest: +SKIP
[5.26, -3.1]
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Annotated, Any, ContextManager, Dict, List, Optional, Sequence, Union

from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.callbacks.base import EventContext
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_serializer,
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

__all__ = ["BGERerank", "RETRIEVAL_SCORE_KEY"]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

#: Metadata key that holds a node's retrieval score when ``keep_retrieval_score`` is set.
RETRIEVAL_SCORE_KEY = "retrieval_score"

_SharedReranker = Annotated[BGEReranker, WithJsonSchema({"type": "object", "title": "BGEReranker"})]
_Layers = Optional[Union[StrictInt, List[StrictInt]]]


class BGERerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with a BGE reranker (encoder, llm, layerwise or lightweight), best first.

    Scores the text LlamaIndex embeds (``MetadataMode.EMBED``), keeps nodes scoring at least
    ``score_threshold``, then the best ``top_n``, and returns new ``NodeWithScore`` objects whose
    ``score`` is the rerank score; the input nodes are left untouched. Scoring settings left at
    ``None`` use the reranker's own defaults and may be changed later; ``model`` and the load
    settings are fixed once built. ``model`` may be an existing ``BGEReranker`` to share: it then
    serializes as its name or path plus its load settings and changed scoring defaults, so
    ``from_dict`` rebuilds an equivalent postprocessor (sharing the same loaded model via the cache).

    >>> rerank = BGERerank(model="tests/fixtures/checkpoints/encoder", top_n=1, device="cpu")
    >>> rerank.postprocess_nodes(nodes, query_str="what is panda?")   # doctest: +SKIP
    [NodeWithScore(node=TextNode(text='The giant panda is a bear.', ...), score=0.41)]
    >>> BGERerank.from_dict(rerank.to_dict()).top_n
    1
    """

    model_config = ConfigDict(protected_namespaces=(), extra="forbid", validate_assignment=True)

    model: Union[str, _SharedReranker] = Field(
        default="BAAI/bge-reranker-v2-m3",
        frozen=True,
        description="Hub id or local checkpoint directory, or an existing BGEReranker to share.",
    )
    top_n: Optional[StrictInt] = Field(default=3, ge=0, description="Keep at most this many nodes (None: all).")
    score_threshold: ScoreThreshold = Field(default=None, description="Drop nodes scoring below this first.")
    keep_retrieval_score: StrictBool = Field(
        default=False, description=f"Keep the retriever's score in the node's metadata under {RETRIEVAL_SCORE_KEY!r}."
    )
    # Load settings (LOAD_SETTINGS): only with a name or path; fixed once built (make a new BGERerank to change them).
    model_class: Optional[str] = Field(default=None, frozen=True, description="encoder, llm, layerwise or lightweight.")
    device: Optional[str] = Field(default=None, frozen=True, description="'cpu', 'cuda', 'cuda:1', 'mps'; None: best.")
    use_fp16: StrictBool = Field(default=False, frozen=True, description="float16 on CUDA/MPS (float32 on CPU).")
    use_bf16: StrictBool = Field(default=False, frozen=True, description="bfloat16 on CUDA/MPS (float32 on CPU).")
    # Scoring settings (SCORE_SETTINGS): forwarded to every call; None keeps the reranker's own default.
    normalize: Optional[StrictBool] = Field(default=None, description="Map scores to (0, 1) with a sigmoid.")
    batch_size: Optional[StrictInt] = Field(default=None, ge=1, description="Pairs per forward pass.")
    max_length: Optional[StrictInt] = Field(default=None, ge=1, description="Token limit of a (query, passage) pair.")
    query_max_length: Optional[StrictInt] = Field(default=None, ge=1, description="Token limit of the query.")
    query_instruction_for_rerank: Optional[str] = Field(
        default=None, description='Text put before each query (decoders default to "A: "; "" means none).'
    )
    query_instruction_format: Optional[str] = Field(default=None, description='Instruction + query format ("{}{}").')
    passage_instruction_for_rerank: Optional[str] = Field(
        default=None, description='Text put before each passage (decoders default to "B: "; "" means none).'
    )
    passage_instruction_format: Optional[str] = Field(default=None, description='Instruction + passage format ("{}{}").')
    prompt: Optional[str] = Field(default=None, description="Decoder families: the relevance prompt.")
    cutoff_layers: _Layers = Field(default=None, description="Layerwise/lightweight: the one layer to score with.")
    compress_ratio: Optional[StrictInt] = Field(default=None, ge=1, description="Lightweight: 1, 2, 4 or 8.")
    compress_layers: _Layers = Field(default=None, description="Lightweight: layers where tokens are compressed.")

    _reranker: Optional[BGEReranker] = PrivateAttr(default=None)

    @field_validator("model", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("cutoff_layers")
    @classmethod
    def _one_layer(cls, value: _Layers) -> _Layers:
        check_single_score(value)
        return value

    def model_post_init(self, context: Any) -> None:
        """Build the ``BGEReranker`` now (bad load settings fail here); the model itself loads on first use."""
        super().model_post_init(context)
        self._reranker = build_reranker(self.model, self._settings())

    @classmethod
    def class_name(cls) -> str:
        """Stable name used by LlamaIndex serialization: ``"BGERerank"``."""
        return "BGERerank"

    @property
    def reranker(self) -> BGEReranker:
        """The ``BGEReranker`` that scores (pass it as ``model`` to another postprocessor to share it)."""
        return self._reranker

    @field_serializer("model")
    def _serialize_model(self, model: Union[str, BGEReranker]) -> str:
        return model.model_name_or_path if isinstance(model, BGEReranker) else model

    @model_serializer(mode="wrap")
    def custom_model_dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Dict[str, Any]:
        """LlamaIndex's dump, plus a shared ``BGEReranker``'s own settings so the config is self-contained."""
        data = super().custom_model_dump(handler, info)
        if isinstance(self.model, BGEReranker):
            data.update(shared_reranker_settings(self.model, data))
        return data

    def _postprocess_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None
    ) -> List[NodeWithScore]:
        query = _query_str(query_bundle)
        if not _check_nodes(nodes):
            return []
        with self._reranking_event(nodes, query_bundle) as event:
            reranked = self._to_nodes(nodes, self._rerank(query, nodes))
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    async def _apostprocess_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None
    ) -> List[NodeWithScore]:
        query = _query_str(query_bundle)
        if not _check_nodes(nodes):
            return []
        with self._reranking_event(nodes, query_bundle) as event:
            results = await asyncio.to_thread(self._rerank, query, nodes)
            reranked = self._to_nodes(nodes, results)
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    def _settings(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in (*LOAD_SETTINGS, *SCORE_SETTINGS)}

    def _rerank(self, query: str, nodes: List[NodeWithScore]) -> List[RerankResult]:
        texts = [item.node.get_content(metadata_mode=MetadataMode.EMBED) for item in nodes]
        logger.debug("Reranking %d nodes with %s.", len(texts), self.reranker.model_name_or_path)
        return self.reranker.rerank(
            query, texts, top_n=self.top_n, score_threshold=self.score_threshold, **score_options(self._settings())
        )

    def _reranking_event(self, nodes: List[NodeWithScore], query_bundle: QueryBundle) -> ContextManager[EventContext]:
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

    def _to_nodes(self, nodes: List[NodeWithScore], results: List[RerankResult]) -> List[NodeWithScore]:
        """New ``NodeWithScore`` objects for ``results``; with ``keep_retrieval_score`` the node is a copy."""
        reranked = []
        for result in results:
            source = nodes[result.index]
            node = source.node
            if self.keep_retrieval_score:
                node = node.model_copy()
                node.metadata = {**source.node.metadata, RETRIEVAL_SCORE_KEY: source.score}
                node.excluded_embed_metadata_keys = _with_key(node.excluded_embed_metadata_keys)
                node.excluded_llm_metadata_keys = _with_key(node.excluded_llm_metadata_keys)
            reranked.append(NodeWithScore(node=node, score=result.score))
        return reranked


def _query_str(query_bundle: Optional[QueryBundle]) -> str:
    if query_bundle is None:
        raise ValueError("BGERerank needs a query: pass query_str=... or query_bundle=... to postprocess_nodes.")
    return check_text(query_bundle.query_str, "query")


def _check_nodes(nodes: Any) -> List[NodeWithScore]:
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


def _with_key(keys: List[str]) -> List[str]:
    return list(keys) if RETRIEVAL_SCORE_KEY in keys else [*keys, RETRIEVAL_SCORE_KEY]
