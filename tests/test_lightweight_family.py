"""The lightweight family: token compression, the Gemma-2 forward and the family API.

Reference values come from FlagEmbedding 1.4.2 under transformers 4.46.3 (``CostWiseGemmaForCausalLM``
with its default SDPA attention), which this package never imports:

* ``REFERENCE_SCORES`` were computed by loading the checkpoint built by ``tiny_checkpoint`` below into
  the reference class and feeding it ``TINY_INPUTS`` (the model's own forward, no tokenizer). That
  checkpoint has what the shared fixture lacks: a sliding window shorter than the inputs and
  ``query_pre_attn_scalar`` different from ``head_dim``.
* ``tests/fixtures/goldens/lightweight.json`` holds end-to-end reference scores on the shared fixture.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from bge_rerank_integrations import CheckpointError
from bge_rerank_integrations.families.base import Encoded, ScoreOptions
from bge_rerank_integrations.families.lightweight import DEFAULT_PROMPT, LightweightFamily
from bge_rerank_integrations.models.gemma2_lightweight import (
    AttentionMasks,
    Gemma2LightweightReranker,
    LightweightConfig,
    compress_passages,
    load_lightweight,
)
from bge_rerank_integrations.options import family_options

from .conftest import TOLERANCE, checkpoint

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# --- token compression ---------------------------------------------------------------------


def _naive_compress(row: list[float], query: int, prompt: int, ratio: int) -> list[float]:
    """Plain-list statement of the reference compression, for one unpadded row."""
    passage = row[query : len(row) - prompt]
    groups = [passage[i : i + ratio] for i in range(0, len(passage), ratio)]
    return row[:query] + [sum(g) / len(g) for g in groups] + row[len(row) - prompt :]


def test_compression_matches_the_documented_example():
    hidden = torch.tensor([[10, 11, 12, 1, 2, 3, 4, 5, 20, 21]], dtype=torch.float32)[..., None]
    new, lengths = compress_passages(hidden, torch.tensor([10]), torch.tensor([3]), torch.tensor([2]), 2)
    assert new[0, :, 0].tolist() == [10, 11, 12, 1.5, 3.5, 5, 20, 21]
    assert lengths.tolist() == [8]


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_compression_of_a_padded_batch(ratio):
    rows = [list(range(100, 117)), [7.0, 8, 9, 1, 2, 30, 31, 32], [5.0, 6, 40, 41, 42, 43, 44, 45, 46, 47, 48, 50]]
    queries, prompts = [3, 3, 2], [4, 3, 1]
    width = 24
    hidden = torch.zeros(3, width, 2)
    for i, row in enumerate(rows):
        hidden[i, : len(row), 0] = torch.tensor(row, dtype=torch.float32)
        hidden[i, : len(row), 1] = -torch.tensor(row, dtype=torch.float32)
        hidden[i, len(row) :] = 99.0  # padding content must never leak in
    new, lengths = compress_passages(
        hidden, torch.tensor([len(r) for r in rows]), torch.tensor(queries), torch.tensor(prompts), ratio
    )
    expected = [_naive_compress(r, q, p, ratio) for r, q, p in zip(rows, queries, prompts)]
    assert lengths.tolist() == [len(e) for e in expected]
    assert new.shape[1] == max(len(e) for e in expected)
    for i, row in enumerate(expected):
        assert new[i, : len(row), 0].tolist() == pytest.approx(row)
        assert new[i, : len(row), 1].tolist() == pytest.approx([-x for x in row])
        assert not new[i, len(row) :].any(), "padding after compression is zeros"


def test_sliding_mask_hides_keys_a_window_back_and_padding():
    masks = AttentionMasks.build(torch.tensor([5, 3]), 6, torch.bfloat16, sliding_window=2)
    assert masks.full.dtype == masks.sliding.dtype == torch.bfloat16 and masks.full.shape == (2, 1, 6, 6)
    allowed_full = masks.full[0, 0] == 0
    allowed_sliding = masks.sliding[0, 0] == 0
    assert allowed_full[4].tolist() == [True, True, True, True, True, False]
    assert allowed_sliding[4].tolist() == [False, False, False, True, True, False]
    assert (masks.full[1, 0, 5] == 0).tolist() == [True, True, True, False, False, False]
    assert torch.isfinite(masks.full.float()).all(), "blocked entries are the finite dtype minimum, not -inf"


# --- the forward pass against the reference ------------------------------------------------

TINY_CONFIG = {
    "architectures": ["CostWiseGemmaForCausalLM"],
    "model_type": "cost_wise_gemma",
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "query_pre_attn_scalar": 24,
    "sliding_window": 4,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "hidden_activation": "gelu_pytorch_tanh",
    "final_logit_softcapping": 30.0,
    "attn_logit_softcapping": 50.0,
    "start_layer": 2,
    "layer_sep": 1,
    "layer_wise": True,
    "pad_token_id": 0,
    "bos_token_id": 2,
    "eos_token_id": 1,
}

#: Right-padded rows of real tokens query | passage | prompt (the third has an empty passage).
TINY_INPUTS = {
    "lengths": [16, 11, 7, 13],
    "query_lengths": [4, 3, 5, 2],
    "prompt_lengths": [3, 3, 2, 4],
}

#: (compress_ratio, compress_layers, cutoff_layers) -> reference scores, one row per cutoff layer.
REFERENCE_SCORES = {
    (1, (), (6,)): [[-2.756455, -0.743242, 1.144244, 0.620128]],
    (2, (1,), (2, 4, 6)): [
        [-2.490344, -2.039197, 0.64448, 0.384137],
        [-1.210983, -1.008288, -0.893546, -1.815932],
        [-0.91037, 0.503039, 2.200722, -1.02654],
    ],
    (4, (2, 3), (3, 6)): [[-2.26802, -1.754245, 0.731828, 0.313325], [-1.111701, -1.544774, -1.185925, -2.713427]],
    (8, (1, 4), (5,)): [[-3.234224, -2.51303, 1.245213, -0.003182]],
    (2, (3,), (3, 4)): [[-2.26802, -1.754245, 0.731828, 0.313325], [-1.325596, -0.785837, -0.893546, -2.191871]],
}


def tiny_checkpoint(directory: Path) -> Path:
    """Write a deterministic random checkpoint in the official format (names and config) to ``directory``."""
    from safetensors.torch import save_file

    config = LightweightConfig.from_dict(TINY_CONFIG)
    names = sorted(Gemma2LightweightReranker(config, device="meta").state_dict().items())
    generator = torch.Generator().manual_seed(0)
    state = {
        name: torch.randn(tuple(meta.shape), generator=generator) * (0.3 if "norm" in name else 0.2)
        for name, meta in names
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(TINY_CONFIG, indent=1))
    return directory


def tiny_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids (deterministic), 0/1 mask, query and prompt lengths of ``TINY_INPUTS``."""
    lengths = torch.tensor(TINY_INPUTS["lengths"])
    width = 16
    ids = torch.randint(3, TINY_CONFIG["vocab_size"], (len(lengths), width), generator=torch.Generator().manual_seed(1))
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask, torch.tensor(TINY_INPUTS["query_lengths"]), torch.tensor(TINY_INPUTS["prompt_lengths"])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Gemma2LightweightReranker:
    return load_lightweight(tiny_checkpoint(tmp_path_factory.mktemp("tiny_lightweight")), CPU, torch.float32)


@pytest.mark.parametrize("ratio, compress, cutoff", list(REFERENCE_SCORES))
def test_forward_matches_reference_model(tiny_model, ratio, compress, cutoff):
    ids, mask, queries, prompts = tiny_batch()
    with torch.inference_mode():
        scores = tiny_model(
            ids, mask, queries, prompts, cutoff_layers=list(cutoff), compress_layers=compress, compress_ratio=ratio
        )
    assert scores.dtype == torch.float32 and scores.shape == (len(cutoff), 4)
    assert scores.tolist() == [pytest.approx(row, abs=TOLERANCE) for row in REFERENCE_SCORES[(ratio, compress, cutoff)]]


def test_forward_in_bfloat16_keeps_the_model_dtype(tmp_path):
    model = load_lightweight(tiny_checkpoint(tmp_path / "ckpt"), CPU, torch.bfloat16)
    ids, mask, queries, prompts = tiny_batch()
    with torch.inference_mode():
        scores = model(
            ids, mask.to(torch.bfloat16), queries, prompts, cutoff_layers=[3, 4], compress_layers=[3], compress_ratio=2
        )
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    expected = torch.tensor(REFERENCE_SCORES[(2, (3,), (3, 4))])
    assert (scores - expected).abs().max() < 0.25, "bfloat16 stays close to the float32 reference"


def test_missing_weights_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tiny_checkpoint(tmp_path / "ckpt")
    state = load_file(str(path / "model.safetensors"))
    del state["lm_head.0.linear_head.weight"]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="lm_head.0.linear_head.weight"):
        load_lightweight(path, CPU, torch.float32)


# --- the family API on the shared fixture ---------------------------------------------------

PAIRS = [
    ("A: what is panda?", "B: hi"),
    ("A: what is panda?", "B: The giant panda is a bear species endemic to China. " * 4),
    ("A: What is the capital of France?", "B: Paris is the capital of France."),
]


@pytest.fixture(scope="module")
def family() -> LightweightFamily:
    return LightweightFamily.load(checkpoint("lightweight"), CPU, torch.float32)


def _options(**kwargs) -> ScoreOptions:
    return ScoreOptions(**kwargs)


def _score(family: LightweightFamily, pairs, **kwargs) -> torch.Tensor:
    options = _options(**kwargs)
    family.check_options(options)
    return family.forward(family.encode(pairs, options), options)


def test_family_declares_its_options(family):
    assert family.name == "lightweight"
    assert family_options(family.name) == {"prompt", "cutoff_layers", "compress_ratio", "compress_layers"}
    assert (family.default_query_instruction, family.default_passage_instruction) == ("A: ", "B: ")
    assert family.max_positions == family.model.config.max_position_embeddings


@pytest.mark.parametrize(
    "options, message",
    [
        ({"compress_ratio": 3}, "1, 2, 4, 8"),
        ({"compress_ratio": 16}, "1, 2, 4, 8"),
        ({"cutoff_layers": (1,)}, r"2\.\.10"),
        ({"cutoff_layers": (4, 11)}, r"\[11\].*2\.\.10"),
        ({"compress_layers": (10,)}, r"0\.\.9"),
        ({"compress_layers": (-1, 3)}, r"0\.\.9"),
    ],
)
def test_bad_options_are_rejected_naming_valid_values(family, options, message):
    with pytest.raises(ValueError, match=message):
        family.check_options(_options(**options))


def test_good_options_pass_and_count_outputs(family):
    family.check_options(_options(compress_ratio=8, compress_layers=(0, 9), cutoff_layers=(2, 10)))
    assert len(family.cutoff_layers(_options())) == 1
    assert len(family.cutoff_layers(_options(cutoff_layers=(3, 6, 10)))) == 3
    assert len(family.cutoff_layers(_options(cutoff_layers=(10, 4, 4)))) == 2


def test_encode_marks_query_and_prompt_segments(family):
    tokenizer = family.tokenizer
    sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
    prompt = tokenizer(DEFAULT_PROMPT, add_special_tokens=False)["input_ids"]
    for (query, _), item in zip(PAIRS, family.encode(PAIRS, _options())):
        query_ids = tokenizer(query, add_special_tokens=False)["input_ids"]
        assert item.input_ids[0] == tokenizer.bos_token_id
        assert item.query_length == 1 + len(query_ids) + len(sep)
        assert item.input_ids[: item.query_length] == [tokenizer.bos_token_id, *query_ids, *sep]
        assert item.prompt_length == len(sep) + len(prompt)
        assert item.input_ids[-item.prompt_length :] == [*sep, *prompt]


def test_an_empty_passage_segment_compresses_to_nothing(family):
    opts = _options(query_instruction_for_rerank="", passage_instruction_for_rerank="")
    (item,) = family.encode([("what is panda?", "")], opts)
    assert item.query_length + item.prompt_length == len(item), "no passage tokens between query and prompt"
    plain = _score(family, [("what is panda?", "")], cutoff_layers=(6,))
    compressed = _score(family, [("what is panda?", "")], cutoff_layers=(6,), compress_ratio=4, compress_layers=(2,))
    assert torch.allclose(compressed, plain, atol=TOLERANCE)


def test_forward_shape_and_batch_invariance(family):
    options = dict(compress_ratio=4, compress_layers=(3, 5), cutoff_layers=(4, 10))
    together = _score(family, PAIRS, **options)
    assert together.dtype == torch.float32 and together.device.type == "cpu" and together.shape == (2, len(PAIRS))
    alone = torch.cat([_score(family, [pair], **options) for pair in PAIRS], dim=1)
    assert torch.allclose(together, alone, atol=TOLERANCE), "padding must not change any score"


def test_compression_only_acts_below_the_scored_layer(family):
    plain = _score(family, PAIRS, cutoff_layers=(5,))
    assert torch.allclose(_score(family, PAIRS, cutoff_layers=(5,), compress_ratio=2, compress_layers=(5, 7)), plain)
    assert torch.allclose(_score(family, PAIRS, cutoff_layers=(5,), compress_ratio=1, compress_layers=(2,)), plain)
    compressed = _score(family, PAIRS, cutoff_layers=(5,), compress_ratio=2, compress_layers=(2,))
    assert not torch.allclose(compressed, plain, atol=1e-4)


def test_heads_are_picked_by_position_in_the_cutoff_list(family):
    """Reference quirk: the i-th (ascending) cutoff layer uses lm_head[i], whatever its layer number."""
    model = copy.deepcopy(family.model)
    twin = LightweightFamily(model, family.tokenizer, CPU, torch.float32)
    before = _score(twin, PAIRS, cutoff_layers=(10,))
    with torch.no_grad():
        model.lm_head[10 - model.config.start_layer].linear_head.weight.mul_(-3.0)
    assert torch.equal(_score(twin, PAIRS, cutoff_layers=(10,)), before)
    with torch.no_grad():
        model.lm_head[0].linear_head.weight.mul_(-3.0)
    assert not torch.allclose(_score(twin, PAIRS, cutoff_layers=(10,)), before)


def test_segment_lengths_never_overlap(family):
    item = Encoded([2, 5, 6, 7, 8, 9], query_length=5, prompt_length=3)  # query would reach into the prompt
    scores = family.forward([item], _options(compress_ratio=2, compress_layers=(2,)))
    assert torch.isfinite(scores).all()
