"""Request and response bodies of the rerank endpoints (TEI's, and Cohere/Jina/vLLM's), as pydantic models.

Both request schemas take the same BGE options (``BGEOptions``); unknown fields are ignored, as
the engines whose clients we serve send fields of their own (``model``, ``rank_fields``, ...).
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

#: BGE options a request may set, by core option name (``raw_scores`` / ``use_activation`` become ``normalize``).
REQUEST_OPTIONS = (
    "max_length",
    "query_max_length",
    "prompt",
    "cutoff_layers",
    "compress_ratio",
    "compress_layers",
    "query_instruction_for_rerank",
    "query_instruction_format",
    "passage_instruction_for_rerank",
    "passage_instruction_format",
    "max_chunks_per_passage",
    "chunk_overlap",
    "max_tokens_per_passage",
)


class BGEOptions(BaseModel):
    """Per-request scoring options; ``None`` (or absent) keeps the server's default.

    They are checked exactly as ``BGEReranker`` checks them: an option the model's family
    lacks, or a value it cannot take, is a 422 that says so.
    """

    model_config = ConfigDict(extra="ignore")

    raw_scores: bool | None = Field(None, description="true: raw logits, as BGEReranker.compute_score; false: sigmoid-normalized")
    max_length: int | None = Field(None, description="longest pair in tokens (the model's default 512)")
    query_max_length: int | None = Field(None, description="longest query in tokens (default max_length * 3 // 4)")
    prompt: str | None = Field(None, description="decoder families (llm, layerwise, lightweight): the instruction prompt")
    cutoff_layers: Union[int, list[int], None] = Field(None, description="layerwise, lightweight: the one layer that scores")
    compress_ratio: int | None = Field(None, description="lightweight: passage tokens pooled per group (1, 2, 4, 8)")
    compress_layers: Union[int, list[int], None] = Field(None, description="lightweight: layers that compress passage tokens")
    query_instruction_for_rerank: str | None = None
    query_instruction_format: str | None = None
    passage_instruction_for_rerank: str | None = None
    passage_instruction_format: str | None = None
    max_chunks_per_passage: int | None = Field(
        None, description="score a long document as up to N overlapping windows and keep the best (1: truncate)"
    )
    chunk_overlap: int | None = Field(None, description="tokens shared by consecutive windows (default: an eighth of a window)")
    max_tokens_per_passage: int | None = Field(None, description="cut each document to this many of its tokens first")

    def score_options(self, use_activation: bool | None = None) -> dict[str, Any]:
        """The options that were set, as ``BGEReranker`` keyword arguments (``normalize`` from the raw flags)."""
        options = {name: getattr(self, name) for name in REQUEST_OPTIONS if getattr(self, name) is not None}
        if self.raw_scores is not None and use_activation is not None and self.raw_scores == use_activation:
            raise ValueError(
                f"raw_scores={str(self.raw_scores).lower()} contradicts use_activation={str(use_activation).lower()}: "
                "give one of them."
            )
        if self.raw_scores is not None:
            options["normalize"] = not self.raw_scores
        elif use_activation is not None:
            options["normalize"] = use_activation
        return options


class TEIRerankRequest(BGEOptions):
    """``POST /rerank``, text-embeddings-inference's schema."""

    query: str
    texts: list[str]
    return_text: bool = False
    truncate: bool | None = Field(None, description="accepted for TEI clients; pairs are always truncated as the reference does")
    truncation_direction: Literal["right", "Right"] | None = Field(
        None, description="only right truncation (the reference's) exists"
    )


class TEIRank(BaseModel):
    """One text of a TEI response."""

    index: int
    score: float
    text: str | None = None
    span: list[int] | None = Field(None, description="[start, end] characters of the best window (long texts scored in windows)")


class DocumentObject(BaseModel):
    """A document given as an object: ``{"text": ...}`` (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    text: str


class RerankRequest(BGEOptions):
    """``POST /v1/rerank`` and ``/v2/rerank``: the Cohere, Jina and vLLM schema."""

    model: str | None = Field(None, description="accepted and echoed as the served model's name")
    query: str
    documents: list[Union[str, DocumentObject]]
    top_n: int | None = Field(None, ge=0, description="keep the best N; 0 or absent keeps all")
    return_documents: bool = True
    use_activation: bool | None = Field(None, description="vLLM's spelling: false gives raw scores")
    max_chunks_per_doc: int | None = Field(None, description="Cohere v1's spelling of max_chunks_per_passage")
    max_tokens_per_doc: int | None = Field(
        None, ge=0, description="Cohere v2's and vLLM's: cut each document to this many tokens (0: no cut, as vLLM)"
    )

    def score_options(self, use_activation: bool | None = None) -> dict[str, Any]:
        """``BGEOptions.score_options`` plus Cohere's and vLLM's names for the long-document options."""
        options = super().score_options(use_activation)
        tokens = self.max_tokens_per_doc or None  # vLLM: 0 = off
        for theirs, value, ours in (
            ("max_chunks_per_doc", self.max_chunks_per_doc, "max_chunks_per_passage"),
            ("max_tokens_per_doc", tokens, "max_tokens_per_passage"),
        ):
            if value is None:
                continue
            if options.get(ours, value) != value:
                raise ValueError(f"{theirs}={value} contradicts {ours}={options[ours]}: give one of them.")
            options[ours] = value
        return options

    def texts(self) -> list[str]:
        return [document if isinstance(document, str) else document.text for document in self.documents]


class Document(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: Document | None = None
    relevance_span: list[int] | None = Field(
        None, description="[start, end] characters of the best window (long documents scored in windows)"
    )


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    """The Cohere/Jina/vLLM response: results best first."""

    id: str
    model: str
    results: list[RerankResult]
    usage: Usage


class ErrorResponse(BaseModel):
    """Every error: a readable message and its kind (``validation``, ``payload_too_large``, ``overloaded``, ...)."""

    error: str
    error_type: str
