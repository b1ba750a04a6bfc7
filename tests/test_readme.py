"""The README's examples run as written, on CPU, against the fixture checkpoints.

Every ```python block of README.md is executed verbatim, each in a fresh namespace, in a
subprocess whose Hugging Face cache holds the small fixture checkpoints under the official Hub
ids (``HF_HUB_OFFLINE=1``: nothing is fetched). Only what a block says is the reader's own is
provided: ``vectorstore`` (LangChain) and ``index`` (LlamaIndex), built from offline fakes. The
quick start's shown output must be what the command prints.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CHECKPOINTS, checkpoint

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)

#: Official ids -> the fixture checkpoint of their family.
HUB_IDS = {
    "BAAI/bge-reranker-base": "encoder",
    "BAAI/bge-reranker-large": "encoder",
    "BAAI/bge-reranker-v2-m3": "encoder",
    "BAAI/bge-reranker-v2-gemma": "llm",
    "BAAI/bge-reranker-v2-minicpm-layerwise": "layerwise",
    "BAAI/bge-reranker-v2.5-gemma2-lightweight": "lightweight",
}

#: What the README leaves to the reader ("your vector store", "your index"), built offline.
READER_OBJECTS = """
def reader_objects():
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore
    from llama_index.core import Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.core.schema import TextNode

    texts = ["hi", "The giant panda is a bear species endemic to China.", "Paris is the capital of France.",
             "The panda eats bamboo.", "pandas is a Python library."]
    vectorstore = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    vectorstore.add_documents([Document(page_content=t, id=f"doc-{i}") for i, t in enumerate(texts)])
    Settings.llm, Settings.embed_model = MockLLM(), MockEmbedding(embed_dim=8)
    index = VectorStoreIndex([TextNode(text=t, id_=f"node-{i}") for i, t in enumerate(texts)])
    return {"vectorstore": vectorstore, "index": index}
"""

RUNNER = (
    READER_OBJECTS
    + """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
given = reader_objects()
failed = 0
for line, code in blocks:
    namespace = {"__name__": "__main__", **given}
    try:
        exec(compile(code, f"README.md (block at line {line})", "exec"), namespace)
    except Exception:
        failed += 1
        traceback.print_exc()
print(f"{len(blocks) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
"""
)


def readme_blocks(language: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block in ``language``."""
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(2))
        for match in BLOCK.finditer(text)
        if match.group(1) == language
    ]


def fake_hub_cache(root: Path) -> Path:
    """A Hugging Face cache holding each official id as a snapshot of its family's fixture."""
    commit = "0" * 40
    for hub_id, family in HUB_IDS.items():
        repo = root / f"models--{hub_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        shutil.copytree(CHECKPOINTS / family, repo / "snapshots" / commit)
    # The README's configuration names the lightweight model's layers (cutoff 28, compression at 24
    # and 40), which adapters check against the cached config.json when built: that config states the
    # real model's depth (no README block scores with it, so its weights are never read).
    config_path = root / "models--BAAI--bge-reranker-v2.5-gemma2-lightweight" / "snapshots" / commit / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(num_hidden_layers=42, start_layer=8)
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return root


@pytest.mark.slow
def test_readme_python_examples_run_verbatim_on_cpu(tmp_path):
    pytest.importorskip("langchain_classic")
    pytest.importorskip("llama_index.core")
    pytest.importorskip("yaml")
    blocks = readme_blocks("python")
    assert len(blocks) >= 6  # core, LangChain x2, LlamaIndex, configuration, offline
    # Files the examples read, as the README's other blocks write them.
    config = next(code for _, code in readme_blocks("yaml") if code.startswith("# config.yaml"))
    (tmp_path / "config.yaml").write_text(config, encoding="utf-8")
    shutil.copytree(checkpoint("encoder"), tmp_path / "bge-reranker-v2-m3")  # what `hf download --local-dir` leaves
    # The Evaluation example's data, where the README names it.
    shutil.copytree(CHECKPOINTS.parent / "beir-mini", tmp_path / "tests" / "fixtures" / "beir-mini")
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    (tmp_path / "runner.py").write_text(RUNNER, encoding="utf-8")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(fake_hub_cache(tmp_path / "hub")),
        "CUDA_VISIBLE_DEVICES": "",  # "runs on CPU", even where a GPU is present
        "PYTHONPATH": os.pathsep.join([str(README.parent), os.environ.get("PYTHONPATH", "")]),
    }
    completed = subprocess.run(
        [sys.executable, "runner.py", "blocks.json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == f"{len(blocks)} passed, 0 failed"


def test_quick_start_shows_what_the_command_prints(capsys):
    from bge_rerank_integrations.cli import main

    quick_start = next(code for _, code in readme_blocks("bash") if "bge-rerank --model tests/fixtures" in code)
    command = re.search(r"\.venv/bin/bge-rerank (.*)$", quick_start.splitlines()[0]).group(1)
    assert main([*shlex.split(command), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    shown = next(code for _, code in readme_blocks("text") if code.startswith("rank  index"))
    assert printed == shown


def test_readme_names_current_tools_and_no_package_index():
    text = README.read_text(encoding="utf-8")
    assert "huggingface-cli" not in text and "hf download BAAI/" in text
    assert "git+" in text and "not on a package index" in text
    assert (README.parent / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def quick_start_commands() -> list[str]:
    """The quick start's bash block, one command per line."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quick start") :]
    return next(code for _, code in readme_blocks("bash") if code in section[: section.index("\n## ", 3)]).splitlines()


def test_quick_start_is_a_light_install_with_the_main_job_then_the_tests():
    first, second = quick_start_commands()
    # The first command installs the package with its adapters only, and runs the main job.
    extras = re.search(r'-e "\.\[([^\]]*)\]"', first).group(1).split(",")
    assert extras == ["langchain", "llama-index"]
    assert "pytest" not in first and first.split(" && ")[-1].startswith(".venv/bin/bge-rerank ")
    # The second installs the rest and runs the whole suite, on one line.
    assert second == '.venv/bin/pip install -e ".[all]" && .venv/bin/python -m pytest'


def test_ci_runs_the_quick_start_commands_as_the_readme_writes_them():
    """.ci/run reads the quick start block from the README: what it would run is the README's two lines."""
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    extraction = next(line for line in ci.splitlines() if line.startswith("quick_start="))
    script = f'cd {shlex.quote(str(README.parent))}\n{extraction}\nprintf "%s" "$quick_start"'
    completed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == quick_start_commands()
    assert 'bash -euo pipefail -c "$(sed -n 1p <<<"$quick_start")"' in ci
    assert 'bash -euo pipefail -c "$(sed -n 2p <<<"$quick_start")"' in ci
    assert "-m pytest\n" not in ci.split("quick_start=")[1].split('echo "== package')[0]  # no test run of its own
