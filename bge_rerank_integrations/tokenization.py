"""The one tokenizer loader of every family: the checkpoint's ``tokenizer.json`` as written.

transformers 4.46 (the reference's version) loads a fast tokenizer's ``tokenizer.json`` as it is.
transformers 5 rebuilds ``XLMRobertaTokenizer``, ``GemmaTokenizer``, ``LlamaTokenizer`` and others
from the vocabulary with the class's own normalizer and pre-tokenizer, so a checkpoint whose
``tokenizer.json`` differs from those defaults (an NFKC normalizer, another pre-tokenizer, a
converted sentencepiece model) would tokenize differently from the reference. Here the file is
loaded with the generic ``PreTrainedTokenizerFast`` under every version; special tokens come from
``tokenizer_config.json`` / ``special_tokens_map.json``, and the settings a class carries as class
attributes (padding and truncation side, model input names) from the class the checkpoint names,
unless its ``tokenizer_config.json`` sets them. Without a ``tokenizer.json``, ``AutoTokenizer``
loads the class-specific files. Checkpoint code is never run.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Settings a tokenizer class holds as class attributes; ``tokenizer_config.json`` may override them.
CLASS_SETTINGS = ("padding_side", "truncation_side", "model_input_names")
#: transformers 4's generic fast tokenizer, for a tokenizer class transformers does not have.
GENERIC_SETTINGS = {
    "padding_side": "right",
    "truncation_side": "right",
    "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
}
#: transformers log lines that loading this way makes and that say nothing wrong.
_EXPECTED_LOG_LINES = (
    "to instantiate a model of type",  # custom model types (minicpm, cost_wise_gemma) read as generic configs
    "The tokenizer class you load from this checkpoint",  # the generic class, chosen on purpose (4.x)
    "The class this function is called from",
)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer of the checkpoint directory ``path``, tokenizing exactly as its ``tokenizer.json`` says.

    >>> load_tokenizer("tests/fixtures/checkpoints/llm").padding_side  # doctest: +SKIP
    'left'
    """
    path = Path(path)
    with _hide_expected_transformers_logs(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*rope_scaling.*deprecated", category=FutureWarning)
        if not (path / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(path), **class_settings(path))


def class_settings(path: str | Path) -> dict[str, Any]:
    """Padding side, truncation side and model input names of the checkpoint's tokenizer class.

    Only those its ``tokenizer_config.json`` leaves unset: ``from_pretrained`` reads the rest.
    """
    config = _read_json(Path(path) / "tokenizer_config.json")
    tokenizer_class = _fast_class(config.get("tokenizer_class") or _class_for_model_type(path))
    return {
        name: getattr(tokenizer_class, name) if tokenizer_class is not None else GENERIC_SETTINGS[name]
        for name in CLASS_SETTINGS
        if name not in config
    }


def _fast_class(name: Any) -> type | None:
    """transformers' fast class for a tokenizer class name (``GemmaTokenizer`` -> ``GemmaTokenizerFast``)."""
    if not isinstance(name, str) or not name.isidentifier():
        return None
    import transformers

    base = name[: -len("Fast")] if name.endswith("Fast") else name
    for candidate in (base + "Fast", base):
        found = getattr(transformers, candidate, None)
        if isinstance(found, type):
            return found
    return None


def _class_for_model_type(path: str | Path) -> str | None:
    """The tokenizer class transformers maps the checkpoint's ``model_type`` to, if any."""
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    model_type = _read_json(Path(path) / "config.json").get("model_type")
    names = TOKENIZER_MAPPING_NAMES.get(model_type) if isinstance(model_type, str) else None
    if isinstance(names, (tuple, list)):  # transformers 4: (slow, fast)
        names = next((name for name in reversed(names) if name), None)
    return names


def _read_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    with open(file, encoding="utf-8") as handle:
        data = json.load(handle)
    return data if isinstance(data, dict) else {}


@contextmanager
def _hide_expected_transformers_logs() -> Iterator[None]:
    loggers = [
        logging.getLogger(name) for name in ("transformers.configuration_utils", "transformers.tokenization_utils_base")
    ]

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(line in message for line in _EXPECTED_LOG_LINES)

    for hf_logger in loggers:
        hf_logger.addFilter(keep)
    try:
        yield
    finally:
        for hf_logger in loggers:
            hf_logger.removeFilter(keep)
