"""The settings both adapters share (``RerankSettings``): one definition, every load setting, honest serialization."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode

from bge_rerank_integrations import BGEReranker, ModelNotFoundError
from bge_rerank_integrations.adapter_support import LOAD_SETTINGS, REMOTE_SETTINGS, SCORE_SETTINGS, RerankSettings
from bge_rerank_integrations.langchain import BGERerank as LangChainRerank
from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank

from .conftest import checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENCODER = checkpoint("encoder")
QUERY = "what is panda?"
TEXTS = ["hi", "The giant panda is a bear species endemic to China.", "Paris is the capital of France."]
ADAPTERS = {"langchain": LangChainRerank, "llama_index": LlamaIndexRerank}
WARNING_LOGGER = "bge_rerank_integrations.adapter_support"


def dump(adapter) -> dict:
    return adapter.to_dict() if isinstance(adapter, LlamaIndexRerank) else adapter.model_dump()


def rebuild(adapter):
    return type(adapter)(**{key: value for key, value in dump(adapter).items() if key != "class_name"})


def run(adapter) -> list[float]:
    """The scores the adapter returns for TEXTS, best first."""
    if isinstance(adapter, LlamaIndexRerank):
        nodes = [NodeWithScore(node=TextNode(text=text), score=0.0) for text in TEXTS]
        return [item.score for item in adapter.postprocess_nodes(nodes, query_str=QUERY)]
    documents = [Document(page_content=text) for text in TEXTS]
    return [d.metadata["relevance_score"] for d in adapter.compress_documents(documents, QUERY)]


def raw_threshold_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == WARNING_LOGGER and "score_threshold" in r.getMessage()]


def test_both_adapters_take_their_settings_from_one_definition():
    shared = RerankSettings.model_fields
    assert {"model", "top_n", "score_threshold", *LOAD_SETTINGS, *REMOTE_SETTINGS, *SCORE_SETTINGS} == set(shared)
    assert {"cache_dir", "local_files_only", "show_progress"} <= set(LOAD_SETTINGS)
    for adapter in ADAPTERS.values():
        assert issubclass(adapter, RerankSettings)
        for name, field in shared.items():
            got = adapter.model_fields[name]
            assert (got.annotation, got.default, got.frozen, got.description) == (
                field.annotation,
                field.default,
                field.frozen,
                field.description,
            ), name


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS.keys())
def test_cache_dir_local_files_only_and_show_progress_reach_the_reranker(adapter, tmp_path):
    built = adapter(model=ENCODER, device="cpu", cache_dir=tmp_path, local_files_only=True, show_progress=True)
    core = built.reranker
    assert (core.cache_dir, core.local_files_only, core.show_progress) == (str(tmp_path), True, True)
    saved = dump(built)
    assert (saved["cache_dir"], saved["local_files_only"], saved["show_progress"]) == (str(tmp_path), True, True)
    assert dump(rebuild(built)) == saved
    with pytest.raises(ValueError, match="frozen"):
        built.cache_dir = "/elsewhere"


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS.keys())
def test_local_files_only_never_reaches_the_hub(adapter, tmp_path):
    built = adapter(model="BAAI/bge-reranker-v2-m3", device="cpu", cache_dir=str(tmp_path), local_files_only=True)
    with pytest.raises(ModelNotFoundError, match="bge-reranker-v2-m3"):
        run(built)


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS.keys())
def test_an_unset_device_serializes_as_unset(adapter):
    assert dump(adapter(model=ENCODER))["device"] is None
    assert dump(adapter(model=ENCODER, device="cpu"))["device"] == "cpu"
    # A shared reranker whose device was picked for it: the config must not pin that device either.
    picked = BGEReranker(ENCODER)
    assert picked.device is not None  # it runs somewhere, but the saved config leaves the choice open
    saved = dump(adapter(model=picked))
    assert saved["device"] is None
    assert rebuild(adapter(model=picked)).device is None
    assert dump(adapter(model=BGEReranker(ENCODER, device="cpu")))["device"] == "cpu"


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS.keys())
def test_a_shared_reranker_serializes_to_a_config_that_rebuilds_it(adapter, tmp_path):
    """An adapter around an existing BGEReranker saves its path and every setting as plain JSON; the config
    rebuilds an adapter that scores the same, through the same cached model."""
    shared = BGEReranker(
        ENCODER,
        device="cpu",
        cache_dir=str(tmp_path),
        local_files_only=True,
        use_fp16=True,
        normalize=True,
        max_length=64,
        query_instruction_for_rerank="Q: ",
    )
    built = adapter(model=shared, top_n=None, batch_size=2)
    assert built.reranker is shared
    saved = dump(built)
    assert saved["model"] == ENCODER
    settings = (
        "device",
        "cache_dir",
        "local_files_only",
        "use_fp16",
        "normalize",
        "max_length",
        "query_instruction_for_rerank",
        "batch_size",
    )
    assert [saved[name] for name in settings] == ["cpu", str(tmp_path), True, True, True, 64, "Q: ", 2]
    assert saved["query_max_length"] is None  # derived from max_length, not frozen at 48
    text = json.dumps(saved)  # each framework's own way back from JSON
    again = (
        LlamaIndexRerank.from_json(text) if adapter is LlamaIndexRerank else LangChainRerank.model_validate_json(text)
    )
    assert again.reranker is not shared and dump(again) == saved
    assert again.reranker.load() is shared.load()  # the same loaded model, via the cache
    assert run(again) == run(built) != run(adapter(model=ENCODER, device="cpu", top_n=None))


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS.keys())
def test_a_threshold_on_raw_scores_warns_once_naming_normalize(adapter, caplog):
    caplog.set_level(logging.WARNING, logger=WARNING_LOGGER)
    built = adapter(model=ENCODER, device="cpu", top_n=None, score_threshold=-0.5)
    messages = raw_threshold_warnings(caplog)
    assert len(messages) == 1 and "normalize=True" in messages[0] and "-0.5" in messages[0]
    run(built)
    built.top_n = 2
    assert len(raw_threshold_warnings(caplog)) == 1  # once, not at every query or change

    caplog.clear()
    adapter(model=ENCODER, device="cpu", score_threshold=0.5, normalize=True)
    adapter(model=BGEReranker(ENCODER, device="cpu", normalize=True), score_threshold=0.5)
    adapter(model=ENCODER, device="cpu")
    assert raw_threshold_warnings(caplog) == []
    normalized = adapter(model=ENCODER, device="cpu", score_threshold=0.5, normalize=True)
    normalized.normalize = False  # the threshold now applies to raw scores
    assert len(raw_threshold_warnings(caplog)) == 1


@pytest.mark.parametrize("adapter", ADAPTERS.values(), ids=ADAPTERS.keys())
def test_a_rejected_assignment_keeps_the_previous_value(adapter):
    built = adapter(model=ENCODER, device="cpu", top_n=None)
    before = run(built)
    with pytest.raises(ValueError, match="compress_ratio does not apply to the encoder family"):
        built.compress_ratio = 2
    assert built.compress_ratio is None
    assert run(built) == before


def test_each_adapter_names_its_extra_when_its_framework_is_missing():
    script = textwrap.dedent(
        """
        import sys
        for blocked, module, extra in [
            ("langchain_core", "bge_rerank_integrations.langchain", "[langchain]"),
            ("llama_index", "bge_rerank_integrations.llama_index", "[llama-index]"),
        ]:
            sys.modules[blocked] = None  # as if the extra were not installed
            try:
                __import__(module)
            except ImportError as error:
                assert extra in str(error) and "pip install" in str(error), str(error)
            else:
                raise AssertionError(module + " imported without " + blocked)
        print("ok")
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"
