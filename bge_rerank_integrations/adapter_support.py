"""What the framework adapters share: their settings as one pydantic definition, and building the reranker.

Each adapter class combines ``RerankSettings`` (or ``RerankerSettings``) with its framework's base
class, turns its documents or nodes into texts, calls ``rank_texts`` / ``arank_texts`` (the
reranker's ``rerank`` with the scoring settings), and turns the results back; the settings, their
checks and their serialization live here. The reranker is a ``BGEReranker`` (in-process) or a
``RemoteReranker`` (``model`` is a server URL or a ``RemoteReranker``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Annotated, Any, List, Mapping, Optional, Sequence, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from .families import ScoreOptions
from .inputs import check_score_threshold
from .ranking import RerankResult
from .remote import RemoteReranker
from .reranker import BGEReranker

logger = logging.getLogger(__name__)

#: Settings given to the ``BGEReranker`` constructor only: which model is loaded, from where, where and how.
LOAD_SETTINGS = ("model_class", "device", "use_fp16", "use_bf16", "cache_dir", "local_files_only", "show_progress")
#: Settings forwarded to every ``rerank`` call unchanged (``None`` = the model's default): every scoring option.
SCORE_SETTINGS = tuple(option.name for option in dataclasses.fields(ScoreOptions))
#: An adapter's ``score_threshold`` field: any real number (numpy scalars, ints, Decimal), never NaN; as the core checks it.
ScoreThreshold = Annotated[Optional[float], BeforeValidator(check_score_threshold)]
#: Settings of a ``RemoteReranker`` built from a server URL (``model="http://..."``); ``remote_model`` is its ``model``.
REMOTE_SETTINGS = (
    "api", "api_key", "remote_model", "timeout", "max_documents_per_request", "retries", "max_concurrent_requests",
    "max_response_bytes",
)

SharedReranker = Annotated[BGEReranker, WithJsonSchema({"type": "object", "title": "BGEReranker"})]
SharedRemoteReranker = Annotated[RemoteReranker, WithJsonSchema({"type": "object", "title": "RemoteReranker"})]
Reranker = Union[BGEReranker, RemoteReranker]
Layers = Optional[Union[StrictInt, List[StrictInt]]]


class RerankerSettings(BaseModel):
    """Every setting of a ``BGEReranker`` or ``RemoteReranker`` as a pydantic field; builds the reranker at construction.

    ``model`` is a Hub id or local checkpoint (built into a ``BGEReranker`` at construction, loaded
    on first use and shared through the package's model cache), an existing ``BGEReranker`` to
    share, a server URL (``http://...`` or ``https://...``: built into a ``RemoteReranker`` with the
    remote settings ``api``, ``api_key``, ``remote_model``, ``timeout``...), or an existing
    ``RemoteReranker``. The load settings only apply to a name or path, the remote settings only
    to a URL; both are fixed once built. Scoring settings left ``None`` use the reranker's own
    defaults; set ones go to every call unchanged. A shared reranker serializes as its name, path
    or URL plus its own settings, so the configuration alone rebuilds an equivalent adapter. The
    API key is never serialized: it comes back from ``api_key=`` or ``BGE_RERANK_API_KEY``.
    """

    # hide_input_in_errors: a validation error never echoes a value (a misspelled apikey="sk-..." is an
    # "extra input" whose value would otherwise be printed); it names the field and the problem.
    model_config = ConfigDict(
        arbitrary_types_allowed=True,
        extra="forbid",
        validate_assignment=True,
        protected_namespaces=(),
        hide_input_in_errors=True,
    )

    model: Union[str, SharedReranker, SharedRemoteReranker] = Field(
        default="BAAI/bge-reranker-v2-m3",
        frozen=True,
        description="Hub id, local checkpoint directory or rerank server URL, or an existing BGEReranker or RemoteReranker.",
    )

    # Load settings (LOAD_SETTINGS): only with a name or path; fixed once built.
    model_class: Optional[str] = Field(
        default=None, frozen=True, description='"encoder", "llm", "layerwise" or "lightweight"; default: detected.'
    )
    device: Optional[str] = Field(
        default=None, frozen=True, description='"cpu", "cuda", "cuda:1", "mps"; None: the best available when built.'
    )
    use_fp16: StrictBool = Field(default=False, frozen=True, description="float16 on CUDA/MPS (float32 on CPU).")
    use_bf16: StrictBool = Field(default=False, frozen=True, description="bfloat16 on CUDA/MPS (float32 on CPU).")
    cache_dir: Optional[str] = Field(default=None, frozen=True, description="Where Hub downloads go.")
    local_files_only: StrictBool = Field(
        default=False, frozen=True, description="Never reach the Hub: use the local cache or a directory only."
    )
    show_progress: StrictBool = Field(default=False, frozen=True, description="A progress bar over the pairs.")

    # Remote settings (REMOTE_SETTINGS): only with a server URL; fixed once built. None: RemoteReranker's default.
    api: Optional[str] = Field(
        default=None,
        frozen=True,
        description='The server\'s API: "bge" (bge-rerank serve, default), "tei", "infinity", "vllm", "cohere".',
    )
    api_key: Optional[SecretStr] = Field(
        default=None,
        frozen=True,
        exclude=True,
        description="Bearer token for the server (default: $BGE_RERANK_API_KEY); never serialized.",
    )
    remote_model: Optional[str] = Field(
        default=None, frozen=True, description="Model name sent to servers that take one (required by Cohere)."
    )
    timeout: Optional[float] = Field(default=None, gt=0, frozen=True, description="Deadline of a whole call in seconds (60).")
    max_documents_per_request: Optional[StrictInt] = Field(
        default=None, ge=1, frozen=True, description="Split larger calls (default: the API's limit, 32 for TEI)."
    )
    retries: Optional[StrictInt] = Field(
        default=None, ge=0, frozen=True, description="Retries on connection errors, 429 and 503 (3)."
    )
    max_concurrent_requests: Optional[StrictInt] = Field(
        default=None, ge=1, frozen=True, description="Requests of one call in flight at once (4)."
    )
    max_response_bytes: Optional[StrictInt] = Field(
        default=None,
        ge=1,
        frozen=True,
        description="Most decompressed bytes of one answer (default: 1 MiB + 1 KiB per document + 8x their UTF-8 size).",
    )

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
    cutoff_layers: Layers = Field(default=None, description="Layerwise/lightweight: the one layer to score with.")
    compress_ratio: Optional[StrictInt] = Field(default=None, ge=1, description="Lightweight: 1, 2, 4 or 8.")
    compress_layers: Layers = Field(default=None, description="Lightweight: layers where tokens are compressed.")
    max_chunks_per_passage: Optional[StrictInt] = Field(
        default=None, ge=1, description="Score long passages as up to this many windows, keep the best (1: truncate)."
    )
    chunk_overlap: Optional[StrictInt] = Field(
        default=None, ge=0, description="Tokens shared by consecutive windows (default: an eighth of a window)."
    )
    max_tokens_per_passage: Optional[StrictInt] = Field(
        default=None, ge=1, description="Cut each passage to this many of its tokens first (Cohere's max_tokens_per_doc)."
    )

    _reranker: Optional[Reranker] = PrivateAttr(default=None)

    @field_validator("model", "cache_dir", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("cutoff_layers")
    @classmethod
    def _one_layer(cls, value: Layers) -> Layers:
        check_single_score(value)
        return value

    @model_validator(mode="after")
    def _build_reranker(self) -> "RerankerSettings":
        """Build the reranker at construction (the model loads on first use); re-check the options on assignment."""
        if self._reranker is None:
            self._reranker = build_reranker(self.model, self.reranker_settings())
        else:
            self._reranker.check_options(**score_options(self.reranker_settings()))
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        """Assignments are checked like construction; a rejected value leaves the previous one in place."""
        field = type(self).model_fields.get(name)
        if field is None:
            return super().__setattr__(name, value)
        if field.frozen:  # pydantic's own frozen-field error would show the value, whatever hide_input_in_errors says
            raise ValidationError.from_exception_data(
                type(self).__name__, [{"type": "frozen_field", "loc": (name,), "input": value}], hide_input=True
            )
        previous = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValueError:  # pydantic keeps a value its model validators rejected: put the old one back
            self.__dict__[name] = previous
            raise

    @field_serializer("model")
    def _serialize_model(self, model: Union[str, Reranker]) -> str:
        if isinstance(model, RemoteReranker):
            return model.url
        return model.model_name_or_path if isinstance(model, BGEReranker) else model

    @model_serializer(mode="wrap")
    def custom_model_dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        """The settings as plain data (the framework's own dump, if it has one); a shared reranker adds its settings."""
        framework_dump = getattr(super(), "custom_model_dump", None)  # LlamaIndex adds its "class_name"
        data = framework_dump(handler, info) if framework_dump is not None else handler(self)
        if isinstance(self.model, BGEReranker):
            data.update(shared_reranker_settings(self.model, data))
        elif isinstance(self.model, RemoteReranker):
            data.update(shared_remote_settings(self.model, data))
        return data

    @property
    def reranker(self) -> Reranker:
        """The ``BGEReranker`` or ``RemoteReranker`` that scores (pass it as ``model`` to another adapter to share it)."""
        return self._reranker

    def reranker_settings(self) -> dict[str, Any]:
        """The load, remote and scoring settings as ``{name: value}``."""
        return {name: getattr(self, name) for name in (*LOAD_SETTINGS, *REMOTE_SETTINGS, *SCORE_SETTINGS)}

    def scoring_options(self) -> dict[str, Any]:
        """The scoring settings that were set, as keyword arguments for ``rerank`` or ``compute_score``."""
        return score_options(self.reranker_settings())

class RerankSettings(RerankerSettings):
    """``RerankerSettings`` plus what a reranking step keeps: ``top_n`` and ``score_threshold``."""

    top_n: Optional[StrictInt] = Field(
        default=3, ge=0, description="Keep at most this many (applied after score_threshold); None keeps all."
    )
    score_threshold: ScoreThreshold = Field(
        default=None, description="Drop those scoring below this first (on the (0, 1) scale with normalize=True)."
    )

    _warned_raw_threshold: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _warn_raw_threshold(self) -> "RerankSettings":
        """Warn once when ``score_threshold`` applies to raw logits, which have no fixed scale."""
        raw = self.score_threshold is not None and not normalizes(self._reranker, self.scoring_options())
        if raw and not self._warned_raw_threshold:
            logger.warning(
                "score_threshold=%s is compared with raw scores (logits, unbounded and model-dependent); "
                "set normalize=True to threshold scores in (0, 1).",
                self.score_threshold,
            )
        self._warned_raw_threshold = raw
        return self

    def rank_texts(self, query: str, texts: list[str]) -> list[RerankResult]:
        """``texts`` ranked for ``query`` with this adapter's settings (``top_n``, ``score_threshold``, scoring)."""
        return self._reranker.rerank(query, texts, **self._rank_options())

    async def arank_texts(self, query: str, texts: list[str]) -> list[RerankResult]:
        """``rank_texts`` without blocking the event loop.

        A ``RemoteReranker`` awaits its requests on the loop (no thread); an in-process model runs
        in a worker thread.
        """
        if isinstance(self._reranker, RemoteReranker):
            return await self._reranker.arerank(query, texts, **self._rank_options())
        return await asyncio.to_thread(self.rank_texts, query, texts)

    def _rank_options(self) -> dict[str, Any]:
        return {"top_n": self.top_n, "score_threshold": self.score_threshold, **self.scoring_options()}


def build_reranker(model: str | Reranker, settings: Mapping[str, Any]) -> Reranker:
    """The adapter's reranker: ``model`` itself when it is a reranker, else a new one.

    A server URL becomes a ``RemoteReranker`` with the remote settings; a name or path becomes a
    ``BGEReranker`` (lazy, cache-shared) with the load settings. Settings that the chosen kind of
    ``model`` would ignore are an error. The scoring settings are checked here, so a setting the
    model's family (or the server's API) lacks fails at construction whenever that is known.
    """
    load = {name: settings.get(name) for name in LOAD_SETTINGS if settings.get(name) not in (None, False)}
    remote = {name: settings.get(name) for name in REMOTE_SETTINGS if settings.get(name) is not None}
    if isinstance(model, (BGEReranker, RemoteReranker)):
        if load or remote:
            raise ValueError(
                f"{sorted({**load, **remote})} choose how a reranker is built, but model is an existing "
                f"{type(model).__name__}: set them when building it, or pass its name, path or URL instead."
            )
        reranker = model
    elif not isinstance(model, str) or not model.strip():
        raise ValueError(
            f"model must be a Hub id, a local checkpoint directory, a server URL or a reranker, got {model!r}."
        )
    elif is_server_url(model):
        if load:
            raise ValueError(
                f"{sorted(load)} choose how a model is loaded in this process, but model is a server URL ({model}): "
                "set them on the server, or drop them."
            )
        remote["model"] = remote.pop("remote_model", None)
        if isinstance(remote.get("api_key"), SecretStr):
            remote["api_key"] = remote["api_key"].get_secret_value()
        reranker = RemoteReranker(model, **remote, **score_options(settings))
    else:
        if remote:
            raise ValueError(
                f"{sorted(remote)} apply to a rerank server, but model={model!r} is a local model: "
                "pass the server's URL (http://...) as model, or drop them."
            )
        reranker = BGEReranker(model, **load)
    reranker.check_options(**score_options(settings))
    return reranker


def is_server_url(model: str) -> bool:
    """Whether ``model`` names a rerank server (``http://`` or ``https://``) rather than a model."""
    return model.strip().lower().startswith(("http://", "https://"))


def normalizes(reranker: Reranker, options: Mapping[str, Any]) -> bool:
    """Whether ``reranker`` maps scores into (0, 1) with these scoring ``options``."""
    checked = reranker.check_options(**options)
    return checked["normalize"] if isinstance(reranker, RemoteReranker) else checked.normalize


def score_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The scoring settings that were set, as keyword arguments for ``rerank``."""
    return {name: settings[name] for name in SCORE_SETTINGS if settings.get(name) is not None}


def check_single_score(cutoff_layers: int | Sequence[int] | None) -> None:
    """Adapters rank by one score per text: several cutoff layers are an error at construction."""
    if cutoff_layers is not None and not isinstance(cutoff_layers, int) and len(cutoff_layers) > 1:
        raise ValueError(
            f"cutoff_layers={list(cutoff_layers)} gives one score per layer, but a reranker needs one score per "
            "document: pass a single layer, e.g. cutoff_layers=[28]."
        )


def shared_reranker_settings(reranker: BGEReranker, data: Mapping[str, Any]) -> dict[str, Any]:
    """The load settings of a shared ``reranker`` (as it was given them) and the scoring defaults it changed.

    What an adapter built on an existing ``BGEReranker`` adds to its serialized configuration, so
    that the configuration alone rebuilds an equivalent adapter (sharing the cached model). An unset
    device stays unset. Scoring fields the adapter sets itself (not ``None`` in ``data``) win.
    """
    settings = dict(reranker.load_settings)
    baseline = ScoreOptions()
    for option in dataclasses.fields(baseline):
        value, default = getattr(reranker.options, option.name), getattr(baseline, option.name)
        derived = option.name == "query_max_length" and value == reranker.options.max_length * 3 // 4
        if value == default or derived:  # a derived query_max_length keeps following max_length
            continue
        if data.get(option.name) is None:
            settings[option.name] = list(value) if isinstance(value, tuple) else value
    return settings


def shared_remote_settings(reranker: RemoteReranker, data: Mapping[str, Any]) -> dict[str, Any]:
    """A shared ``RemoteReranker``'s settings as adapter fields (never its API key); the adapter's own set fields win."""
    settings = reranker.settings()
    settings.pop("url")
    settings["remote_model"] = settings.pop("model")
    defaults = {"normalize": False}
    return {
        name: value
        for name, value in settings.items()
        if value is not None and value != defaults.get(name) and data.get(name) is None
    }
