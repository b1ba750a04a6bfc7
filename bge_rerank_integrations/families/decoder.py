"""What the decoder families (llm, layerwise, lightweight) share: instructions, prompt, inputs, layers."""

from __future__ import annotations

from typing import ClassVar, Sequence

from .base import Encoded, RerankerFamily, ScoreOptions
from .decoder_text import (
    DEFAULT_PASSAGE_INSTRUCTION,
    DEFAULT_PROMPT,
    DEFAULT_QUERY_INSTRUCTION,
    BosRule,
    encode_pairs,
)


class DecoderFamily(RerankerFamily):
    """A decoder reranker: ``[bos] A: q \\n B: p \\n prompt`` scored at the last real token."""

    default_query_instruction = DEFAULT_QUERY_INSTRUCTION
    default_passage_instruction = DEFAULT_PASSAGE_INSTRUCTION
    #: The prompt used when the caller gives none.
    default_prompt: ClassVar[str] = DEFAULT_PROMPT
    #: When a BOS token starts the sequence (see ``decoder_text.bos_ids``).
    bos: ClassVar[BosRule] = "always"

    def encode(self, pairs: Sequence[tuple[str, str]], options: ScoreOptions) -> list[Encoded]:
        """Assemble each pair with the reference's truncation; never longer than ``max_positions``."""
        prompt = self.default_prompt if options.prompt is None else options.prompt
        return encode_pairs(
            self.tokenizer, pairs, prompt, options.max_length, options.query_max_length, self.max_positions, bos=self.bos,
            batch_size=options.batch_size,
        )


class LayeredDecoderFamily(DecoderFamily):
    """A decoder with a score head per layer (layerwise, lightweight): one score list per cutoff layer."""

    @property
    def max_positions(self) -> int:
        """The config's ``max_position_embeddings``."""
        return self.model.config.max_position_embeddings

    def cutoff_layers(self, options: ScoreOptions) -> list[int]:
        """The scored layers, distinct and ascending; the last layer when none are given (as in the reference)."""
        if options.cutoff_layers is None:
            return [self.model.config.num_hidden_layers]
        return sorted(set(options.cutoff_layers))

