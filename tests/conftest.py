"""Shared test fixtures: the small random checkpoints and the reference's golden scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CHECKPOINTS = FIXTURES / "checkpoints"
GOLDENS = FIXTURES / "goldens"
FAMILIES = ("encoder", "llm", "layerwise", "lightweight")


def checkpoint(family: str) -> str:
    """Path of the small random checkpoint of ``family`` (official on-disk format)."""
    return str(CHECKPOINTS / family)


def load_goldens(family: str) -> dict:
    with open(GOLDENS / f"{family}.json", encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture
def encoder_path() -> str:
    return checkpoint("encoder")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: faster for the tiny checkpoints, steady on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
