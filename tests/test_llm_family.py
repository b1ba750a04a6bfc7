"""The llm family (bge-reranker-v2-gemma) through the family API, and the shared decoder input assembly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.families import family_class
from bge_rerank_integrations.families.base import Encoded
from bge_rerank_integrations.families.decoder_text import (
    DEFAULT_PROMPT,
    PromptPieces,
    assemble,
    encode_pairs,
    pad_batch,
    token_ids,
)
from bge_rerank_integrations.families.llm import LLMFamily
from bge_rerank_integrations.loading import dtype_kwargs
from bge_rerank_integrations.options import family_options

from .conftest import checkpoint, load_goldens
from .family_helpers import PAIRS, TOLERANCE, options, score, with_instructions


@pytest.fixture(scope="module")
def family() -> LLMFamily:
    return LLMFamily.load(checkpoint("llm"), torch.device("cpu"), torch.float32)


# --- family contract ---------------------------------------------------------------------------


def test_registry_and_class_attributes():
    assert family_class("llm") is LLMFamily and family_class("decoder-only-base") is LLMFamily
    assert family_options(LLMFamily.name) == frozenset({"prompt"})
    assert (LLMFamily.default_query_instruction, LLMFamily.default_passage_instruction) == ("A: ", "B: ")


def test_forward_shape_dtype_and_distinct_scores(family):
    scores = score(family, PAIRS, options())
    assert scores.shape == (1, len(PAIRS)) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert len({round(s, 4) for s in scores[0].tolist()}) == len(PAIRS)


def test_never_computes_full_vocabulary_logits(family, monkeypatch):
    expected = score(family, PAIRS[:2], options())

    def refuse(*args, **kwargs):
        raise AssertionError("lm_head must not run over the vocabulary")

    monkeypatch.setattr(family.model.get_output_embeddings(), "forward", refuse)
    monkeypatch.setattr(family.model, "forward", refuse)
    assert torch.equal(score(family, PAIRS[:2], options()), expected)


def test_yes_logit_equals_causal_lm_output(family):
    opts = options()
    encoded = family.encode(with_instructions(family, PAIRS[:1], opts), opts)
    ids = torch.tensor([encoded[0].input_ids])
    with torch.inference_mode():
        logits = family.model(input_ids=ids).logits[0, -1, family.yes_id]
    assert family.forward(encoded, opts)[0, 0].item() == pytest.approx(logits.item(), abs=TOLERANCE)


def test_batching_and_padding_side_do_not_change_scores(family):
    # Positions run 0..seq-1 over the padded row (as in the reference), so left padding shifts
    # RoPE positions: equal in exact arithmetic, a few 1e-5 apart in float32 with these weights.
    opts = options()
    together = score(family, PAIRS, opts)[0]
    alone = torch.cat([score(family, [pair], opts)[0] for pair in PAIRS])
    assert torch.allclose(together, alone, atol=TOLERANCE)
    side = family.tokenizer.padding_side
    try:
        family.tokenizer.padding_side = "right"
        right = score(family, PAIRS, opts)[0]
    finally:
        family.tokenizer.padding_side = side
    assert torch.allclose(together, right, atol=TOLERANCE)


def test_half_precision_keeps_one_dtype():
    fam = LLMFamily.load(checkpoint("llm"), torch.device("cpu"), torch.bfloat16)
    scores = score(fam, PAIRS, options())
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    fp32 = score(LLMFamily.load(checkpoint("llm"), torch.device("cpu"), torch.float32), PAIRS, options())
    assert torch.allclose(scores, fp32, atol=0.5)


def test_dtype_keyword_follows_transformers_version():
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    assert dtype_kwargs(torch.float16) == {key: torch.float16}


# --- input assembly ----------------------------------------------------------------------------


def test_encode_layout_matches_reference_recipe(family):
    tok = family.tokenizer
    opts = options(prompt="Relevant?")
    (encoded,) = family.encode([("A: q text", "B: p text")], opts)
    sep, prompt = token_ids(tok, "\n"), token_ids(tok, "Relevant?")
    bos = [tok.bos_token_id] if tok.bos_token_id is not None and tok.bos_token_id != tok.pad_token_id else []
    q, p = token_ids(tok, "A: q text"), token_ids(tok, "B: p text")
    assert encoded.input_ids == bos + q + sep + p + sep + prompt
    assert encoded.query_length == len(bos + q + sep) and encoded.prompt_length == len(sep + prompt)


def test_blank_texts_give_zero_length_ids_around_the_fixed_pieces(family):
    tok = family.tokenizer
    opts = options(query_instruction_for_rerank="", passage_instruction_for_rerank="")
    template = PromptPieces.build(tok, DEFAULT_PROMPT, bos="auto")
    blank, whitespace = family.encode(with_instructions(family, [("", ""), ("", "   ")], opts), opts)
    assert blank.input_ids == [*template.bos, *template.sep, *template.sep, *template.prompt]
    assert blank.query_length == len(template.bos + template.sep) and blank.prompt_length == len(template.tail)
    assert whitespace.input_ids == [*template.bos, *template.sep, *token_ids(tok, "   "), *template.tail]
    assert assemble([], [], template, max_length=1)[0] == dataclasses.replace(blank, position_offset=0)
    assert torch.isfinite(family.forward([blank, whitespace], opts)).all()


def test_default_prompt_is_used_when_none(family):
    (default,) = family.encode([("a", "b")], options())
    (explicit,) = family.encode([("a", "b")], options(prompt=DEFAULT_PROMPT))
    (empty,) = family.encode([("a", "b")], options(prompt=""))
    assert default == explicit and len(empty) < len(default)


def test_truncation_budget(family):
    tok = family.tokenizer
    sep, prompt = token_ids(tok, "\n"), token_ids(tok, "P")
    opts = options(max_length=24, query_max_length=6, prompt="P")
    (encoded,) = family.encode([("A: what is a panda bear", "B: " + "panda bamboo forest " * 40)], opts)
    # first + second is cut to max_length + len(sep) + len(prompt); then sep + prompt follow.
    assert len(encoded) == (24 + len(sep) + len(prompt)) + len(sep) + len(prompt)
    assert encoded.input_ids[-len(sep + prompt) :] == sep + prompt


def test_assemble_keeps_reference_quirk_and_caps_at_max_positions():
    template = PromptPieces(bos=(1,), sep=(5,), prompt=(7, 8))
    query, passage = list(range(100, 130)), [200, 201]
    # The reference leaves the pair whole when the passage is shorter than the excess.
    quirk = assemble(query, passage, template, max_length=10)[0]
    assert quirk.input_ids == [1, *query, 5, *passage, 5, 7, 8]
    # ... but never beyond the model's positions: the query is capped, separator and prompt stay.
    capped = assemble(query, passage, template, max_length=10, max_positions=20)[0]
    assert len(capped) <= 20 and capped.input_ids[:2] == [1, 100] and capped.input_ids[-3:] == [5, 7, 8]
    assert 200 in capped.input_ids and capped.query_length == capped.input_ids.index(200)
    long_passage = assemble(query[:3], list(range(300, 400)), template, max_length=200, max_positions=32)[0]
    assert len(long_passage) == 32 and long_passage.input_ids[:4] == [1, 100, 101, 102]


def test_encode_never_exceeds_max_positions(family, monkeypatch, caplog):
    monkeypatch.setattr(family, "_max_positions", 40)
    opts = options(max_length=30, query_max_length=200)
    with caplog.at_level("WARNING"):
        encoded = family.encode(with_instructions(family, PAIRS, opts), opts)
    assert all(len(e) <= 40 for e in encoded)
    assert len([r for r in caplog.records if "positions" in r.getMessage()]) == 1
    assert torch.isfinite(family.forward(encoded, opts)).all()


def test_encode_pairs_truncates_on_the_left_when_asked(family):
    tok = family.tokenizer
    passage = "one two three four five six seven"
    side = tok.truncation_side
    try:
        tok.truncation_side = "left"
        (encoded,) = encode_pairs(tok, [("q", passage)], "P", 3, 3, bos="never")
    finally:
        tok.truncation_side = side
    start = len(token_ids(tok, "q") + token_ids(tok, "\n"))
    assert encoded.input_ids[start : start + 3] == token_ids(tok, passage)[-3:]


def test_pad_batch_sides_multiple_and_mask_dtype():
    batch = [Encoded([1, 2, 3]), Encoded([4] * 9)]
    left = pad_batch(batch, pad_id=0, side="left", mask_dtype=torch.float16)
    assert left.input_ids.shape == (2, 16) and left.attention_mask.dtype == torch.float16
    assert left.input_ids[0, -3:].tolist() == [1, 2, 3] and left.last_index.tolist() == [15, 15]
    right = pad_batch(batch, pad_id=0, side="right")
    assert right.input_ids[0, :4].tolist() == [1, 2, 3, 0] and right.last_index.tolist() == [2, 8]
    assert right.attention_mask.sum(1).tolist() == [3, 9] and bool((right.lengths < right.input_ids.shape[1]).any())
    with pytest.raises(ValueError):
        pad_batch(batch, pad_id=0, side="middle")
    with pytest.raises(ValueError, match="no empty sequence"):  # a pair always keeps its separators and prompt
        pad_batch([*batch, Encoded([])], pad_id=0)


# --- parity with the reference -----------------------------------------------------------------


def test_through_bge_reranker_matches_goldens_and_validates_options():
    case = load_goldens("llm")["cases"][0]
    reranker = BGEReranker(checkpoint("llm"), device="cpu", **case["init"])
    assert reranker.compute_score(case["pairs"], **case["call"]) == pytest.approx(case["scores"], abs=TOLERANCE)
    with pytest.raises(ValueError, match="cutoff_layers"):
        reranker.compute_score(case["pairs"], cutoff_layers=[2])
