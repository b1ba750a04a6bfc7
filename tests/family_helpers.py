"""Helpers for tests that drive a family directly (``encode`` / ``forward``), the way the core does."""

from __future__ import annotations

import torch

from bge_rerank_integrations.families.base import ScoreOptions
from bge_rerank_integrations.reranker import _apply_instructions

from .conftest import TOLERANCE  # noqa: F401 - re-exported for the family tests

PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What is the capital of France?", "The population of China is over 1.4 billion people."),
    ("hi", "The giant panda is a bear species endemic to China. " * 12),
    ("What is the population of China? " * 8, "over 1.4 billion"),
]


def options(**values) -> ScoreOptions:
    """ScoreOptions with the core's derived query_max_length (3/4 of max_length unless given)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    values.setdefault("query_max_length", values.get("max_length", 512) * 3 // 4)
    return ScoreOptions(**values)


def with_instructions(fam, pairs, opts: ScoreOptions) -> list[tuple[str, str]]:
    """What the core does before ``encode``: the caller's instructions, else the family's defaults."""
    return [_apply_instructions(fam, q, p, opts) for q, p in pairs]


def score(fam, pairs, opts: ScoreOptions) -> torch.Tensor:
    return fam.forward(fam.encode(with_instructions(fam, pairs, opts), opts), opts)
