"""MiniCPM decoder with one score head per layer (bge-reranker-v2-minicpm-layerwise), in plain torch.

Matches the reference ``LayerWiseMiniCPMForCausalLM`` as FlagEmbedding 1.4.2 runs it under
transformers 4.46.3 (SDPA attention):

- embeddings times ``scale_emb``; Llama-style pre-norm blocks (RMSNorm, RoPE, SiLU-gated MLP,
  grouped-query attention when ``num_key_value_heads < num_attention_heads``);
- each residual branch scaled by ``scale_depth / sqrt(num_hidden_layers)``;
- the score at cutoff layer L is ``head[L - start_layer](norm(hidden after L layers))``. With
  ``head_type == "simple"`` (the released checkpoint) the reference applies no ``dim_model_base``
  scaling before the heads; that scaling only exists for the vocabulary-sized head types, which
  cannot produce a relevance score and are refused here.

Module and parameter names follow the checkpoint's state-dict keys (``model.layers.3.mlp.up_proj.weight``,
``lm_head.0.linear_head.weight``, ...), so the weights load by name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import GatedMLP, RMSNorm, ScoreHead, activation, apply_rotary, load_onto_meta, repeat_kv, rotary_tables


def check_cutoff_layers(config: LayerwiseConfig, layers: Sequence[int]) -> None:
    """Raise ValueError unless every layer lies in ``[start_layer, num_hidden_layers]`` of ``config``."""
    low, high = config.start_layer, config.num_hidden_layers
    bad = [
        layer for layer in layers if not isinstance(layer, int) or isinstance(layer, bool) or not low <= layer <= high
    ]
    if bad or not layers:
        raise ValueError(f"cutoff_layers must be integers in [{low}, {high}] for this checkpoint, got {list(layers)}.")


@dataclass(frozen=True)
class LayerwiseConfig:
    """The ``config.json`` fields the layerwise forward uses (defaults as in the reference config class)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool = False
    scale_emb: float = 1.0
    dim_model_base: float = 1.0
    scale_depth: float = 1.0
    start_layer: int = 8
    head_multi: bool = True
    head_type: str = "simple"

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> LayerwiseConfig:
        """Keep the known fields of a ``config.json`` dict and check what this forward supports."""
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in config.items() if k in known and (v is not None or k == "rope_scaling")}
        result = cls(**given)
        if result.head_type != "simple":
            raise ValueError(
                f"Layerwise checkpoints with head_type={result.head_type!r} are not supported: only 'simple' "
                "(one hidden -> 1 score head per layer, as in bge-reranker-v2-minicpm-layerwise)."
            )
        activation(result.hidden_act)  # ValueError naming the supported ones
        scaling = result.rope_scaling
        if scaling is not None and scaling.get("type", scaling.get("rope_type")) not in ("linear", "dynamic"):
            raise ValueError(f"Unsupported rope_scaling {scaling!r}: only 'linear' and 'dynamic' are known to MiniCPM.")
        if result.hidden_size % result.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads.")
        return result

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (equal to the attention heads unless grouped-query attention)."""
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def residual_scale(self) -> float:
        """Factor on each residual branch."""
        return self.scale_depth / math.sqrt(self.num_hidden_layers)

    @property
    def head_count(self) -> int:
        """Number of score heads stored in the checkpoint."""
        return self.num_hidden_layers - self.start_layer + 1 if self.head_multi else 1


def rope_tables(
    config: LayerwiseConfig,
    length: int,
    dtype: torch.dtype,
    device: torch.device,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE cos/sin for ``positions`` (default ``0..length-1``), shape ``positions.shape + (head_dim,)``, float32.

    ``length`` is the padded sequence length (dynamic scaling depends on it). The tables are
    computed in float32 and rounded to the model's dtype, then held in float32: the reference's
    SDPA attention applies them to queries and keys in float32.
    """
    dim = config.head_dim
    base = float(config.rope_theta)
    positions = torch.arange(length, device=device) if positions is None else positions
    positions = positions.to(device=device, dtype=torch.float32)
    scaling = config.rope_scaling or {}
    kind, factor = scaling.get("type", scaling.get("rope_type")), float(scaling.get("factor", 1.0))
    if kind == "linear":
        positions = positions / factor
    elif kind == "dynamic" and length > config.max_position_embeddings:
        base = base * ((factor * length / config.max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    cos, sin = rotary_tables(dim, positions, base, dtype)
    return cos.float(), sin.float()


class Attention(nn.Module):
    """Causal self-attention with RoPE and optional grouped-query heads, through SDPA."""

    def __init__(self, config: LayerwiseConfig):
        super().__init__()
        self.config = config
        hidden, head_dim = config.hidden_size, config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(hidden, config.num_attention_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, config.kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, config.kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(config.num_attention_heads * head_dim, hidden, bias=bias)

    def forward(
        self, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``mask`` is an additive (batch, 1, seq, seq) mask in the model's dtype, or None for plain causal."""
        batch, length, _ = hidden.shape
        cfg = self.config
        q = self.q_proj(hidden).view(batch, length, cfg.num_attention_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(hidden).view(batch, length, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(hidden).view(batch, length, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        k, v = repeat_kv(k, v, cfg.num_attention_heads // cfg.kv_heads)
        if mask is not None and hidden.device.type == "cuda":
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and length > 1)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, cfg.hidden_size))


class DecoderLayer(nn.Module):
    """Pre-norm block whose two residual branches are scaled by ``scale_depth / sqrt(layers)``."""

    def __init__(self, config: LayerwiseConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, activation(config.hidden_act))
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, style="llama")
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, style="llama")
        self.scale = config.residual_scale

    def forward(
        self, hidden: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Run attention then MLP, each added back to the residual stream."""
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), rope, mask) * self.scale
        return hidden + self.mlp(self.post_attention_layernorm(hidden)) * self.scale


class Decoder(nn.Module):
    """Embeddings, decoder layers and the final norm (the checkpoint's ``model.*`` keys)."""

    def __init__(self, config: LayerwiseConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, style="llama")


def attention_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive causal + padding mask (batch, 1, seq, seq) in ``dtype``, or None when nothing is padded.

    Blocked entries hold the dtype's lowest finite value, so a padding row that can see nothing
    gets a uniform (finite) softmax instead of NaN, as in the reference's SDPA mask; with no padding
    the reference passes no mask and lets SDPA apply the causal rule, and so do we.
    """
    if bool(attention_mask.all()):
        return None
    length = attention_mask.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


class LayerwiseMiniCPM(nn.Module):
    """The full layerwise reranker: ``model`` (decoder) and ``lm_head`` (score heads)."""

    def __init__(self, config: LayerwiseConfig):
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = nn.ModuleList(ScoreHead(config.hidden_size) for _ in range(config.head_count))

    @classmethod
    def from_state_dict(
        cls, config: LayerwiseConfig, state: dict[str, torch.Tensor], source: str | os.PathLike[str] = "checkpoint"
    ) -> LayerwiseMiniCPM:
        """The model around the checkpoint's tensors (no random initialization); each of its weights must be there."""
        if not config.head_multi and "lm_head.linear_head.weight" in state:
            state = {
                ("lm_head.0.linear_head.weight" if k == "lm_head.linear_head.weight" else k): v
                for k, v in state.items()
            }
        return load_onto_meta(lambda: cls(config), state, source, "layerwise")

    def check_layers(self, layers: Sequence[int]) -> None:
        """Raise ValueError unless every layer lies in ``[start_layer, num_hidden_layers]``."""
        check_cutoff_layers(self.config, layers)

    def score(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        layers: Sequence[int],
        token_index: torch.Tensor,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores (len(layers), batch) in the model's dtype at ``token_index`` of each row.

        ``layers`` must be ascending and valid (see :meth:`check_layers`); the forward stops after
        the deepest one. Positions are ``position_ids`` (batch, seq), else 0..seq-1 whatever the
        padding, as in the reference.
        """
        cfg = self.config
        dtype = self.model.embed_tokens.weight.dtype
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        mask = attention_bias(attention_mask, dtype)
        cos, sin = rope_tables(cfg, input_ids.shape[1], dtype, input_ids.device, position_ids)
        rope = (cos, sin) if position_ids is None else (cos[:, None], sin[:, None])
        hidden = self.model.embed_tokens(input_ids) * cfg.scale_emb
        wanted, scores = set(layers), []
        for depth in range(max(layers) + 1):
            if depth in wanted:
                pooled = self.model.norm(hidden[rows, token_index])
                head = self.lm_head[depth - cfg.start_layer if cfg.head_multi else 0]
                scores.append(head(pooled).squeeze(-1))
            if depth < max(layers):
                hidden = self.model.layers[depth](hidden, rope, mask)
        return torch.stack(scores)
