"""What the decoder families (llm, layerwise, lightweight) share: instructions, prompt, inputs, layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

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

    def encode(
        self, pairs: Sequence[tuple[str, str]], options: ScoreOptions, passage_starts: Sequence[int] | None = None
    ) -> list[Encoded]:
        """Assemble each pair (or each window of a long passage) with the reference's truncation and prompt;
        never longer than ``max_positions``."""
        prompt = self.default_prompt if options.prompt is None else options.prompt
        return encode_pairs(
            self.tokenizer,
            pairs,
            prompt,
            options.max_length,
            options.query_max_length,
            self.max_positions,
            bos=self.bos,
            batch_size=options.batch_size,
            max_chunks=options.max_chunks_per_passage,
            chunk_overlap=options.chunk_overlap,
            passage_starts=passage_starts,
        )


class LayeredDecoderFamily(DecoderFamily):
    """A decoder with a score head per layer (layerwise, lightweight): one score list per cutoff layer.

    Its option checks read only the model's config (``check_model_config``), so they are made the
    same way on a loaded model (``check_options``) and on a checkpoint's ``config.json`` before
    loading (``check_config``).
    """

    #: The model's config class, with ``from_dict(config_json)``.
    config_class: ClassVar[Any]

    @classmethod
    def check_model_config(cls, config: Any, options: ScoreOptions) -> None:
        """Raise ValueError for option values a model with this config cannot take."""

    @classmethod
    def check_config(cls, config: dict[str, Any], options: ScoreOptions) -> None:
        cls.check_model_config(cls.config_class.from_dict(config), options)

    def check_options(self, options: ScoreOptions) -> None:
        self.check_model_config(self.model.config, options)

    @classmethod
    def score_layers(cls, config: dict[str, Any]) -> list[int]:
        """The layers with a score head (the valid ``cutoff_layers``) of a checkpoint with this ``config.json``."""
        model_config = cls.config_class.from_dict(config)
        every = range(model_config.start_layer, model_config.num_hidden_layers + 1)
        return list(getattr(model_config, "score_layers", every))

    @staticmethod
    def layers_to_score(config: Any, options: ScoreOptions) -> list[int]:
        """The scored layers, distinct and ascending; the last layer when none are given (as in the reference)."""
        if options.cutoff_layers is None:
            return [config.num_hidden_layers]
        return sorted(set(options.cutoff_layers))

    @property
    def max_positions(self) -> int:
        """The config's ``max_position_embeddings``."""
        return self.model.config.max_position_embeddings

    def cutoff_layers(self, options: ScoreOptions) -> list[int]:
        """The scored layers, distinct and ascending; the last layer when none are given (as in the reference)."""
        return self.layers_to_score(self.model.config, options)
