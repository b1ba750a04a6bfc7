"""BGEReranker behaviour that holds for every family: inputs, options, batching, caching, errors."""

from __future__ import annotations

import logging
import math
import threading

import pytest
import torch

from bge_rerank_integrations import BGEReranker, ModelNotFoundError, RerankResult, clear_model_cache
from bge_rerank_integrations.batching import run_batches
from bge_rerank_integrations.device import resolve_device, resolve_dtype
from bge_rerank_integrations.families import canonical_family, detect_family
from bge_rerank_integrations.loading import read_config

from .conftest import FAMILIES, TOLERANCE, checkpoint, load_goldens, reference_score

PANDA = "The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China."
PAIRS = [
    ["what is panda?", "hi"],
    ["what is panda?", PANDA],
    ["Paris is the capital of France.", "The population of China is over 1.4 billion people."],
    ["what is panda?", " ".join([PANDA] * 20)],
    ["Qu'est-ce qu'un panda ?", "熊猫是一种生活在中国的熊。"],
]


@pytest.fixture
def reranker(encoder_path):
    return BGEReranker(encoder_path, device="cpu")


# --- results and options -------------------------------------------------------------------


def test_single_pair_gives_float_and_list_gives_list(reranker):
    many = reranker.compute_score(PAIRS)
    one = reranker.compute_score(PAIRS[1])
    assert isinstance(one, float) and isinstance(many, list) and len(many) == len(PAIRS)
    assert one == pytest.approx(many[1], abs=TOLERANCE)
    assert len(set(round(s, 4) for s in many)) == len(many), "random weights should separate the pairs"


def test_tuples_and_lists_score_the_same(reranker):
    assert reranker.compute_score([tuple(p) for p in PAIRS]) == reranker.compute_score(PAIRS)


def test_normalize_is_sigmoid_of_raw(reranker):
    raw = reranker.compute_score(PAIRS)
    normalized = reranker.compute_score(PAIRS, normalize=True)
    assert normalized == pytest.approx([1 / (1 + math.exp(-x)) for x in raw], abs=1e-7)
    assert all(0 < s < 1 for s in normalized)


def test_per_call_options_do_not_change_the_reranker(reranker):
    before = reranker.options
    first = reranker.compute_score(PAIRS)
    truncated = reranker.compute_score(PAIRS, max_length=16, normalize=True, batch_size=2)
    assert reranker.options == before
    assert reranker.compute_score(PAIRS) == first
    assert truncated != first


def test_constructor_options_are_the_defaults(encoder_path, reranker):
    configured = BGEReranker(encoder_path, device="cpu", max_length=16, normalize=True)
    assert configured.compute_score(PAIRS) == reranker.compute_score(PAIRS, max_length=16, normalize=True)


def test_query_max_length_follows_max_length_unless_given(encoder_path):
    assert BGEReranker(encoder_path, device="cpu").options.query_max_length == 384
    assert BGEReranker(encoder_path, device="cpu", max_length=100).options.query_max_length == 75
    assert BGEReranker(encoder_path, device="cpu", query_max_length=10).options.query_max_length == 10


def test_batch_size_does_not_change_scores_or_order(reranker):
    reference = reranker.compute_score(PAIRS)
    for batch_size in (1, 2, 3):
        assert reranker.compute_score(PAIRS, batch_size=batch_size) == pytest.approx(reference, abs=TOLERANCE)


def test_truncation_follows_the_reference_but_never_exceeds_positions(reranker, caplog):
    family = reranker.load().family
    long_query = " ".join(["what is panda?"] * 50)
    options = reranker.options.__class__(max_length=16, query_max_length=8)
    assert next(len(item) for item in family.encode([(long_query, PANDA * 30), ("q", "p")], options)) == 16
    # The query leaves no room: like the reference, the passage is kept whole.
    options = reranker.options.__class__(max_length=16, query_max_length=32)
    (kept,) = family.encode([(long_query, "hi")], options)
    assert len(kept) == 32 + 4 + len(family.tokenizer("hi", add_special_tokens=False)["input_ids"])
    # Beyond the model's 512 positions the pair is cut, with a warning.
    options = reranker.options.__class__(max_length=512, query_max_length=2000)
    with caplog.at_level(logging.WARNING):
        (capped,) = family.encode([(" ".join([long_query] * 20), PANDA * 40)], options)
    assert len(capped) == family.max_positions == 512
    assert "longer than the model's 512 positions" in caplog.text


def test_encoder_pair_layout_is_xlm_roberta(reranker):
    family = reranker.load().family
    tok = family.tokenizer
    encoded = family.encode([("what is panda?", "hi")], reranker.options)[0]
    q = tok("what is panda?", add_special_tokens=False)["input_ids"]
    p = tok("hi", add_special_tokens=False)["input_ids"]
    cls, sep = tok.cls_token_id, tok.sep_token_id
    assert encoded.input_ids == [cls, *q, sep, sep, *p, sep]


def test_rerank_orders_thresholds_and_cuts(reranker):
    passages = [p for _, p in PAIRS]
    scores = reranker.compute_score([("what is panda?", p) for p in passages])
    ranked = reranker.rerank("what is panda?", passages)
    assert [r.index for r in ranked] == sorted(range(len(passages)), key=lambda i: -scores[i])
    assert ranked[0] == RerankResult(ranked[0].index, scores[ranked[0].index], passages[ranked[0].index])
    assert [r.index for r in reranker.rerank("what is panda?", passages, top_n=2)] == [r.index for r in ranked[:2]]
    threshold = sorted(scores)[2]
    kept = reranker.rerank("what is panda?", passages, score_threshold=threshold, top_n=10)
    assert [r.index for r in kept] == [r.index for r in ranked if r.score >= threshold]
    assert reranker.rerank("what is panda?", passages, top_n=0) == []


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pairs, error, message",
    [
        ("what is panda?", TypeError, "pair"),
        ([["only one"]], ValueError, "index 0"),
        ([["q", "p", "x"]], ValueError, "Malformed pair at index 0"),
        ([["q", "p"], ["q", b"bytes"]], TypeError, "passage at index 1 must be a string"),
        ([[None, "p"]], TypeError, "query at index 0 must be a string"),
        ([["q", 3]], TypeError, "passage at index 0 must be a string"),
        ([["q", None]], TypeError, "must be a string"),
        (None, TypeError, "sentence_pairs"),
    ],
)
def test_bad_pairs_are_clear_errors(reranker, pairs, error, message):
    with pytest.raises(error, match=message):
        reranker.compute_score(pairs)


def test_bad_input_is_not_mutated(reranker):
    pairs = [["q", "p"], ["q", 3]]
    with pytest.raises(TypeError):
        reranker.compute_score(pairs)
    assert pairs == [["q", "p"], ["q", 3]]


def test_a_blank_encoder_pair_is_its_special_tokens(reranker):
    family = reranker.load().family
    (blank,) = family.encode([("", "   ")], reranker.options)  # this tokenizer drops whitespace
    template = family.layout
    assert blank.input_ids == [*template.prefix, *template.middle, *template.suffix] == [0, 2, 2, 2]
    assert blank.query_length == len(template.prefix + template.middle)


def test_blank_texts_are_scored_as_the_reference_scores_them(reranker):
    """Empty and whitespace-only queries and passages are text like any other (goldens: blank_texts)."""
    assert reranker.compute_score(["what is panda?", ""]) == pytest.approx(
        reference_score("encoder", "blank_single_pair", "what is panda?", ""), abs=TOLERANCE
    )
    results = reranker.rerank("what is panda?", ["", "   "])
    assert sorted(results, key=lambda r: r.index) == [
        RerankResult(
            i, pytest.approx(reference_score("encoder", "blank_texts", "what is panda?", text), abs=TOLERANCE), text
        )
        for i, text in enumerate(["", "   "])
    ]
    (blank_query,) = reranker.rerank("", ["hi"])
    assert blank_query.score == pytest.approx(reference_score("encoder", "blank_texts", "", "hi"), abs=TOLERANCE)


def test_empty_list_loads_nothing():
    reranker = BGEReranker("/nonexistent/checkpoint", device="cpu")
    assert reranker.compute_score([]) == []
    assert reranker._model is None


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"max_length": 0}, ValueError, "max_length must be a positive integer"),
        ({"batch_size": "8"}, ValueError, "batch_size must be a positive integer"),
        ({"normalize": "yes"}, ValueError, "normalize must be True or False"),
        ({"temperature": 1.0}, TypeError, "Unknown scoring option"),
        ({"cutoff_layers": [4]}, ValueError, "cutoff_layers does not apply to the encoder family"),
        ({"compress_ratio": 2}, ValueError, "compress_ratio does not apply"),
        ({"prompt": "Is B an answer to A?"}, ValueError, "prompt does not apply"),
        ({"max_length": 513}, ValueError, "max_length=513 is beyond what this model can take \\(512"),
        ({"query_instruction_format": "{}"}, ValueError, "two '\\{\\}'"),
    ],
)
def test_bad_options_are_clear_errors(reranker, options, error, message):
    with pytest.raises(error, match=message):
        reranker.compute_score(PAIRS, **options)


def _build(builder: str, model: str, **options):
    """A reranker or adapter of kind ``builder`` on ``model``; the adapters' tests skip where their extra is missing."""
    if builder == "core":
        return BGEReranker(model, device="cpu", **options)
    if builder == "llama_index":
        return pytest.importorskip("bge_rerank_integrations.llama_index", exc_type=ImportError).BGERerank(
            model=model, **options
        )
    langchain = pytest.importorskip("bge_rerank_integrations.langchain", exc_type=ImportError)
    return (langchain.BGECrossEncoder if builder == "langchain_cross_encoder" else langchain.BGERerank)(
        model=model, **options
    )


@pytest.mark.parametrize("builder", ["core", "langchain", "langchain_cross_encoder", "llama_index"])
@pytest.mark.parametrize(
    "model, option, family",
    [
        (checkpoint("encoder"), {"cutoff_layers": [2]}, "encoder"),
        ("BAAI/bge-reranker-v2-gemma", {"compress_ratio": 2}, "llm"),
    ],
    ids=["encoder", "llm"],
)
def test_an_option_the_family_lacks_fails_at_construction(builder, model, option, family):
    """The core and every adapter refuse it before loading anything (pydantic's ValidationError is a ValueError)."""
    (name,) = option
    with pytest.raises(ValueError, match=f"{name} does not apply to the {family} family"):
        _build(builder, model, **option)


def test_unknown_model_class():
    with pytest.raises(ValueError, match="Unknown model_class 'bert'.*encoder.*decoder-only-layerwise"):
        BGEReranker("x", model_class="bert", device="cpu")


def test_missing_local_checkpoint_is_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        BGEReranker(str(tmp_path / "missing"), device="cpu").compute_score(PAIRS)
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        BGEReranker(str(tmp_path), device="cpu").compute_score(PAIRS)


def test_hub_id_offline_says_how_to_use_a_local_path(tmp_path):
    reranker = BGEReranker("BAAI/bge-reranker-v2-m3", device="cpu", cache_dir=str(tmp_path), local_files_only=True)
    with pytest.raises(
        ModelNotFoundError, match="hf download BAAI/bge-reranker-v2-m3.*BGEReranker\\('./bge-reranker-v2-m3'\\)"
    ):
        reranker.compute_score(PAIRS)


# --- family detection -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, family",
    [
        ("BAAI/bge-reranker-base", "encoder"),
        ("BAAI/bge-reranker-large", "encoder"),
        ("BAAI/bge-reranker-v2-m3", "encoder"),
        ("BAAI/bge-reranker-v2-gemma", "llm"),
        ("BAAI/bge-reranker-v2-minicpm-layerwise", "layerwise"),
        ("BAAI/bge-reranker-v2.5-gemma2-lightweight", "lightweight"),
    ],
)
def test_known_ids_need_no_config(name, family):
    assert detect_family(name, None) == family


@pytest.mark.parametrize("family", FAMILIES)
def test_local_checkpoints_are_detected_from_config(family):
    assert detect_family(checkpoint(family), read_config(checkpoint(family))) == family


def test_names_are_not_guessed_from_substrings():
    with pytest.raises(ValueError, match="Pass model_class="):
        detect_family("someone/bge-reranker-v2-gemma-finetuned", {"model_type": "mystery"})


def test_flagembedding_aliases():
    assert canonical_family("decoder-only-lightweight") == "lightweight"
    assert canonical_family("encoder-only-base") == "encoder"


# --- device, dtype, batching ----------------------------------------------------------------


def test_cpu_runs_fp32_and_warns(caplog, monkeypatch):
    monkeypatch.setattr(
        "bge_rerank_integrations.device.cpu_fast_half_dtypes", frozenset
    )  # a CPU without fast half kernels
    with caplog.at_level(logging.WARNING):
        assert resolve_dtype(torch.device("cpu"), use_fp16=True) == torch.float32
    assert "float32" in caplog.text
    assert resolve_dtype(torch.device("cuda"), use_bf16=True) == torch.bfloat16
    assert resolve_dtype(torch.device("cuda"), use_fp16=True) == torch.float16
    with pytest.raises(ValueError, match="choose one"):
        resolve_dtype(torch.device("cuda"), use_fp16=True, use_bf16=True)


def test_device_policy_here():
    assert resolve_device(None).type == (
        "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    )
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu-please")


def test_batches_are_length_sorted_computed_once_and_reordered():
    calls = []

    def score(batch):
        calls.append(list(batch))
        return torch.tensor([[float(len(x)) for x in batch]])

    items = ["aa", "a", "aaaa", "aaa", "aaaaa"]
    scores = run_batches(items, [len(x) for x in items], 2, score)
    assert scores.tolist() == [[2.0, 1.0, 4.0, 3.0, 5.0]]
    assert calls == [["aaaaa", "aaaa"], ["aaa", "aa"], ["a"]]


def test_out_of_memory_halves_the_batch_and_keeps_going():
    sizes = []

    def score(batch):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.tensor([[float(len(x)) for x in batch]])

    items = ["a" * n for n in range(1, 10)]
    scores = run_batches(items, [len(x) for x in items], 8, score)
    assert scores.tolist() == [[float(n) for n in range(1, 10)]]
    assert sizes == [8, 4, 2, 2, 2, 2, 1]


def test_other_errors_propagate_at_once():
    calls = []

    def score(batch):
        calls.append(len(batch))
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_batches(["a", "b", "c"], [1, 1, 1], 2, score)
    assert calls == [2]


# --- cache and threads ----------------------------------------------------------------------


def test_same_checkpoint_shares_one_model(encoder_path, monkeypatch):
    monkeypatch.setattr("bge_rerank_integrations.device.cpu_fast_half_dtypes", frozenset)
    first = BGEReranker(encoder_path, device="cpu")
    second = BGEReranker(encoder_path, device="cpu", use_fp16=True)  # fp32 on a CPU without fast fp16
    assert first.load().family is second.load().family
    clear_model_cache()
    third = BGEReranker(encoder_path, device="cpu")
    assert third.load().family is not first.load().family


def test_concurrent_calls_match_sequential(reranker):
    expected = [reranker.compute_score(PAIRS, max_length=m) for m in (16, 32, 64, 512)]
    results: dict[int, list] = {}

    def work(slot: int) -> None:
        results[slot] = reranker.compute_score(PAIRS, max_length=(16, 32, 64, 512)[slot % 4])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i] == expected[i % 4] for i in range(12))


def test_library_prints_nothing(encoder_path, capsys):
    clear_model_cache()
    BGEReranker(encoder_path, device="cpu").compute_score(PAIRS)
    captured = capsys.readouterr()
    assert captured.out == ""


def test_written_newline_in_instruction_format_is_a_newline(reranker):
    written = reranker.compute_score(PAIRS, query_instruction_for_rerank="Q:", query_instruction_format="{}\\n{}")
    real = reranker.compute_score(PAIRS, query_instruction_for_rerank="Q:", query_instruction_format="{}\n{}")
    plain = reranker.compute_score(PAIRS)
    assert written == real and written != plain


@pytest.mark.parametrize("family", ["llm", "layerwise"])
def test_left_padded_scores_do_not_depend_on_our_batching(family, monkeypatch, one_torch_thread):
    """The CPU padding cap splits the reference's batches, yet each row keeps the reference's positions.

    Before rows carried the reference's position offsets, the two batchings were up to ~7e-5 apart
    on these cases (layerwise ``query_max_length_init``); now they differ by float rounding (~1e-5).
    """
    import bge_rerank_integrations.reranker as reranker_module

    split, worst = 0, 0.0
    for case in load_goldens(family)["cases"]:
        if case.get("single_pair"):
            continue
        reranker = BGEReranker(checkpoint(family), device="cpu", **case["init"])
        family_obj = reranker.load().family
        batches = []
        forward = family_obj.forward

        def counting_forward(batch, options, batches=batches, forward=forward):
            batches.append(len(batch))
            return forward(batch, options)

        monkeypatch.setattr(family_obj, "forward", counting_forward)
        monkeypatch.setattr(reranker_module, "CPU_MAX_PADDING", 0.2)
        capped = torch.tensor(reranker.compute_score(case["pairs"], **case["call"]))
        capped_batches = list(batches)
        monkeypatch.setattr(reranker_module, "CPU_MAX_PADDING", None)
        batches.clear()
        as_reference = torch.tensor(reranker.compute_score(case["pairs"], **case["call"]))
        split += capped_batches != batches
        worst = max(worst, (capped - as_reference).abs().max().item())
        monkeypatch.undo()
    assert split >= 3, "the padding cap should split several of these cases"
    assert worst <= 3e-5, worst


def test_reference_position_offsets_follow_the_reference_batches():
    from bge_rerank_integrations.families.decoder_text import reference_position_offsets

    # Sorted by key (longest first): [1, 2] (width 16) then [0] (width 8).
    assert reference_position_offsets([5, 9, 7], [6, 10, 8], batch_size=2) == [2, 6, 8]
    assert reference_position_offsets([5, 9, 7], [6, 10, 8], batch_size=3) == [10, 6, 8]
    assert reference_position_offsets([3], [13], batch_size=128) == [3]


# --- token counts (the servers' usage figures) ---------------------------------------------


def test_score_groups_counts_what_the_encoder_reads(reranker):
    tokenizer = reranker.load().family.tokenizer
    query, passage = PAIRS[1]
    alone = len(tokenizer(query, add_special_tokens=False)["input_ids"]) + len(
        tokenizer(passage, add_special_tokens=False)["input_ids"]
    )

    def tokens(pairs, **options):
        return [group.tokens for group in reranker.score_groups(pairs, **options)]

    assert tokens([[PAIRS[1]]]) == [[alone + 4]]  # <s> q </s></s> p </s>
    assert tokens([PAIRS], max_length=16) == [[min(16, n) for n in tokens([PAIRS])[0]]]
    assert tokens([[PAIRS[3]], []], max_length=16) == [[16], []]
    assert reranker.score_groups([]) == [] and tokens([[]]) == [[]]


@pytest.mark.parametrize("family", ["encoder", "llm", "layerwise", "lightweight"])
def test_score_groups_scores_each_group_as_its_own_call(family, one_torch_thread):
    """Merged requests (the server's dynamic batching) keep exactly the scores of separate calls."""
    reranker = BGEReranker(checkpoint(family), device="cpu")
    groups = [PAIRS[:1], PAIRS[1:], [PAIRS[2], PAIRS[0]]]
    merged = reranker.score_groups(groups)
    for group, scored in zip(groups, merged):
        assert scored.scores == pytest.approx(reranker.compute_score(group), abs=1e-5)  # float rounding only
        assert len(scored.tokens) == len(group)
