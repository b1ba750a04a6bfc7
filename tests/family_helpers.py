"""Helpers for tests that drive a family directly (``encode`` / ``forward``), the way the core does."""

from __future__ import annotations

import pytest
import torch

from bge_rerank_integrations.families.base import ScoreOptions
from bge_rerank_integrations.reranker import _apply_instructions

from .conftest import TOLERANCE, load_goldens  # noqa: F401 - TOLERANCE re-exported for the family tests
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


def golden_params(family_name: str) -> list:
    """The reference's golden cases of a family, as pytest params named by case id."""
    return [pytest.param(case, id=case["id"]) for case in load_goldens(family_name)["cases"]]


def family_scores_for_case(fam, case) -> tuple[torch.Tensor, torch.Tensor]:
    """Score a golden case through the family API alone (one batch; the core's sigmoid for normalize).

    Returns ``(ours, reference)`` as tensors of one shape.
    """
    values = {**case["init"], **case["call"]}
    normalize = values.pop("normalize", False)
    values.pop("batch_size", None)
    opts = options(**values)
    pairs = [case["pairs"]] if isinstance(case["pairs"][0], str) else case["pairs"]
    scores = score(fam, [tuple(p) for p in pairs], opts)
    if normalize:
        scores = torch.sigmoid(scores)
    return scores, torch.tensor(case["scores"], dtype=torch.float32).reshape(scores.shape)
