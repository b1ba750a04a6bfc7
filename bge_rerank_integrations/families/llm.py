"""The llm family (bge-reranker-v2-gemma): a causal LM whose score is the logit of "Yes".

The reference computes full-vocabulary logits at every position and keeps one number. We run
only the base decoder, take the final hidden state of each row's last real token, and dot it
with the single ``lm_head`` row of the "Yes" token: the same value without the
(batch x seq x vocabulary) logits tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from ..loading import check_loading_info, read_config, reference_gemma_activation, transformers_load_kwargs
from ..tokenization import load_tokenizer
from .base import Encoded, ScoreOptions
from .decoder import DecoderFamily
from .decoder_text import pad_batch, pad_token_id, padding_side


def load_causal_lm(path: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """Tokenizer and causal LM from a local checkpoint directory, never running checkpoint code."""
    from transformers import AutoConfig, AutoModelForCausalLM

    load_kwargs = transformers_load_kwargs(path, dtype)
    tokenizer = load_tokenizer(path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if config.model_type == "gemma":  # the reference's activation on every transformers version
        config.hidden_act = config.hidden_activation = reference_gemma_activation(read_config(path))
    # output_loading_info=True (in load_kwargs) makes it return (model, info); transformers' stubs say a model.
    model, info = cast(Any, AutoModelForCausalLM.from_pretrained(path, config=config, **load_kwargs))
    check_loading_info(info, path, LLMFamily.name)
    return tokenizer, model.eval()


class LLMFamily(DecoderFamily):
    """Gemma-style causal LM reranker: score = logit of "Yes" after the prompt."""

    name = "llm"
    bos = "auto"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, device: torch.device, dtype: torch.dtype):
        super().__init__(model, tokenizer, device, dtype)
        ids = tokenizer("Yes", add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError("The tokenizer turns 'Yes' into no tokens; this checkpoint cannot be an llm reranker.")
        self.yes_id = int(ids[0])
        config = model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self._max_positions = int(getattr(config, "max_position_embeddings", None) or 8192)

    @classmethod
    def load(cls, path: str, device: torch.device, dtype: torch.dtype) -> LLMFamily:
        """Load tokenizer and causal LM from ``path`` onto ``device`` in ``dtype``."""
        tokenizer, model = load_causal_lm(str(path), dtype)
        return cls(model.to(device), tokenizer, device, dtype)

    @property
    def max_positions(self) -> int:
        """The config's ``max_position_embeddings``."""
        return self._max_positions

    def forward(self, batch: Sequence[Encoded], options: ScoreOptions) -> torch.Tensor:
        """Raw "Yes" logits, shape ``(1, len(batch))``, float32 on CPU."""
        padded = pad_batch(batch, pad_token_id(self.tokenizer), padding_side(self.tokenizer), device=self.device)
        decoder = self.model.get_decoder()
        head = self.model.get_output_embeddings()
        with torch.inference_mode():
            # The 0/1 mask stays an integer tensor: transformers builds the additive mask in the
            # model's dtype itself. Positions are those of the reference's batches (see encode).
            out = decoder(
                input_ids=padded.input_ids,
                attention_mask=padded.attention_mask,
                position_ids=padded.position_ids,
                use_cache=False,
            )
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            last = hidden[torch.arange(hidden.shape[0], device=hidden.device), padded.last_index]
            scores = last @ head.weight[self.yes_id]
            if getattr(head, "bias", None) is not None:
                scores = scores + head.bias[self.yes_id]
            if self.softcap:  # Gemma-2 style final soft-capping, as its causal LM applies to logits
                scores = torch.tanh(scores / self.softcap) * self.softcap
        return scores.float().cpu().unsqueeze(0)
