"""The lightweight family (bge-reranker-v2.5-gemma2-lightweight): layer-wise Gemma-2 with token compression.

Scores come from per-layer heads (``cutoff_layers``), and passage tokens can be mean-pooled
``compress_ratio`` to one at ``compress_layers`` to save compute. The forward pass is our own
(:mod:`..models.gemma2_lightweight`); input assembly is the decoders' shared one, with BOS always
prepended and padding forced to the right as in the reference.

Reference dtype quirk (FlagEmbedding ``lightweight.py`` lines 185-202 and 262-263): it forces
``use_fp16=True`` when neither fp16 nor bf16 is asked for, yet loads the 9B weights in float32
unless ``use_bf16`` (``torch_dtype=torch.bfloat16 if use_bf16 else torch.float32``), then calls
``.half()`` inside every call on any device other than ``"cpu"``. Here the core decides the dtype
as for every other family, and the weights are converted once, at load.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..inputs import describe_layers
from ..models.gemma2_lightweight import Gemma2LightweightReranker, LightweightConfig, load_lightweight
from ..tokenization import load_tokenizer
from .base import Encoded, ScoreOptions
from .decoder import LayeredDecoderFamily
from .decoder_text import pad_batch, pad_token_id

#: The lightweight reranker's own prompt (not the llm/layerwise one).
DEFAULT_PROMPT = "Predict whether passage B contains an answer to query A."
#: Compression ratios the reference supports; 1 means no compression.
COMPRESS_RATIOS = (1, 2, 4, 8)
#: Compression happens at these layers unless the caller says otherwise (reference default).
DEFAULT_COMPRESS_LAYERS = (8,)


class LightweightFamily(LayeredDecoderFamily):
    """Cost-wise Gemma-2 reranker: one raw score per cutoff layer, optionally with passage compression."""

    name = "lightweight"
    default_prompt = DEFAULT_PROMPT
    config_class = LightweightConfig
    model: Gemma2LightweightReranker

    @classmethod
    def load(cls, path: str, device: torch.device, dtype: torch.dtype) -> LightweightFamily:
        """Tokenizer plus our Gemma-2 model with the checkpoint's weights, on ``device`` in ``dtype``."""
        tokenizer = load_tokenizer(path)
        tokenizer.padding_side = "right"  # the reference forces right padding; compression relies on it
        return cls(load_lightweight(path, device, dtype), tokenizer, device, dtype)

    @classmethod
    def check_model_config(cls, config: LightweightConfig, options: ScoreOptions) -> None:
        """Reject compression ratios the reference does not support and layers this model lacks."""
        ratio = 1 if options.compress_ratio is None else options.compress_ratio
        if ratio not in COMPRESS_RATIOS:
            choices = ", ".join(map(str, COMPRESS_RATIOS))
            raise ValueError(f"compress_ratio must be one of {choices} (1 = no compression), got {ratio!r}.")
        valid = config.score_layers
        wrong = [layer for layer in cls.layers_to_score(config, options) if layer not in valid]
        if wrong:
            raise ValueError(
                f"cutoff_layers {wrong} have no score head in this model; choose from {describe_layers(valid)}."
            )
        if options.compress_layers is not None:
            wrong = [layer for layer in options.compress_layers if not 0 <= layer < config.num_hidden_layers]
            if wrong:
                raise ValueError(
                    f"compress_layers {wrong} are outside the model; choose from 0..{config.num_hidden_layers - 1} "
                    f"(compression happens before that layer runs; layer 0 compresses nothing, as in the reference)."
                )

    def forward(self, batch: Sequence[Encoded], options: ScoreOptions) -> torch.Tensor:
        """Raw soft-capped scores, float32 on CPU, shape ``(len(cutoff_layers), len(batch))``."""
        padded = pad_batch(batch, pad_token_id(self.tokenizer), "right", device=self.device, mask_dtype=self.dtype)
        prompt_lengths = [item.prompt_length for item in batch]
        # A query segment never reaches into the prompt, even for a pair cut to the model's positions.
        query_lengths = [min(item.query_length, len(item) - item.prompt_length) for item in batch]
        compress_layers = DEFAULT_COMPRESS_LAYERS if options.compress_layers is None else options.compress_layers
        with torch.inference_mode():
            scores = self.model(
                padded.input_ids,
                padded.attention_mask,
                torch.tensor(query_lengths, dtype=torch.long, device=self.device),
                torch.tensor(prompt_lengths, dtype=torch.long, device=self.device),
                cutoff_layers=self.cutoff_layers(options),
                compress_layers=tuple(compress_layers),
                compress_ratio=1 if options.compress_ratio is None else options.compress_ratio,
            )
        return scores.float().cpu()


__all__ = ["COMPRESS_RATIOS", "DEFAULT_PROMPT", "LightweightFamily"]
