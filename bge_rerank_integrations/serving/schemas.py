"""Request and response bodies of the rerank endpoints (TEI's, and Cohere/Jina/vLLM's), as pydantic models.

Both request schemas take the same BGE options (``BGEOptions``, derived from ``options.OPTIONS``); unknown fields are ignored, as
the engines whose clients we serve send fields of their own (``model``, ``rank_fields``, ...).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..options import BY_NAME, REQUEST_OPTIONS

#: Request field types of the options' kinds (JSON numbers and strings, as pydantic reads them by default).
_FIELD_TYPES: dict[str, Any] = {"int": int, "text": str, "format": str, "layers": Union[int, list[int]], "bool": bool}


class _RawScores(BaseModel):
    model_config = ConfigDict(extra="ignore")

    raw_scores: bool | None = Field(None, description="true: raw logits, as BGEReranker.compute_score; false: sigmoid-normalized")

    def call_options(self, use_activation: bool | None = None) -> dict[str, Any]:
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


BGEOptions = create_model(
    "BGEOptions",
    __base__=_RawScores,
    __doc__="""Per-request scoring options (``options.REQUEST_OPTIONS``); ``None`` (or absent) keeps the server's default.

    They are checked exactly as ``BGEReranker`` checks them: an option the model's family
    lacks, or a value it cannot take, is a 422 that says so.
    """,
    **{
        name: (Optional[_FIELD_TYPES[BY_NAME[name].kind]], Field(None, description=BY_NAME[name].help))
        for name in REQUEST_OPTIONS
    },
)


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

    def texts(self) -> list[str]:
        return [document if isinstance(document, str) else document.text for document in self.documents]


class Document(BaseModel):
    text: str


class RankedDocument(BaseModel):
    """One result of a Cohere/Jina/vLLM response."""

    index: int
    relevance_score: float
    document: Document | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    """The Cohere/Jina/vLLM response: results best first."""

    id: str
    model: str
    results: list[RankedDocument]
    usage: Usage


class ErrorResponse(BaseModel):
    """Every error: a readable message and its kind (``validation``, ``payload_too_large``, ``overloaded``, ...)."""

    error: str
    error_type: str
