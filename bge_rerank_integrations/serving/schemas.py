"""Request and response bodies of the rerank endpoints (TEI's, and Cohere/Jina/vLLM's), as pydantic models.

Both request schemas take the same BGE options (``BGEOptions``, derived from ``options.OPTIONS``); unknown fields are ignored, as
the engines whose clients we serve send fields of their own (``model``, ``rank_fields``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    create_model,
    model_validator,
)

from ..inputs import MAX_INT
from ..options import BY_NAME, REQUEST_OPTIONS

#: Most layer numbers one request may list in ``cutoff_layers`` / ``compress_layers`` (no model has more layers).
MAX_LAYERS_LISTED = 128


#: Integer fields: JSON Schema's integers include ``6.0``, so an integral float counts as its int;
#: ``true``, ``"6"`` and ``6.5`` are 422s (types are strict: nothing else is coerced).
INTEGER_FIELDS = (
    *(name for name in REQUEST_OPTIONS if BY_NAME[name].kind in ("int", "count", "layers")),
    "top_n",
    "max_chunks_per_doc",
    "max_tokens_per_doc",
)

#: The bounds the core checks (``inputs.check_positive_int``), stated in the OpenAPI document; the core's
#: check gives the message, so in-process and server errors read the same.
_POSITIVE: dict[str, Any] = {"minimum": 1, "maximum": MAX_INT}
_NON_NEGATIVE: dict[str, Any] = {"minimum": 0, "maximum": MAX_INT}

Layers = Union[StrictInt, Annotated[list[StrictInt], Field(min_length=1, max_length=MAX_LAYERS_LISTED)], None]

#: Request field types of the options' kinds (strict: nothing is coerced), and their OpenAPI bounds.
_FIELD_TYPES: dict[str, Any] = {
    "int": Optional[StrictInt],
    "count": Optional[StrictInt],
    "text": Optional[StrictStr],
    "format": Optional[StrictStr],
    "layers": Layers,
}
_FIELD_BOUNDS: dict[str, Any] = {"int": _POSITIVE, "count": _NON_NEGATIVE}


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(item) if isinstance(item, float) else item for item in value]
    return value


class _RawScores(BaseModel):
    model_config = ConfigDict(extra="ignore")

    raw_scores: StrictBool | None = Field(
        None, description="true: raw logits, as BGEReranker.compute_score; false: sigmoid-normalized"
    )

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(isinstance(data.get(name), (float, list)) for name in INTEGER_FIELDS):
            data = {**data, **{name: _integral(data[name]) for name in INTEGER_FIELDS if name in data}}
        return data

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


if TYPE_CHECKING:  # pragma: no cover - type checkers see the base; the fields are derived below
    BGEOptions = _RawScores
else:
    BGEOptions = create_model(
        "BGEOptions",
        __base__=_RawScores,
        __doc__="""Per-request scoring options (``options.REQUEST_OPTIONS``); ``None`` (or absent) keeps the server's default.

        They are checked exactly as ``BGEReranker`` checks them: an option the model's family
        lacks, or a value it cannot take, is a 422 that says so.
        """,
        **{
            name: (
                _FIELD_TYPES[BY_NAME[name].kind],
                Field(None, json_schema_extra=_FIELD_BOUNDS.get(BY_NAME[name].kind), description=BY_NAME[name].help),
            )
            for name in REQUEST_OPTIONS
        },
    )


class TEIRerankRequest(BGEOptions):
    """``POST /rerank``, text-embeddings-inference's schema."""

    query: StrictStr
    texts: list[StrictStr]
    return_text: StrictBool = False
    truncate: StrictBool | None = Field(
        None, description="accepted for TEI clients; pairs are always truncated as the reference does"
    )
    truncation_direction: Literal["right", "Right"] | None = Field(
        None, description="only right truncation (the reference's) exists"
    )


class TEIRank(BaseModel):
    """One text of a TEI response."""

    index: int
    score: float
    text: str | None = None
    span: list[int] | None = Field(
        None, description="[start, end] characters of the best window (long texts scored in windows)"
    )


class DocumentObject(BaseModel):
    """A document given as an object: ``{"text": ...}`` (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    text: StrictStr


class RerankRequest(BGEOptions):
    """``POST /v1/rerank`` and ``/v2/rerank`` (and ``POST /rerank`` with ``documents``): the Cohere, Jina, vLLM and Infinity schema."""

    model: StrictStr | None = Field(None, description="accepted; responses give the served model's name")
    query: StrictStr
    documents: list[StrictStr | DocumentObject]
    top_n: StrictInt | None = Field(None, ge=0, le=MAX_INT, description="keep the best N; 0 or absent keeps all")
    return_documents: StrictBool | None = Field(
        None,
        description="give each result's text: default true on /v1/rerank and /v2/rerank (Cohere, vLLM), false on /rerank (Infinity)",
    )
    use_activation: StrictBool | None = Field(None, description="vLLM's spelling: false gives raw scores")
    max_chunks_per_doc: StrictInt | None = Field(
        None, json_schema_extra=_POSITIVE, description="Cohere v1's spelling of max_chunks_per_passage"
    )
    max_tokens_per_doc: StrictInt | None = Field(
        None,
        ge=0,
        le=MAX_INT,
        description="Cohere v2's and vLLM's: cut each document to this many tokens (0: no cut, as vLLM)",
    )

    def call_options(self, use_activation: bool | None = None) -> dict[str, Any]:
        """``BGEOptions.call_options`` plus Cohere's and vLLM's names for the long-document options."""
        options = super().call_options(use_activation)
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


class RankedDocument(BaseModel):
    """One result of a Cohere/Jina/vLLM response."""

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
    results: list[RankedDocument]
    usage: Usage


class ErrorResponse(BaseModel):
    """Every error: a readable message (``error``, and the same in ``detail`` for FastAPI/Jina-style clients) and its kind."""

    error: str
    error_type: str = Field(
        description="validation, invalid_request, payload_too_large, too_many_documents, unauthorized, overloaded, ..."
    )
    detail: str


def _rerank_schema(body: Any) -> str:
    """``/rerank`` takes TEI's ``{query, texts}`` or, with ``documents`` and no ``texts``, vLLM's/Infinity's body."""
    if isinstance(body, dict) and "documents" in body and "texts" not in body:
        return "vllm"
    if isinstance(body, BaseModel):
        return "vllm" if isinstance(body, RerankRequest) else "tei"
    return "tei"


#: ``POST /rerank``'s body: TEI's, or the vLLM/Infinity one (chosen by ``documents`` without ``texts``).
AnyRerankRequest = Annotated[
    Annotated[TEIRerankRequest, Tag("tei")] | Annotated[RerankRequest, Tag("vllm")],
    Discriminator(_rerank_schema),
]

#: The location part pydantic puts first for the union's branch (left out of error messages).
SCHEMA_TAGS = frozenset({"tei", "vllm"})
