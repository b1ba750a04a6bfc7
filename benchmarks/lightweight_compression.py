"""Time and peak memory of the lightweight reranker at compress_ratio 1, 2, 4 and 8, per cutoff layer.

    .venv/bin/python benchmarks/lightweight_compression.py            # about a minute on 2 CPU cores
    .venv/bin/python benchmarks/lightweight_compression.py --pairs 16 --layers 16 --threads 2

Builds, in a temporary directory, a random checkpoint shaped like bge-reranker-v2.5-gemma2-lightweight
but smaller (official state-dict names and ``cost_wise_gemma`` config, written with our own model
code), loads it through the package, and scores the same pairs (long passages, random token ids,
one batch) in float32 on CPU with every ``compress_ratio`` and, for each, every cutoff layer on its own.
Compression happens at ``--compress-layer`` (the real model's default is layer 8 of 42).

Reported per run: wall and process-CPU time of the forward pass (medians of ``--repeat``; CPU time
is the steadier figure on a shared machine, with ``--threads 1``) and the peak resident
memory *above* the loaded model during the call (Linux: the kernel's VmHWM after resetting it via
``/proc/self/clear_refs``; elsewhere a 2 ms sampler of RSS). Nothing is asserted: a measurement tool.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bge_rerank_integrations.families.base import Encoded, ScoreOptions
from bge_rerank_integrations.families.lightweight import LightweightFamily
from bge_rerank_integrations.loading import read_config
from bge_rerank_integrations.models.gemma2_lightweight import (
    Gemma2LightweightReranker,
    LightweightConfig,
    load_lightweight,
)

logger = logging.getLogger("lightweight_compression")


#: Tokenizer files copied next to the weights when ``build_checkpoint`` is given a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def build_checkpoint(
    directory: Path,
    *,
    hidden: int,
    layers: int,
    start_layer: int,
    vocab: int = 4096,
    intermediate: int | None = None,
    tokenizer: Path | None = None,
) -> Path:
    """Random weights in the official format (``config.json`` + ``model.safetensors``), made by our model code.

    Gemma-2 blocks of width ``hidden`` (8 query and 4 key/value heads of ``hidden // 8``; MLP
    ``intermediate``, default ``3 * hidden``). With ``tokenizer`` (a checkpoint directory), its
    tokenizer files are copied and ``vocab`` is its size, so the package loads the result like
    any lightweight checkpoint and scores text with it.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if tokenizer is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer) / name).exists():
                shutil.copy(Path(tokenizer) / name, directory / name)
        vocab = read_config(tokenizer)["vocab_size"]
    config = {
        "architectures": ["CostWiseGemmaForCausalLM"],
        "model_type": "cost_wise_gemma",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate or hidden * 3,
        "num_hidden_layers": layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": hidden // 8,
        "query_pre_attn_scalar": hidden // 8,
        "sliding_window": 4096,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_activation": "gelu_pytorch_tanh",
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
        "start_layer": start_layer,
        "layer_sep": 1,
        "layer_wise": True,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "torch_dtype": "float32",
    }
    shapes = Gemma2LightweightReranker(LightweightConfig.from_dict(config), device="meta").state_dict()
    generator = torch.Generator().manual_seed(0)
    state = {name: torch.randn(tuple(t.shape), generator=generator) * 0.05 for name, t in shapes.items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return directory


def make_pairs(args: argparse.Namespace) -> list[Encoded]:
    """``[bos] query \\n passage \\n prompt`` as random ids, with the segment lengths compression needs."""
    generator = torch.Generator().manual_seed(1)
    items = []
    for i in range(args.pairs):
        passage = args.passage_tokens - (i * 7) % 64  # slightly ragged, as real batches are
        ids = torch.randint(3, args.vocab, (args.query_tokens + passage + args.prompt_tokens,), generator=generator)
        ids[0] = 2
        items.append(Encoded(ids.tolist(), query_length=args.query_tokens, prompt_length=args.prompt_tokens))
    return items


class PeakMemory:
    """Peak RSS (MiB) above the level at ``start`` while the block runs."""

    def __enter__(self) -> PeakMemory:
        _release_free_memory()
        self.base = _status_kib("VmRSS")
        self.kernel = _reset_peak()
        self.sampled = self.base
        self._stop = threading.Event()
        if not self.kernel:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.sampled = max(self.sampled, _status_kib("VmRSS"))
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if not self.kernel:
            self._thread.join()
        peak = _status_kib("VmHWM") if self.kernel else self.sampled
        self.mib = max(peak - self.base, 0) / 1024


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so each run starts from the loaded model alone."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure(
    family: LightweightFamily, batch: list[Encoded], options: ScoreOptions, repeat: int
) -> tuple[float, float, float, torch.Tensor]:
    """Median wall and CPU seconds, peak MiB above baseline, and the scores of one forward over ``batch``."""
    family.check_options(options)
    walls, cpus, peaks = [], [], []
    for _ in range(repeat):
        with PeakMemory() as memory:
            wall, cpu = time.perf_counter(), time.process_time()
            scores = family.forward(batch, options)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        peaks.append(memory.mib)
    return statistics.median(walls), statistics.median(cpus), max(peaks), scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8, help="pairs in the one batch")
    parser.add_argument("--passage-tokens", type=int, default=384)
    parser.add_argument("--query-tokens", type=int, default=24)
    parser.add_argument("--prompt-tokens", type=int, default=14)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--start-layer", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--compress-layer", type=int, default=2)
    parser.add_argument("--cutoffs", type=int, nargs="+", default=None, help="default: start, middle, last layer")
    parser.add_argument("--ratios", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    cutoffs = args.cutoffs or sorted({args.start_layer, (args.start_layer + args.layers) // 2, args.layers})

    with tempfile.TemporaryDirectory(prefix="bge-lightweight-bench-") as tmp:
        path = build_checkpoint(
            Path(tmp), hidden=args.hidden, layers=args.layers, start_layer=args.start_layer, vocab=args.vocab
        )
        model = load_lightweight(path, torch.device("cpu"), torch.float32)
    family = LightweightFamily(model, None, torch.device("cpu"), torch.float32)
    batch = make_pairs(args)
    params = sum(p.numel() for p in model.parameters())
    tokens = sum(len(item) for item in batch)
    logger.info(
        "model: %d layers, hidden %d, %.1fM params (fp32 %.0f MiB); batch: %d pairs, %d tokens; compress at layer %d; "
        "%d torch threads, %d CPUs",
        args.layers,
        args.hidden,
        params / 1e6,
        params * 4 / 2**20,
        len(batch),
        tokens,
        args.compress_layer,
        torch.get_num_threads(),
        os.cpu_count() or 0,
    )
    family.forward(batch[:1], ScoreOptions(cutoff_layers=(args.start_layer,)))  # warm-up

    logger.info(
        "%-6s %-7s %8s %8s %8s %9s  %s", "ratio", "cutoff", "wall s", "cpu s", "speedup", "peak MiB", "score[0]"
    )
    baseline: dict[int, float] = {}
    for ratio in args.ratios:
        for cutoff in cutoffs:
            options = ScoreOptions(
                cutoff_layers=(cutoff,), compress_ratio=ratio, compress_layers=(args.compress_layer,)
            )
            wall, cpu, peak, scores = measure(family, batch, options, args.repeat)
            baseline.setdefault(cutoff, wall)
            logger.info(
                "%-6d %-7d %8.2f %8.2f %7.2fx %9.1f  %.4f",
                ratio,
                cutoff,
                wall,
                cpu,
                baseline[cutoff] / wall,
                peak,
                scores[0, 0],
            )
    logger.info("speedup = wall time at ratio 1 / wall time, same cutoff; peak = RSS above the loaded model.")


if __name__ == "__main__":
    main()
