"""Finding checkpoint files (local directory or Hugging Face Hub id) and reading them.

No checkpoint code is ever downloaded or executed: only configs, tokenizer files and weights.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

logger = logging.getLogger(__name__)

_CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*"]


class ModelNotFoundError(OSError):
    """The model is neither a local checkpoint directory nor reachable on the Hugging Face Hub."""


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
            raise ModelNotFoundError(f"{str(local)!r} is a directory but has no config.json: point to a checkpoint directory.")
        return local
    if os.path.exists(model) or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelNotFoundError(f"Local checkpoint {model!r} does not exist: pass an existing directory or a Hub id such as 'BAAI/bge-reranker-v2-m3'.")
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(model, cache_dir=cache_dir, local_files_only=local_files_only, allow_patterns=_CHECKPOINT_FILES))
        if not any(path.glob("*.safetensors")):
            path = Path(snapshot_download(model, cache_dir=cache_dir, local_files_only=local_files_only, allow_patterns=[*_CHECKPOINT_FILES, "*.bin"]))
    except Exception as error:  # noqa: BLE001 - every Hub failure becomes one actionable message
        raise ModelNotFoundError(
            f"Could not load {model!r}: it is not a local directory, and the Hugging Face Hub could not provide it "
            f"({type(error).__name__}: {error}). Where you are online, download it once "
            f"(`hf download {model} --local-dir ./{model.split('/')[-1]}`) and pass that directory, "
            f"e.g. BGEReranker('./{model.split('/')[-1]}')."
        ) from error
    return path


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict."""
    with open(Path(path) / "config.json", encoding="utf-8") as handle:
        return json.load(handle)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """All weights of a checkpoint directory, from safetensors files if any, else ``*.bin`` files."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors"))
    state: dict[str, torch.Tensor] = {}
    if files:
        from safetensors.torch import load_file

        for file in files:
            state.update(load_file(str(file)))
        return state
    files = sorted(path.glob("*.bin"))
    if not files:
        raise ModelNotFoundError(f"No weights (*.safetensors or *.bin) in {str(path)!r}.")
    for file in files:
        state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


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
    """Hide transformers' own weight-loading progress bar (ours shows only when asked), then restore it."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
