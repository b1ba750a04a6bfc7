"""Smoke test of an installed wheel, run by CI from outside the repository in a clean virtual environment.

    python tools/wheel_smoke.py core     CHECKPOINT   # the wheel alone: CLI, core, adapters name their extra
    python tools/wheel_smoke.py adapters CHECKPOINT   # with [langchain,llama-index]: both adapters rerank

CHECKPOINT is the encoder fixture (tests/fixtures/checkpoints/encoder). Fails loudly (assert) on
the first thing that is missing from the package or its metadata.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

QUERY = "what is panda?"
TEXTS = ["hi", "The giant panda is a bear species endemic to China."]


def check_core(checkpoint: str) -> None:
    import bge_rerank_integrations
    from bge_rerank_integrations import BGEReranker

    assert "site-packages" in bge_rerank_integrations.__file__, (
        f"not the installed wheel: {bge_rerank_integrations.__file__}"
    )
    metadata = importlib.metadata.metadata("bge-rerank-integrations")
    assert metadata["Version"] == bge_rerank_integrations.__version__, metadata["Version"]
    assert metadata["License-Expression"] == "MIT", metadata["License-Expression"]
    files = [str(path) for path in importlib.metadata.files("bge-rerank-integrations")]
    assert any(path.endswith("licenses/LICENSE") for path in files), "LICENSE missing from the wheel"
    for module in (
        "families/encoder.py",
        "families/lightweight.py",
        "models/minicpm_layerwise.py",
        "models/blocks.py",
        "cli.py",
        "py.typed",
    ):
        assert any(path.endswith(f"bge_rerank_integrations/{module}") for path in files), f"{module} missing"

    scores = BGEReranker(checkpoint, device="cpu").compute_score([[QUERY, text] for text in TEXTS])
    bin_dir = Path(sys.executable).parent
    version = subprocess.run([bin_dir / "bge-rerank", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"bge-rerank {bge_rerank_integrations.__version__}", version.stdout
    cli = subprocess.run(
        [bin_dir / "bge-rerank", "-m", checkpoint, "-q", QUERY, "--device", "cpu", "--json", *TEXTS],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted((r["index"], r["score"]) for r in json.loads(cli.stdout)) == list(enumerate(scores)), cli.stdout

    for module, extra in (("langchain", "[langchain]"), ("llama_index", "[llama-index]")):
        try:
            __import__(f"bge_rerank_integrations.{module}")
        except ImportError as error:
            assert extra in str(error), str(error)
        else:
            raise AssertionError(f"bge_rerank_integrations.{module} imported without its extra")
    print(f"wheel core ok: {bge_rerank_integrations.__version__}, scores {scores}")


def check_adapters(checkpoint: str) -> None:
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from bge_rerank_integrations import BGEReranker
    from bge_rerank_integrations.langchain import BGECrossEncoder
    from bge_rerank_integrations.langchain import BGERerank as LangChainRerank
    from bge_rerank_integrations.llama_index import BGERerank as LlamaIndexRerank

    want = [r.score for r in BGEReranker(checkpoint, device="cpu").rerank(QUERY, TEXTS)]
    documents = [Document(page_content=text) for text in TEXTS]
    got = [
        d.metadata["relevance_score"]
        for d in LangChainRerank(model=checkpoint, device="cpu").compress_documents(documents, QUERY)
    ]
    assert got == want, (got, want)
    nodes = [NodeWithScore(node=TextNode(text=text), score=0.0) for text in TEXTS]
    got = [n.score for n in LlamaIndexRerank(model=checkpoint, device="cpu").postprocess_nodes(nodes, query_str=QUERY)]
    assert got == want, (got, want)
    ranked = CrossEncoderReranker(model=BGECrossEncoder(model=checkpoint, device="cpu"), top_n=1).compress_documents(
        documents, QUERY
    )
    assert len(ranked) == 1
    print(f"wheel adapters ok: {want}")


if __name__ == "__main__":
    {"core": check_core, "adapters": check_adapters}[sys.argv[1]](str(Path(sys.argv[2]).resolve()))
