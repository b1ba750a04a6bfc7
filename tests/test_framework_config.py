"""Both adapters built from plain configuration: a dict, JSON text and YAML text.

LangChain's ``BGERerank(**config)`` and LlamaIndex's ``BGERerank.from_dict(config)`` (plus the
JSON forms) must give rerankers that score exactly like ``BGEReranker`` with the same settings,
for every family and its own options; LlamaIndex's ``to_dict`` / ``from_dict`` (and JSON, YAML)
must round-trip. A bad configuration fails when the adapter is built.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.adapter_support import LOAD_SETTINGS, SCORE_SETTINGS
from bge_rerank_integrations.langchain import BGERerank as LangChainRerank
from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank

from .conftest import checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _path(family: str) -> str:
    return str(Path(checkpoint(family)).resolve())


QUERY = "what is panda?"
TEXTS = [
    "hi",
    "The giant panda (Ailuropoda melanoleuca) is a bear species endemic to China.",
    "Paris is the capital of France.",
    "The panda eats bamboo.",
    "pandas is a Python library.",
]

#: One configuration per family, each with that family's own options and some common ones.
CONFIGS = {
    "encoder": {
        "model": _path("encoder"),
        "top_n": 2,
        "normalize": True,
        "max_length": 128,
        "batch_size": 2,
        "device": "cpu",
    },
    "encoder-threshold": {"model": _path("encoder"), "top_n": None, "score_threshold": -0.5, "query_max_length": 8},
    "llm": {
        "model": _path("llm"),
        "model_class": "llm",
        "top_n": 3,
        "prompt": "Does B answer A? Yes or No.",
        "max_length": 64,
    },
    "layerwise": {
        "model": _path("layerwise"),
        "model_class": "decoder-only-layerwise",
        "top_n": 3,
        "cutoff_layers": [4],
    },
    "lightweight": {
        "model": _path("lightweight"),
        "top_n": 4,
        "normalize": True,
        "cutoff_layers": 6,
        "compress_ratio": 2,
        "compress_layers": [4, 8],
    },
}

FORMATS = {
    "dict": lambda config: copy.deepcopy(config),
    "json": lambda config: json.loads(json.dumps(config)),
    "yaml": lambda config: yaml.safe_load(yaml.safe_dump(config)),
}


@functools.cache
def expected_for(name: str) -> list[tuple[str, float]]:
    """``expected(CONFIGS[name])``, computed once."""
    return expected(CONFIGS[name])


def expected(config: dict) -> list[tuple[str, float]]:
    """(id, score) best first from BGEReranker with the same settings: the adapters must match exactly."""
    load = {name: config[name] for name in LOAD_SETTINGS if config.get(name) is not None}
    score = {name: config[name] for name in SCORE_SETTINGS if config.get(name) is not None}
    reranker = BGEReranker(config["model"], **load)
    results = reranker.rerank(
        QUERY, TEXTS, top_n=config.get("top_n", 3), score_threshold=config.get("score_threshold"), **score
    )
    return [(str(result.index), result.score) for result in results]


def langchain_ranking(compressor: LangChainRerank) -> list[tuple[str, float]]:
    documents = [Document(page_content=text, id=str(i)) for i, text in enumerate(TEXTS)]
    return [(d.id, d.metadata["relevance_score"]) for d in compressor.compress_documents(documents, QUERY)]


def llama_index_ranking(postprocessor: LlamaIndexRerank) -> list[tuple[str, float]]:
    nodes = [NodeWithScore(node=TextNode(text=text, id_=str(i)), score=0.5) for i, text in enumerate(TEXTS)]
    return [(n.node.node_id, n.score) for n in postprocessor.postprocess_nodes(nodes, query_str=QUERY)]


# ------------------------------------------------------------------------------------------
# Built from a dict, JSON text and YAML text: identical scores to BGEReranker
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_langchain_from_config(name, fmt):
    config = FORMATS[fmt](CONFIGS[name])
    compressor = LangChainRerank(**config)
    assert langchain_ranking(compressor) == expected_for(name)
    assert {key: value for key, value in compressor.model_dump().items() if key in config} == config


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_llama_index_from_config(name, fmt):
    config = FORMATS[fmt](CONFIGS[name])
    postprocessor = LlamaIndexRerank.from_dict(config)
    assert llama_index_ranking(postprocessor) == expected_for(name)
    assert {key: value for key, value in postprocessor.to_dict().items() if key in config} == config
    assert LlamaIndexRerank(**config).to_dict() == postprocessor.to_dict()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_json_text(name):
    text = json.dumps(CONFIGS[name])
    assert langchain_ranking(LangChainRerank.model_validate_json(text)) == expected_for(name)
    assert llama_index_ranking(LlamaIndexRerank.from_json(text)) == expected_for(name)


def test_one_yaml_file_configures_both_adapters():
    """The README's example: one ``reranker`` block, read with yaml.safe_load, for either framework."""
    text = f"""
reranker:
  model: {_path("lightweight")}
  top_n: 3
  normalize: true
  batch_size: 16
  max_length: 256
  cutoff_layers: [6]
  compress_ratio: 2
  compress_layers: [4, 8]
"""
    config = yaml.safe_load(text)["reranker"]
    want = expected(config)
    assert len(want) == 3
    assert langchain_ranking(LangChainRerank(**config)) == want
    assert llama_index_ranking(LlamaIndexRerank.from_dict(config)) == want
    assert all(0 < score < 1 for _, score in want)


def test_yaml_nulls_mean_defaults():
    text = f"""
model: {_path("encoder")}
top_n: null
score_threshold: null
normalize: null
max_length: null
"""
    config = yaml.safe_load(text)
    want = expected({"model": _path("encoder"), "top_n": None})
    assert len(want) == len(TEXTS)
    assert langchain_ranking(LangChainRerank(**config)) == want
    assert llama_index_ranking(LlamaIndexRerank.from_dict(config)) == want


# ------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_llama_index_to_dict_from_dict_round_trip(name):
    original = LlamaIndexRerank.from_dict({**CONFIGS[name], "keep_retrieval_score": True})
    saved = original.to_dict()
    assert saved["class_name"] == "BGERerank"
    assert set(saved) >= {"model", "top_n", "score_threshold", "keep_retrieval_score", *LOAD_SETTINGS, *SCORE_SETTINGS}
    assert json.loads(json.dumps(saved)) == saved  # plain JSON types only

    rebuilt = [
        LlamaIndexRerank.from_dict(saved),
        LlamaIndexRerank.from_json(original.to_json()),
        LlamaIndexRerank.from_dict(yaml.safe_load(yaml.safe_dump(saved))),
    ]
    for postprocessor in rebuilt:
        assert postprocessor.to_dict() == saved
        assert postprocessor.keep_retrieval_score is True
    assert llama_index_ranking(rebuilt[1]) == llama_index_ranking(original) == expected_for(name)


def test_llama_index_defaults_round_trip():
    original = LlamaIndexRerank(model=_path("encoder"))
    assert LlamaIndexRerank.from_dict(original.to_dict()).to_dict() == original.to_dict()
    assert original.to_dict()["top_n"] == 3


@pytest.mark.parametrize("name", list(CONFIGS))
def test_langchain_model_dump_round_trip(name):
    original = LangChainRerank(**CONFIGS[name])
    dumped = original.model_dump()
    assert LangChainRerank(**dumped).model_dump() == dumped
    assert LangChainRerank.model_validate_json(original.model_dump_json()).model_dump() == dumped
    assert LangChainRerank(**yaml.safe_load(yaml.safe_dump(dumped))).model_dump() == dumped
    assert langchain_ranking(LangChainRerank(**dumped)) == expected_for(name)


def test_a_llama_index_config_builds_the_langchain_adapter():
    """The adapters share their settings: LlamaIndex's saved config, less its own keys, builds a LangChain one."""
    lang_fields = set(LangChainRerank.model_fields)
    llama_fields = set(LlamaIndexRerank.model_fields) - {"callback_manager", "keep_retrieval_score"}
    assert lang_fields == llama_fields

    saved = LlamaIndexRerank.from_dict(CONFIGS["lightweight"]).to_dict()
    shared = {key: value for key, value in saved.items() if key in lang_fields}
    assert langchain_ranking(LangChainRerank(**shared)) == expected_for("lightweight")


# ------------------------------------------------------------------------------------------
# Bad configuration fails when the adapter is built, not at the first query
# ------------------------------------------------------------------------------------------
BAD = {
    "unknown key": "top_k: 3",
    "wrong type": "top_n: three",
    "negative top_n": "top_n: -1",
    "several cutoff layers": "cutoff_layers: [4, 5]",
    "normalize not a bool": "normalize: maybe",
}


@pytest.mark.parametrize("problem", list(BAD))
def test_bad_config_is_rejected_by_both_adapters(problem):
    config = yaml.safe_load(f"model: {_path('layerwise')}\n{BAD[problem]}\n")
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        LangChainRerank(**config)
    with pytest.raises(ValueError):
        LlamaIndexRerank.from_dict(config)
