"""The layerwise family (bge-reranker-v2-minicpm-layerwise): one score per chosen decoder layer.

The forward is our own (``models/minicpm_layerwise.py``); the checkpoint's Python code is never run.
Differences from the reference, on purpose: ``cutoff_layers`` outside ``[start_layer,
num_hidden_layers]`` raise ValueError (the reference drops them with a warning), and the layers
are sorted and de-duplicated so each gets its own head (the reference pairs heads with layers
wrongly for a list that is not ascending).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..loading import load_state_dict, read_config
from ..models.minicpm_layerwise import LayerwiseConfig, LayerwiseMiniCPM, check_cutoff_layers
from ..tokenization import load_tokenizer
from .base import Encoded, ScoreOptions
from .decoder import LayeredDecoderFamily
from .decoder_text import pad_batch, pad_token_id, padding_side


class LayerwiseFamily(LayeredDecoderFamily):
    """MiniCPM reranker with a score head on every layer from ``start_layer`` to the last."""

    name = "layerwise"
    config_class = LayerwiseConfig

    model: LayerwiseMiniCPM

    @classmethod
    def load(cls, path: str, device: torch.device, dtype: torch.dtype) -> LayerwiseFamily:
        """Read ``config.json``, the tokenizer and the weights (by key name) from ``path``."""
        config = LayerwiseConfig.from_dict(read_config(path))
        tokenizer = load_tokenizer(path)
        model = LayerwiseMiniCPM.from_state_dict(config, load_state_dict(path), source=path)
        return cls(model.to(device=device, dtype=dtype), tokenizer, device, dtype)

    @classmethod
    def check_model_config(cls, config: LayerwiseConfig, options: ScoreOptions) -> None:
        """Raise ValueError for cutoff layers outside ``[start_layer, num_hidden_layers]``."""
        check_cutoff_layers(config, cls.layers_to_score(config, options))

    def forward(self, batch: Sequence[Encoded], options: ScoreOptions) -> torch.Tensor:
        """Raw scores, shape ``(len(cutoff_layers), len(batch))`` in ascending layer order, float32 on CPU."""
        layers = self.cutoff_layers(options)
        padded = pad_batch(batch, pad_token_id(self.tokenizer), padding_side(self.tokenizer), device=self.device)
        with torch.inference_mode():
            scores = self.model.score(
                padded.input_ids, padded.attention_mask, layers, padded.last_index, padded.position_ids
            )
        return scores.float().cpu()
