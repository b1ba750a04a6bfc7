"""The layerwise family (bge-reranker-v2-minicpm-layerwise): one score per chosen decoder layer.

The forward is our own (``models/minicpm_layerwise.py``); the checkpoint's Python code is never run.
Differences from the reference, on purpose: ``cutoff_layers`` outside ``[start_layer,
num_hidden_layers]`` raise ValueError (the reference drops them with a warning), and the layers
are sorted and de-duplicated so each gets its own head (the reference pairs heads with layers
wrongly for a list that is not ascending).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from ..loading import load_state_dict, read_config
from ..models.minicpm_layerwise import LayerwiseConfig, LayerwiseMiniCPM
from .base import Encoded, RerankerFamily, ScoreOptions
from .decoder_text import (
    DEFAULT_PASSAGE_INSTRUCTION,
    DEFAULT_PROMPT,
    DEFAULT_QUERY_INSTRUCTION,
    encode_pairs,
    pad_batch,
    pad_token_id,
    padding_side,
)

logger = logging.getLogger(__name__)


class LayerwiseFamily(RerankerFamily):
    """MiniCPM reranker with a score head on every layer from ``start_layer`` to the last."""

    name = "layerwise"
    extra_options = frozenset({"prompt", "cutoff_layers"})
    default_query_instruction = DEFAULT_QUERY_INSTRUCTION
    default_passage_instruction = DEFAULT_PASSAGE_INSTRUCTION

    model: LayerwiseMiniCPM

    @classmethod
    def load(cls, path: str, device: torch.device, dtype: torch.dtype) -> "LayerwiseFamily":
        """Read ``config.json``, the tokenizer and the weights (by key name) from ``path``."""
        from transformers import AutoTokenizer

        config = LayerwiseConfig.from_dict(read_config(path))
        tokenizer: Any = AutoTokenizer.from_pretrained(str(Path(path)), trust_remote_code=False)
        model = LayerwiseMiniCPM.from_state_dict(config, load_state_dict(path))
        return cls(model.to(device=device, dtype=dtype), tokenizer, device, dtype)

    @property
    def max_positions(self) -> int:
        """The config's ``max_position_embeddings``."""
        return self.model.config.max_position_embeddings

    def cutoff_layers(self, options: ScoreOptions) -> list[int]:
        """The chosen layers, ascending and unique; the last layer when none are given."""
        if options.cutoff_layers is None:
            return [self.model.config.num_hidden_layers]
        layers = [options.cutoff_layers] if isinstance(options.cutoff_layers, int) else list(options.cutoff_layers)
        self.model.check_layers(layers)
        return sorted(set(layers))

    def check_options(self, options: ScoreOptions) -> None:
        """Raise ValueError for cutoff layers outside ``[start_layer, num_hidden_layers]``."""
        self.cutoff_layers(options)

    def output_count(self, options: ScoreOptions) -> int:
        """One score list per distinct cutoff layer."""
        return len(self.cutoff_layers(options))

    def encode(self, pairs: Sequence[tuple[str, str]], options: ScoreOptions) -> list[Encoded]:
        """Assemble ``<bos> q \\n p \\n prompt`` with the reference's truncation (BOS always)."""
        prompt = DEFAULT_PROMPT if options.prompt is None else options.prompt
        return encode_pairs(
            self.tokenizer, pairs, prompt, options.max_length, options.query_max_length, self.max_positions, bos="always"
        )

    def forward(self, batch: Sequence[Encoded], options: ScoreOptions) -> torch.Tensor:
        """Raw scores, shape ``(len(cutoff_layers), len(batch))`` in ascending layer order, float32 on CPU."""
        layers = self.cutoff_layers(options)
        padded = pad_batch(batch, pad_token_id(self.tokenizer), padding_side(self.tokenizer), device=self.device)
        with torch.inference_mode():
            scores = self.model.score(padded.input_ids, padded.attention_mask, layers, padded.last_index)
        return scores.float().cpu()
