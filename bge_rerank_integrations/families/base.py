"""The interface every model family implements, and the records it works with.

The core (``BGEReranker``) owns everything that is the same for all families:
input checks, option merging, instructions, batching, OOM handling, normalisation
and the result shape. A family owns what differs: how a checkpoint is loaded, how a
(query, passage) pair becomes token ids, and how a padded batch becomes raw scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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
    ``window`` numbers the windows of one passage (0 for the first, or only, one: the windows of a
    passage follow each other in ``encode``'s result) and ``span`` is the window's character range in
    the passage (``None`` when the passage is scored whole), see ``chunking``.
    """

    input_ids: list[int]
    query_length: int = 0
    prompt_length: int = 0
    position_offset: int = 0
    window: int = 0
    span: tuple[int, int] | None = None

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
    def load(cls, path: str, device: torch.device, dtype: torch.dtype) -> RerankerFamily:
        """Load tokenizer and weights from a local checkpoint directory onto ``device`` in ``dtype``."""

    @property
    @abstractmethod
    def max_positions(self) -> int:
        """The longest token sequence the model can take."""

    def check_options(self, options: ScoreOptions) -> None:  # noqa: B027 - optional hook: most families check nothing
        """Raise ValueError for option values this model cannot take (layers out of range, ...)."""

    @classmethod  # noqa: B027 - optional hook: families without config-only checks keep it empty
    def check_config(cls, config: dict[str, Any], options: ScoreOptions) -> None:
        """``check_options`` before loading: raise ValueError for option values that a checkpoint with
        this ``config.json`` cannot take (what can be told from the config alone)."""

    @abstractmethod
    def encode(
        self, pairs: Sequence[tuple[str, str]], options: ScoreOptions, passage_starts: Sequence[int] | None = None
    ) -> list[Encoded]:
        """Tokenize pairs whose instructions are already applied, truncating as the reference does.

        With ``options.max_chunks_per_passage > 1`` a passage that truncation would cut gives up to
        that many windows (consecutive ``Encoded`` with ``window`` 0, 1, ...); ``passage_starts``
        says where each passage starts in its text, after its instruction (0 when not given).
        No returned sequence may exceed ``max_positions``.
        """

    @abstractmethod
    def forward(self, batch: Sequence[Encoded], options: ScoreOptions) -> torch.Tensor:
        """Pad ``batch`` and return raw scores as float32 on CPU, shape ``(outputs, len(batch))``: one row per output (one, or one per cutoff layer)."""
