"""Build the small random checkpoints used by the parity tests.

Run with the pinned reference environment (FlagEmbedding 1.4.2, transformers 4.46.3)::

    .venv-ref/bin/python tools/build_fixtures.py            # every fixture
    .venv-ref/bin/python tools/build_fixtures.py --family llm --family llm-nfkc

Everything is deterministic (fixed seeds, single-threaded tokenizer training), so running
it twice gives byte-identical files. Output: ``tests/fixtures/checkpoints/{encoder,llm,
layerwise,lightweight}/`` and their ``-nfkc`` tokenizer variants, with ``config.json``, ``model.safetensors`` and tokenizer files
in the official on-disk format of each family.

Tokenizers
----------
One small SentencePiece-style BPE (``▁`` for spaces) is trained on a built-in corpus
(English, Chinese, French, German, Russian, emoji, the default prompts, ``Yes``/``No``,
``A:``/``B:``) and shared by all four families:

* decoders use it as a **BPE with byte fallback** (``<0x00>``..``<0xFF>`` byte pieces); only
  the special tokens in front differ (Gemma: ``<pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4``;
  Llama/MiniCPM: ``<unk>=0 <s>=1 </s>=2``, pad = ``<unk>``);
* the XLM-RoBERTa encoder gets the same pieces as a **Unigram** model (XLM-R's own kind:
  ``<s>=0 <pad>=1 </s>=2 <unk>=3``, ``<mask>`` last, no byte fallback), scored by the pieces'
  log frequency in the BPE-segmented corpus (``UnigramTrainer`` is not reproducible run to
  run: its piece order and scores depend on hash-map order).

transformers 5 rebuilds ``GemmaTokenizer``/``LlamaTokenizer``/``XLMRobertaTokenizer`` from
the vocab (and merges) in ``tokenizer.json`` with its own normalizer/pre-tokenizer, while
4.46 loads ``tokenizer.json`` as it is. The pipelines written here are therefore exactly
the ones transformers 5 builds, so both versions tokenize identically:

* Gemma: normalizer ``Replace(" ", "▁")``, no pre-tokenizer, BPE(byte_fallback, fuse_unk);
* Llama: no normalizer, ``Metaspace(prepend_scheme="first", split=False)``, same BPE;
* XLM-R: no normalizer, ``WhitespaceSplit + Metaspace(prepend_scheme="always")``,
  Unigram(unk_id=3, no byte fallback).

``tools/goldens.py compat`` (runnable in either environment) verifies this against the
token ids recorded by the reference environment.

Tokenizer variants (``<family>-nfkc``)
-------------------------------------
Smaller checkpoints of each family (hidden size 16) whose ``tokenizer.json`` is *not* what
transformers 5 rebuilds for the class: pieces trained under an NFKC normalizer, and

* encoder: ``NFKC + Replace(" {2,}", " ")``, ``Digits(individual) + Metaspace(always, split)``;
* llm (Gemma): ``NFKC + Replace(" ", "▁")``, ``Digits(individual)``;
* layerwise (Llama): ``NFKC + Prepend("▁") + Replace(" ", "▁")``, no pre-tokenizer (the legacy
  sentencepiece conversion MiniCPM's tokenizer went through);
* lightweight (Gemma): ``NFKC + Replace(" ", "▁")``, ``Punctuation(isolated)``.

Their ``tokenizer_config.json`` for llm and layerwise leaves ``padding_side`` unset, so the
class's own (left) applies. They pin that scores follow ``tokenizer.json`` as written
(transformers 4.46 and the reference) under every transformers version.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Deterministic, single-threaded tokenizer training (must be set before importing tokenizers).
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parents[1]
CKPT_DIR = ROOT / "tests" / "fixtures" / "checkpoints"

INIT_RANGE = 0.25  # large on purpose: scores differ by several units pair to pair
# Extra output gains (the final norm feeds every scoring head) so scores spread over several units.
ENCODER_HEAD_GAIN = 6.0
DECODER_NORM_GAIN = 3.0


@dataclass(frozen=True)
class Fixture:
    """One checkpoint directory: its family, seed, tokenizer kind and model sizes (over the family's)."""

    name: str
    family: str
    seed: int
    nfkc: bool = False  # tokenizer variant (see the module docstring)
    dims: dict = field(default_factory=dict)
    drop_tokenizer_config: tuple[str, ...] = ()


SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2}
SMALL_GEMMA = {**SMALL, "num_key_value_heads": 1, "head_dim": 8}
UNSET_PADDING_SIDE = ("padding_side",)  # the tokenizer class's own default applies


def _nfkc(family: str, seed: int, dims: dict, drop_tokenizer_config: tuple[str, ...] = ()) -> Fixture:
    """The tokenizer variant ``<family>-nfkc``: NFKC tokenizer (module docstring) on a smaller model."""
    return Fixture(f"{family}-nfkc", family, seed, nfkc=True, dims=dims, drop_tokenizer_config=drop_tokenizer_config)


FIXTURES = {
    fixture.name: fixture
    for fixture in (
        Fixture("encoder", "encoder", 1001),
        Fixture("llm", "llm", 1002),
        Fixture("layerwise", "layerwise", 1003),
        Fixture("lightweight", "lightweight", 1004),
        _nfkc("encoder", 2001, {**SMALL, "num_hidden_layers": 1}),
        _nfkc("llm", 2002, SMALL_GEMMA, UNSET_PADDING_SIDE),
        _nfkc("layerwise", 2003, {**SMALL, "num_key_value_heads": 2, "num_hidden_layers": 4}, UNSET_PADDING_SIDE),
        _nfkc("lightweight", 2004, {**SMALL_GEMMA, "num_hidden_layers": 4, "query_pre_attn_scalar": 8}),
    )
}
#: BPE size of the variants' shared pieces (a smaller vocabulary: each variant stays under 100 KB).
NFKC_BPE_SIZE = 300

LLM_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)
LIGHTWEIGHT_PROMPT = "Predict whether passage B contains an answer to query A."

# ----------------------------------------------------------------------------------------------
# Training corpus (built in, small, multilingual)
# ----------------------------------------------------------------------------------------------
CORPUS_LINES = [
    LLM_PROMPT,
    LIGHTWEIGHT_PROMPT,
    "A: what is panda?",
    "B: The giant panda (Ailuropoda melanoleuca), sometimes called a panda bear or simply panda, "
    "is a bear species endemic to China.",
    "A: What is the capital of France?",
    "B: Paris is the capital of France.",
    "A: What is the population of China?",
    "B: The population of China is over 1.4 billion people.",
    "Yes",
    "No",
    "Yes, the passage answers the query.",
    "No, the passage does not answer the query.",
    "Yes or No? Yes. No. Yes! No! 'Yes' or 'No'.",
    "Yes: the answer is in passage B. No: there is no answer in passage B.",
    "Yes it does. No it does not. Yes we can. No we cannot.",
    "query passage query passage hi hello",
    "Given a query and a passage, predict whether the passage is relevant to the query.",
    "Determine whether the passage contains an answer; provide a prediction.",
    "The quick brown fox jumps over the lazy dog.",
    "Machine learning models rank passages by their relevance to a search query.",
    "A reranker reads the query and the passage together and outputs a single score.",
    "Large language models can be used as rerankers by reading the logit of the token Yes.",
    "The Eiffel Tower is in Paris, the capital and largest city of France.",
    "Berlin is the capital of Germany, and Madrid is the capital of Spain.",
    "China has the second largest population in the world, after India.",
    "Pandas eat bamboo; they live in the mountains of central China.",
    "The weather today is sunny with a light breeze from the west.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The 2024 report lists 3 findings, 12 tables and 45 references.",
    "Represent this query for searching relevant passages:",
    "Instruction: rank the following documents. Document: Query: Passage:",
    "Bananas are rich in potassium and easy to carry.",
    "The river flows north through the valley before it reaches the sea.",
    "How many people live in Tokyo? About fourteen million people live in Tokyo.",
    "Who wrote Hamlet? William Shakespeare wrote Hamlet around the year 1600.",
    # Chinese
    "熊猫是一种生活在中国的熊。",
    "巴黎是法国的首都。",
    "中国的人口超过十四亿。",
    "什么是熊猫？大熊猫是中国特有的动物。",
    "今天天气很好，我们去公园散步。",
    # French
    "Paris est la capitale de la France.",
    "Le panda géant est une espèce d'ours originaire de Chine.",
    "Quelle est la population de la Chine ? Elle dépasse 1,4 milliard d'habitants.",
    "Oui ou non ? La réponse est oui.",
    # German
    "Berlin ist die Hauptstadt von Deutschland.",
    "Der große Panda ist eine Bärenart, die in China lebt.",
    "Wie viele Menschen leben in China? Über 1,4 Milliarden Menschen.",
    "Ja oder nein? Die Antwort ist ja. Straße, Größe, Übung.",
    # Russian
    "Париж — столица Франции.",
    "Большая панда — вид медведей, обитающий в Китае.",
    "Какое население Китая? Более 1,4 миллиарда человек.",
    "Да или нет? Ответ — да.",
    # emoji
    "I love pandas 🐼 and bamboo 🎋!",
    "Great answer 👍 Yes 🐼",
]


def corpus() -> list[str]:
    # Repeat the prompts, "Yes"/"No" and the instructions so that they become single pieces.
    lines = list(CORPUS_LINES)
    lines += [LLM_PROMPT, LIGHTWEIGHT_PROMPT] * 6
    lines += ["Yes", "No", "Yes.", "No.", "'Yes'", "'No'", "A: Yes", "B: No"] * 10
    lines += ["A: query B: passage"] * 5
    return lines


# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]


def train_bpe_pieces(vocab_size: int = 640, nfkc: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """Train a SentencePiece-style BPE (``▁`` marks spaces) and return (pieces, merges)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Replace(" ", "▁")
    if nfkc:
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" ", "▁")])
    # Training-time only: split words on "▁" (kept as prefix); inference uses no split.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[])
    tok.train_from_iterator(corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    pieces = sorted(model["vocab"], key=lambda t: model["vocab"][t])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return pieces, merges


def build_bpe_tokenizer(specials: list[str], unk: str, style: str, pieces, merges) -> Tokenizer:
    vocab: dict[str, int] = {}
    for t in specials + BYTE_TOKENS + list(pieces):
        if t not in vocab:
            vocab[t] = len(vocab)
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=list(merges), unk_token=unk, fuse_unk=True, byte_fallback=True, dropout=None)
    )
    if style == "gemma":
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = None
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    elif style == "llama":
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    else:
        raise ValueError(style)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def build_unigram_tokenizer(pieces, merges) -> Tokenizer:
    """XLM-R style Unigram over the shared pieces.

    The Unigram scores are log relative frequencies of the pieces in the corpus as segmented
    by the shared BPE (one EM step from the BPE segmentation). Deterministic, unlike
    ``UnigramTrainer``, whose piece order and scores vary from run to run (hash-map order).
    """
    import math
    from collections import Counter

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    bpe = build_bpe_tokenizer(["<unk>"], "<unk>", "llama", pieces, merges)
    counts: Counter[str] = Counter()
    for line in corpus():
        for word in line.split():  # XLM-R: WhitespaceSplit, then "▁" before every word
            counts.update(bpe.encode(word).tokens)
    unigram_pieces = [p for p in pieces if p not in specials]
    total = sum(counts[p] for p in unigram_pieces) + 0.5 * len(unigram_pieces)
    vocab = [[t, 0.0] for t in specials]
    vocab += [[p, round(math.log((counts[p] + 0.5) / total), 6)] for p in unigram_pieces]
    vocab.append(["<mask>", 0.0])  # last, as in XLM-R
    tok = Tokenizer(models.Unigram(vocab=[tuple(v) for v in vocab], unk_id=3, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


def use_nfkc_pipeline(tok: Tokenizer, family: str) -> Tokenizer:
    """Give ``tok`` the variant's NFKC normalizer and pre-tokenizer (see the module docstring)."""
    space = normalizers.Replace(" ", "▁")
    if family == "encoder":
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            ]
        )
    elif family == "llm":
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), space])
        tok.pre_tokenizer = pre_tokenizers.Digits(individual_digits=True)
    elif family == "layerwise":
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Prepend("▁"), space])
        tok.pre_tokenizer = None
    elif family == "lightweight":
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), space])
        tok.pre_tokenizer = pre_tokenizers.Punctuation(behavior="isolated")
    else:
        raise ValueError(family)
    return tok


def _apply_variant(tok: Tokenizer, fixture: Fixture | None) -> tuple[str, ...]:
    """Give ``tok`` the fixture's tokenizer variant; return the tokenizer_config.json keys to leave unset."""
    if fixture is None:
        return ()
    if fixture.nfkc:
        use_nfkc_pipeline(tok, fixture.family)
    return fixture.drop_tokenizer_config


def _patch_json(path: Path, update: dict, drop: tuple[str, ...] = ()) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(update)
    for k in drop:
        data.pop(k, None)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _finish_tokenizer_dir(out: Path, config_update: dict, drop: tuple[str, ...] = ()) -> None:
    # tokenizer_config.json: stable, explicit, without the environment-specific bits.
    _patch_json(out / "tokenizer_config.json", config_update, drop=drop)
    # tokenizer.json: pretty-printed for reviewable diffs.
    tj = out / "tokenizer.json"
    tj.write_text(
        json.dumps(json.loads(tj.read_text(encoding="utf-8")), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def save_encoder_tokenizer(out: Path, pieces, merges, fixture: Fixture | None = None) -> int:
    from transformers import XLMRobertaTokenizerFast

    tok = build_unigram_tokenizer(pieces, merges)
    unset = _apply_variant(tok, fixture)
    hf = XLMRobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )
    hf.save_pretrained(out)
    _finish_tokenizer_dir(
        out,
        {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512, "padding_side": "right"},
        drop=unset,
    )
    return len(hf)


def save_gemma_tokenizer(out: Path, pieces, merges, fixture: Fixture | None = None) -> int:
    from transformers import GemmaTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tok = build_bpe_tokenizer(specials, "<unk>", "gemma", pieces, merges)
    unset = _apply_variant(tok, fixture)
    hf = GemmaTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
    )
    hf.save_pretrained(out)
    # bge-reranker-v2-gemma pads on the left (GemmaTokenizer's class default, and the
    # FlagEmbedding decoder-only fine-tuning runner sets padding_side='left').
    _finish_tokenizer_dir(
        out,
        {
            "tokenizer_class": "GemmaTokenizer",
            "padding_side": "left",
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
        },
        drop=unset,
    )
    return len(hf)


def save_llama_tokenizer(out: Path, pieces, merges, fixture: Fixture | None = None) -> int:
    from transformers import LlamaTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    tok = build_bpe_tokenizer(specials, "<unk>", "llama", pieces, merges)
    unset = _apply_variant(tok, fixture)
    # MiniCPM's tokenizer has no pad token of its own; FlagEmbedding's layerwise fine-tuning
    # runner sets pad = unk and padding_side = 'left', which is what the released checkpoint has.
    hf = LlamaTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
        legacy=False,
    )
    hf.save_pretrained(out)
    _finish_tokenizer_dir(
        out,
        {
            "tokenizer_class": "LlamaTokenizer",
            "padding_side": "left",
            "add_bos_token": True,
            "add_eos_token": False,
            "legacy": False,
            "clean_up_tokenization_spaces": False,
        },
        drop=("add_prefix_space", *unset),
    )
    return len(hf)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
def _perturb_norms_and_biases(model: torch.nn.Module, seed: int) -> None:
    """Give norm weights and biases random values, so a missing bias or a wrong norm formula
    (``w`` vs ``1 + w``) changes the scores."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            lname = name.lower()
            if "norm" in lname and name.endswith("weight"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _scale_(param: torch.nn.Parameter, factor: float, offset: float = 0.0) -> None:
    with torch.no_grad():
        param.mul_(factor).add_(offset)


def _config(config_class, fixture: Fixture, **values):
    """``config_class(**values)`` with the fixture's model sizes over the family's."""
    return config_class(**{**values, **fixture.dims})


def _write_config(out: Path, drop: tuple[str, ...] = (), update: dict | None = None) -> None:
    _patch_json(out / "config.json", update or {}, drop=drop)


def _save_model(model, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    # Drop generation_config.json (not part of the reranker checkpoints we read).
    gen = out / "generation_config.json"
    if gen.exists():
        gen.unlink()


def _center_encoder_logits(model, out: Path) -> None:
    """Shift the classifier bias so that scores are centred near 0 (sigmoid not saturated)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=False)
    probe = [(a, b) for a in CORPUS_LINES[2:8:2] for b in CORPUS_LINES[3:9:2]]
    enc = tok([a for a, _ in probe], [b for _, b in probe], padding=True, return_tensors="pt")
    with torch.no_grad():
        mean = model(**enc).logits.view(-1).mean()
        model.classifier.out_proj.bias.sub_(mean - 0.5)


def build_encoder(out: Path, pieces, merges, fixture: Fixture) -> None:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    vocab_size = save_encoder_tokenizer(out, pieces, merges, fixture)
    cfg = _config(
        XLMRobertaConfig,
        fixture,
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=514,
        type_vocab_size=1,
        initializer_range=INIT_RANGE,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        position_embedding_type="absolute",
        use_cache=True,
        classifier_dropout=None,
        num_labels=1,
        architectures=["XLMRobertaForSequenceClassification"],
        output_past=True,
    )
    torch.manual_seed(fixture.seed)
    model = XLMRobertaForSequenceClassification(cfg).eval()
    _perturb_norms_and_biases(model, fixture.seed + 1)
    _scale_(model.classifier.out_proj.weight, ENCODER_HEAD_GAIN)
    _center_encoder_logits(model, out)
    _save_model(model, out)
    _write_config(out, drop=("_name_or_path",), update={"torch_dtype": "float32"})


def build_llm(out: Path, pieces, merges, fixture: Fixture) -> None:
    from transformers import GemmaConfig, GemmaForCausalLM

    vocab_size = save_gemma_tokenizer(out, pieces, merges, fixture)
    cfg = _config(
        GemmaConfig,
        fixture,
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        hidden_act="gelu",  # as in the official config; Gemma uses the tanh approximation anyway
        hidden_activation=None,
        max_position_embeddings=8192,
        initializer_range=INIT_RANGE,
        rms_norm_eps=1e-6,
        use_cache=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        attention_bias=False,
        attention_dropout=0.0,
        architectures=["GemmaForCausalLM"],
    )
    torch.manual_seed(fixture.seed)
    model = GemmaForCausalLM(cfg).eval()
    _perturb_norms_and_biases(model, fixture.seed + 1)
    _scale_(model.model.norm.weight, 1.0, DECODER_NORM_GAIN - 1.0)  # Gemma RMSNorm scales by (1 + w)
    _save_model(model, out)
    # The official config (saved by transformers 4.38) has "hidden_act": "gelu" and no
    # "hidden_activation" key; keep it that way.
    _write_config(out, drop=("_name_or_path", "hidden_activation"), update={"torch_dtype": "float32"})


def build_layerwise(out: Path, pieces, merges, fixture: Fixture) -> None:
    from FlagEmbedding.inference.reranker.decoder_only.models.configuration_minicpm_reranker import (
        LayerWiseMiniCPMConfig,
    )
    from FlagEmbedding.inference.reranker.decoder_only.models.modeling_minicpm_reranker import (
        LayerWiseMiniCPMForCausalLM,
    )

    vocab_size = save_llama_tokenizer(out, pieces, merges, fixture)
    cfg = _config(
        LayerWiseMiniCPMConfig,
        fixture,
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=4,
        hidden_act="silu",
        max_position_embeddings=2048,
        initializer_range=INIT_RANGE,
        rms_norm_eps=1e-5,
        use_cache=False,
        pad_token_id=None,
        bos_token_id=1,
        eos_token_id=2,
        pretraining_tp=1,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        rope_scaling=None,
        attention_bias=False,
        attention_dropout=0.0,
        scale_emb=12,
        dim_model_base=8,  # official: hidden 2304 / dim_model_base 256 = 9; unused by head_type "simple"
        scale_depth=1.4,
        start_layer=2,
        head_multi=True,
        head_type="simple",
        architectures=["LayerWiseMiniCPMForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_minicpm_reranker.LayerWiseMiniCPMConfig",
            "AutoModel": "modeling_minicpm_reranker.LayerWiseMiniCPMModel",
            "AutoModelForCausalLM": "modeling_minicpm_reranker.LayerWiseMiniCPMForCausalLM",
        },
    )
    torch.manual_seed(fixture.seed)
    model = LayerWiseMiniCPMForCausalLM(cfg).eval()
    _perturb_norms_and_biases(model, fixture.seed + 1)
    _scale_(model.model.norm.weight, DECODER_NORM_GAIN)  # MiniCPM RMSNorm scales by w
    _save_model(model, out)
    _write_config(out, drop=("_name_or_path",), update={"torch_dtype": "float32"})


def build_lightweight(out: Path, pieces, merges, fixture: Fixture) -> None:
    from FlagEmbedding.inference.reranker.decoder_only.models.gemma_config import CostWiseGemmaConfig
    from FlagEmbedding.inference.reranker.decoder_only.models.gemma_model import CostWiseGemmaForCausalLM

    vocab_size = save_gemma_tokenizer(out, pieces, merges, fixture)
    repo = "BAAI/bge-reranker-v2.5-gemma2-lightweight"
    cfg = _config(
        CostWiseGemmaConfig,
        fixture,
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=10,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=8192,
        initializer_range=INIT_RANGE,
        rms_norm_eps=1e-6,
        use_cache=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        attention_bias=False,
        attention_dropout=0.0,
        query_pre_attn_scalar=16,  # = head_dim, as in the official config (256 = head_dim)
        sliding_window=4096,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        cache_implementation="hybrid",
        start_layer=2,
        layer_sep=1,
        layer_wise=True,
        architectures=["CostWiseGemmaForCausalLM"],
        # The official config.json carries the repo-qualified auto_map written by save_pretrained.
        auto_map={
            "AutoConfig": f"{repo}--gemma_config.CostWiseGemmaConfig",
            "AutoModel": f"{repo}--gemma_model.CostWiseGemmaModel",
            "AutoModelForCausalLM": f"{repo}--gemma_model.CostWiseGemmaForCausalLM",
        },
    )
    torch.manual_seed(fixture.seed)
    model = CostWiseGemmaForCausalLM(cfg).eval()
    _perturb_norms_and_biases(model, fixture.seed + 1)
    _scale_(model.model.norm.weight, 1.0, DECODER_NORM_GAIN - 1.0)  # Gemma-2 RMSNorm scales by (1 + w)
    _save_model(model, out)
    # Official config (transformers 4.42.2) also has the legacy "hidden_act" and "sliding_window_size".
    _write_config(
        out,
        drop=("_name_or_path",),
        update={
            "torch_dtype": "float32",
            "hidden_act": "gelu_pytorch_tanh",
            "sliding_window_size": 4096,
        },
    )


BUILDERS = {"encoder": build_encoder, "llm": build_llm, "layerwise": build_layerwise, "lightweight": build_lightweight}


def build(names: list[str]) -> None:
    pieces = {
        nfkc: train_bpe_pieces(NFKC_BPE_SIZE, nfkc=True) if nfkc else train_bpe_pieces() for nfkc in (False, True)
    }
    for name in names:
        fixture = FIXTURES[name]
        out = CKPT_DIR / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        BUILDERS[fixture.family](out, *pieces[fixture.nfkc], fixture)
        size = sum(p.stat().st_size for p in out.iterdir())
        print(
            f"{name:16s} {out.relative_to(ROOT)}  {size / 1024:.0f} KiB  files={sorted(p.name for p in out.iterdir())}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=FIXTURES, action="append", help="build only this fixture (repeatable)")
    args = ap.parse_args(argv)
    build(args.family or list(FIXTURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
