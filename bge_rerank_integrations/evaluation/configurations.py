"""What is evaluated: each model (Hub id, local directory or server URL) with each point of the options grid.

``--sweep NAME=V1,V2`` gives the values of one scoring or load option; several sweeps give the grid
of all their combinations, and every model is evaluated at every grid point. Every configuration
is checked before anything is scored: an option that a model's family lacks (``cutoff_layers`` on
an encoder), a value of the wrong type, a load option for a server.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import options
from .errors import EvaluationError

#: Options that choose how a local model is loaded: a server (URL) was loaded with its own.
LOAD_OPTIONS = frozenset(options.LOAD_OPTIONS)
#: Options that are not a configuration's (they change where files come from, not results).
NOT_SWEPT = frozenset({"cache_dir", "local_files_only", "show_progress"})


def is_url(model: str) -> bool:
    """Whether ``model`` names a rerank server (``http://`` or ``https://``) rather than a checkpoint.

    >>> is_url("http://127.0.0.1:8080"), is_url("BAAI/bge-reranker-v2-m3")
    (True, False)
    """
    return urlsplit(model).scheme in ("http", "https")


@dataclass(frozen=True)
class Configuration:
    """One model with one set of options; ``name`` is unique in an evaluation and names its run file."""

    model: str
    options: Mapping[str, Any]
    name: str

    @property
    def remote(self) -> bool:
        """Scored by a server (``RemoteReranker``) rather than in this process."""
        return is_url(self.model)

    @property
    def load_options(self) -> dict[str, Any]:
        """The options that decide the loaded model (configurations that share them share one load)."""
        return {name: value for name, value in self.options.items() if name in LOAD_OPTIONS}

    @property
    def score_options(self) -> dict[str, Any]:
        """The scoring options, passed with each scoring call."""
        return {name: value for name, value in self.options.items() if name not in LOAD_OPTIONS}

    def record(self) -> dict[str, Any]:
        """``{"model", "options"}`` as results.json holds them (what ``--resume`` matches)."""
        return {"model": self.model, "options": dict(self.options)}


def sweepable_options() -> dict[str, options.Option]:
    """Option name -> its entry in the options table (``options.OPTIONS``), for every scoring and load option."""
    return {option.name: option for option in options.OPTIONS if option.name not in NOT_SWEPT}


def parse_option_value(name: str, text: str) -> Any:
    """One ``--sweep`` value of option ``name`` from text, by the option's kind in the options table.

    Booleans: true/false (yes/no, 1/0); integers; layers: ``28`` or ``[24,40]``; ``none``: the
    option's default (options whose default is ``None``).

    >>> parse_option_value("cutoff_layers", "[24, 40]"), parse_option_value("use_fp16", "yes")
    ([24, 40], True)
    """
    known = sweepable_options()
    if name not in known:
        raise EvaluationError(f"--sweep {name}: not an option; sweepable options: {', '.join(sorted(known))}.")
    kind, optional = known[name].kind, known[name].default is None
    text = text.strip()
    if optional and text.lower() == "none":
        return None
    try:
        if kind == "bool":
            if text.lower() not in _BOOLEANS:
                raise ValueError
            return _BOOLEANS[text.lower()]
        if kind == "int":
            return int(text)
        if kind == "layers":
            inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
            values = [int(part) for part in inner.split(",")]
            return values if text.startswith("[") else values[0]
    except ValueError:
        raise EvaluationError(f"--sweep {name}: {text!r} is not {_KIND_NAMES[kind]}.") from None
    return text


_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_KIND_NAMES = {
    "bool": "true or false",
    "int": "an integer",
    "layers": "a layer or a bracketed list of layers (28, [24,40])",
}


def parse_sweep(spec: str) -> tuple[str, list[Any]]:
    """``"cutoff_layers=20,28,40"`` -> ``("cutoff_layers", [20, 28, 40])``; a list value is bracketed: ``[24,40]``.

    >>> parse_sweep("compress_layers=[8],[24,40]")
    ('compress_layers', [[8], [24, 40]])
    """
    name, equals, values = spec.partition("=")
    name = name.strip()
    if not equals or not name or not values.strip():
        raise EvaluationError(f"--sweep {spec!r}: write NAME=V1,V2,... (e.g. cutoff_layers=20,28,40).")
    parts = _split_outside_brackets(values)
    if any(not part.strip() for part in parts):
        raise EvaluationError(f"--sweep {spec!r}: an empty value.")
    parsed = [parse_option_value(name, part) for part in parts]
    if len({repr(value) for value in parsed}) < len(parsed):
        raise EvaluationError(f"--sweep {spec!r}: a value is given twice.")
    return name, parsed


def configurations(
    models: Sequence[str], sweep: Mapping[str, Sequence[Any]] | None = None, device: str | None = None
) -> list[Configuration]:
    """Every model at every point of the grid of ``sweep`` (option -> values), in order; ``device`` for local models."""
    if not models:
        raise EvaluationError(
            "no model to evaluate: give at least one --model (Hub id, local directory or server URL)."
        )
    sweep = dict(sweep or {})
    for name, values in sweep.items():
        if not values:
            raise EvaluationError(f"--sweep {name}: no values.")
    repeated = sorted({model for model in models if list(models).count(model) > 1})
    if repeated:
        raise EvaluationError(
            f"--model {repeated[0]} is given twice: each model is evaluated at every grid point once."
        )
    grid = [dict(zip(sweep, point, strict=True)) for point in itertools.product(*sweep.values())]
    result: list[Configuration] = []
    names: set[str] = set()
    for model in models:
        if not isinstance(model, str) or not model.strip():
            raise EvaluationError(f"--model {model!r}: give a Hub id, a local directory or a server URL.")
        for point in grid:
            options = {name: value for name, value in point.items() if value is not None}
            name = _unique(_name(model, options), names)
            if device is not None and not is_url(model):
                options = {"device": device, **options}
            result.append(Configuration(model, options, name))
    return result


def _name(model: str, options: Mapping[str, Any]) -> str:
    """A file-safe label: the model's last path part (a server's host and port), then ``+option=value`` per option."""
    if is_url(model):
        parts = urlsplit(model)
        label = "-".join(filter(None, [parts.hostname, str(parts.port or ""), *parts.path.strip("/").split("/")]))
    else:
        label = Path(model.rstrip("/\\")).name or model
    for option, value in options.items():
        shown = "+".join(str(v) for v in value) if isinstance(value, list) else str(value)
        label += f"+{option}={shown}"
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", label)


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}-{number}"
    taken.add(candidate)
    return candidate


def _split_outside_brackets(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]
