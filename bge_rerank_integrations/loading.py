"""Finding checkpoint files (local directory or Hugging Face Hub id) and reading them.

No checkpoint code is ever downloaded or executed: only configs, tokenizer files and weights.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*"]


class ModelNotFoundError(OSError):
    """The model is neither a local checkpoint directory nor reachable on the Hugging Face Hub."""


class CheckpointError(OSError):
    """A checkpoint is broken or unusable: a file that cannot be read, or weights that do not fit the model.

    The message names the file (or the weights) and the problem; nothing is scored from such a checkpoint.
    Like ``ModelNotFoundError`` it is an ``OSError``: the model could not be loaded.
    """


#: The checkpoint's own weight files, in the order transformers looks for them (index files list shards).
WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
#: Any one of these makes a tokenizer; without them transformers 5 builds an almost empty one that scores every pair the same.
TOKENIZER_FILES = (
    "tokenizer.json",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
)


def cached_config(model: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """``model``'s ``config.json`` if it is a Hub id whose config is in the Hugging Face cache, else ``None``.

    Never reaches the network: what the constructors check before anything is downloaded.
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            model.strip(), "config.json", cache_dir=None if cache_dir is None else str(cache_dir)
        )
    except Exception:  # noqa: BLE001 - not a valid Hub id, or no cache: nothing to check yet
        return None
    return read_config(Path(found).parent) if isinstance(found, str) else None


def check_not_a_bare_official_name(model: str) -> None:
    """Raise ``ModelNotFoundError`` for an official name without its organisation that is no local path.

    >>> check_not_a_bare_official_name("bge-reranker-v2-m3")
    Traceback (most recent call last):
    ...
    bge_rerank_integrations.loading.ModelNotFoundError: ... did you mean BAAI/bge-reranker-v2-m3?
    """
    official = official_id(model)
    if official is not None and not Path(model).expanduser().exists():
        raise ModelNotFoundError(f"{model!r} is neither a local directory nor a Hub id: did you mean {official}?")


def official_id(model: str) -> str | None:
    """The official Hub id that a bare official name (no organisation) stands for, else ``None``.

    >>> official_id("bge-reranker-v2-m3")
    'BAAI/bge-reranker-v2-m3'
    >>> official_id("BAAI/bge-reranker-v2-m3") is None
    True
    """
    from .families import KNOWN_MODELS

    name = model.strip()
    if "/" in name or f"baai/{name.lower()}" not in KNOWN_MODELS:
        return None
    return f"BAAI/{name.lower()}"  # the official names are lower case


def resolve_checkpoint(model: str, cache_dir: str | None = None, local_files_only: bool = False) -> Path:
    """Return a local directory holding ``model``'s config, tokenizer and weights.

    ``model`` is a local directory or a Hub id; a Hub id is fetched into the Hugging Face cache
    (or ``cache_dir``) unless ``local_files_only`` is set, and only its non-code files are taken.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a Hugging Face Hub id or a local directory, got {model!r}.")
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(
                f"{str(local)!r} is a directory but has no config.json: point to a checkpoint directory."
            )
        return local
    if os.path.exists(model) or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelNotFoundError(
            f"Local checkpoint {model!r} does not exist: pass an existing directory or a Hub id such as 'BAAI/bge-reranker-v2-m3'."
        )
    check_not_a_bare_official_name(model)
    try:
        from huggingface_hub import snapshot_download

        path = Path(
            snapshot_download(
                model, cache_dir=cache_dir, local_files_only=local_files_only, allow_patterns=_CHECKPOINT_FILES
            )
        )
        if not any(path.glob("*.safetensors")):
            path = Path(
                snapshot_download(
                    model,
                    cache_dir=cache_dir,
                    local_files_only=local_files_only,
                    allow_patterns=[*_CHECKPOINT_FILES, "*.bin"],
                )
            )
    except Exception as error:  # every Hub failure becomes one actionable message
        raise ModelNotFoundError(
            f"Could not load {model!r}: it is not a local directory, and the Hugging Face Hub could not provide it "
            f"({type(error).__name__}: {error}). Where you are online, download it once "
            f"(`hf download {model} --local-dir ./{model.split('/')[-1]}`) and pass that directory, "
            f"e.g. BGEReranker('./{model.split('/')[-1]}')."
        ) from error
    return path


def read_json(file: str | os.PathLike[str]) -> Any:
    """A checkpoint's JSON file; unreadable or invalid JSON is a ``CheckpointError`` naming the file."""
    try:
        with open(file, encoding="utf-8") as handle:
            return json.load(handle)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{str(file)!r} is not valid JSON ({_one_line(error)}).") from None


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict, checked for the fields that decide the family.

    >>> read_config("tests/fixtures/checkpoints/encoder")["model_type"]
    'xlm-roberta'
    """
    file = Path(path) / "config.json"
    config = read_json(file)
    if not isinstance(config, dict):
        raise CheckpointError(f"{str(file)!r} must hold a JSON object, got a {type(config).__name__}.")
    architectures = config.get("architectures")
    if architectures is not None and (
        not isinstance(architectures, list) or not all(isinstance(name, str) for name in architectures)
    ):
        raise CheckpointError(
            f"{str(file)!r}: architectures must be a list of class names, got {architectures!r:.120}."
        )
    if not isinstance(config.get("model_type", ""), str):
        raise CheckpointError(f"{str(file)!r}: model_type must be a string, got {config['model_type']!r:.120}.")
    return config


def check_checkpoint(path: str | os.PathLike[str]) -> None:
    """Check, before loading, that a checkpoint directory has a readable config, tokenizer files and weights.

    Weight files are opened without reading their tensors, so a truncated or pickled file fails here, named.
    """
    path = Path(path)
    read_config(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"{str(path)!r} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); without them every pair "
            "would score the same. Copy the tokenizer files of the model it was trained from into the directory."
        )
    for file in weight_files(path):
        _read_weights(file, check_only=True)


def weight_files(path: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint's weight files as transformers finds them: an index's shards, else the one model file.

    Other files (``pytorch_lora_weights.safetensors``, ``training_args.bin``, optimizer states) are never read.
    """
    path = Path(path)
    for name in WEIGHT_FILES:
        file = path / name
        if not file.is_file():
            continue
        if not name.endswith(".index.json"):
            return [file]
        index = read_json(file)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
            raise CheckpointError(f"{str(file)!r} has no weight_map of tensor names to shard files.")
        shards = [path / shard for shard in sorted(set(weight_map.values()))]
        missing = [shard.name for shard in shards if shard.parent != path or not shard.is_file()]
        if missing:
            raise CheckpointError(f"{str(file)!r} lists shard files that are not in the directory: {missing[:3]}.")
        return shards
    raise CheckpointError(f"No weights in {str(path)!r}: expected one of {', '.join(WEIGHT_FILES)}.")


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The checkpoint's weights (see :func:`weight_files`), read without running any pickled code."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        state.update(_read_weights(file))
    return state


def _read_weights(file: Path, check_only: bool = False) -> dict[str, Any]:
    """The tensors of one weight file; ``check_only`` reads just enough to know the file is sound (no data).

    Pickled objects are refused (``weights_only``): loading them could run code.
    """
    if file.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            if check_only:
                with safe_open(str(file), framework="pt") as handle:
                    return dict.fromkeys(handle.keys())
            return load_file(str(file))
        except Exception as error:  # noqa: BLE001 - safetensors' own error type, raised for any damage
            raise CheckpointError(f"{str(file)!r} is not a readable safetensors file ({_one_line(error)}).") from None
    try:
        if check_only and zipfile.is_zipfile(file):  # tensors mapped, not read
            state = torch.load(file, map_location="meta", weights_only=True, mmap=True)
        else:
            state = torch.load(file, map_location="meta" if check_only else "cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling fails in many ways; each means "not plain tensors"
        raise CheckpointError(
            f"{str(file)!r} is not a plain tensor file: it holds pickled objects, which are never loaded "
            f"(they can run code), or it is damaged ({_one_line(error)[:200]}). Convert it to safetensors."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(f"{str(file)!r} does not hold a dict of tensor weights.")
    return state


#: The one rule for checkpoint weights a family's model does not have: which of them its scoring never reads.
#: Those are logged (INFO) and not loaded; any other one is a ``CheckpointError``. An encoder's unused
#: pooler is harmless (the classification head reads the CLS state itself); the layerwise and lightweight
#: models are built by name from their own module tree and their heads read only the weights they have,
#: so any extra tensor (e.g. a tied ``lm_head.weight``) is left unread. For the llm family, built by
#: transformers, an unknown weight means the checkpoint is another architecture.
UNREAD_WEIGHTS: dict[str, Callable[[str], bool]] = {
    "encoder": lambda name: ".pooler." in f".{name}",
    "llm": lambda name: False,
    "layerwise": lambda name: True,
    "lightweight": lambda name: True,
}


def check_weights(
    source: str | os.PathLike[str],
    family: str,
    missing: Sequence[str] = (),
    unexpected: Sequence[str] = (),
    mismatched: Sequence[tuple[str, Any, Any]] = (),
) -> None:
    """Raise a ``CheckpointError`` naming the weights that do not fit the ``family`` model, if any.

    Missing weights would be freshly (randomly) initialised: the scores would be wrong, and
    different in every process. Unexpected weights follow :data:`UNREAD_WEIGHTS`: logged if the
    family's scoring never reads them, an error otherwise.

    >>> check_weights("ckpt", "encoder", unexpected=["roberta.pooler.dense.bias"])  # logged, not refused
    >>> check_weights("ckpt", "llm", unexpected=["adapter.weight"])
    Traceback (most recent call last):
    ...
    bge_rerank_integrations.loading.CheckpointError: Checkpoint 'ckpt' does not fit a llm reranker:
    it has 1 weights the model does not have, e.g. ['adapter.weight']. Check that ...
    """
    unread_rule = UNREAD_WEIGHTS.get(family, lambda name: False)
    unread = [name for name in unexpected if unread_rule(name)]
    if unread:
        shown, count = sorted(unread)[:3], len(unread)
        logger.info("Ignoring %d weights in %s that the %s model does not read, e.g. %s", count, source, family, shown)
    unexpected = [name for name in unexpected if not unread_rule(name)]
    problems = []
    if missing:
        problems.append(f"lacks {len(missing)} weights, e.g. {sorted(missing)[:3]}")
    if mismatched:
        shown = [f"{name} {tuple(found)} instead of {tuple(wanted)}" for name, found, wanted in sorted(mismatched)[:3]]
        problems.append(f"has {len(mismatched)} weights of the wrong shape, e.g. {'; '.join(shown)}")
    if unexpected:
        problems.append(f"has {len(unexpected)} weights the model does not have, e.g. {sorted(unexpected)[:3]}")
    if problems:
        raise CheckpointError(
            f"Checkpoint {str(source)!r} does not fit a {family} reranker: it {', and '.join(problems)}. "
            "Check that the checkpoint is complete and that model_class (if given) is its family."
        )


def compare_state_dict(
    model: torch.nn.Module, state: dict[str, torch.Tensor]
) -> tuple[list[str], list[str], list[tuple[str, Any, Any]]]:
    """``(missing, unexpected, mismatched)`` between ``model``'s weights and a checkpoint's ``state``.

    >>> compare_state_dict(torch.nn.Linear(2, 1), {"weight": torch.zeros(1, 3), "scale": torch.zeros(1)})
    (['bias'], ['scale'], [('weight', (1, 3), (1, 2))])
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        (name, tuple(state[name].shape), tuple(tensor.shape))
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    return missing, unexpected, mismatched


def check_loading_info(info: dict[str, Any], source: str | os.PathLike[str], family: str) -> None:
    """Check transformers' ``output_loading_info`` (4.x and 5.x report the same keys) with :func:`check_weights`."""
    check_weights(
        source,
        family,
        list(info.get("missing_keys") or []),
        list(info.get("unexpected_keys") or []),
        list(info.get("mismatched_keys") or []),
    )


def transformers_load_kwargs(path: str | os.PathLike[str], dtype: torch.dtype) -> dict[str, Any]:
    """``from_pretrained`` keywords that never run checkpoint code and report the weights that do not fit.

    A ``model_type`` transformers does not know would need the checkpoint's own code (``auto_map``),
    which this package never runs: that is a ``CheckpointError`` before transformers is called.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = read_config(path).get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise CheckpointError(
            f"{str(Path(path) / 'config.json')!r} has model_type {model_type!r}, which transformers does not know; "
            "loading it would need the checkpoint's own Python code, which this package never runs."
        )
    return {
        "trust_remote_code": False,
        "output_loading_info": True,
        "ignore_mismatched_sizes": True,
        **dtype_kwargs(dtype),
    }


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def reference_gemma_activation(config: dict[str, Any]) -> str:
    """The MLP activation the reference's Gemma and Gemma-2 models use for this ``config.json``.

    Under transformers 4.46 (the reference) Gemma's MLP reads ``hidden_activation`` and falls back to
    tanh-approximated GELU, ignoring ``hidden_act``; the Gemma checkpoints still carry the legacy
    ``hidden_act: "gelu"``, which transformers 5.0 to 5.2x apply as exact GELU (scores move by ~1e-3).

    >>> reference_gemma_activation({"hidden_act": "gelu"}), reference_gemma_activation({"hidden_activation": "gelu"})
    ('gelu_pytorch_tanh', 'gelu')
    """
    return config.get("hidden_activation") or "gelu_pytorch_tanh"


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s dtype keyword: ``dtype`` from transformers 4.56 on, ``torch_dtype`` before."""
    import transformers
    from packaging.version import Version

    return {"dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype": dtype}


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own weight-loading progress bar (ours shows only when asked), then restore it.

    What transformers logs meanwhile (in this thread) is held back: it is logged once the load
    succeeds, and dropped when the checkpoint is refused with ``CheckpointError``, whose message
    already names the missing and unexpected weights (transformers' LOAD REPORT table would repeat
    them on stderr).
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    hold = _HeldRecords()
    handlers = _handlers_reached(logging.getLogger("transformers"))
    for handler in handlers:
        handler.addFilter(hold)
    try:
        yield
    except CheckpointError:
        hold.records.clear()
        raise
    finally:
        for handler in handlers:
            handler.removeFilter(hold)
        for record in hold.records:
            logging.getLogger(record.name).handle(record)
        if was_enabled:
            hf_logging.enable_progress_bar()


def _handlers_reached(logger: logging.Logger | None) -> list[logging.Handler]:
    """Every handler a record logged on ``logger`` reaches: its own, then its ancestors' while it propagates."""
    found: list[logging.Handler] = []
    while logger is not None:
        found += [handler for handler in logger.handlers if handler not in found]
        logger = logger.parent if logger.propagate else None
    return found


class _HeldRecords(logging.Filter):
    """A handler filter that holds back the records logged by the thread that made it (each once)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        if not any(held is record for held in self.records):
            self.records.append(record)
        return False
