"""Our scores against the reference's (FlagEmbedding 1.4.2), case by case, for every family.

The goldens were written by ``tools/goldens.py`` from the reference run on the committed
checkpoints; CI re-runs the reference to check the goldens themselves have not drifted.
"""

from __future__ import annotations

import pytest

from bge_rerank_integrations import BGEReranker

from .conftest import FAMILIES, GOLDENS, checkpoint, load_goldens

TOLERANCE = 1e-4


def _cases():
    for family in FAMILIES:
        if (GOLDENS / f"{family}.json").exists():
            for case in load_goldens(family)["cases"]:
                yield pytest.param(family, case, id=f"{family}-{case['id']}")


def test_every_family_has_goldens():
    assert all(load_goldens(family)["cases"] for family in FAMILIES)


@pytest.mark.parametrize("family, case", list(_cases()))
def test_scores_match_reference(family, case):
    reranker = BGEReranker(checkpoint(family), device="cpu", **case["init"])
    pairs = case["pairs"]
    if isinstance(pairs[0], str):  # the reference answers a bare pair with a list, as for a list of pairs
        pairs = [pairs]
    scores = reranker.compute_score(pairs, **case["call"])
    expected = case["scores"]
    assert _shape(scores) == _shape(expected)
    assert _max_abs_diff(scores, expected) <= TOLERANCE


def _shape(scores):
    return [len(row) for row in scores] if scores and isinstance(scores[0], list) else len(scores)


def _max_abs_diff(ours, theirs):
    if ours and isinstance(ours[0], list):
        return max(_max_abs_diff(a, b) for a, b in zip(ours, theirs))
    return max(abs(a - b) for a, b in zip(ours, theirs))
