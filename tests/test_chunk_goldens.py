"""Long passages against the reference, window by window, for every fixture checkpoint.

``tools/chunk_goldens.py`` (run in the reference env; CI re-checks it live) made every window of
these cases a pair the reference scored: window 0 the real passage (the reference truncates it),
later windows exact token windows cut by the oracle on its own. Here our windows must be the same
pairs (the ids fed to the model, exactly), with the same spans, score as the reference scored them
(1e-4), and each passage must get its best window's score.
"""

from __future__ import annotations

import json

import pytest

from bge_rerank_integrations import BGEReranker

from .conftest import GOLDEN_FIXTURES, GOLDENS, TOLERANCE, checkpoint


def _load(name: str) -> dict:
    with open(GOLDENS / "chunks" / f"{name}.json", encoding="utf-8") as handle:
        return json.load(handle)


def _cases():
    for name in GOLDEN_FIXTURES:
        for case in _load(name)["cases"]:
            yield pytest.param(name, case, id=f"{name}-{case['id']}")


def _windows(reranker: BGEReranker, pairs: list[tuple[str, str]], call: dict):
    """Our windows of ``pairs`` (grouped per passage) and their raw scores (one row per output)."""
    model = reranker.load()
    options = reranker.check_options(**call)
    scores, encoded = reranker._run(model, [pairs], options)
    grouped, flat = [], []
    for index, item in enumerate(encoded):
        if item.window == 0:
            grouped.append([])
        grouped[-1].append(item)
        flat.append(scores[:, index].tolist())
    return grouped, flat


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name, case", list(_cases()))
def test_windows_match_reference(name, case):
    reranker = BGEReranker(checkpoint(name), device="cpu", **case["init"])
    pairs = [tuple(pair) for pair in case["pairs"]]
    ours, window_scores = _windows(reranker, pairs, case["call"])
    assert [len(w) for w in ours] == [len(w) for w in case["windows"]]
    expected = [window for windows in case["windows"] for window in windows]
    got = [window for windows in ours for window in windows]
    assert [item.input_ids for item in got] == [window["row"] for window in expected]
    assert [None if item.span is None else list(item.span) for item in got] == [window["span"] for window in expected]
    for (_query, passage), windows in zip(pairs, ours):
        for item in windows:
            if item.span is not None:
                start, end = item.span
                assert 0 <= start < end <= len(passage)
    layered = isinstance(case["scores"][0], list)
    for scores, window in zip(window_scores, expected):
        want = window["score"] if layered else [window["score"]]
        assert max(abs(a - b) for a, b in zip(scores, want)) <= TOLERANCE

    # The passage's score is its best window's (per cutoff layer), one score per pair.
    got_scores = reranker.compute_score([list(p) for p in pairs], **case["call"])
    rows = got_scores if layered else [got_scores]
    want_rows = case["scores"] if layered else [case["scores"]]
    for row, want_row in zip(rows, want_rows):
        assert len(row) == len(pairs)
        assert max(abs(a - b) for a, b in zip(row, want_row)) <= TOLERANCE

    # The span reported for each passage is its best window's (where the reference's best is clear).
    (group,) = reranker.score_groups([pairs], **case["call"])
    spans = group.spans if layered else [group.spans]
    for layer, layer_spans in enumerate(spans):
        for pair, windows in enumerate(case["windows"]):
            values = [w["score"][layer] if layered else w["score"] for w in windows]
            best = max(values)
            if sorted(values)[-2:-1] and best - sorted(values)[-2] <= 2 * TOLERANCE:
                continue
            want = windows[values.index(best)]["span"]
            assert (None if layer_spans[pair] is None else list(layer_spans[pair])) == want
    assert group.tokens == [sum(len(w["row"]) for w in windows) for windows in case["windows"]]


@pytest.mark.parametrize("name", GOLDEN_FIXTURES)
def test_chunk_goldens_pin_what_the_issue_asks(name):
    """Every checkpoint pins several window counts, a boundary inside a word and a passage ending on a boundary."""
    cases = _load(name)["cases"]
    counts = {len(windows) for case in cases for windows in case["windows"]}
    assert {1, 2, 3} <= counts
    inside_word = ends_on_boundary = False
    for case in cases:
        for (_, passage), windows in zip(case["pairs"], case["windows"]):
            for window in windows:
                if window["span"] is None:
                    continue
                _start, end = window["span"]
                inside_word |= end < len(passage) and passage[end - 1].isalnum() and passage[end].isalnum()
            if windows[-1]["span"] and len(windows) > 1:
                full = len(windows[-1]["ids"]) == len(windows[0]["ids"])
                ends_on_boundary |= full and windows[-1]["span"][1] == len(passage)
    assert inside_word and ends_on_boundary
