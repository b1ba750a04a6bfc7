"""Golden scores from the reference implementation (FlagEmbedding 1.4.2) on the fixture checkpoints.

Usage (reference environment: FlagEmbedding 1.4.2, transformers 4.46.3, torch CPU)::

    .venv-ref/bin/python tools/goldens.py write  [--family NAME]   # (re)write tests/fixtures/goldens/*.json
    .venv-ref/bin/python tools/goldens.py check  [--family NAME]   # recompute, compare (abs tol 1e-4)

and, in *either* environment (no FlagEmbedding needed)::

    .venv/bin/python tools/goldens.py compat [--family NAME]

``NAME`` is a fixture: a family (``encoder``, ``llm``, ``layerwise``, ``lightweight``) or its
tokenizer variant ``<family>-nfkc`` (see ``tools/build_fixtures.py``).

``compat`` loads the fixture tokenizers (with the package's own loader,
``bge_rerank_integrations.tokenization``) and models with the installed transformers and compares
them with what the reference (its ``AutoTokenizer`` under transformers 4.46.3) recorded in
``tests/fixtures/goldens/compat.json``:
``tok(text, add_special_tokens=False)`` ids (also truncated) for every text of the case matrix
(queries and passages as the reference sees them, i.e. with instructions applied), the prompts,
``"Yes"`` and ``"\\n"``; bos/eos/pad/unk ids, padding side, ``len(tokenizer)``; safetensors key
names/shapes; for ``encoder``/``llm`` also raw logits of the transformers model classes on a
fixed input. ``write`` records it, ``check`` re-verifies it.

Each fixture's file holds ``cases``: constructor kwargs (``init``), per-call kwargs (``call``),
``pairs`` and ``scores`` exactly as the reference returns them (a list of floats, or one list
per cutoff layer). Tests add ``device="cpu"``. ``single_pair: true`` means the reference was
called with the bare pair ``pairs[0]`` (it still returns a one-element list). ``quirk: true``
marks cases that pin a reference oddity (see ``note``).

Reference behaviours pinned by cases (FlagEmbedding 1.4.2 file:line)
-------------------------------------------------------------------
* query_max_length precedence: call > constructor > ``max_length * 3 // 4`` of the *call's*
  max_length (encoder_only/base.py:102-108, decoder_only/base.py:291-297): cases
  ``max_length_call_derives_qml`` and ``init_qml_beats_call_max_length``.
* Truncation "only_second" leaves the pair untouched (no truncation at all, only a logged
  error) when the second sequence is not longer than the overflow
  (transformers 4.46.3 tokenization_utils_base.py:3824-3836, reached through
  FlagEmbedding utils/tokenizer_compat.py:94-106): encoder case
  ``quirk_query_exceeds_budget`` (the pair ends up longer than max_length), llm case
  ``quirk_passage_not_truncated`` (decoder budget is ``max_length + len(sep) + len(prompt)``
  for ``[bos]+q`` + ``sep+p``, decoder_only/base.py:366 and :459-484, before ``sep+prompt``
  is appended).
* llm: bos is prepended only when ``bos_token_id`` is set and differs from ``pad_token_id``
  (decoder_only/base.py:460); layerwise/lightweight always prepend it (layerwise.py:336,
  lightweight.py:396). The Yes id is ``tok("Yes", add_special_tokens=False)[0]``
  (decoder_only/base.py:258).
* Padding: llm/layerwise pad with the tokenizer's side (left in these fixtures, as in the
  released tokenizers) to a multiple of 8 (decoder_only/base.py:166-172); lightweight forces
  right padding (lightweight.py:183). Position ids are never passed: every model uses
  ``0..L-1`` including pads.
* layerwise: heads are ``lm_head[cutoff - start_layer]`` applied to ``norm(h_cutoff)``
  with no scaling for head_type "simple" (models/modeling_minicpm_reranker.py:1369-1380; the
  ``hidden_size / dim_model_base`` division only exists for "raw"/"complex" heads). Hidden
  states are collected in layer order but heads are picked by the *given* list order
  (:1085-1086 vs :1377), so non-ascending lists mis-pair: only ascending lists are cased.
  Default cutoff is ``[num_hidden_layers]`` (:1260-1261).
* lightweight: the i-th collected hidden state (ascending layer order) goes through
  ``lm_head[i]`` -- the head is picked by position, not by layer (models/gemma_model.py:645-646).
  So the default (``[num_hidden_layers]``) and any single cutoff use ``lm_head[0]``, and a
  non-ascending list gives the same result as the sorted one (case
  ``cutoff_non_ascending``). Final-logit soft-capping ``30*tanh(x/30)`` is applied to every
  head output (:647-650). Compression happens before running layer ``idx`` when ``idx`` is in
  ``compress_layers`` and ``idx != 0`` (:376), *after* the cutoff capture for the same idx
  (:367-372): a cutoff equal to a compress layer sees the uncompressed sequence (case
  ``compress_3_5_cutoffs``); compress layer 0 is ignored (case ``compress_layer_0_ignored``);
  compression compounds; ``compress_ratio=1`` means no compression (:585-586). The
  constructor default ``compress_layers=[8]`` (lightweight.py:139) is active in the 10-layer
  fixture (case ``compress_ratio_2_default_layers``). The score is read at the last real
  token of the (compressed) mask returned with each hidden state (lightweight.py:436-437).
  Under transformers 4.46.3 the model runs ``Gemma2SdpaAttention``, which ignores
  ``attn_logit_softcapping`` (transformers models/gemma2/modeling_gemma2.py:464-474).
* lightweight: ``use_fp16`` is forced on only in a local variable (lightweight.py:185-187),
  and on CPU fp16 is switched off anyway (``device == "cpu"``, lightweight.py:262): fp32.
  encoder case ``default_max_length_long_passage`` passes ``use_fp16=True`` (ignored on CPU).

Tolerance
---------
``check``, ``compat`` and the tests allow 1e-4 (absolute): the float32 kernels differ between
CPUs (a 2-core AVX2-only AMD EPYC recomputed the layerwise/lightweight goldens up to 4e-5 away
from an AVX-512 machine's, with one thread), while a wrong token, mask, position or formula moves
these random-weight scores by 1e-2 or more.

Matching these goldens at 1e-5 on one machine (what an implementation must reproduce)
-------------------------------------------------------------------------------------
* Position ids are ``0..L-1`` over the *padded* row, pads included (gemma
  transformers models/gemma/modeling_gemma.py:791-792, minicpm modeling_minicpm_reranker.py:1041,
  cost-wise gemma_model.py:327 and :383 after compression). RoPE angles are computed in fp32
  at those absolute positions, so with left padding (llm, layerwise) a score moves by
  ~1e-5..3e-5 with the amount of padding, i.e. with the batch it lands in (measured here:
  llm batch_size 1 vs 8 differs by 1.5e-5, layerwise by 2.9e-5; llm with mask-derived
  positions differs from the goldens by up to 1.8e-5). To hit 1e-5, reproduce the batching:
  sort by ``-(len(q_ids) + len(p_ids))`` after the per-text truncation (decoders) or by
  ``-len(pair input_ids)`` (encoder) with ``np.argsort`` (insertion sort, i.e. stable, for
  fewer than 17 items), split into ``batch_size`` chunks, pad each chunk to a multiple of 8
  (decoders; encoder pads to the chunk's longest) on the tokenizer's side, positions =
  ``arange(L)``. Right padding (encoder, lightweight) has no such dependence beyond ~1e-6.
  The package does this for positions: each left-padded row carries the offset its reference
  batch gives it (``decoder_text.reference_position_offsets``), whatever batches it runs in.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]
CKPT_DIR = ROOT / "tests" / "fixtures" / "checkpoints"
GOLDEN_DIR = ROOT / "tests" / "fixtures" / "goldens"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_fixtures import FIXTURES as _BUILT  # noqa: E402 - the one list of fixtures

#: Fixture (checkpoint directory) -> family.
FIXTURES = {name: fixture.family for name, fixture in _BUILT.items()}
#: Portable across CPUs (see "Tolerance" above); the tests use the same.
ATOL = 1e-4

LLM_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)
LIGHTWEIGHT_PROMPT = "Predict whether passage B contains an answer to query A."

# ----------------------------------------------------------------------------------------------
# Texts
# ----------------------------------------------------------------------------------------------
PANDA = [
    ["what is panda?", "hi"],
    [
        "what is panda?",
        "The giant panda (Ailuropoda melanoleuca), sometimes called a panda bear or simply panda, "
        "is a bear species endemic to China.",
    ],
]
CAPITALS = [
    ["What is the capital of France?", "Paris is the capital of France."],
    ["What is the capital of France?", "The population of China is over 1.4 billion people."],
    ["What is the population of China?", "Paris is the capital of France."],
    ["What is the population of China?", "The population of China is over 1.4 billion people."],
]
SEED_PAIR = ["query", "passage"]

SENTENCES = [
    "The river flows north through the valley before it reaches the sea.",
    "Pandas eat bamboo; they live in the mountains of central China.",
    "Paris is the capital and largest city of France.",
    "Machine learning models rank passages by their relevance to a search query.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The weather today is sunny with a light breeze from the west.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Who wrote Hamlet? William Shakespeare wrote Hamlet around the year 1600.",
    "Berlin is the capital of Germany, and Madrid is the capital of Spain.",
    "A reranker reads the query and the passage together and outputs a single score.",
    "Bananas are rich in potassium and easy to carry.",
    "How many people live in Tokyo? About fourteen million people live in Tokyo.",
]


def _passage(n: int, start: int = 0) -> str:
    return " ".join(SENTENCES[(start + i) % len(SENTENCES)] for i in range(n))


MEDIUM_P = _passage(4, 1)  # ~60 tokens
LONG_P = _passage(9, 3)  # ~140 tokens
VERY_LONG_P = _passage(48, 0)  # > 600 tokens: truncated by the default max_length=512
LONG_Q = (
    "What is the capital of France and how many people live in Paris, Berlin, Madrid and Tokyo, "
    "and which river flows north through the valley before it reaches the sea?"
)
LONG_Q2 = "Who wrote Hamlet, when was it written, and why do pandas in the mountains of central China eat bamboo?"

MULTILINGUAL = [
    ["什么是熊猫？", "大熊猫是中国特有的动物，生活在山里。"],
    ["Quelle est la capitale de la France ?", "Paris est la capitale de la France."],
    ["Wie viele Menschen leben in China?", "Über 1,4 Milliarden Menschen leben in China. Straße und Größe."],
    ["Какое население Китая?", "Более 1,4 миллиарда человек живут в Китае."],
    ["Do pandas like bamboo? 🐼", "Yes 👍 pandas eat bamboo 🎋 every day."],
    # scripts/emoji absent from the tokenizer corpus: byte fallback (BPE) / <unk> (Unigram)
    ["日本の首都はどこですか？", "東京は日本の首都です。 Ωμέγα ψ 🦄"],
    # whitespace handling: tabs, double spaces, newlines
    ["tabs\tand  double  spaces", "line one\nline two\n\nend  "],
]

#: Texts that the -nfkc tokenizers' NFKC normalizer and pre-tokenizers act on: full-width forms,
#: ligatures, circled digits, runs of spaces, digits, punctuation, a no-break space, tabs and newlines.
NFKC_PAIRS = [
    ["什么是熊猫？", "大熊猫是中国特有的动物，生活在山里。"],
    ["Ｗｈａｔ ｉｓ ｔｈｅ ｃａｐｉｔａｌ ｏｆ Ｆｒａｎｃｅ？", "Paris is the capital of France."],
    ["what  is   panda?", "The giant panda is a ﬁne bear ① ② ③ that eats bamboo."],
    ["How many people live in Tokyo?", "About 14,000,000 people live in Tokyo\u00a0(2024 report, ½ of them…)."],
    ["Yes or No?", "Yes… 'Yes' ‘No’ “Yes”: the passage answers it."],
    ["tabs\tand  double  spaces", "line one\nline two\n\nend  "],
]
#: Blank and whitespace-only queries and passages: the reference scores them all.
BLANK_PAIRS = [
    ["what is panda?", ""],
    ["", "hi"],
    ["   ", "\t\n "],
    ["", ""],
    ["what is panda?", "   "],
]
#: Empty instructions: a blank text then gives a zero-length id list (decoders' default "A: "/"B: " never do).
NO_INSTRUCTIONS = {"query_instruction_for_rerank": "", "passage_instruction_for_rerank": ""}

MIXED8 = [
    ["what is panda?", "hi"],
    ["What is the capital of France?", LONG_P],
    ["Paris", "Paris is the capital of France."],
    ["什么是熊猫？", "大熊猫是中国特有的动物。"],
    [LONG_Q2, MEDIUM_P],
    ["Yes or no?", "No."],
    [
        "Berlin ist die Hauptstadt von Deutschland?",
        "Berlin is the capital of Germany, and Madrid is the capital of Spain.",
    ],
    ["What is the population of China?", "The population of China is over 1.4 billion people."],
]

TRUNC_PAIRS = [
    ["What is the capital of France?", LONG_P],
    ["what is panda?", MEDIUM_P],
    ["hi", "Paris is the capital of France."],
]
LONG_QUERY_PAIRS = [
    [LONG_Q, "Paris is the capital of France."],
    [LONG_Q2, MEDIUM_P],
    ["short query", LONG_P],
]
INSTR_ENCODER = {
    "query_instruction_for_rerank": "Represent this query for searching relevant passages: ",
    "passage_instruction_for_rerank": "Passage: ",
}
INSTR_DECODER = {"query_instruction_for_rerank": "Query: ", "passage_instruction_for_rerank": "Document: "}
CUSTOM_PROMPT = "Does the document answer the query? Answer Yes or No."


def _case(cid, pairs, init=None, call=None, note=None, single_pair=False, quirk=False):
    c = {"id": cid, "init": dict(init or {}), "call": dict(call or {})}
    if single_pair:
        c["single_pair"] = True
    if quirk:
        c["quirk"] = True
    if note:
        c["note"] = note
    c["pairs"] = [list(p) for p in pairs]
    return c


def build_cases() -> dict[str, list[dict]]:
    enc = [
        _case("default", CAPITALS, note="defaults: max_length 512, no normalize"),
        _case("panda_seed", PANDA),
        _case("single_pair", [SEED_PAIR], single_pair=True, note="called with the bare pair ['query', 'passage']"),
        _case("normalize_init", CAPITALS, init={"normalize": True}),
        _case("normalize_call", PANDA, call={"normalize": True}),
        _case("truncation_max_length_24", TRUNC_PAIRS, call={"max_length": 24}),
        _case("query_max_length_init", LONG_QUERY_PAIRS, init={"query_max_length": 8, "max_length": 64}),
        _case(
            "max_length_call_derives_qml",
            LONG_QUERY_PAIRS,
            call={"max_length": 40},
            note="query_max_length = 40 * 3 // 4 = 30",
        ),
        _case(
            "init_qml_beats_call_max_length",
            LONG_QUERY_PAIRS,
            init={"query_max_length": 12},
            call={"max_length": 32},
            note="constructor query_max_length (12) wins over 32 * 3 // 4",
        ),
        _case("instructions", CAPITALS, init=INSTR_ENCODER),
        _case("multilingual", MULTILINGUAL),
        _case("batch_size_1", MIXED8, call={"batch_size": 1}),
        _case("batch_size_3", MIXED8, init={"batch_size": 3}),
        _case(
            "default_max_length_long_passage",
            [["what is panda?", VERY_LONG_P], ["Who wrote Hamlet?", VERY_LONG_P]],
            init={"use_fp16": True},
            note="passage > 512 tokens truncated to the 512 budget; use_fp16 is ignored on CPU (fp32)",
        ),
        _case(
            "quirk_query_exceeds_budget",
            [[LONG_Q, "Paris is the capital of France."], ["hi", LONG_P]],
            call={"max_length": 16, "query_max_length": 32},
            quirk=True,
            note="QUIRK: first pair: query (32) + specials > 16, passage cannot absorb the overflow -> "
            "no truncation at all, the pair is longer than max_length; second pair truncated to 16",
        ),
        _case(
            "blank_texts", BLANK_PAIRS, note="blank and whitespace-only texts (whitespace tokenizes to nothing here)"
        ),
        _case("blank_single_pair", [BLANK_PAIRS[0]], single_pair=True, note="the bare pair ['what is panda?', '']"),
    ]

    llm = [
        _case("default", CAPITALS),
        _case("panda_seed", PANDA),
        _case("single_pair", [SEED_PAIR], single_pair=True),
        _case("normalize", CAPITALS, call={"normalize": True}),
        _case("truncation_max_length_24", TRUNC_PAIRS, call={"max_length": 24}),
        _case("query_max_length_init", LONG_QUERY_PAIRS, init={"query_max_length": 10}),
        _case("max_length_call_derives_qml", LONG_QUERY_PAIRS, call={"max_length": 40}, note="qml = 30"),
        _case("instructions", CAPITALS, init=INSTR_DECODER),
        _case("prompt_init", PANDA + CAPITALS[:2], init={"prompt": CUSTOM_PROMPT}),
        _case("multilingual", MULTILINGUAL),
        _case("batch_size_1", MIXED8, call={"batch_size": 1}),
        _case("batch_size_3", MIXED8, init={"batch_size": 3}),
        _case("default_max_length_long_passage", [["what is panda?", VERY_LONG_P], ["hi", "Paris"]]),
        _case(
            "quirk_passage_not_truncated",
            [[LONG_Q, LONG_P], ["hi", LONG_P]],
            call={"max_length": 16, "query_max_length": 48, "prompt": "Relevant?"},
            quirk=True,
            note="QUIRK: budget for [bos]+q + sep+p is 16 + len(sep) + len(prompt); the long query overflows "
            "by more than sep+p, so nothing is truncated; the short query's passage loses the overflow",
        ),
        _case("blank_texts", BLANK_PAIRS),
        _case(
            "blank_texts_no_instructions",
            BLANK_PAIRS,
            init=NO_INSTRUCTIONS,
            note="empty instructions: blank texts give zero-length query/passage ids",
        ),
    ]

    layerwise = [
        _case("default", CAPITALS, note="cutoff_layers default = [num_hidden_layers] = [6]"),
        _case("panda_seed_cutoff_last", PANDA, init={"cutoff_layers": [6]}),
        _case("single_pair", [SEED_PAIR], single_pair=True, call={"cutoff_layers": [4]}),
        _case("cutoff_start_layer", CAPITALS, call={"cutoff_layers": [2]}),
        _case("cutoff_middle", CAPITALS, init={"cutoff_layers": [4]}),
        _case("cutoff_several", CAPITALS, call={"cutoff_layers": [2, 4, 6]}),
        _case("cutoff_several_normalize", PANDA, call={"cutoff_layers": [3, 5], "normalize": True}),
        _case("normalize", CAPITALS, init={"normalize": True}),
        _case("truncation_max_length_24", TRUNC_PAIRS, call={"max_length": 24, "cutoff_layers": [5]}),
        _case("max_length_call_derives_qml", LONG_QUERY_PAIRS, call={"max_length": 40}, note="qml = 30"),
        _case("query_max_length_init", LONG_QUERY_PAIRS, init={"query_max_length": 10}),
        _case("instructions_prompt_call", CAPITALS, init=INSTR_DECODER, call={"prompt": CUSTOM_PROMPT}),
        _case("multilingual", MULTILINGUAL, call={"cutoff_layers": [3, 6]}),
        _case("batch_size_1", MIXED8, call={"batch_size": 1}),
        _case("batch_size_3", MIXED8, init={"batch_size": 3, "cutoff_layers": [2, 6]}),
        _case("blank_texts", BLANK_PAIRS, call={"cutoff_layers": [4, 6]}),
        _case("blank_texts_no_instructions", BLANK_PAIRS, init=NO_INSTRUCTIONS),
    ]

    lightweight = [
        _case(
            "default",
            CAPITALS,
            note="cutoff [10] (num_hidden_layers), compress_ratio 1; the score uses lm_head[0] (position, not layer)",
        ),
        _case("panda_seed", PANDA),
        _case("single_pair", [SEED_PAIR], single_pair=True),
        _case("cutoff_start_layer", CAPITALS, call={"cutoff_layers": [2]}),
        _case("cutoff_middle_init", CAPITALS, init={"cutoff_layers": [6]}, note="lm_head[0] on layer 6"),
        _case("cutoff_several", CAPITALS, call={"cutoff_layers": [3, 6, 10]}, note="heads 0, 1, 2"),
        _case(
            "cutoff_non_ascending",
            PANDA,
            call={"cutoff_layers": [10, 4]},
            note="same as [4, 10]: hidden states come out in layer order, heads by position",
        ),
        _case(
            "compress_ratio_2_default_layers",
            MIXED8[:4] + CAPITALS[:2],
            call={"compress_ratio": 2},
            note="constructor default compress_layers=[8]",
        ),
        _case("compress_ratio_4_layer_2", TRUNC_PAIRS + PANDA, init={"compress_ratio": 4, "compress_layers": [2]}),
        _case(
            "compress_ratio_8_layers_2_4",
            TRUNC_PAIRS + PANDA,
            call={"compress_ratio": 8, "compress_layers": [2, 4], "cutoff_layers": [6]},
        ),
        _case(
            "compress_3_5_cutoffs",
            MIXED8,
            call={"compress_ratio": 2, "compress_layers": [3, 5], "cutoff_layers": [3, 5, 8]},
            note="cutoff 3 and 5 see the sequence before the compression at that layer; compression compounds",
        ),
        _case(
            "compress_ratio_1_no_compression",
            PANDA,
            call={"compress_ratio": 1, "compress_layers": [2, 4]},
            note="ratio 1 = no compression: equals panda_seed",
        ),
        _case(
            "compress_layer_0_ignored",
            PANDA,
            call={"compress_ratio": 2, "compress_layers": [0, 6], "cutoff_layers": [8]},
        ),
        _case(
            "normalize_truncation",
            TRUNC_PAIRS,
            init={"normalize": True},
            call={"max_length": 24, "compress_ratio": 2, "compress_layers": [4], "cutoff_layers": [4, 9]},
        ),
        _case(
            "long_query_instructions_prompt",
            LONG_QUERY_PAIRS,
            init={**INSTR_DECODER, "prompt": CUSTOM_PROMPT},
            call={"max_length": 40, "compress_ratio": 2, "compress_layers": [4]},
            note="qml = 30",
        ),
        _case("multilingual_batch_3", MULTILINGUAL, call={"batch_size": 3, "cutoff_layers": [5, 10]}),
        _case("blank_texts", BLANK_PAIRS),
        _case(
            "blank_texts_no_instructions_compressed",
            BLANK_PAIRS,
            init=NO_INSTRUCTIONS,
            call={"compress_ratio": 2, "compress_layers": [4], "cutoff_layers": [6, 10]},
            note="an empty passage segment between query and prompt at the compression",
        ),
    ]

    # Tokenizer variants: NFKC normalizer and other pre-tokenizers (tools/build_fixtures.py).
    nfkc_default = NFKC_PAIRS + CAPITALS[:2]
    encoder_nfkc = [
        _case("default", nfkc_default),
        _case("truncation_max_length_16", NFKC_PAIRS, call={"max_length": 16}),
        _case("blank_texts", BLANK_PAIRS),
    ]
    llm_nfkc = [
        _case("default", nfkc_default, note="padding_side unset in tokenizer_config.json: the class's (left)"),
        _case("truncation_max_length_16", NFKC_PAIRS, call={"max_length": 16}),
        _case("blank_texts", BLANK_PAIRS),
        _case("blank_texts_no_instructions", BLANK_PAIRS, init=NO_INSTRUCTIONS),
    ]
    layerwise_nfkc = [
        _case("default", nfkc_default, note="cutoff_layers default = [4]; padding_side unset (left)"),
        _case("cutoff_several", NFKC_PAIRS, call={"cutoff_layers": [2, 3, 4]}),
        _case("blank_texts", BLANK_PAIRS),
    ]
    lightweight_nfkc = [
        _case("default", nfkc_default),
        _case(
            "compress_ratio_2_layer_2",
            NFKC_PAIRS,
            call={"compress_ratio": 2, "compress_layers": [2], "cutoff_layers": [3, 4]},
        ),
        _case(
            "blank_texts_no_instructions_compressed",
            BLANK_PAIRS,
            init=NO_INSTRUCTIONS,
            call={"compress_ratio": 2, "compress_layers": [2]},
        ),
    ]
    return {
        "encoder": enc,
        "llm": llm,
        "layerwise": layerwise,
        "lightweight": lightweight,
        "encoder-nfkc": encoder_nfkc,
        "llm-nfkc": llm_nfkc,
        "layerwise-nfkc": layerwise_nfkc,
        "lightweight-nfkc": lightweight_nfkc,
    }


# ----------------------------------------------------------------------------------------------
# Reference runs
# ----------------------------------------------------------------------------------------------
def _quiet_reference():
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    for name in ("FlagEmbedding", "transformers"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _reference_classes():
    from FlagEmbedding import FlagLLMReranker, FlagReranker, LayerWiseFlagLLMReranker, LightWeightFlagLLMReranker

    return {
        "encoder": FlagReranker,
        "llm": FlagLLMReranker,
        "layerwise": LayerWiseFlagLLMReranker,
        "lightweight": LightWeightFlagLLMReranker,
    }


def reference_versions() -> dict:
    import importlib.metadata as md

    return {
        "flagembedding": md.version("FlagEmbedding"),
        "transformers": md.version("transformers"),
        "torch": md.version("torch"),
    }


def _as_floats(scores):
    if isinstance(scores, (list, tuple)):
        return [_as_floats(s) for s in scores]
    return float(scores)


def run_family(name: str, cases: list[dict]) -> list:
    import contextlib
    import io

    import torch

    # One thread: deterministic reductions, and much faster for these tiny models on a
    # shared 2-core machine (thread hand-offs dominate).
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cls = _reference_classes()[FIXTURES[name]]
    ckpt = str(CKPT_DIR / name)
    out = []
    for case in cases:
        # The reference prints tqdm bars (explicit disable=...) and warnings: keep them out.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            reranker = cls(ckpt, devices="cpu", **case["init"])
            pairs = case["pairs"][0] if case.get("single_pair") else case["pairs"]
            scores = reranker.compute_score(pairs, **case["call"])
            del reranker
        out.append(_as_floats(scores))
    return out


# ----------------------------------------------------------------------------------------------
# Compat data (tokenizers and checkpoint format, across transformers versions)
# ----------------------------------------------------------------------------------------------
DEFAULT_INSTR = {
    "encoder": (None, None),
    "llm": ("A: ", "B: "),
    "layerwise": ("A: ", "B: "),
    "lightweight": ("A: ", "B: "),
}
DEFAULT_PROMPT = {"llm": LLM_PROMPT, "layerwise": LLM_PROMPT, "lightweight": LIGHTWEIGHT_PROMPT}


def compat_texts(family: str, cases: list[dict]) -> list[str]:
    """Every string the reference tokenizes on its own for this family's cases."""
    texts: list[str] = ["Yes", "No", "\n", "A: ", "B: "]
    for case in cases:
        qi, pi = DEFAULT_INSTR[family]
        qi = case["init"].get("query_instruction_for_rerank", qi)
        pi = case["init"].get("passage_instruction_for_rerank", pi)
        for q, p in case["pairs"]:
            texts.append(q if qi is None else qi + q)
            texts.append(p if pi is None else pi + p)
        if family != "encoder":
            texts.append(case["call"].get("prompt", case["init"].get("prompt", DEFAULT_PROMPT[family])))
    seen, uniq = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            uniq.append(t)
    return uniq


def reference_tokenizer(name: str):
    """The tokenizer the reference loads: ``AutoTokenizer`` (run under its transformers 4.46.3)."""
    from transformers import AutoTokenizer

    # trust_remote_code=False: the layerwise/lightweight config.json carry an auto_map.
    return AutoTokenizer.from_pretrained(str(CKPT_DIR / name), trust_remote_code=False)


def package_tokenizer(name: str):
    """The tokenizer our package loads, under the installed transformers."""
    sys.path.insert(0, str(ROOT))
    from bge_rerank_integrations.tokenization import load_tokenizer

    return load_tokenizer(CKPT_DIR / name)


FIXED_IDS = {  # deterministic model probes (ids are valid in every fixture vocab)
    "encoder": [[0, 10, 11, 12, 13, 2, 2, 20, 21, 22, 23, 24, 2], [0, 30, 31, 2, 2, 40, 41, 2, 1, 1, 1, 1, 1]],
    "llm": [[2, 300, 301, 302, 303, 304, 305, 306], [0, 0, 0, 2, 400, 401, 402, 403]],
}


def _model_probe(name: str) -> dict:
    import torch

    ids = torch.tensor(FIXED_IDS[name])
    if FIXTURES[name] == "encoder":
        from transformers import XLMRobertaForSequenceClassification as Cls

        mask = (ids != 1).long()
    else:
        from transformers import GemmaForCausalLM as Cls

        mask = (ids != 0).long()
    model, info = Cls.from_pretrained(str(CKPT_DIR / name), output_loading_info=True, trust_remote_code=False)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    if FIXTURES[name] == "encoder":
        values = logits.view(-1).tolist()
    else:  # last position, first 16 vocabulary entries + "Yes"
        values = logits[:, -1, :16].reshape(-1).tolist()
    loading = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    loading = {k: [str(x) for x in v] for k, v in loading.items()}
    return {"class": Cls.__name__, "logits": values, "loading_info": loading}


def compute_compat(name: str, cases: list[dict], load_tokenizer=package_tokenizer) -> dict:
    from safetensors import safe_open

    tok = load_tokenizer(name)
    texts = compat_texts(FIXTURES[name], cases)
    data = {
        "tokenizer": {
            "len": len(tok),
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "unk_token_id": tok.unk_token_id,
            "padding_side": tok.padding_side,
            "truncation_side": tok.truncation_side,
            "yes_id": tok("Yes", add_special_tokens=False)["input_ids"][0],
        },
        "texts": texts,
        "ids": [tok(t, add_special_tokens=False)["input_ids"] for t in texts],
        "ids_truncated_8": tok(texts, add_special_tokens=False, max_length=8, truncation=True)["input_ids"],
    }
    with safe_open(str(CKPT_DIR / name / "model.safetensors"), framework="pt") as f:
        data["safetensors"] = {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}
    if name in FIXED_IDS:
        data["model_probe"] = _model_probe(name)
    return data


def compare_compat(expected: dict, got: dict) -> list[str]:
    problems = []
    for k, v in expected["tokenizer"].items():
        if got["tokenizer"].get(k) != v:
            problems.append(f"tokenizer.{k}: expected {v!r}, got {got['tokenizer'].get(k)!r}")
    if expected["texts"] != got["texts"]:
        problems.append("compat text list differs from the case matrix (re-run `write`)")
    else:
        for key in ("ids", "ids_truncated_8"):
            for t, a, b in zip(expected["texts"], expected[key], got[key]):
                if a != b:
                    problems.append(f"{key} differ for {t[:40]!r}: expected {a[:12]}..., got {b[:12]}...")
    if expected["safetensors"] != got["safetensors"]:
        problems.append("safetensors keys/shapes differ")
    if "model_probe" in expected:
        e, g = expected["model_probe"], got.get("model_probe", {})
        if any(g.get("loading_info", {}).get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
            problems.append(f"model loading info: {g.get('loading_info')}")
        diff = max(abs(a - b) for a, b in zip(e["logits"], g.get("logits", [math.inf] * len(e["logits"]))))
        if not diff <= ATOL:
            problems.append(f"model probe logits differ by {diff:.3g}")
    return problems


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------
def _golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"


def _dump(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _max_abs_diff(a, b) -> float:
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
            return math.inf
        return max((_max_abs_diff(x, y) for x, y in zip(a, b)), default=0.0)
    d = abs(float(a) - float(b))
    return d if d == d else math.inf  # NaN -> inf


def _flatten(x):
    if isinstance(x, list):
        for y in x:
            yield from _flatten(y)
    else:
        yield x


def cmd_write(names: list[str], tokenizer: str) -> int:
    _quiet_reference()
    all_cases = build_cases()
    versions = reference_versions()
    compat_path = GOLDEN_DIR / "compat.json"
    compat = json.loads(compat_path.read_text(encoding="utf-8")) if compat_path.exists() else {}
    compat["reference"] = {"transformers": versions["transformers"]}
    for name in names:
        t0 = time.time()
        cases = all_cases[name]
        scores = run_family(name, cases)
        doc = {
            "family": FIXTURES[name],
            "checkpoint": f"tests/fixtures/checkpoints/{name}",
            "reference": versions,
            "tolerance": ATOL,
            "cases": [{**c, "scores": s} for c, s in zip(cases, scores)],
        }
        _dump(_golden_path(name), doc)
        compat[name] = compute_compat(name, cases, TOKENIZERS[tokenizer])
        flat = list(_flatten(scores))
        print(
            f"{name:16s} wrote {len(cases)} cases, {len(flat)} scores "
            f"(min {min(flat):.3f}, max {max(flat):.3f}) in {time.time() - t0:.1f}s"
        )
    _dump(compat_path, {k: compat[k] for k in ["reference", *FIXTURES] if k in compat})
    return 0


def cmd_check(names: list[str], tokenizer: str) -> int:
    _quiet_reference()
    all_cases = build_cases()
    compat = json.loads((GOLDEN_DIR / "compat.json").read_text(encoding="utf-8"))
    failed = False
    for name in names:
        t0 = time.time()
        doc = json.loads(_golden_path(name).read_text(encoding="utf-8"))
        problems = []
        stored = {c["id"]: c for c in doc["cases"]}
        cases = all_cases[name]
        for c in cases:
            s = stored.get(c["id"])
            if s is None or {k: v for k, v in s.items() if k != "scores"} != c:
                problems.append(f"case {c['id']!r}: definition differs from the committed JSON (run `write`)")
        if set(stored) != {c["id"] for c in cases}:
            problems.append("case ids differ from the committed JSON (run `write`)")
        scores = run_family(name, cases)
        worst = 0.0
        n = 0
        for c, got in zip(cases, scores):
            if c["id"] not in stored:
                continue
            d = _max_abs_diff(stored[c["id"]]["scores"], got)
            n += len(list(_flatten(got)))
            worst = max(worst, d)
            if not d <= ATOL:
                problems.append(f"case {c['id']!r}: max abs diff {d:.3g} > {ATOL}")
        if name in compat:
            got = compute_compat(name, cases, TOKENIZERS[tokenizer])
            problems += [f"compat: {p}" for p in compare_compat(compat[name], got)]
        else:
            problems.append("compat: no entry in compat.json (run `write`)")
        status = "OK" if not problems else "DRIFT"
        print(
            f"{name:16s} {status}: {len(cases)} cases, {n} scores, max abs diff {worst:.2e} ({time.time() - t0:.1f}s)"
        )
        for p in problems:
            print(f"    - {p}")
        failed |= bool(problems)
    return 1 if failed else 0


def cmd_compat(names: list[str], tokenizer: str) -> int:
    import transformers

    all_cases = build_cases()
    compat = json.loads((GOLDEN_DIR / "compat.json").read_text(encoding="utf-8"))
    failed = False
    for name in names:
        if name not in compat:
            print(f"{name:16s} MISSING: no entry in compat.json (run `write` in the reference environment)")
            failed = True
            continue
        problems = compare_compat(compat[name], compute_compat(name, all_cases[name], TOKENIZERS[tokenizer]))
        n = len(compat[name]["texts"])
        probe = " + model probe" if "model_probe" in compat[name] else ""
        status = "OK" if not problems else "MISMATCH"
        print(
            f"{name:16s} {status}: {tokenizer} tokenizer, transformers {transformers.__version__} vs the reference's "
            f"{compat['reference']['transformers']}: {n} texts, special ids, padding side, len, safetensors keys{probe}"
        )
        for p in problems:
            print(f"    - {p}")
        failed |= bool(problems)
    return 1 if failed else 0


#: ``--tokenizer``: how ``compat``/``check``/``write`` load the tokenizer they compare or record.
TOKENIZERS = {"package": package_tokenizer, "reference": reference_tokenizer}
#: What each command loads unless told otherwise: ``write`` records the reference's tokenization,
#: ``check`` re-verifies that record, ``compat`` checks our loader against it.
DEFAULT_TOKENIZER = {"write": "reference", "check": "reference", "compat": "package"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Reference golden scores for the fixture checkpoints.")
    ap.add_argument("command", choices=("write", "check", "compat"))
    ap.add_argument("--family", choices=FIXTURES, action="append", help="limit to this fixture (repeatable)")
    ap.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        help="package: our loader; reference: AutoTokenizer as the reference loads it "
        "(default: reference for write/check, package for compat)",
    )
    args = ap.parse_args(argv)
    names = args.family or list(FIXTURES)
    tokenizer = args.tokenizer or DEFAULT_TOKENIZER[args.command]
    t0 = time.time()
    rc = {"write": cmd_write, "check": cmd_check, "compat": cmd_compat}[args.command](names, tokenizer)
    print(f"{args.command}: {'ok' if rc == 0 else 'FAILED'} in {time.time() - t0:.1f}s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
