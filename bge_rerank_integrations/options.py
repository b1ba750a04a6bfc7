"""Every scoring and load option, written down once, and the rules that go with them (torch-free).

``OPTIONS`` is the one definition: each option's name, kind, default, the families that take it,
its help text and its scope. Everything that names options is derived from it:

- ``ScoreOptions``, the core's record of one call's scoring options (the ``score`` and ``both`` ones);
- ``BGEReranker``'s constructor (its signature and the checks of its scoring options);
- the adapters' pydantic fields (``adapter_support.ScoringSettings``);
- the server's request fields, in both schemas (``serving.schemas``: the ``request`` options);
- the command line's flags, for ``bge-rerank`` and ``bge-rerank serve`` (``add_flags``);
- the options ``RemoteReranker`` takes, and those it sends to ``bge-rerank serve``;
- Ray's actor options (checked by building a ``BGEReranker``).

Adding an option is one entry here plus the family code that reads it from ``ScoreOptions``.

Scopes: ``"load"`` options choose how and where the model is loaded (constructor only);
``"both"`` options are defaults set at construction that every call (or request) may override;
``"score"`` options are per call only (no constructor default).

>>> ScoreOptions(max_length=256).query_max_length
192
>>> parse_score_options({"normalize": True, "cutoff_layers": 28, "prompt": None})
{'normalize': True, 'cutoff_layers': (28,)}
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .inputs import MAX_INT, check_instruction_format, check_layers, check_positive_int, describe_layers

__all__ = [
    "DEFAULT_OPTIONS",
    "LOAD_OPTIONS",
    "OPTIONS",
    "REQUEST_OPTIONS",
    "SCORE_OPTIONS",
    "Option",
    "ScoreOptions",
    "add_flags",
    "check_family_options",
    "check_single_score",
    "default_query_max_length",
    "describe_options",
    "family_options",
    "int_list",
    "options_not_taken",
    "parse_score_options",
]

#: Scopes: chosen at load only; per call only; a load-time default that calls may override.
LOAD, SCORE, BOTH = "load", "score", "both"
#: The families that take family-specific options.
DECODERS = frozenset({"llm", "layerwise", "lightweight"})
LAYERED = frozenset({"layerwise", "lightweight"})
LIGHTWEIGHT = frozenset({"lightweight"})


@dataclass(frozen=True)
class Option:
    """One option.

    ``kind`` is ``"bool"``, ``"int"`` (a positive integer), ``"count"`` (a non-negative integer), ``"text"``, ``"format"`` (an
    instruction format, see ``inputs.check_instruction_format``), ``"layers"`` (layer numbers: one
    int or a list) or ``"path"``. ``families`` is ``None`` when every family takes the option.
    ``flag`` is the command-line flag (``""``: ``--name-with-dashes``; ``None``: none).
    ``request`` says whether a request to a rerank server may set it (``normalize`` travels as
    ``raw_scores`` / ``use_activation``; ``batch_size`` is the server's own setting).
    """

    name: str
    kind: str
    default: Any
    help: str
    scope: str = BOTH
    families: frozenset | None = None
    flag: str | None = ""
    request: bool = True

    @property
    def flag_name(self) -> str | None:
        """The command-line flag, e.g. ``--max-length``; ``None`` when the option has none."""
        if self.flag is None:
            return None
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` checked and normalized (layer lists become tuples); ``None`` means "not set"."""
        if value is None:
            return None
        return _CHECKS[self.kind](value, self.name)


def default_query_max_length(max_length: int) -> int:
    """The query's token limit when none is given: three quarters of ``max_length`` (as in the reference).

    >>> default_query_max_length(512)
    384
    """
    return max_length * 3 // 4


#: The one definition of every option, in the order of ``BGEReranker``'s signature.
OPTIONS: tuple[Option, ...] = (
    Option(
        "model_class",
        "text",
        None,
        'family override: "encoder", "llm", "layerwise" or "lightweight" (default: detected)',
        LOAD,
    ),
    Option("device", "text", None, '"cpu", "cuda", "cuda:1", "mps" (default: the best available)', LOAD),
    Option(
        "use_fp16",
        "bool",
        False,
        "float16 on CUDA/MPS, and on CPUs with AMX-FP16 (else float32)",
        LOAD,
        flag="--fp16",
    ),
    Option(
        "use_bf16",
        "bool",
        False,
        "bfloat16 on CUDA/MPS, and on CPUs with AVX-512 BF16 or AMX (else float32)",
        LOAD,
        flag="--bf16",
    ),
    Option(
        "quantization",
        "text",
        None,
        '"int8": linear layers in int8, CPU only, quantized once at load (default: none)',
        LOAD,
    ),
    Option("batch_size", "int", 128, "pairs per forward pass (default 128)", request=False),
    Option("max_length", "int", 512, "longest pair, in tokens (default 512; at most the model's positions)"),
    Option("query_max_length", "int", None, "longest query, in tokens (default: max_length * 3 // 4)"),
    Option("normalize", "bool", False, "map scores through a sigmoid into (0, 1)", request=False),
    Option(
        "query_instruction_for_rerank",
        "text",
        None,
        'text put before each query (decoders default to "A: "; "" means none)',
        flag="--query-instruction",
    ),
    Option(
        "query_instruction_format",
        "format",
        "{}{}",
        'how instruction and query are joined: exactly two plain "{}" fields (default "{}{}")',
    ),
    Option(
        "passage_instruction_for_rerank",
        "text",
        None,
        'text put before each passage (decoders default to "B: "; "" means none)',
        flag="--passage-instruction",
    ),
    Option(
        "passage_instruction_format",
        "format",
        "{}{}",
        'how instruction and passage are joined: exactly two plain "{}" fields (default "{}{}")',
    ),
    Option("prompt", "text", None, "decoder families: the relevance prompt (default: the model's)", families=DECODERS),
    Option(
        "cutoff_layers",
        "layers",
        None,
        "layerwise/lightweight: the layer(s) whose heads score, e.g. 28",
        families=LAYERED,
    ),
    Option(
        "compress_ratio", "int", None, "lightweight: passage tokens pooled per group (1, 2, 4, 8)", families=LIGHTWEIGHT
    ),
    Option(
        "compress_layers",
        "layers",
        None,
        "lightweight: layers where passage tokens are compressed, e.g. 24,40",
        families=LIGHTWEIGHT,
    ),
    Option(
        "max_chunks_per_passage",
        "int",
        1,
        "score a passage longer than its pair's room as up to N overlapping windows and keep the best (default 1: truncate)",
    ),
    Option("chunk_overlap", "count", None, "tokens shared by consecutive windows (default: an eighth of a window)"),
    Option(
        "max_tokens_per_passage",
        "int",
        None,
        "cut each passage to this many of its own tokens first (Cohere's and vLLM's max_tokens_per_doc)",
    ),
    Option("cache_dir", "path", None, "where Hub downloads go (default: the Hugging Face cache)", LOAD),
    Option("local_files_only", "bool", False, "never reach the Hub: use the local cache or a directory only", LOAD),
    Option("show_progress", "bool", False, "a progress bar over the pairs", LOAD, flag=None),
    Option(
        "load_on_init", "bool", False, "load the model when built, so that every error comes up front", LOAD, flag=None
    ),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
#: Options chosen when the model is loaded (the constructor's only).
LOAD_OPTIONS: tuple[str, ...] = tuple(option.name for option in OPTIONS if option.scope == LOAD)
#: Options of a scoring call (``ScoreOptions``' fields).
SCORE_OPTIONS: tuple[str, ...] = tuple(option.name for option in OPTIONS if option.scope != LOAD)
#: Scoring options a constructor takes as the defaults of its calls (all but the per-call-only ``"score"`` ones).
DEFAULT_OPTIONS: tuple[str, ...] = tuple(name for name in SCORE_OPTIONS if BY_NAME[name].scope == BOTH)
#: Scoring options a rerank request may set, by name (both server schemas; what RemoteReranker sends to api="bge").
REQUEST_OPTIONS: tuple[str, ...] = tuple(name for name in SCORE_OPTIONS if BY_NAME[name].request)


# --- checks ----------------------------------------------------------------------------------------


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return value


def _check_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}.")
    return value


def _check_count(value: Any, name: str) -> int:
    """A non-negative integer (``chunk_overlap``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) <= MAX_INT:
        raise ValueError(f"{name} must be a non-negative integer (at most {MAX_INT}), got {value!r:.60}.")
    return int(value)


_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "bool": _check_flag,
    "int": check_positive_int,
    "count": _check_count,
    "text": _check_text,
    "format": check_instruction_format,
    "layers": check_layers,
}


def parse_score_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The scoring options set in ``values`` (not ``None``), each checked; layer lists become tuples.

    An unknown name is a TypeError listing the known ones.
    """
    unknown = set(values) - set(SCORE_OPTIONS)
    if unknown:
        raise TypeError(f"Unknown scoring option(s) {sorted(unknown)}; known: {list(SCORE_OPTIONS)}.")
    return {name: BY_NAME[name].check(value) for name, value in values.items() if value is not None}


def check_defaults(options: Iterable[str]) -> None:
    """Reject per-call-only (``"score"``) options given to a constructor as defaults."""
    per_call = sorted(set(options) & (set(SCORE_OPTIONS) - set(DEFAULT_OPTIONS)))
    if per_call:
        raise TypeError(f"{', '.join(per_call)} can only be given per call (compute_score, rerank), not as a default.")


def given_options(values: Mapping[str, Any], names: Iterable[str] = SCORE_OPTIONS) -> dict[str, Any]:
    """The options among ``names`` that ``values`` sets (not ``None``), unchecked, as keyword arguments."""
    return {name: values[name] for name in names if values.get(name) is not None}


# --- the core's option record ------------------------------------------------------------------------


def _derive_query_max_length(self: Any) -> None:
    if self.query_max_length is None:
        object.__setattr__(self, "query_max_length", default_query_max_length(self.max_length))
    if self.chunk_overlap is not None and self.chunk_overlap >= self.max_length:
        raise ValueError(
            f"chunk_overlap={self.chunk_overlap} leaves a window no room: windows hold fewer than max_length="
            f"{self.max_length} passage tokens; pass a smaller chunk_overlap (or none: an eighth of a window)."
        )


_ANNOTATIONS = {
    "bool": "bool",
    "int": "Optional[int]",
    "count": "Optional[int]",
    "text": "Optional[str]",
    "format": "str",
    "layers": "Optional[tuple[int, ...]]",
}

if TYPE_CHECKING:  # pragma: no cover - what type checkers see: every option is an attribute

    class ScoreOptions:
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # a dataclass at run time

        def __init__(self, **options: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

else:
    ScoreOptions = dataclasses.make_dataclass(
        "ScoreOptions",
        [
            (name, _ANNOTATIONS[BY_NAME[name].kind], dataclasses.field(default=BY_NAME[name].default))
            for name in SCORE_OPTIONS
        ],
        frozen=True,
        namespace={"__post_init__": _derive_query_max_length},
    )
    ScoreOptions.__module__ = __name__
    ScoreOptions.__doc__ = """Every scoring option of one call, after constructor defaults and per-call overrides merge.

    Built from ``OPTIONS``. Family-specific options are ``None`` unless the caller set them (a
    family fills in its own defaults, e.g. its prompt); ``query_max_length`` left ``None`` becomes
    ``default_query_max_length(max_length)``.
    """


# --- shared rules ----------------------------------------------------------------------------------


def family_options(family: str) -> frozenset[str]:
    """The family-specific options ``family`` takes.

    >>> sorted(family_options("layerwise"))
    ['cutoff_layers', 'prompt']
    """
    return frozenset(option.name for option in OPTIONS if option.families is not None and family in option.families)


def options_not_taken(family: str) -> tuple[str, ...]:
    """The family-specific options that ``family`` does not take.

    >>> options_not_taken("layerwise")
    ('compress_ratio', 'compress_layers')
    """
    return tuple(option.name for option in OPTIONS if option.families is not None and family not in option.families)


def check_family_options(family: str, options: ScoreOptions) -> None:
    """Reject options set in ``options`` that ``family`` does not take."""
    unsupported = sorted(name for name in options_not_taken(family) if getattr(options, name, None) is not None)
    if unsupported:
        names = unsupported[0] if len(unsupported) == 1 else f"{', '.join(unsupported[:-1])} and {unsupported[-1]}"
        raise ValueError(
            f"{names} {'does' if len(unsupported) == 1 else 'do'} not apply to the {family} family; "
            f"it takes {sorted(family_options(family)) or 'no family-specific options'}."
        )


def several_layers(cutoff_layers: int | Sequence[int] | None) -> bool:
    """Whether ``cutoff_layers`` asks for more than one layer (one score list per layer)."""
    return cutoff_layers is not None and not isinstance(cutoff_layers, int) and len(cutoff_layers) > 1


def check_single_score(cutoff_layers: int | Sequence[int] | None, score_layers: Sequence[int] | None = None) -> None:
    """Ranking (adapters, servers, ``rerank``) needs one score per passage: several cutoff layers are an error.

    The hint names the checkpoint's ``score_layers`` when they are known, else the caller's first layer.

    >>> check_single_score([8, 12])
    Traceback (most recent call last):
    ValueError: cutoff_layers=[8, 12] gives one score per layer, but ranking needs one score per document:
    pass a single layer, e.g. cutoff_layers=[8].
    >>> check_single_score([2, 4], score_layers=[2, 3, 4, 5, 6])
    Traceback (most recent call last):
    ValueError: cutoff_layers=[2, 4] gives one score per layer, but ranking needs one score per document:
    pass a single layer, one of 2..6 for this checkpoint.
    """
    if several_layers(cutoff_layers):
        layers = list(cutoff_layers)  # type: ignore[arg-type]
        example = f"e.g. cutoff_layers=[{layers[0]}]"
        hint = f"one of {describe_layers(score_layers)} for this checkpoint" if score_layers else example
        raise ValueError(
            f"cutoff_layers={layers} gives one score per layer, but ranking needs one score per "
            f"document: pass a single layer, {hint}."
        )


# --- derived signatures and flags ------------------------------------------------------------------


def signature_with_options(
    function: Callable[..., Any], names: Iterable[str], defaults: Mapping[str, Any] | None = None
) -> inspect.Signature:
    """``function``'s signature with its ``**options`` replaced by one keyword parameter per option in ``names``.

    What ``help()``, ``inspect`` and Jupyter show for a constructor that takes the options as
    ``**options``. A parameter's default is the option's, unless ``defaults`` gives another.
    """
    defaults = defaults or {}
    signature = inspect.signature(function)
    parameters = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(name, BY_NAME[name].default))
        for name in names
    ]
    return signature.replace(parameters=parameters)


def describe_options(names: Iterable[str]) -> str:
    """One line per option: name, default and help, for docstrings.

    >>> describe_options(["normalize"])
    '        normalize (default False): map scores through a sigmoid into (0, 1)'
    """
    return "\n".join(f"        {name} (default {BY_NAME[name].default!r}): {BY_NAME[name].help}" for name in names)


def int_list(value: str) -> list[int]:
    """``argparse`` type of a comma-separated list of integers, e.g. ``24,40``."""
    try:
        return [int(part) for part in value.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def add_flags(parser: Any, names: Iterable[str], overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Add the command-line flag of each option in ``names`` (those with one) to ``parser`` (or a group).

    Every flag defaults to ``None`` ("not given": the reranker's default applies), a ``bool``
    option is a switch; ``overrides`` replaces ``add_argument`` keywords for some options.
    """
    for name in names:
        option = BY_NAME[name]
        if option.flag_name is None:
            continue
        if option.kind == "bool":
            keywords: dict[str, Any] = {"action": "store_true", "default": None}
        else:
            metavar = option.flag_name.lstrip("-").replace("-", "_").upper()
            keywords = {
                "type": {"int": int, "count": int, "layers": int_list}.get(option.kind),
                "default": None,
                "metavar": metavar,
            }
        keywords.update(dest=name, help=option.help)
        keywords.update((overrides or {}).get(name, {}))
        parser.add_argument(option.flag_name, **{k: v for k, v in keywords.items() if v is not None or k == "default"})
