"""The layerwise family (bge-reranker-v2-minicpm-layerwise) through the family API."""

from __future__ import annotations

import pytest
import torch

from bge_rerank_integrations import BGEReranker, CheckpointError
from bge_rerank_integrations.families import family_class
from bge_rerank_integrations.families.decoder_text import token_ids
from bge_rerank_integrations.families.layerwise import LayerwiseFamily
from bge_rerank_integrations.loading import load_state_dict, read_config
from bge_rerank_integrations.models.minicpm_layerwise import LayerwiseConfig, LayerwiseMiniCPM, attention_bias
from bge_rerank_integrations.options import family_options

from .conftest import checkpoint, load_goldens
from .family_helpers import PAIRS, TOLERANCE, options, score


@pytest.fixture(scope="module")
def family() -> LayerwiseFamily:
    return LayerwiseFamily.load(checkpoint("layerwise"), torch.device("cpu"), torch.float32)


def layers_of(fam) -> tuple[int, int]:
    cfg = fam.model.config
    return cfg.start_layer, cfg.num_hidden_layers


# --- family contract ---------------------------------------------------------------------------


def test_registry_and_class_attributes():
    assert family_class("layerwise") is LayerwiseFamily and family_class("decoder-only-layerwise") is LayerwiseFamily
    assert family_options(LayerwiseFamily.name) == frozenset({"prompt", "cutoff_layers"})
    assert (LayerwiseFamily.default_query_instruction, LayerwiseFamily.default_passage_instruction) == ("A: ", "B: ")


def test_default_cutoff_is_the_last_layer(family):
    _start, last = layers_of(family)
    default = score(family, PAIRS, options())
    assert default.shape == (1, len(PAIRS)) and default.dtype == torch.float32
    assert torch.equal(default, score(family, PAIRS, options(cutoff_layers=[last])))
    assert len(family.cutoff_layers(options())) == 1


def test_several_layers_any_order_give_ascending_rows(family):
    start, last = layers_of(family)
    chosen = [last, start, start + 1]
    rows = score(family, PAIRS, options(cutoff_layers=chosen))
    assert rows.shape == (3, len(PAIRS)) and len(family.cutoff_layers(options(cutoff_layers=chosen))) == 3
    for row, layer in zip(rows, sorted(chosen)):
        assert torch.allclose(row, score(family, PAIRS, options(cutoff_layers=[layer]))[0], atol=1e-6)
    assert len({tuple(r) for r in rows.round(decimals=4).tolist()}) == 3, "each layer has its own head"
    assert torch.equal(score(family, PAIRS, options(cutoff_layers=[last, last, start])), rows[[0, 2]])


def test_out_of_range_layers_raise_with_the_valid_range(family):
    start, last = layers_of(family)
    for bad in ([start - 1], [0, start], [last + 1], [-1], [start, 10 * last]):
        with pytest.raises(ValueError, match=rf"\[{start}, {last}\]"):
            family.check_options(options(cutoff_layers=bad))
    family.check_options(options(cutoff_layers=[start, last]))


def test_forward_stops_after_the_deepest_layer(family, monkeypatch):
    start, _ = layers_of(family)
    expected = score(family, PAIRS[:2], options(cutoff_layers=[start + 1]))

    def refuse(*args, **kwargs):
        raise AssertionError("a layer past the deepest cutoff ran")

    monkeypatch.setattr(family.model.model.layers[start + 1], "forward", refuse)
    assert torch.equal(score(family, PAIRS[:2], options(cutoff_layers=[start + 1])), expected)


def test_bos_always_and_layout(family):
    tok = family.tokenizer
    (encoded,) = family.encode([("A: q", "B: p")], options(prompt="P"))
    sep = token_ids(tok, "\n")
    assert encoded.input_ids == [
        tok.bos_token_id,
        *token_ids(tok, "A: q"),
        *sep,
        *token_ids(tok, "B: p"),
        *sep,
        *token_ids(tok, "P"),
    ]


def test_batching_and_padding_side_do_not_change_scores(family):
    # Positions run 0..seq-1 over the padded row (as in the reference), so left padding shifts
    # RoPE positions: equal in exact arithmetic, a few 1e-5 apart in float32 with these weights.
    opts = options(cutoff_layers=[layers_of(family)[0], layers_of(family)[1]])
    together = score(family, PAIRS, opts)
    alone = torch.cat([score(family, [pair], opts) for pair in PAIRS], dim=1)
    assert torch.allclose(together, alone, atol=TOLERANCE)
    side = family.tokenizer.padding_side
    try:
        family.tokenizer.padding_side = "right" if side == "left" else "left"
        flipped = score(family, PAIRS, opts)
    finally:
        family.tokenizer.padding_side = side
    assert torch.allclose(together, flipped, atol=TOLERANCE)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_in_one_dtype(family, dtype):
    half = LayerwiseFamily.load(checkpoint("layerwise"), torch.device("cpu"), dtype)
    scores = score(half, PAIRS, options())
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert torch.allclose(scores, score(family, PAIRS, options()), atol=0.5)
    mask = attention_bias(torch.tensor([[0, 1, 1], [1, 1, 1]]), dtype)
    assert mask.dtype == dtype and mask.shape == (2, 1, 3, 3)
    assert attention_bias(torch.ones(2, 3, dtype=torch.long), dtype) is None


# --- loading -----------------------------------------------------------------------------------


def test_missing_weights_and_unsupported_heads_are_refused():
    path = checkpoint("layerwise")
    config = LayerwiseConfig.from_dict(read_config(path))
    state = load_state_dict(path)
    state.pop("model.layers.0.mlp.up_proj.weight")
    with pytest.raises(CheckpointError, match="lacks"):
        LayerwiseMiniCPM.from_state_dict(config, state)
    with pytest.raises(ValueError, match="head_type"):
        LayerwiseConfig.from_dict({**read_config(path), "head_type": "complex"})


def test_config_fields_come_from_config_json(family):
    raw = read_config(checkpoint("layerwise"))
    cfg = family.model.config
    for key in ("scale_emb", "scale_depth", "start_layer", "num_hidden_layers", "rope_theta", "rms_norm_eps"):
        assert getattr(cfg, key) == raw[key]
    assert family.max_positions == raw["max_position_embeddings"]


# --- parity with the reference -----------------------------------------------------------------


def test_through_bge_reranker_matches_goldens_and_rejects_bad_layers():
    case = next(c for c in load_goldens("layerwise")["cases"] if len(c["call"].get("cutoff_layers", [])) > 1)
    reranker = BGEReranker(checkpoint("layerwise"), device="cpu", **case["init"])
    got = reranker.compute_score(case["pairs"], **case["call"])
    assert [pytest.approx(row, abs=TOLERANCE) for row in case["scores"]] == got
    start, last = reranker.load().family.model.config.start_layer, reranker.load().family.model.config.num_hidden_layers
    with pytest.raises(ValueError, match=rf"\[{start}, {last}\]"):
        reranker.compute_score(case["pairs"], cutoff_layers=[last + 1])
