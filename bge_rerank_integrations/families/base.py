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


@dataclass(frozen=True)
class ScoreOptions:
    """Every scoring option of one call, after constructor defaults and per-call overrides merge.

    Family-specific options are ``None`` unless the caller set them; a family fills in its
    own defaults (for example the default prompt or ``cutoff_layers``).
    """

    normalize: bool = False
    max_length: int = 512
    query_max_length: int = 384
    batch_size: int = 128
    query_instruction_for_rerank: str | None = None
    passage_instruction_for_rerank: str | None = None
    query_instruction_format: str = "{}{}"
    passage_instruction_format: str = "{}{}"
    prompt: str | None = None
    cutoff_layers: tuple[int, ...] | None = None
    compress_ratio: int | None = None
    compress_layers: tuple[int, ...] | None = None
    #: Long passages: up to this many windows per passage, the best one scores it (1 = truncate, as the reference).
    max_chunks_per_passage: int = 1
    #: Tokens shared by consecutive windows; ``None``: an eighth of a window (``chunking.default_overlap``).
    chunk_overlap: int | None = None
    #: Cut each passage to this many of its own tokens before anything else (Cohere v2's/vLLM's ``max_tokens_per_doc``).
    max_tokens_per_passage: int | None = None


#: Options that only some families take; a family lists the ones it accepts in ``extra_options``.
FAMILY_SPECIFIC_OPTIONS = frozenset({"prompt", "cutoff_layers", "compress_ratio", "compress_layers"})


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

    Subclasses set ``name`` and ``extra_options`` and implement ``load``, ``encode`` and
    ``forward``. An instance is shared by every reranker that loads the same checkpoint on
    the same device in the same dtype (see ``model_cache``); it must not hold per-call state.
    """

    #: Family name used by ``model_class`` and in messages.
    name: ClassVar[str]
    #: Family-specific option names this family accepts (subset of FAMILY_SPECIFIC_OPTIONS).
    extra_options: ClassVar[frozenset[str]] = frozenset()
    #: Instructions used when the caller gives none (the decoders' "A: " / "B: ").
    default_query_instruction: ClassVar[str | None] = None
    default_passage_instruction: ClassVar[str | None] = None

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: torch.device, dtype: torch.dtype):
        self.model = model
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

    def output_count(self, options: ScoreOptions) -> int:
        """How many score lists one call returns (several cutoff layers give several)."""
        return 1

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
        """Pad ``batch`` and return raw scores as float32 on CPU, shape ``(output_count, len(batch))``."""
