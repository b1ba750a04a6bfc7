"""What a newcomer sees (issue 24): one log line per model load, one CPU half-precision warning per
model, transformers' LOAD REPORT kept off stderr when we refuse a checkpoint, and a bare official
name answered with the Hub id it stands for."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bge_rerank_integrations import BGEReranker, ModelNotFoundError

from .conftest import checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def own_encoder(tmp_path) -> str:
    """A copy of the encoder checkpoint under a path of its own: a model no other test has loaded or warned about."""
    path = tmp_path / "encoder-copy"
    shutil.copytree(checkpoint("encoder"), path)
    return str(path)


def test_each_model_load_logs_one_line_with_checkpoint_family_device_dtype_and_seconds(own_encoder, caplog):
    caplog.set_level(logging.INFO, logger="bge_rerank_integrations.model_cache")
    BGEReranker(own_encoder, device="cpu").load()
    BGEReranker(own_encoder, device="cpu").load()  # the cached model: no second load, no second line
    lines = [record.getMessage() for record in caplog.records if record.name == "bge_rerank_integrations.model_cache"]
    assert len(lines) == 1, lines
    assert re.fullmatch(
        rf"Loaded {re.escape(own_encoder)}: family encoder, device cpu, dtype float32, in \d+\.\d\d s\.", lines[0]
    ), lines[0]


def test_half_precision_on_cpu_is_warned_once_per_model(own_encoder, tmp_path, caplog, monkeypatch):
    pytest.importorskip("langchain_classic")
    from bge_rerank_integrations import device

    pytest.importorskip("llama_index.core")
    from bge_rerank_integrations.langchain import BGERerank as LangChainRerank
    from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank

    monkeypatch.setattr(
        device, "cpu_fast_half_dtypes", frozenset
    )  # a CPU without fast half precision, whatever this one has
    caplog.set_level(logging.WARNING, logger="bge_rerank_integrations.device")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "bge_rerank_integrations.device"]

    BGEReranker(own_encoder, device="cpu", use_fp16=True)
    BGEReranker(own_encoder, device="cpu", use_fp16=True)
    LangChainRerank(model=own_encoder, device="cpu", use_fp16=True)
    LlamaIndexRerank(model=own_encoder, device="cpu", use_fp16=True)
    assert warnings() == [
        "torch.float16 was asked for on a CPU without fast float16 kernels (they need AMX-FP16), "
        "where it is no faster than float32 and often many times slower: using float32."
    ]
    BGEReranker(own_encoder, device="cpu", use_bf16=True)  # another dtype asked for: its own warning
    other = tmp_path / "other"
    shutil.copytree(own_encoder, other)
    BGEReranker(str(other), device="cpu", use_fp16=True)  # another model: its own warning
    assert len(warnings()) == 3 and "bfloat16" in warnings()[1]


@pytest.mark.slow  # a subprocess, to see its stderr as a user would
def test_a_refused_checkpoint_gives_our_error_without_transformers_load_report():
    """``model_class="llm"`` on an encoder: CheckpointError names the weights; nothing else reaches stderr."""
    script = textwrap.dedent(
        f"""
        from bge_rerank_integrations import BGEReranker, CheckpointError
        try:
            BGEReranker({checkpoint("encoder")!r}, model_class="llm", device="cpu").load()
        except CheckpointError as error:
            print("refused:", str(error).splitlines()[0])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("refused: Checkpoint ") and "does not fit a llm reranker" in completed.stdout
    assert "LOAD REPORT" not in completed.stderr and "MISSING" not in completed.stderr, completed.stderr


@pytest.mark.parametrize("propagate", [False, True])  # transformers' default, and after enable_propagation()
def test_transformers_records_of_a_successful_load_are_still_logged(caplog, monkeypatch, propagate):
    """What transformers logs during a load that succeeds is held back only until the load ends."""
    from bge_rerank_integrations.loading import quiet_transformers

    monkeypatch.setattr(logging.getLogger("transformers"), "propagate", propagate)
    hf_logger = logging.getLogger("transformers.modeling_utils")
    with caplog.at_level(logging.WARNING, logger="transformers"):
        caplog.handler.setLevel(logging.WARNING)
        logging.getLogger("transformers").addHandler(caplog.handler)
        try:
            seen_at_root: list[str] = []
            root_handler = logging.Handler(logging.WARNING)
            root_handler.emit = lambda record: seen_at_root.append(record.getMessage())  # type: ignore[method-assign]
            logging.getLogger().addHandler(root_handler)
            try:
                with quiet_transformers():
                    hf_logger.warning("a note from transformers")
                    assert "a note from transformers" not in caplog.text  # held back during the load
                    assert seen_at_root == []  # also from the root's handlers a propagating record reaches
            finally:
                logging.getLogger().removeHandler(root_handler)
            assert seen_at_root == (["a note from transformers"] if propagate else [])
            # the handler sits on transformers' logger, and on the root one (reached too when it propagates)
            assert caplog.text.count("a note from transformers") == (2 if propagate else 1)
        finally:
            logging.getLogger("transformers").removeHandler(caplog.handler)


@pytest.mark.parametrize("name", ["bge-reranker-v2-m3", "BGE-Reranker-Base", "bge-reranker-v2.5-gemma2-lightweight"])
def test_a_bare_official_name_is_answered_with_its_hub_id_when_built(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local directory of that name
    with pytest.raises(ModelNotFoundError, match=rf"did you mean BAAI/{re.escape(name.lower())}\?"):
        BGEReranker(name, device="cpu")
    (tmp_path / name).mkdir()  # a local directory of that name is the user's: no hint, the directory's own error
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        BGEReranker(name, device="cpu").load()


# --------------------------------------------------------------------------------------------------
# Mistakes caught when the reranker or adapter is built
# --------------------------------------------------------------------------------------------------
BUILD_TIME_ERRORS = [
    (
        "layerwise",
        {"cutoff_layers": [28]},
        r"cutoff_layers must be integers in \[2, 6\] for this checkpoint, got \[28\]",
    ),
    (
        "lightweight",
        {"cutoff_layers": [28]},
        r"cutoff_layers \[28\] have no score head in this model; choose from 2\.\.10",
    ),
    ("lightweight", {"compress_ratio": 3}, r"compress_ratio must be one of 1, 2, 4, 8"),
    ("lightweight", {"compress_layers": [40]}, r"compress_layers \[40\] are outside the model; choose from 0\.\.9"),
    ("encoder", {"compress_ratio": 2}, r"^compress_ratio does not apply to the encoder family"),
    ("llm", {"cutoff_layers": [2]}, r"^cutoff_layers does not apply to the llm family"),
]


def _loads(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bge_rerank_integrations.model_cache"]


@pytest.mark.parametrize(("family", "options", "message"), BUILD_TIME_ERRORS)
def test_a_local_checkpoint_is_checked_against_its_config_when_built(family, options, message, caplog):
    caplog.set_level(logging.INFO, logger="bge_rerank_integrations.model_cache")
    with pytest.raises(ValueError, match=message):
        BGEReranker(checkpoint(family), device="cpu", **options)
    assert _loads(caplog) == []  # found from config.json alone: nothing was loaded


@pytest.mark.parametrize(("family", "options", "message"), BUILD_TIME_ERRORS[:2])
def test_both_adapters_reject_a_layer_the_checkpoint_lacks_when_built(family, options, message):
    pytest.importorskip("langchain_classic")
    pytest.importorskip("llama_index.core")
    from bge_rerank_integrations.langchain import BGERerank as LangChainRerank
    from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank

    for adapter in (LangChainRerank, LlamaIndexRerank):
        with pytest.raises(ValueError, match=message):
            adapter(model=checkpoint(family), device="cpu", **options)


def _hub_cache(root: Path, repo: str, family: str) -> Path:
    """A Hugging Face cache holding ``repo`` as a snapshot of the ``family`` test checkpoint."""
    commit = "0" * 40
    entry = root / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    shutil.copytree(checkpoint(family), entry / "snapshots" / commit)
    return root


def test_a_cached_hub_id_is_checked_against_its_config_when_built(tmp_path):
    cache = str(_hub_cache(tmp_path / "hub", "someone/tiny-layerwise", "layerwise"))
    with pytest.raises(ValueError, match=r"integers in \[2, 6\] for this checkpoint, got \[28\]"):
        BGEReranker("someone/tiny-layerwise", cache_dir=cache, device="cpu", cutoff_layers=[28])
    reranker = BGEReranker("someone/tiny-layerwise", cache_dir=cache, device="cpu", cutoff_layers=[4])
    assert reranker.family_name == "layerwise" and reranker.score_layers() == [2, 3, 4, 5, 6]
    # Not in the cache: nothing to read without the network, so the check waits for the load.
    assert BGEReranker("someone/not-cached", cache_dir=cache, device="cpu", cutoff_layers=[28]).family_name is None


def test_load_on_init_loads_when_built_and_raises_every_error_there(own_encoder, caplog):
    caplog.set_level(logging.INFO, logger="bge_rerank_integrations.model_cache")
    lazy = BGEReranker(checkpoint("encoder"), model_class="llm", device="cpu")  # builds: the weights are not read yet
    assert lazy.family_name == "llm"
    from bge_rerank_integrations import CheckpointError

    with pytest.raises(CheckpointError, match="does not fit a llm reranker"):
        BGEReranker(checkpoint("encoder"), model_class="llm", device="cpu", load_on_init=True)
    BGEReranker(own_encoder, device="cpu", load_on_init=True)
    assert len(_loads(caplog)) == 1 and _loads(caplog)[0].startswith(f"Loaded {own_encoder}:")
    assert BGEReranker(own_encoder, load_on_init=True).load_settings["load_on_init"] is True


def test_adapters_load_on_init_and_load(own_encoder, caplog):
    pytest.importorskip("langchain_classic")
    pytest.importorskip("llama_index.core")
    from bge_rerank_integrations.langchain import BGERerank as LangChainRerank
    from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank

    caplog.set_level(logging.INFO, logger="bge_rerank_integrations.model_cache")
    from bge_rerank_integrations import CheckpointError

    with pytest.raises(CheckpointError):
        LlamaIndexRerank(model=checkpoint("encoder"), model_class="llm", device="cpu", load_on_init=True)
    compressor = LangChainRerank(model=own_encoder, device="cpu")
    assert _loads(caplog) == []
    assert compressor.load() is compressor and len(_loads(caplog)) == 1
    postprocessor = LlamaIndexRerank(model=own_encoder, device="cpu", load_on_init=True)  # the cached model
    assert postprocessor.to_dict()["load_on_init"] is True
    assert LlamaIndexRerank.from_dict(postprocessor.to_dict()).load_on_init is True
    with pytest.raises(
        ValueError, match=r"\[.load_on_init.\] choose how a model is loaded in this process, but model is a server URL"
    ):
        LangChainRerank(model="http://127.0.0.1:9", load_on_init=True)


def test_adapters_show_the_resolved_family_device_and_dtype(own_encoder):
    pytest.importorskip("langchain_classic")
    pytest.importorskip("llama_index.core")
    from bge_rerank_integrations.langchain import BGERerank as LangChainRerank
    from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank

    for adapter in (LangChainRerank, LlamaIndexRerank):
        built = adapter(model=checkpoint("layerwise"), device="cpu", use_fp16=True, cutoff_layers=[4], top_n=2)
        assert built.resolved == {
            "model": checkpoint("layerwise"),
            "family": "layerwise",
            "device": "cpu",
            "dtype": "float32",
        }
        assert repr(built) == (
            f"BGERerank(model={checkpoint('layerwise')!r}, family='layerwise', device='cpu', dtype='float32', "
            "use_fp16=True, cutoff_layers=[4], top_n=2)"
        )
        official = adapter(model="BAAI/bge-reranker-v2-gemma", device="cpu")  # known from the id: nothing loaded
        assert official.resolved["family"] == "llm"
        remote = adapter(model="http://127.0.0.1:9", api="tei")
        assert remote.resolved == {"url": "http://127.0.0.1:9", "api": "tei"}
    assert "family='encoder'" in repr(BGEReranker(own_encoder, device="cpu"))


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------
def test_options_a_family_lacks_are_named_in_grammatical_english():
    with pytest.raises(
        ValueError, match=r"^prompt does not apply to the encoder family; it takes no family-specific options\.$"
    ):
        BGEReranker(checkpoint("encoder"), device="cpu", prompt="x")
    with pytest.raises(ValueError, match=r"^compress_ratio and cutoff_layers do not apply to the llm family"):
        BGEReranker(checkpoint("llm"), device="cpu", compress_ratio=2, cutoff_layers=[2])
    with pytest.raises(
        ValueError, match=r"^compress_layers, compress_ratio and cutoff_layers do not apply to the encoder"
    ):
        BGEReranker(checkpoint("encoder"), device="cpu", compress_ratio=2, cutoff_layers=[2], compress_layers=[1])


@pytest.mark.parametrize(
    ("model", "hint"),
    [
        (checkpoint("layerwise"), "one of 2..6 for this checkpoint"),
        (checkpoint("lightweight"), "one of 2..10 for this checkpoint"),
        (
            "BAAI/bge-reranker-v2-minicpm-layerwise",
            "e.g. cutoff_layers=[2]",
        ),  # not at hand: the caller's own first layer
    ],
)
def test_the_hint_for_several_cutoff_layers_uses_the_checkpoints_range(model, hint):
    pytest.importorskip("llama_index.core")
    from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank

    with pytest.raises(ValueError, match="gives one score per layer") as caught:
        LlamaIndexRerank(model=model, device="cpu", cutoff_layers=[2, 4])
    assert f"pass a single layer, {hint}." in str(caught.value) and "[28]" not in str(caught.value)


def test_the_command_line_and_the_server_answer_a_bare_official_name_in_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("fastapi")
    from bge_rerank_integrations.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["--model", "bge-reranker-v2-m3", "--query", "q", "a passage"]) == 1
    assert capsys.readouterr().err == (
        "bge-rerank: 'bge-reranker-v2-m3' is neither a local directory nor a Hub id: did you mean BAAI/bge-reranker-v2-m3?\n"
    )
    assert main(["serve", "--model", "bge-reranker-v2-m3", "--port", "0"]) == 1  # before any socket is opened
    assert "did you mean BAAI/bge-reranker-v2-m3?" in capsys.readouterr().err
