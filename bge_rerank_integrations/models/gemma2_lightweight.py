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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..loading import load_state_dict, read_config, reference_gemma_activation

logger = logging.getLogger(__name__)

MODEL_TYPE = "cost_wise_gemma"
DeviceLike = Union[torch.device, str, None]


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
    def from_dict(cls, config: dict[str, Any]) -> "LightweightConfig":
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


class RMSNorm(nn.Module):
    """Gemma RMSNorm: computed in float32, scaled by ``1 + weight``, cast back to the input dtype."""

    def __init__(self, size: int, eps: float, device: DeviceLike = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(size, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).type_as(x)


class Linear(nn.Module):
    """``nn.Linear`` without random initialisation: every weight comes from the checkpoint."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, device: DeviceLike = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device))
        self.register_parameter("bias", nn.Parameter(torch.empty(out_features, device=device)) if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    """``nn.Embedding`` without random initialisation."""

    def __init__(self, count: int, size: int, device: DeviceLike = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(count, size, device=device))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


def _activation(name: str):
    """The MLP gate activation named by the config."""
    if name in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu
    raise ValueError(f"Unsupported hidden_activation {name!r}: expected 'gelu_pytorch_tanh' or 'gelu'.")


class MLP(nn.Module):
    """GeGLU feed-forward: ``down(act(gate(x)) * up(x))``."""

    def __init__(self, config: LightweightConfig, device: DeviceLike = None):
        super().__init__()
        self.gate_proj = Linear(config.hidden_size, config.intermediate_size, device=device)
        self.up_proj = Linear(config.hidden_size, config.intermediate_size, device=device)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, device=device)
        self.act = _activation(config.hidden_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_tables(config: LightweightConfig, length: int, dtype: torch.dtype, device: torch.device):
    """RoPE cos/sin for positions ``0..length-1``, computed in float32 and cast to ``dtype``: (length, head_dim)."""
    exponents = torch.arange(0, config.head_dim, 2, dtype=torch.int64, device=device).float() / config.head_dim
    inv_freq = 1.0 / (config.rope_theta**exponents)
    angles = torch.arange(length, device=device).float()[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE, scaled by ``query_pre_attn_scalar ** -0.5``.

    ``attn_logit_softcapping`` is deliberately NOT applied: the reference loads this model under
    transformers 4.46.3 with the SDPA attention classes (``Gemma2SdpaAttention``), whose forward skips the
    soft-capping that only the eager class applies. Scores match the reference only without it.
    """

    def __init__(self, config: LightweightConfig, device: DeviceLike = None):
        super().__init__()
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = config.query_pre_attn_scalar**-0.5
        kwargs = {"bias": config.attention_bias, "device": device}
        self.q_proj = Linear(config.hidden_size, self.heads * self.head_dim, **kwargs)
        self.k_proj = Linear(config.hidden_size, self.kv_heads * self.head_dim, **kwargs)
        self.v_proj = Linear(config.hidden_size, self.kv_heads * self.head_dim, **kwargs)
        self.o_proj = Linear(self.heads * self.head_dim, config.hidden_size, **kwargs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        groups = self.heads // self.kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class DecoderLayer(nn.Module):
    """Gemma-2 block: norms before and after both the attention and the MLP branch."""

    def __init__(self, config: LightweightConfig, sliding: bool, device: DeviceLike = None):
        super().__init__()
        self.sliding = sliding
        self.self_attn = Attention(config, device)
        self.mlp = MLP(config, device)
        size, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(size, eps, device)
        self.post_attention_layernorm = RMSNorm(size, eps, device)
        self.pre_feedforward_layernorm = RMSNorm(size, eps, device)
        self.post_feedforward_layernorm = RMSNorm(size, eps, device)

    def forward(self, x: torch.Tensor, masks: "AttentionMasks", cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
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
    ) -> "AttentionMasks":
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

    def __init__(self, config: LightweightConfig, device: DeviceLike = None):
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, device=device)
        self.layers = nn.ModuleList(
            DecoderLayer(config, config.is_sliding(i), device) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, device)


class ScoreHead(nn.Module):
    """One per-layer head, hidden -> 1 (``lm_head.I.linear_head``)."""

    def __init__(self, hidden_size: int, device: DeviceLike = None):
        super().__init__()
        self.linear_head = Linear(hidden_size, 1, device=device)


class Gemma2LightweightReranker(nn.Module):
    """The cost-wise Gemma-2 reranker: decoder plus one score head per layer from ``start_layer`` on.

    Pass ``device="meta"`` to build it without allocating weights (then load them with ``assign=True``).
    """

    def __init__(self, config: LightweightConfig, device: DeviceLike = None):
        super().__init__()
        if not config.layer_wise:
            raise ValueError("This checkpoint has layer_wise: false; the lightweight reranker needs layer_wise: true.")
        self.config = config
        self.model = Decoder(config, device)
        self.lm_head = nn.ModuleList(ScoreHead(config.hidden_size, device) for _ in config.score_layers)

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
        cos, sin = rotary_tables(config, hidden.shape[1], dtype, hidden.device)
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
        logits = self.lm_head[head].linear_head(states)[:, 0]
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
    # Built on "meta" (no memory, no random init), then the checkpoint tensors are assigned.
    model = Gemma2LightweightReranker(config, device="meta")
    state = load_state_dict(path)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(
            f"Checkpoint {str(path)!r} lacks {len(missing)} lightweight reranker weights, e.g. {missing[:3]}."
        )
    # "lm_head.weight" can appear when the embeddings were tied on save; the score heads never use it.
    unexpected = sorted(set(state) - expected - {"lm_head.weight"})
    if unexpected:
        logger.warning("Ignoring %d unused weights in %s, e.g. %s", len(unexpected), path, unexpected[:3])
    model.load_state_dict({name: state[name] for name in expected}, strict=True, assign=True)
    del state
    return model.to(device=device, dtype=dtype).eval()


__all__ = [
    "MODEL_TYPE",
    "LightweightConfig",
    "Gemma2LightweightReranker",
    "AttentionMasks",
    "compress_passages",
    "load_lightweight",
]
