"""int8 on CPU (``quantization="int8"``): the one place that turns a loaded model's linear layers to int8.

Chosen by measurement on real weights (all-MiniLM-L6-v2 as a cross-encoder, 50 RAG pairs, Kendall
tau against its own float32 scores; ``benchmarks/precision.py``):

- torch's eager dynamic int8 (per-tensor 7-bit activations): 2.3x, tau 0.74; per-channel weights: tau 0.82;
- torchao's int8 dynamic-activation/int8-weight (per-token): tau 0.93 but 1.2x in eager mode;
- here: per-channel int8 weights, activations quantized per token to 8 bits at run time, and
  SmoothQuant (activation outliers moved into the weights, alpha 0.6, calibrated once at load on a
  few built-in pairs): tau 0.96 at about 2x, on the same integer kernels (oneDNN / FBGEMM, VNNI/AMX).

The model's heads (classifier, pooler, ``lm_head``, score heads) stay float32: they are a small
share of the work and the score is read straight off them. Quantization happens once, when the
model is loaded (a ``model_cache`` entry of its own); nothing is re-quantized per call.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

from .device import cpu_has_int8_tiles, cpu_has_vnni

logger = logging.getLogger(__name__)

#: The values ``quantization`` takes (``None``: the model's own precision).
QUANTIZATIONS = ("int8",)
#: Modules whose name has one of these parts keep their precision (the score is read off them).
KEPT_MODULES = frozenset({"classifier", "pooler", "lm_head", "score", "linear_head"})
#: SmoothQuant's migration strength: 0 leaves outliers in the activations, 1 moves them all into the weights.
SMOOTHING_ALPHA = 0.6
#: Pairs the activation ranges are calibrated on, once per load (general text, not any test or benchmark set).
CALIBRATION_PAIRS = [
    ("how tall is mount everest?", "Mount Everest is 8,849 metres high, on the border of Nepal and China."),
    (
        "who painted the mona lisa",
        "Leonardo da Vinci painted the Mona Lisa in the early sixteenth century; it hangs in the Louvre.",
    ),
    ("python list comprehension", "A list comprehension builds a list from an iterable: [x * x for x in range(10)]."),
    ("what is inflation", "Inflation is the rate at which the general level of prices for goods and services rises."),
    ("symptoms of flu", "Influenza causes fever, cough, sore throat, muscle aches and fatigue over several days."),
    ("how do vaccines work", "Vaccines train the immune system to recognise a pathogen without causing the disease."),
    ("capital of australia", "Canberra is the capital city of Australia, not Sydney, which is the largest city."),
    (
        "what is a black hole",
        "A black hole is a region of spacetime where gravity is so strong that nothing can escape.",
    ),
    ("Wie spät ist es in Tokio?", "Tokio liegt in der Zeitzone UTC+9 und kennt keine Sommerzeit."),
    ("best way to learn guitar", "Practice chords daily, start slowly with a metronome, and learn songs you enjoy."),
]


def check_quantization(quantization: str | None, device: torch.device) -> str | None:
    """``quantization`` checked against ``device``: ``None`` or ``"int8"``, and int8 only on CPU.

    >>> check_quantization("int8", torch.device("cpu")), check_quantization(None, torch.device("cuda"))
    ('int8', None)
    """
    if quantization is None:
        return None
    if not isinstance(quantization, str) or quantization.lower() not in QUANTIZATIONS:
        raise ValueError(f"quantization must be None or 'int8', got {quantization!r}.")
    if device.type != "cpu":
        raise ValueError(
            f"quantization='int8' runs on CPU only, and this reranker is on {device.type!r}: on a GPU or MPS "
            "use use_fp16=True or use_bf16=True instead (or device='cpu' for int8)."
        )
    if not _int8_kernels_available():
        raise ValueError(
            "quantization='int8' needs torch's int8 CPU kernels (oneDNN/FBGEMM on x86), which this torch build "
            f"does not have (quantized engines: {torch.backends.quantized.supported_engines}); leave quantization unset."
        )
    return quantization.lower()


def quantize_int8(model: nn.Module, calibrate: Callable[[], object]) -> int:
    """Replace ``model``'s linear layers (not its heads) by :class:`Int8Linear` in place; returns how many.

    ``calibrate`` runs the model's forward once on calibration inputs; the largest activation of
    each input channel of each layer is recorded then, and sets the layer's smoothing.
    """
    layers = {name: module for name, module in model.named_modules() if _quantizable(name, module)}
    peaks: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module, args):
            value = args[0].detach().float().abs().reshape(-1, args[0].shape[-1]).amax(0)
            peaks[name] = torch.maximum(peaks[name], value) if name in peaks else value

        return hook

    handles = [module.register_forward_pre_hook(record(name)) for name, module in layers.items()]
    try:
        with torch.inference_mode():
            calibrate()
    finally:
        for handle in handles:
            handle.remove()
    saturating = not cpu_has_vnni()
    with _int8_engine(int8_engine()):
        for name, module in layers.items():
            parent_name, _, attribute = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attribute, Int8Linear(module.weight, module.bias, peaks.get(name), reduce_range=saturating))
    logger.info(
        "Quantized %d linear layers to int8 (per-channel weights, per-token activations, smoothed).", len(layers)
    )
    return len(layers)


class Int8Linear(nn.Module):
    """A linear layer in int8: per-output-channel int8 weights, per-token 8-bit activations, SmoothQuant.

    ``y = W x + b`` is computed as ``r * (W' q(x' / r)) + b`` where ``x' = x / s`` and ``W' = W * s``
    (``s``: the smoothing of each input channel, from the calibration peaks) and ``r`` is each
    token's largest ``|x'|``, so that the integer kernel's per-tensor activation scale is in effect
    one scale per token. Output is float32.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, peaks: torch.Tensor | None, reduce_range: bool = False
    ):
        super().__init__()
        weight = weight.detach().float()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        smoothing = None
        if peaks is not None:
            smoothing = (
                peaks.clamp(min=1e-5) ** SMOOTHING_ALPHA / weight.abs().amax(0).clamp(min=1e-5) ** (1 - SMOOTHING_ALPHA)
            ).clamp(min=1e-5)
            weight = weight * smoothing
        self.register_buffer("inverse_smoothing", None if smoothing is None else (1.0 / smoothing).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        scales = (weight.abs().amax(1) / 127.0).clamp(min=1e-8).double()
        with warnings.catch_warnings():  # torch flags its quantized-tensor constructors as deprecated (2.13)
            warnings.simplefilter("ignore")
            quantized = torch.quantize_per_channel(
                weight, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8
            )
            self._packed = torch.ops.quantized.linear_prepack(quantized, None)
        #: Without VNNI/AMX the kernel sums pairs of u8 x s8 products in 16 bits: activations keep 7 bits there.
        self.reduce_range = reduce_range

    inverse_smoothing: torch.Tensor | None
    bias: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        x = x * self.inverse_smoothing if self.inverse_smoothing is not None else x.clone()
        # max |x| per token; two plain reductions run several times faster than abs() then amax()
        peak = torch.maximum(x.amax(1, keepdim=True), x.amin(1, keepdim=True).neg_()).clamp_(min=1e-12)
        y = torch.ops.quantized.linear_dynamic(x.div_(peak), self._packed, self.reduce_range)
        y = torch.addcmul(self.bias, y, peak, out=y) if self.bias is not None else y.mul_(peak)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def _quantizable(name: str, module: nn.Module) -> bool:
    """A linear layer (``nn.Linear``, or a plain ``Linear`` module with a 2-D weight) outside the heads."""
    if KEPT_MODULES & set(name.split(".")):
        return False
    if isinstance(module, nn.Linear):
        return True
    weight = getattr(module, "weight", None)
    return type(module).__name__ == "Linear" and isinstance(weight, torch.Tensor) and weight.dim() == 2


def int8_engine() -> str:
    """torch's quantized engine that packs the weights: oneDNN where the CPU has AMX-INT8 tiles, else ``x86`` (FBGEMM).

    Measured on a Xeon with AMX (torch 2.13, one thread, a 512 x 768 x 3072 layer): oneDNN 1.9 ms, FBGEMM
    5.5 ms (float32: 17 ms). A packed layer keeps its engine, so the choice is made once, at load.
    """
    if cpu_has_int8_tiles() and "onednn" in torch.backends.quantized.supported_engines:
        return "onednn"
    return "x86"


@contextlib.contextmanager
def _int8_engine(engine: str):
    """Pack with ``engine``: torch's quantized engine is process-wide, so it is set back at once."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _int8_kernels_available() -> bool:
    return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm", "onednn"))


def quantize_family(family) -> None:
    """Quantize a loaded family's model to int8 in place, calibrated on its own forward of :data:`CALIBRATION_PAIRS`."""
    from .families.base import ScoreOptions

    options = ScoreOptions()
    quantize_int8(family.model, lambda: family.forward(family.encode(CALIBRATION_PAIRS, options), options))
