"""The one options table (``options.OPTIONS``) and what is derived from it; the torch-free client layer."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from bge_rerank_integrations import BGEReranker, RemoteReranker, Reranker, ScoreOptions
from bge_rerank_integrations.cli import build_parser
from bge_rerank_integrations.options import (
    LOAD_OPTIONS,
    OPTIONS,
    REQUEST_OPTIONS,
    SCORE_OPTIONS,
    check_family_options,
    family_options,
    parse_score_options,
)

from .conftest import checkpoint


def test_bge_reranker_signature_is_the_table():
    parameters = list(inspect.signature(BGEReranker).parameters.values())
    assert parameters[0].name == "model_name_or_path"
    assert [(p.name, p.default, p.kind) for p in parameters[1:]] == [
        (option.name, option.default, inspect.Parameter.KEYWORD_ONLY) for option in OPTIONS
    ]
    with pytest.raises(TypeError, match="Unknown option"):
        BGEReranker(checkpoint("encoder"), colour="red")


def test_score_options_are_the_tables_scoring_options():
    assert tuple(ScoreOptions.__dataclass_fields__) == SCORE_OPTIONS
    assert set(SCORE_OPTIONS) | set(LOAD_OPTIONS) == {option.name for option in OPTIONS}
    defaults = ScoreOptions()
    assert (defaults.max_length, defaults.query_max_length, defaults.batch_size, defaults.normalize) == (
        512,
        384,
        128,
        False,
    )
    assert (
        ScoreOptions(max_length=100).query_max_length == 75 and ScoreOptions(query_max_length=9).query_max_length == 9
    )
    assert "normalize" not in REQUEST_OPTIONS and "batch_size" not in REQUEST_OPTIONS


def test_family_options_come_from_the_table():
    assert family_options("encoder") == frozenset()
    assert family_options("llm") == {"prompt"}
    assert family_options("lightweight") == {"prompt", "cutoff_layers", "compress_ratio", "compress_layers"}
    with pytest.raises(ValueError, match=r"compress_ratio do\(es\) not apply to the layerwise family"):
        check_family_options("layerwise", ScoreOptions(compress_ratio=2))


def test_values_are_checked_by_kind():
    assert parse_score_options({"cutoff_layers": [3], "max_length": 8, "prompt": None}) == {
        "cutoff_layers": (3,),
        "max_length": 8,
    }
    for values, error in (
        ({"normalize": 1}, ValueError),
        ({"prompt": 3}, TypeError),
        ({"max_length": 0}, ValueError),
        ({"query_instruction_format": "{0}{1}"}, ValueError),
        ({"unknown": 1}, TypeError),
    ):
        with pytest.raises(error):
            parse_score_options(values)


def test_every_consumer_takes_every_option():
    from bge_rerank_integrations.adapter_support import RerankSettings
    from bge_rerank_integrations.serving.schemas import RerankRequest, TEIRerankRequest
    from bge_rerank_integrations.serving.serve import build_parser as serve_parser

    assert {option.name for option in OPTIONS} <= set(RerankSettings.model_fields)
    for schema in (TEIRerankRequest, RerankRequest):
        assert set(REQUEST_OPTIONS) <= set(schema.model_fields)
    flagged = {option.name for option in OPTIONS if option.flag_name is not None}
    assert flagged == {option.name for option in OPTIONS} - {"show_progress"}
    for parser in (serve_parser(), build_parser("rank")._subparsers._group_actions[0].choices["rank"]):
        assert flagged <= {action.dest for action in parser._actions}


def test_both_rerankers_implement_one_contract():
    local = BGEReranker(checkpoint("encoder"), device="cpu", max_length=64)
    remote = RemoteReranker("http://127.0.0.1:1", api="bge", max_length=64)
    for reranker in (local, remote):
        assert isinstance(reranker, Reranker)
        assert isinstance(reranker.options, ScoreOptions) and reranker.options.max_length == 64
        assert isinstance(reranker.check_options(normalize=True), ScoreOptions)
        assert reranker.check_options(normalize=True).normalize is True
    for name in ("compute_score", "acompute_score", "rerank", "arerank", "check_options"):
        assert inspect.signature(getattr(BGEReranker, name)) == inspect.signature(getattr(RemoteReranker, name)), name


def test_rerank_asks_for_one_score_per_passage_before_scoring():
    reranker = BGEReranker("/nonexistent/checkpoint", device="cpu")
    with pytest.raises(ValueError, match="one score per document"):
        reranker.rerank("q", ["a"], cutoff_layers=[2, 3])
    assert reranker._model is None


def test_the_client_and_adapters_on_a_url_never_import_torch():
    script = (
        "import sys\n"
        "from bge_rerank_integrations import RemoteReranker\n"
        "RemoteReranker('http://127.0.0.1:1', api='tei')\n"
        "from bge_rerank_integrations.langchain import BGECrossEncoder, BGERerank\n"
        "BGERerank(model='http://127.0.0.1:1', top_n=2, normalize=True)\n"
        "BGECrossEncoder(model='http://127.0.0.1:1', api='tei')\n"
        "from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank\n"
        "LlamaIndexRerank(model='http://127.0.0.1:1', max_length=256)\n"
        "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_serving_and_ray_do_not_import_the_adapters_module():
    pytest.importorskip("ray")
    pytest.importorskip("fastapi")
    script = (
        "import sys\n"
        "import bge_rerank_integrations.serving.serve, bge_rerank_integrations.serving.app\n"
        "import bge_rerank_integrations.ray.options\n"
        "modules = ('bge_rerank_integrations.adapter_support', 'bge_rerank_integrations.cli')\n"
        "print(*(name in sys.modules for name in modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False False"


def test_a_per_call_only_option_is_no_constructor_default(monkeypatch):
    from bge_rerank_integrations import options

    options.check_defaults(["prompt", "max_length"])
    monkeypatch.setattr(options, "DEFAULT_OPTIONS", tuple(name for name in SCORE_OPTIONS if name != "prompt"))
    with pytest.raises(TypeError, match="prompt can only be given per call"):
        options.check_defaults(["prompt", "max_length"])


def test_the_readme_options_table_names_every_option():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Options", 1)[1].split("###", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = {name for cell in rows for name in re.findall(r"`(\w+)`", cell)}
    assert documented == {"model_name_or_path", *(option.name for option in OPTIONS)}
