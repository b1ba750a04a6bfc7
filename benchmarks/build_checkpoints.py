"""Build the shaped random checkpoints the benchmark runs on (official on-disk format).

Run with the pinned reference environment (FlagEmbedding 1.4.2, transformers 4.46.3), which has
the reference's own MiniCPM-layerwise and cost-wise Gemma classes::

    .venv-ref/bin/python benchmarks/build_checkpoints.py --workdir /tmp/bge-bench [--only NAME]

Weights are random (seeded); the tokenizers are the small ones of ``tools/build_fixtures.py``
(a few hundred pieces), while embeddings/``lm_head`` have the real vocabulary size where it
matters for cost (bge-reranker-base's 250,002 and Gemma's 256,000). Nothing here is committed:
checkpoints go under ``--workdir`` (default ``/tmp/bge-bench``), about 6 GB in all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from tools import build_fixtures as fx

INIT_RANGE = 0.02  # the models' usual initialiser; scores still differ clearly pair to pair

#: name -> (kind, shape overrides). Shapes are those of the real checkpoints unless noted.
SPECS: dict[str, dict] = {
    # bge-reranker-base: XLM-R base, 12 layers, hidden 768, vocab 250002.
    "encoder-base": dict(kind="encoder", layers=12),
    # Same width and vocabulary, 4 layers: keeps the 2,000-pair case to about a minute per process.
    "encoder-bulk": dict(kind="encoder", layers=4),
    # bge-reranker-v2-m3: XLM-R large, 24 layers, hidden 1024, 8194 positions (GPU case; built on demand).
    "encoder-v2m3": dict(kind="encoder", layers=24, hidden=1024, heads=16, intermediate=4096, positions=8194),
    # bge-reranker-v2-gemma: Gemma-1 2B blocks (hidden 2048, MLP 16384, 8 heads, 1 KV head of 256),
    # the real 256,000 vocabulary (tied lm_head), 2 layers instead of 18.
    "llm-gemma": dict(kind="llm", layers=2),
    # bge-reranker-v2-minicpm-layerwise, narrowed: hidden 1024, 12 layers, heads from layer 4.
    "layerwise": dict(kind="layerwise", layers=12, start_layer=4),
    # bge-reranker-v2.5-gemma2-lightweight, narrowed: hidden 1024, 12 layers, heads from layer 4.
    "lightweight": dict(kind="lightweight", layers=12, start_layer=4),
}


def _save(model, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    gen = out / "generation_config.json"
    if gen.exists():
        gen.unlink()
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("_name_or_path", None)
    cfg["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def build_encoder(
    out: Path,
    layers: int,
    pieces,
    merges,
    hidden: int = 768,
    heads: int = 12,
    intermediate: int = 3072,
    positions: int = 514,
) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    fx.save_encoder_tokenizer(out, pieces, merges)
    cfg = XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_act="gelu",
        max_position_embeddings=positions,
        type_vocab_size=1,
        initializer_range=INIT_RANGE,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
        architectures=["XLMRobertaForSequenceClassification"],
    )
    torch.manual_seed(1)
    _save(XLMRobertaForSequenceClassification(cfg).eval(), out)


def build_llm(out: Path, layers: int, pieces, merges) -> None:
    from transformers import GemmaConfig, GemmaForCausalLM

    fx.save_gemma_tokenizer(out, pieces, merges)
    cfg = GemmaConfig(
        vocab_size=256000,
        hidden_size=2048,
        intermediate_size=16384,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
        hidden_act="gelu",
        hidden_activation=None,
        max_position_embeddings=8192,
        initializer_range=INIT_RANGE,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        architectures=["GemmaForCausalLM"],
    )
    torch.manual_seed(2)
    _save(GemmaForCausalLM(cfg).eval(), out)


def build_layerwise(out: Path, layers: int, start_layer: int, pieces, merges) -> None:
    from FlagEmbedding.inference.reranker.decoder_only.models.configuration_minicpm_reranker import (
        LayerWiseMiniCPMConfig,
    )
    from FlagEmbedding.inference.reranker.decoder_only.models.modeling_minicpm_reranker import (
        LayerWiseMiniCPMForCausalLM,
    )

    vocab = fx.save_llama_tokenizer(out, pieces, merges)
    cfg = LayerWiseMiniCPMConfig(
        vocab_size=vocab,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=16,
        hidden_act="silu",
        max_position_embeddings=2048,
        initializer_range=INIT_RANGE,
        rms_norm_eps=1e-5,
        use_cache=False,
        pad_token_id=None,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        scale_emb=12,
        dim_model_base=256,
        scale_depth=1.4,
        start_layer=start_layer,
        head_multi=True,
        head_type="simple",
        architectures=["LayerWiseMiniCPMForCausalLM"],
    )
    torch.manual_seed(3)
    _save(LayerWiseMiniCPMForCausalLM(cfg).eval(), out)


def build_lightweight(out: Path, layers: int, start_layer: int, pieces, merges) -> None:
    from FlagEmbedding.inference.reranker.decoder_only.models.gemma_config import CostWiseGemmaConfig
    from FlagEmbedding.inference.reranker.decoder_only.models.gemma_model import CostWiseGemmaForCausalLM

    vocab = fx.save_gemma_tokenizer(out, pieces, merges)
    cfg = CostWiseGemmaConfig(
        vocab_size=vocab,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=128,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=8192,
        initializer_range=INIT_RANGE,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        query_pre_attn_scalar=128,
        sliding_window=4096,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        cache_implementation="hybrid",
        start_layer=start_layer,
        layer_sep=1,
        layer_wise=True,
        architectures=["CostWiseGemmaForCausalLM"],
    )
    torch.manual_seed(4)
    _save(CostWiseGemmaForCausalLM(cfg).eval(), out)
    cfg_path = out / "config.json"
    data = json.loads(cfg_path.read_text())
    data.update({"hidden_act": "gelu_pytorch_tanh", "sliding_window_size": 4096})
    cfg_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def build(workdir: Path, names: list[str], force: bool = False) -> None:
    pieces = merges = None
    for name in names:
        spec = SPECS[name]
        out = workdir / name
        if (out / "model.safetensors").exists() and not force:
            continue
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if pieces is None:
            pieces, merges = fx.train_bpe_pieces()
        if spec["kind"] == "encoder":
            build_encoder(out, pieces=pieces, merges=merges, **{k: v for k, v in spec.items() if k != "kind"})
        elif spec["kind"] == "llm":
            build_llm(out, spec["layers"], pieces, merges)
        elif spec["kind"] == "layerwise":
            build_layerwise(out, spec["layers"], spec["start_layer"], pieces, merges)
        else:
            build_lightweight(out, spec["layers"], spec["start_layer"], pieces, merges)
        size = sum(p.stat().st_size for p in out.iterdir())
        print(f"built {name:14s} {size / 2**20:8.0f} MiB in {time.perf_counter() - start:5.1f} s -> {out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/bge-bench")
    ap.add_argument("--only", action="append", choices=sorted(SPECS))
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    args = ap.parse_args(argv)
    default = [name for name in SPECS if name != "encoder-v2m3"]
    build(Path(args.workdir) / "checkpoints", args.only or default, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
