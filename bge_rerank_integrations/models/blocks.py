"""The decoder blocks our own forward passes share: RMSNorm, rotary tables, the gated MLP, weight loading.

Each block is written once and parametrized where the reference models differ in their numerics
(Gemma's RMSNorm scales by ``1 + weight`` in float32, MiniCPM's by ``weight`` after the cast back;
MiniCPM applies RoPE in float32, Gemma in the model dtype), so every model keeps its reference's
exact rounding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..loading import check_weights, compare_state_dict

Activation = Callable[[torch.Tensor], torch.Tensor]
ModelT = TypeVar("ModelT", bound=nn.Module)


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


#: The MLP activations a config may name (``hidden_act`` / ``hidden_activation``), as transformers spells them.
ACTIVATIONS: dict[str, Activation] = {
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": _tanh_gelu,
    "gelu_new": _tanh_gelu,
    "gelu_fast": _tanh_gelu,
    "gelu_tanh": _tanh_gelu,
}


def activation(name: str, field: str = "hidden_act") -> Activation:
    """The activation function a config's ``field`` names; ValueError naming the supported ones otherwise.

    >>> activation("silu") is F.silu
    True
    >>> activation("mish")
    Traceback (most recent call last):
    ...
    ValueError: Unsupported hidden_act 'mish'; supported: gelu, gelu_fast, ..., silu, swish.
    """
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unsupported {field} {name!r}; supported: {', '.join(sorted(ACTIVATIONS))}.") from None


class RMSNorm(nn.Module):
    """Root-mean-square norm of the last dimension; the statistics always in float32.

    ``style`` picks the reference's rounding: ``"gemma"`` scales by ``1 + weight`` in float32 and
    then casts to the input dtype (weights start at 0); ``"llama"`` (MiniCPM) casts back first and
    scales by ``weight`` in the model dtype (weights start at 1).

    >>> norm = RMSNorm(2, eps=0.0, style="gemma")
    >>> norm(torch.tensor([[3.0, 4.0]])).tolist() == RMSNorm(2, 0.0, style="llama")(torch.tensor([[3.0, 4.0]])).tolist()
    True
    """

    def __init__(self, size: int, eps: float, style: Literal["gemma", "llama"]):
        super().__init__()
        if style not in ("gemma", "llama"):
            raise ValueError(f"RMSNorm style must be 'gemma' or 'llama', got {style!r}.")
        self.eps = eps
        self.unit_offset = style == "gemma"
        self.weight = nn.Parameter(torch.zeros(size) if self.unit_offset else torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` over its last dimension; the result has ``x``'s dtype."""
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:
            return (h * (1.0 + self.weight.float())).type_as(x)
        return h.to(x.dtype) * self.weight


def rotary_tables(
    head_dim: int, positions: torch.Tensor, base: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE ``(cos, sin)`` of shape ``positions.shape + (head_dim,)``, computed in float32 and rounded to ``dtype``.

    ``positions`` are float32 (already scaled, for linear RoPE scaling); ``base`` is the rope theta.

    >>> cos, sin = rotary_tables(4, torch.arange(3).float(), 10000.0, torch.float32)
    >>> cos.shape, cos[0].tolist(), round(sin[1, 0].item(), 4)
    (torch.Size([3, 4]), [1.0, 1.0, 1.0, 1.0], 0.8415)
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (base**exponents)
    angles = positions[..., None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(-second half, first half)`` of the last dimension, the rotation RoPE pairs with ``sin``."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on ``x`` (batch, heads, seq, head_dim), computed in the tables' dtype and cast back to ``x``'s.

    Tables in the model dtype rotate in that dtype (Gemma); float32 tables rotate in float32 (MiniCPM).
    """
    h = x.to(cos.dtype)
    return (h * cos + rotate_half(h) * sin).to(x.dtype)


def repeat_kv(keys: torch.Tensor, values: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each key/value head ``groups`` times along dim 1 (grouped-query attention)."""
    if groups > 1:
        return keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    return keys, values


class GatedMLP(nn.Module):
    """Gated feed-forward without biases: ``down(act(gate(x)) * up(x))`` (SwiGLU, GeGLU, ...)."""

    def __init__(self, hidden_size: int, intermediate_size: int, act: Activation):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated MLP."""
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class ScoreHead(nn.Module):
    """One hidden -> 1 score map without bias (the checkpoints' ``lm_head.<i>.linear_head``)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear_head = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Score each hidden vector: shape ``hidden.shape[:-1] + (1,)``."""
        return self.linear_head(hidden)


def load_onto_meta(
    build: Callable[[], ModelT],
    state: Mapping[str, torch.Tensor],
    source: str | os.PathLike[str],
    family: str,
) -> ModelT:
    """``build()`` on the meta device (no memory, no random init), then the checkpoint's tensors assigned by name.

    Weights the model lacks or that have the wrong shape raise ``CheckpointError``; tensors the model
    does not have follow the rule of :func:`..loading.check_weights` for ``family``. Returns the model
    in eval mode, in the checkpoint's dtype on the checkpoint's device.
    """
    with torch.device("meta"):
        model = build()
    missing, unexpected, mismatched = compare_state_dict(model, dict(state))
    check_weights(source, family, missing, unexpected, mismatched)
    model.load_state_dict({name: state[name] for name in model.state_dict()}, strict=True, assign=True)
    return model.eval()


__all__ = [
    "ACTIVATIONS",
    "GatedMLP",
    "RMSNorm",
    "ScoreHead",
    "activation",
    "apply_rotary",
    "load_onto_meta",
    "repeat_kv",
    "rotary_tables",
    "rotate_half",
]
