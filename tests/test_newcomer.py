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


def test_half_precision_on_cpu_is_warned_once_per_model(own_encoder, tmp_path, caplog):
    pytest.importorskip("langchain_classic")
    pytest.importorskip("llama_index.core")
    from bge_rerank_integrations.langchain import BGERerank as LangChainRerank
    from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank

    caplog.set_level(logging.WARNING, logger="bge_rerank_integrations.device")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "bge_rerank_integrations.device"]

    BGEReranker(own_encoder, device="cpu", use_fp16=True)
    BGEReranker(own_encoder, device="cpu", use_fp16=True)
    LangChainRerank(model=own_encoder, device="cpu", use_fp16=True)
    LlamaIndexRerank(model=own_encoder, device="cpu", use_fp16=True)
    assert warnings() == ["torch.float16 was asked for on CPU, where half precision is slow or unsupported: using float32."]
    BGEReranker(own_encoder, device="cpu", use_bf16=True)  # another dtype asked for: its own warning
    other = tmp_path / "other"
    shutil.copytree(own_encoder, other)
    BGEReranker(str(other), device="cpu", use_fp16=True)  # another model: its own warning
    assert len(warnings()) == 3 and "bfloat16" in warnings()[1]


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
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("refused: Checkpoint ") and "does not fit a llm reranker" in completed.stdout
    assert "LOAD REPORT" not in completed.stderr and "MISSING" not in completed.stderr, completed.stderr


def test_transformers_records_of_a_successful_load_are_still_logged(caplog):
    """What transformers logs during a load that succeeds is held back only until the load ends."""
    from bge_rerank_integrations.loading import quiet_transformers

    hf_logger = logging.getLogger("transformers.modeling_utils")
    with caplog.at_level(logging.WARNING, logger="transformers"):
        caplog.handler.setLevel(logging.WARNING)
        logging.getLogger("transformers").addHandler(caplog.handler)
        try:
            with quiet_transformers():
                hf_logger.warning("a note from transformers")
                assert "a note from transformers" not in caplog.text  # held back during the load
            assert caplog.text.count("a note from transformers") == 1
        finally:
            logging.getLogger("transformers").removeHandler(caplog.handler)


@pytest.mark.parametrize("name", ["bge-reranker-v2-m3", "BGE-Reranker-Base", "bge-reranker-v2.5-gemma2-lightweight"])
def test_a_bare_official_name_is_answered_with_its_hub_id(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local directory of that name
    with pytest.raises(ModelNotFoundError, match=rf"did you mean BAAI/{re.escape(name.lower())}\?"):
        BGEReranker(name, device="cpu").load()
