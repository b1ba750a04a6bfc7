"""The interface every model family implements, and the records it works with.

The core (``BGEReranker``) owns everything that is the same for all families:
input checks, option merging, instructions, batching, OOM handling, normalisation
and the result shape. A family owns what differs: how a checkpoint is loaded, how a
(query, passage) pair becomes token ids, and how a padded batch becomes raw scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

from ..options import ScoreOptions

__all__ = ["Encoded", "RerankerFamily", "ScoreOptions"]


@dataclass(frozen=True)
class Encoded:
    """One tokenized pair, unpadded.

    ``query_length`` and ``prompt_length`` count the tokens before and after the passage;
    only families that treat the passage segment specially (lightweight compression) use them.
    ``position_offset`` is the position of the first token: the left padding the reference's
    batching gives this pair, since it numbers left-padded rows from the first pad (decoders).
    """

    input_ids: list[int]
    query_length: int = 0
    prompt_length: int = 0
    position_offset: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)


class RerankerFamily(ABC):
    """A loaded model of one family: tokenizer, weights, and the forward that scores.

    Subclasses set ``name`` and implement ``load``, ``encode`` and ``forward``; the options a
    family takes of its own are those whose ``families`` in ``options.OPTIONS`` name it. An instance is shared by every reranker that loads the same checkpoint on
    the same device in the same dtype (see ``model_cache``); it must not hold per-call state.
    """

    #: Family name used by ``model_class`` and in messages.
    name: ClassVar[str]
    #: Instructions used when the caller gives none (the decoders' "A: " / "B: ").
    default_query_instruction: ClassVar[str | None] = None
    default_passage_instruction: ClassVar[str | None] = None

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: torch.device, dtype: torch.dtype):
        # A transformers model: its config and submodules are attributes torch's Module typing cannot see.
        self.model: Any = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype

    @classmethod
    @abstractmethod
    def load(cls, path: str, device: torch.device, dtype: torch.dtype) -> "RerankerFamily":
        """Load tokenizer and weights from a local checkpoint directory onto ``device`` in ``dtype``."""

    @property
    @abstractmethod
    def max_positions(self) -> int:
        """The longest token sequence the model can take."""

    def check_options(self, options: ScoreOptions) -> None:
        """Raise ValueError for option values this model cannot take (layers out of range, ...)."""

    @abstractmethod
    def encode(self, pairs: Sequence[tuple[str, str]], options: ScoreOptions) -> list[Encoded]:
        """Tokenize pairs whose instructions are already applied, truncating as the reference does.

        No returned sequence may exceed ``max_positions``.
        """

    @abstractmethod
    def forward(self, batch: Sequence[Encoded], options: ScoreOptions) -> torch.Tensor:
        """Pad ``batch`` and return raw scores as float32 on CPU, shape ``(outputs, len(batch))``: one row per output (one, or one per cutoff layer)."""
