"""What the framework adapters share: their settings as one pydantic definition, and building the reranker.

Each adapter class combines ``RerankSettings`` (or ``ScoringSettings``) with its framework's base
class, turns its documents or nodes into texts, calls ``rank_texts`` / ``arank_texts`` (the
reranker's ``rerank`` / ``arerank`` with the scoring settings), and turns the results back; the
settings, their checks and their serialization live here. The load and scoring settings are
derived from ``options.OPTIONS``. The reranker is any ``contract.Reranker``: a ``BGEReranker``
(in-process) or a ``RemoteReranker`` (``model`` is a server URL or a ``RemoteReranker``); an
adapter on a URL never imports torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union, cast

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
    create_model,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from .contract import Reranker
from .inputs import check_score_threshold
from .options import (
    BY_NAME,
    DEFAULT_OPTIONS,
    LOAD,
    LOAD_OPTIONS,
    OPTIONS,
    SCORE_OPTIONS,
    Option,
    check_single_score,
    given_options,
    several_layers,
)
from .ranking import RerankResult
from .remote import RemoteReranker

if TYPE_CHECKING:
    from .reranker import BGEReranker  # only for the type checker: a URL-built adapter never imports torch

logger = logging.getLogger(__name__)

#: Settings given to the ``BGEReranker`` constructor only: which model is loaded, from where, where and how.
LOAD_SETTINGS = LOAD_OPTIONS
#: Settings forwarded to every ``rerank`` call unchanged (``None`` = the model's default): every scoring option.
SCORE_SETTINGS = SCORE_OPTIONS
#: An adapter's ``score_threshold`` field: any real number (numpy scalars, ints, Decimal), never NaN; as the core checks it.
ScoreThreshold = Annotated[float | None, BeforeValidator(check_score_threshold)]
#: A reranker's ``settings()`` names -> the adapters' field names (``model`` is its name, path or URL).
FIELD_NAMES = {"model_name_or_path": "model", "url": "model", "model": "remote_model"}

SharedReranker = Annotated[Reranker, WithJsonSchema({"type": "object", "title": "Reranker"})]
Layers = Optional[StrictInt | list[StrictInt]]
#: Pydantic types of the scoring options' kinds (every scoring field is optional: ``None`` = the reranker's default).
_FIELD_TYPES: dict[str, Any] = {
    "bool": StrictBool,
    "int": StrictInt,
    "count": StrictInt,
    "text": str,
    "format": str,
    "layers": Union[StrictInt, list[StrictInt]],
}


def _option_field(option: Option) -> tuple[Any, Any]:
    """An option as an adapter field: load options are fixed once built; scoring ones default to ``None``."""
    if option.scope == LOAD:
        annotation = StrictBool if option.kind == "bool" else Optional[str]
        return annotation, Field(default=option.default, frozen=True, description=option.help)
    minimum = {"int": 1, "count": 0}.get(option.kind)
    return Optional[_FIELD_TYPES[option.kind]], Field(default=None, ge=minimum, description=option.help)


class _Model(BaseModel):
    model_config = ConfigDict(
        arbitrary_types_allowed=True,
        extra="forbid",
        validate_assignment=True,
        protected_namespaces=(),
        hide_input_in_errors=True,
    )

    model: str | SharedReranker = Field(
        default="BAAI/bge-reranker-v2-m3",
        frozen=True,
        description="Hub id, local checkpoint directory or rerank server URL, or an existing BGEReranker or RemoteReranker.",
    )


#: ``model`` and one field per option of ``options.OPTIONS``.
if TYPE_CHECKING:  # fields made at run time are invisible to a type checker: it sees the base
    _OptionFields = _Model
else:
    _OptionFields = create_model(
        "_OptionFields", __base__=_Model, **{option.name: _option_field(option) for option in OPTIONS}
    )


class ScoringSettings(_OptionFields):
    """Every setting of a reranker as a pydantic field; builds the reranker at construction.

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

    # Remote settings (REMOTE_SETTINGS, the fields defined here): only with a server URL; fixed once built.
    # None: RemoteReranker's default.
    api: str | None = Field(
        default=None,
        frozen=True,
        description='The server\'s API: "bge" (bge-rerank serve, default), "tei", "infinity", "vllm", "cohere".',
    )
    api_key: SecretStr | None = Field(
        default=None,
        frozen=True,
        exclude=True,
        description="Bearer token for the server (default: $BGE_RERANK_API_KEY); never serialized.",
    )
    remote_model: str | None = Field(
        default=None, frozen=True, description="Model name sent to servers that take one (required by Cohere)."
    )
    timeout: float | None = Field(
        default=None, gt=0, frozen=True, description="Deadline of a whole call in seconds (60)."
    )
    max_documents_per_request: StrictInt | None = Field(
        default=None, ge=1, frozen=True, description="Split larger calls (default: the API's limit, 32 for TEI)."
    )
    retries: StrictInt | None = Field(
        default=None, ge=0, frozen=True, description="Retries on connection errors, 429 and 503 (3)."
    )
    max_concurrent_requests: StrictInt | None = Field(
        default=None, ge=1, frozen=True, description="Requests of one call in flight at once (4)."
    )
    max_response_bytes: StrictInt | None = Field(
        default=None,
        ge=1,
        frozen=True,
        description="Most decompressed bytes of one answer (default: 1 MiB + 1 KiB per document + 8x their UTF-8 size).",
    )

    _reranker: Reranker | None = PrivateAttr(default=None)

    @field_validator("model", *(option.name for option in OPTIONS if option.kind == "path"), mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _build_reranker(self) -> ScoringSettings:
        """Build the reranker at construction (the model loads on first use, or now with ``load_on_init``);
        re-check the options on assignment. Several ``cutoff_layers`` are an error whose hint names the
        checkpoint's own score layers when they are known."""
        if self._reranker is None:
            settings = self.reranker_settings()
            layers = settings.get("cutoff_layers")
            if several_layers(layers):  # built without them, only to name the checkpoint's layers
                named = build_reranker(self.model, {**settings, "cutoff_layers": None, "load_on_init": False})
                check_single_score(layers, _score_layers(named))
            self._reranker = build_reranker(self.model, settings)
        else:
            check_single_score(self.call_options().get("cutoff_layers"), _score_layers(self._reranker))
            self._reranker.check_options(**self.call_options())
        return self

    def load(self) -> ScoringSettings:
        """Load the model now (otherwise on the first call), so that a missing or broken checkpoint fails here."""
        if not isinstance(self.reranker, RemoteReranker):
            cast("BGEReranker", self.reranker).load()
        return self

    @property
    def resolved(self) -> dict[str, Any]:
        """What scores: the model, its family (``None`` until known), device and dtype; or a server's URL and API.

        The family is known at construction for an official id, a local checkpoint, a cached Hub id
        or ``model_class``; else once the model is loaded.
        """
        if isinstance(self.reranker, RemoteReranker):
            return {"url": self.reranker.url, "api": self.reranker.api}
        reranker = cast("BGEReranker", self.reranker)
        return {
            "model": reranker.model_name_or_path,
            "family": reranker.family_name,
            "device": str(reranker.device),
            "dtype": str(reranker.dtype).replace("torch.", ""),
        }

    def __repr__(self) -> str:
        """The resolved model, family, device and dtype, then the settings that were set."""
        resolved = self.resolved
        hidden = {*resolved, "api_key"}
        given = [name for name in type(self).model_fields if name in self.model_fields_set and name not in hidden]
        shown = [f"{name}={value!r}" for name, value in resolved.items()]
        shown += [f"{name}={getattr(self, name)!r}" for name in given]
        return f"{type(self).__name__}({', '.join(shown)})"

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
    def _serialize_model(self, model: str | Reranker) -> str:
        return reranker_fields(model)["model"] if isinstance(model, Reranker) else model

    @model_serializer(mode="wrap")
    def custom_model_dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        """The settings as plain data (the framework's own dump, if it has one); a shared reranker adds its settings."""
        framework_dump = getattr(super(), "custom_model_dump", None)  # LlamaIndex adds its "class_name"
        data = framework_dump(handler, info) if framework_dump is not None else handler(self)
        if isinstance(self.model, Reranker):
            data.update(shared_settings(self.model, data, type(self).model_fields))
        return data

    @property
    def reranker(self) -> Reranker:
        """The ``BGEReranker`` or ``RemoteReranker`` that scores (pass it as ``model`` to another adapter to share it)."""
        assert self._reranker is not None  # built at construction by _build_reranker
        return self._reranker

    def reranker_settings(self) -> dict[str, Any]:
        """The load, remote and scoring settings as ``{name: value}``."""
        return {name: getattr(self, name) for name in (*LOAD_SETTINGS, *REMOTE_SETTINGS, *SCORE_SETTINGS)}

    def call_options(self) -> dict[str, Any]:
        """The scoring settings that were set, as keyword arguments for ``rerank`` or ``compute_score``."""
        return given_options(self.reranker_settings())


#: Settings of a ``RemoteReranker`` built from a server URL (``model="http://..."``; ``remote_model`` is its
#: ``model``): ``ScoringSettings``' own fields.
REMOTE_SETTINGS = tuple(name for name in ScoringSettings.model_fields if name not in _OptionFields.model_fields)


class RerankSettings(ScoringSettings):
    """``ScoringSettings`` plus what a reranking step keeps: ``top_n`` and ``score_threshold``."""

    top_n: StrictInt | None = Field(
        default=3, ge=0, description="Keep at most this many (applied after score_threshold); None keeps all."
    )
    score_threshold: ScoreThreshold = Field(
        default=None, description="Drop those scoring below this first (on the (0, 1) scale with normalize=True)."
    )

    _warned_raw_threshold: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _warn_raw_threshold(self) -> RerankSettings:
        """Warn once when ``score_threshold`` applies to raw logits, which have no fixed scale."""
        raw = self.score_threshold is not None and not self.reranker.check_options(**self.call_options()).normalize
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
        return self.reranker.rerank(query, texts, **self._rank_options())

    async def arank_texts(self, query: str, texts: list[str]) -> list[RerankResult]:
        """``rank_texts`` without blocking the event loop (the reranker's ``arerank``).

        A ``RemoteReranker`` awaits its requests on the loop (no thread); an in-process model runs
        in a worker thread.
        """
        return await self.reranker.arerank(query, texts, **self._rank_options())

    def _rank_options(self) -> dict[str, Any]:
        return {"top_n": self.top_n, "score_threshold": self.score_threshold, **self.call_options()}


def build_reranker(model: str | Reranker, settings: Mapping[str, Any]) -> Reranker:
    """The adapter's reranker: ``model`` itself when it is a reranker, else a new one.

    A server URL becomes a ``RemoteReranker`` with the remote settings; a name or path becomes a
    ``BGEReranker`` (lazy, cache-shared) with the load settings. Settings that the chosen kind of
    ``model`` would ignore are an error. The scoring settings are checked here, so a setting the
    model's family (or the server's API) lacks fails at construction whenever that is known.
    """
    load = {name: settings.get(name) for name in LOAD_SETTINGS if settings.get(name) not in (None, False)}
    remote: dict[str, Any] = {name: settings.get(name) for name in REMOTE_SETTINGS if settings.get(name) is not None}
    if isinstance(model, Reranker):
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
        api_key = remote.get("api_key")
        if isinstance(api_key, SecretStr):
            remote["api_key"] = api_key.get_secret_value()
        reranker = RemoteReranker(model, **remote, **given_options(settings, DEFAULT_OPTIONS))
    else:
        if remote:
            raise ValueError(
                f"{sorted(remote)} apply to a rerank server, but model={model!r} is a local model: "
                "pass the server's URL (http://...) as model, or drop them."
            )
        from .reranker import BGEReranker  # torch: only for a model loaded in this process

        reranker = BGEReranker(model, **load)
    reranker.check_options(**given_options(settings))
    return reranker


def _score_layers(reranker: Reranker) -> list[int] | None:
    """The checkpoint's score layers (valid ``cutoff_layers``) when the reranker knows them without loading."""
    score_layers = getattr(reranker, "score_layers", None)
    return score_layers() if callable(score_layers) else None


def is_server_url(model: str) -> bool:
    """Whether ``model`` names a rerank server (``http://`` or ``https://``) rather than a model."""
    return model.strip().lower().startswith(("http://", "https://"))


def reranker_fields(reranker: Reranker) -> dict[str, Any]:
    """A reranker's ``settings()`` as adapter fields: ``model`` is its name, path or URL (never its API key)."""
    return {FIELD_NAMES.get(name, name): value for name, value in reranker.settings().items()}


def shared_settings(reranker: Reranker, data: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """What an adapter built on an existing ``reranker`` adds to its serialized configuration.

    The reranker's own settings (load settings as it was given them, remote settings, scoring
    defaults it changed), so that the configuration alone rebuilds an equivalent adapter (sharing
    the cached model). Values that are defaults are left out (an unset device stays unset), and
    fields the adapter set itself (not their default in ``data``) win.
    """
    settings = reranker_fields(reranker)
    settings.pop("model")
    shared = {}
    for name, value in settings.items():
        default = fields[name].default
        if value == default or (name in BY_NAME and value == BY_NAME[name].default):
            continue
        if data.get(name, default) == default:
            shared[name] = value
    return shared
