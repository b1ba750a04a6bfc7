"""Gemma-2 decoder with per-layer score heads and passage token compression, in plain torch.

This is the architecture of ``BAAI/bge-reranker-v2.5-gemma2-lightweight`` (config ``model_type``
``cost_wise_gemma``). The checkpoint's own model code only runs on transformers < 4.48, so the forward
pass is written here with torch alone and the official weights are loaded by their state-dict names
(``model.layers.N.self_attn.q_proj.weight``, ``lm_head.I.linear_head.weight``, ...).

Behaviour follows FlagEmbedding 1.4.2 as it runs under transformers 4.46.3: see
``forward`` for the layer loop and ``compress_passages`` for the token compression.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..loading import load_state_dict, read_config, reference_gemma_activation
from .blocks import GatedMLP, RMSNorm, ScoreHead, activation, apply_rotary, load_onto_meta, repeat_kv, rotary_tables

logger = logging.getLogger(__name__)

MODEL_TYPE = "cost_wise_gemma"
DeviceLike = torch.device | str | None


@dataclass(frozen=True)
class LightweightConfig:
    """The ``config.json`` fields the lightweight reranker uses (Gemma-2 defaults where absent)."""

    vocab_size: int = 256000
    hidden_size: int = 3072
    intermediate_size: int = 24576
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    attention_bias: bool = False
    query_pre_attn_scalar: float = 224
    sliding_window: int | None = 4096
    final_logit_softcapping: float | None = 30.0
    layer_types: tuple[str, ...] | None = None
    start_layer: int = 28
    layer_sep: int = 28
    layer_wise: bool = False

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> LightweightConfig:
        """Build from a ``config.json`` dict, accepting both the transformers 4.x and 5.x spellings."""
        fields = {name: config[name] for name in cls.__dataclass_fields__ if name in config}
        # As the reference's Gemma-2 MLP: ``hidden_activation`` (tanh GELU when unset); ``hidden_act`` is ignored.
        fields["hidden_activation"] = reference_gemma_activation(config)
        rope = config.get("rope_parameters") or {}
        if "rope_theta" not in fields and isinstance(rope, dict) and "rope_theta" in rope:
            fields["rope_theta"] = rope["rope_theta"]
        if fields.get("layer_types") is not None:
            fields["layer_types"] = tuple(fields["layer_types"])
        return cls(**fields)

    def is_sliding(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` uses sliding-window attention (even layers in Gemma-2)."""
        if self.sliding_window is None:
            return False
        if self.layer_types is not None:
            return self.layer_types[layer] == "sliding_attention"
        return layer % 2 == 0

    @property
    def score_layers(self) -> list[int]:
        """The layers that have a score head: the valid ``cutoff_layers`` values."""
        return list(range(self.start_layer, self.num_hidden_layers + 1, self.layer_sep))


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE, scaled by ``query_pre_attn_scalar ** -0.5``.

    ``attn_logit_softcapping`` is deliberately NOT applied: the reference loads this model under
    transformers 4.46.3 with the SDPA attention classes (``Gemma2SdpaAttention``), whose forward skips the
    soft-capping that only the eager class applies. Scores match the reference only without it.
    """

    def __init__(self, config: LightweightConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = config.query_pre_attn_scalar**-0.5
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v = repeat_kv(k, v, self.heads // self.kv_heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class DecoderLayer(nn.Module):
    """Gemma-2 block: norms before and after both the attention and the MLP branch."""

    def __init__(self, config: LightweightConfig, sliding: bool):
        super().__init__()
        self.sliding = sliding
        self.self_attn = Attention(config)
        self.mlp = GatedMLP(
            config.hidden_size, config.intermediate_size, activation(config.hidden_activation, "hidden_activation")
        )
        size, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(size, eps, style="gemma")
        self.post_attention_layernorm = RMSNorm(size, eps, style="gemma")
        self.pre_feedforward_layernorm = RMSNorm(size, eps, style="gemma")
        self.post_feedforward_layernorm = RMSNorm(size, eps, style="gemma")

    def forward(self, x: torch.Tensor, masks: AttentionMasks, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        mask = masks.sliding if self.sliding else masks.full
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), mask, cos, sin))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


@dataclass
class AttentionMasks:
    """Additive 4-D masks ``(batch, 1, len, len)`` in the model dtype: 0 where allowed, dtype min elsewhere."""

    full: torch.Tensor
    sliding: torch.Tensor

    @classmethod
    def build(
        cls, lengths: torch.Tensor, length: int, dtype: torch.dtype, sliding_window: int | None
    ) -> AttentionMasks:
        """Causal + key-padding mask for right-padded rows of real ``lengths``, padded to ``length``.

        The sliding mask also hides keys ``sliding_window`` or more positions back. The blocked value is
        the dtype's finite minimum (not -inf), as in the reference, so padding rows never turn into NaN.
        """
        positions = torch.arange(length, device=lengths.device)
        causal = positions[None, :] <= positions[:, None]
        allowed = causal[None, :, :] & (positions[None, :] < lengths[:, None])[:, None, :]
        blocked = torch.finfo(dtype).min
        full = torch.zeros(allowed.shape, dtype=dtype, device=lengths.device).masked_fill(~allowed, blocked)
        sliding = full
        if sliding_window is not None and length > sliding_window:
            recent = positions[None, :] > positions[:, None] - sliding_window
            sliding = full.masked_fill(~recent[None, :, :], blocked)
        return cls(full=full[:, None], sliding=sliding[:, None])


def compress_passages(
    hidden: torch.Tensor,
    lengths: torch.Tensor,
    query_lengths: torch.Tensor,
    prompt_lengths: torch.Tensor,
    ratio: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pool each row's passage tokens in groups of ``ratio``; keep query and prompt tokens as they are.

    Rows are ``query | passage | prompt | padding`` (right padding, real ``lengths``, int64). The passage
    is the span between ``query_lengths`` and ``lengths - prompt_lengths``; a last partial group is
    averaged over its own count. Returns the rebuilt right-padded hidden states (padding zeroed) and
    the new real lengths. Example, ratio 2: ``[10,11,12 | 1,2,3,4,5 | 20,21]`` -> ``[10,11,12, 1.5,3.5,5, 20,21]``.
    """
    batch, length, _ = hidden.shape
    device = hidden.device
    passage = lengths - query_lengths - prompt_lengths
    kept = (passage + ratio - 1) // ratio
    new_real = query_lengths + kept + prompt_lengths
    new_length = int(new_real.max())
    groups = max(int(kept.max()), 1)

    # Pool: gather every group's `ratio` source tokens, weight each real one by 1/(tokens in its group).
    offsets = torch.arange(groups * ratio, device=device)[None, :]  # passage offset of each group slot
    in_passage = offsets < passage[:, None]
    source = (query_lengths[:, None] + offsets).clamp(max=length - 1)
    tokens = hidden.gather(1, source[..., None].expand(-1, -1, hidden.shape[-1]))
    counts = in_passage.view(batch, groups, ratio).sum(dim=-1, keepdim=True)
    weights = in_passage.view(batch, groups, ratio).to(hidden.dtype) / counts.clamp(min=1).to(hidden.dtype)
    pooled = (tokens.view(batch, groups, ratio, -1) * weights[..., None]).sum(dim=2)

    # Rebuild each row as query | pooled passage | prompt | zero padding.
    slots = torch.arange(new_length, device=device)[None, :]
    is_query = slots < query_lengths[:, None]
    is_pooled = ~is_query & (slots < (query_lengths + kept)[:, None])
    is_prompt = ~is_query & ~is_pooled & (slots < new_real[:, None])
    kept_source = (slots - kept[:, None] + passage[:, None]).clamp(0, length - 1)  # query or prompt token
    kept_tokens = hidden.gather(1, kept_source[..., None].expand(-1, -1, hidden.shape[-1]))
    pooled_index = (slots - query_lengths[:, None]).clamp(0, groups - 1)
    pooled_tokens = pooled.gather(1, pooled_index[..., None].expand(-1, -1, hidden.shape[-1]))
    query_tokens = hidden[:, :new_length]
    new_hidden = torch.where(is_query[..., None], query_tokens, torch.zeros((), dtype=hidden.dtype, device=device))
    new_hidden = torch.where(is_pooled[..., None], pooled_tokens, new_hidden)
    new_hidden = torch.where(is_prompt[..., None], kept_tokens, new_hidden)
    return new_hidden, new_real


class Decoder(nn.Module):
    """Embeddings, Gemma-2 layers and the final norm (the checkpoint's ``model.*`` weights)."""

    def __init__(self, config: LightweightConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, config.is_sliding(i)) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, style="gemma")


class Gemma2LightweightReranker(nn.Module):
    """The cost-wise Gemma-2 reranker: decoder plus one score head per layer from ``start_layer`` on.

    Pass ``device="meta"`` to build it without allocating weights (as :func:`load_lightweight` does).
    """

    def __init__(self, config: LightweightConfig, device: DeviceLike = None):
        super().__init__()
        if not config.layer_wise:
            raise ValueError("This checkpoint has layer_wise: false; the lightweight reranker needs layer_wise: true.")
        self.config = config
        with torch.device(device) if device is not None else nullcontext():
            self.model = Decoder(config)
            self.lm_head = nn.ModuleList(ScoreHead(config.hidden_size) for _ in config.score_layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        query_lengths: torch.Tensor,
        prompt_lengths: torch.Tensor,
        cutoff_layers: Sequence[int],
        compress_layers: Sequence[int] = (),
        compress_ratio: int = 1,
    ) -> torch.Tensor:
        """Raw scores, float32 ``(len(cutoff_layers), batch)``, for right-padded ``input_ids``.

        ``cutoff_layers`` must be distinct, ascending and among ``config.score_layers``; the i-th one
        is scored with head ``lm_head[i]`` -- by position in that list, not by layer number, exactly as
        the reference does (``CostWiseGemmaForCausalLM.forward`` applies ``lm_head[i]`` to the i-th
        collected hidden state). Layer loop, as in the reference: at layer index i, if i is a cutoff
        layer score the current state; stop at the deepest cutoff layer; if i is a compress layer
        (and not 0) compress the passage tokens; then run layer i.
        """
        config = self.config
        dtype = self.model.embed_tokens.weight.dtype
        hidden = self.model.embed_tokens(input_ids)
        # Scale by sqrt(hidden) rounded to the embedding dtype, as Gemma does.
        hidden = hidden * torch.tensor(config.hidden_size**0.5, dtype=hidden.dtype)
        # Lengths stay int64: a 0/1 mask summed in bf16 would miscount long rows.
        lengths = attention_mask.long().sum(dim=1)
        masks = AttentionMasks.build(lengths, hidden.shape[1], dtype, config.sliding_window)
        positions = torch.arange(hidden.shape[1], device=hidden.device).float()
        cos, sin = rotary_tables(config.head_dim, positions, config.rope_theta, dtype)
        deepest = cutoff_layers[-1]
        scores: list[torch.Tensor] = []
        for index, layer in enumerate(self.model.layers):
            if index in cutoff_layers:
                scores.append(self._score(len(scores), hidden, lengths))
            if index == deepest:
                break
            if compress_ratio > 1 and index in compress_layers and index != 0:
                hidden, lengths = compress_passages(hidden, lengths, query_lengths, prompt_lengths, compress_ratio)
                masks = AttentionMasks.build(lengths, hidden.shape[1], dtype, config.sliding_window)
                # Positions restart at 0, so the tables for the shorter sequence are a prefix.
                cos, sin = cos[: hidden.shape[1]], sin[: hidden.shape[1]]
            hidden = layer(hidden, masks, cos, sin)
        else:
            if deepest == config.num_hidden_layers:
                scores.append(self._score(len(scores), hidden, lengths))
        return torch.stack(scores).float()

    def _score(self, head: int, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Head ``head`` on the final-normed state of each row's last real token, soft-capped: (batch,)."""
        last = lengths - 1
        states = self.model.norm(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
        logits = self.lm_head[head](states)[:, 0]
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits


def load_lightweight(path: str | Path, device: torch.device, dtype: torch.dtype) -> Gemma2LightweightReranker:
    """Build the model from ``path/config.json`` and load its weights by their official names."""
    raw = read_config(path)
    if raw.get("model_type") != MODEL_TYPE:
        logger.warning(
            "config.json model_type is %r, expected %r; loading it as the lightweight reranker.",
            raw.get("model_type"),
            MODEL_TYPE,
        )
    config = LightweightConfig.from_dict(raw)
    model = load_onto_meta(lambda: Gemma2LightweightReranker(config), load_state_dict(path), path, "lightweight")
    return model.to(device=device, dtype=dtype)


__all__ = [
    "MODEL_TYPE",
    "AttentionMasks",
    "Gemma2LightweightReranker",
    "LightweightConfig",
    "compress_passages",
    "load_lightweight",
]
