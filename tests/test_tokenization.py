"""The one tokenizer loader: tokenizer.json as written, under every transformers version."""

from __future__ import annotations

import json
import shutil

import pytest

from bge_rerank_integrations.tokenization import load_tokenizer

from .conftest import CHECKPOINTS, FAMILIES, checkpoint

VARIANTS = [f"{family}-nfkc" for family in FAMILIES]


@pytest.mark.parametrize("name", VARIANTS)
def test_normalizer_and_pre_tokenizer_are_the_files_own(name):
    written = json.loads((CHECKPOINTS / name / "tokenizer.json").read_text(encoding="utf-8"))
    loaded = json.loads(load_tokenizer(checkpoint(name)).backend_tokenizer.to_str())
    assert loaded["normalizer"] == written["normalizer"] and written["normalizer"] is not None
    assert loaded["pre_tokenizer"] == written["pre_tokenizer"]


@pytest.mark.parametrize("name", VARIANTS)
def test_nfkc_folds_compatibility_forms(name):
    tokenizer = load_tokenizer(checkpoint(name))

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    assert ids("Ｗｈａｔ ｉｓ ｔｈｅ ｃａｐｉｔａｌ？") == ids("What is the capital?")
    assert ids("ﬁne") == ids("fine")


@pytest.mark.parametrize(
    "name, padding_side",
    [("encoder", "right"), ("llm", "left"), ("llm-nfkc", "left"), ("layerwise-nfkc", "left"), ("lightweight", "left")],
)
def test_class_settings_come_from_the_named_class_unless_the_config_sets_them(name, padding_side):
    """llm-nfkc and layerwise-nfkc leave padding_side unset: Gemma's and Llama's class default (left) applies."""
    tokenizer = load_tokenizer(checkpoint(name))
    assert tokenizer.padding_side == padding_side and tokenizer.truncation_side == "right"
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]


def test_without_tokenizer_class_the_model_types_class_decides(tmp_path):
    shutil.copy(CHECKPOINTS / "encoder" / "tokenizer.json", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    assert load_tokenizer(tmp_path).model_input_names == ["input_ids", "token_type_ids", "attention_mask"]


def test_without_tokenizer_json_the_class_loader_is_used(tmp_path):
    (tmp_path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "panda", "bear"]), encoding="utf-8"
    )
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}), encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer("panda bear", add_special_tokens=False)["input_ids"] == [5, 6]
