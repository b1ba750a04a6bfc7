"""Our scores against the reference's (FlagEmbedding 1.4.2), case by case, for every family.

The goldens were written by ``tools/goldens.py`` from the reference run on the committed
checkpoints; CI re-runs the reference to check the goldens themselves have not drifted.
"""

from __future__ import annotations

import pytest

from bge_rerank_integrations import BGEReranker

from .conftest import GOLDEN_FIXTURES, TOLERANCE, checkpoint, load_goldens


def _cases():
    for name in GOLDEN_FIXTURES:
        for case in load_goldens(name)["cases"]:
            yield pytest.param(name, case, id=f"{name}-{case['id']}")


@pytest.mark.parametrize("name", GOLDEN_FIXTURES)
def test_every_checkpoint_has_goldens_with_blank_texts(name):
    cases = load_goldens(name)["cases"]
    assert cases
    blanks = {
        text for case in cases for pair in case["pairs"] for text in pair if isinstance(text, str) and not text.strip()
    }
    assert {"", "   "} <= blanks, "every checkpoint pins blank and whitespace-only texts"


@pytest.mark.parametrize("name, case", list(_cases()))
def test_scores_match_reference(name, case):
    reranker = BGEReranker(checkpoint(name), device="cpu", **case["init"])
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
