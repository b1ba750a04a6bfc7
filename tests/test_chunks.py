"""Long passages (``max_chunks_per_passage``, ``chunk_overlap``): the core's windows, errors, spans and the adapters.

Window scores against the reference are in ``test_chunk_goldens.py``; here: what must hold
around them (one window is today's truncation bit for bit, passages that fit score as today, the
best window wins, bounded work for a huge passage, clear errors, spans that point at the window's
text, and the adapters reporting the core's best window).
"""

from __future__ import annotations

import copy
import itertools

import pytest

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations.families.chunking import default_overlap, split_windows

from .conftest import FAMILIES, TOLERANCE, checkpoint

QUERY = "What is the capital of France?"
SENTENCES = [
    "The giant panda lives in the mountains of central China and eats bamboo.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Berlin is the capital of Germany, and Madrid is the capital of Spain.",
    "Water boils at 100 degrees Celsius at sea level.",
]
FILLER = " ".join(SENTENCES * 3)
ANSWER = "Paris is the capital and largest city of France."
LONG = FILLER + " " + ANSWER  # the answer is far past the first window at max_length=64
SHORT = "Paris is in France."
PAIRS = [[QUERY, LONG], [QUERY, SHORT], [QUERY, "hi"], ["what is panda?", LONG]]


@pytest.fixture(scope="module", params=[*FAMILIES, "encoder-nfkc", "llm-nfkc"])
def reranker(request, one_torch_thread) -> BGEReranker:
    return BGEReranker(checkpoint(request.param), device="cpu", max_length=64)


def _windows(reranker: BGEReranker, pairs, **call):
    """Our ``Encoded`` windows of ``pairs``, grouped per passage."""
    family = reranker.load().family
    grouped = []
    for item in reranker._encode(family, [tuple(p) for p in pairs], reranker.check_options(**call)):
        if item.window == 0:
            grouped.append([])
        grouped[-1].append(item)
    return grouped


def test_one_window_is_todays_truncation_bit_for_bit(reranker):
    today = reranker.compute_score(PAIRS)
    assert reranker.compute_score(PAIRS, max_chunks_per_passage=1) == today
    assert reranker.compute_score(PAIRS, max_chunks_per_passage=1, chunk_overlap=7) == today
    assert [w for windows in _windows(reranker, PAIRS, max_chunks_per_passage=1) for w in windows] == [
        w for windows in _windows(reranker, PAIRS) for w in windows
    ]
    (group,) = reranker.score_groups([PAIRS], max_chunks_per_passage=1)
    assert group.spans == [None] * len(PAIRS)


def test_passages_that_fit_score_as_today_and_long_ones_at_least_as_well(reranker):
    today = reranker.compute_score(PAIRS)
    chunked = reranker.compute_score(PAIRS, max_chunks_per_passage=8)
    for i in (1, 2):  # fit: scored whole, as today (other batches: float rounding only)
        assert abs(chunked[i] - today[i]) <= TOLERANCE
    for i in (0, 3):  # window 0 is today's truncated pair, so the best window is never worse
        assert chunked[i] >= today[i] - TOLERANCE
    windows = _windows(reranker, PAIRS, max_chunks_per_passage=8)
    truncated = _windows(reranker, PAIRS)
    assert [len(w) for w in windows][1:3] == [1, 1] and min(len(windows[0]), len(windows[3])) > 1
    for ours, today_windows in zip(windows, truncated):
        assert ours[0].input_ids == today_windows[0].input_ids  # window 0 is exactly what truncation keeps


def test_windows_overlap_cover_the_passage_and_stop_at_n(reranker):
    for n, overlap in ((2, 0), (3, 4), (8, None)):
        (windows,) = _windows(reranker, [PAIRS[0]], max_chunks_per_passage=n, chunk_overlap=overlap)
        assert 2 <= len(windows) <= n
        assert [w.window for w in windows] == list(range(len(windows)))
        assert len({len(w) for w in windows[:-1]}) == 1 and len(windows[-1]) <= len(windows[0])
        if len(windows) < n:  # not cut at N: the last window reaches the passage's end
            assert windows[-1].span[1] == len(LONG)
        for before, after in itertools.pairwise(windows):
            if overlap == 0:
                assert after.span[0] >= before.span[1]
            else:
                assert before.span[0] < after.span[0] < before.span[1]
    (two,) = _windows(reranker, [PAIRS[0]], max_chunks_per_passage=2, chunk_overlap=0)
    assert two[-1].span[1] < len(LONG)  # the rest of the passage is dropped


def test_the_text_at_a_span_is_the_windows_text(reranker):
    """The window's passage tokens are exactly the passage's tokens whose characters lie in its span."""
    family = reranker.load().family
    instruction = family.default_passage_instruction or ""
    (windows,) = _windows(reranker, [PAIRS[0]], max_chunks_per_passage=4, chunk_overlap=3)
    full = family.tokenizer(instruction + LONG, add_special_tokens=False, return_offsets_mapping=True)
    tail = 1 if family.name == "encoder" else 0  # the encoder's closing </s>; decoders' prompt is prompt_length
    for window in windows:
        start, end = window.span
        inside = [
            token
            for token, (a, b) in zip(full["input_ids"], full["offset_mapping"])
            if b > len(instruction) and max(a - len(instruction), 0) >= start and b - len(instruction) <= end
        ]
        segment = window.input_ids[window.query_length : len(window) - window.prompt_length - tail]
        assert inside and segment[len(segment) - len(inside) :] == inside
        head = (
            [t for t, (_, b) in zip(full["input_ids"], full["offset_mapping"]) if b <= len(instruction)]
            if instruction
            else []
        )
        assert segment[: len(segment) - len(inside)] == head  # the instruction's own tokens head every window
        assert LONG[start:end].strip() and 0 <= start < end <= len(LONG)


def _is_sublist(needle, haystack) -> bool:
    return any(haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def test_the_best_window_scores_the_passage_and_rerank_reports_its_span(reranker):
    (group,) = reranker.score_groups([PAIRS], max_chunks_per_passage=6)
    options = reranker.check_options(max_chunks_per_passage=6)
    scores, encoded = reranker._run(reranker.load(), [[tuple(p) for p in PAIRS]], options)
    starts = [i for i, item in enumerate(encoded) if item.window == 0] + [len(encoded)]
    for pair, (a, b) in enumerate(itertools.pairwise(starts)):
        window_scores = scores[0, a:b].tolist()
        assert group.scores[pair] == max(window_scores)
        best = window_scores.index(max(window_scores))
        assert group.spans[pair] == (encoded[a + best].span if b - a > 1 else None)
        assert group.tokens[pair] == sum(len(item) for item in encoded[a:b])  # usage counts every window
    results = reranker.rerank(QUERY, [LONG, SHORT, "hi"], max_chunks_per_passage=6)
    by_index = {r.index: r for r in results}
    assert by_index[0].span == group.spans[0] and by_index[0].score == group.scores[0]
    assert by_index[1].span is None and "span" not in repr(by_index[1])


def test_a_huge_passage_builds_at_most_n_windows(one_torch_thread):
    reranker = BGEReranker(checkpoint("encoder"), device="cpu", max_length=32)
    huge = FILLER * 400  # ~250k characters
    (windows,) = _windows(reranker, [[QUERY, huge]], max_chunks_per_passage=3)
    assert len(windows) == 3 and all(len(w) <= 32 for w in windows)
    (group,) = reranker.score_groups([[[QUERY, huge]]], max_chunks_per_passage=3)
    assert group.tokens == [sum(len(w) for w in windows)]


def test_split_windows_bounds_and_no_room():
    ids, offsets = list(range(10)), [(i, i + 1) for i in range(10)]
    assert split_windows(ids, offsets, 10, 0, 10, 3, None) is None  # fits: scored whole
    windows = split_windows(ids, offsets, 4, 0, 10, 2, 1)
    assert [w.ids for w in windows] == [[0, 1, 2, 3], [3, 4, 5, 6]]  # past the 2nd window: dropped
    windows = split_windows(ids, offsets, 4, 0, 10, 5, 0)
    assert [w.ids for w in windows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    windows = split_windows(ids, offsets, 4, 0, 10, 5, 2)  # 10 = 4 + 3 * 2: ends exactly on a boundary
    assert [w.span for w in windows] == [(0, 4), (2, 6), (4, 8), (6, 10)]
    # An instruction (characters 0..2 here) heads every window.
    windows = split_windows(ids, offsets, 5, 2, 8, 3, 1)
    assert [w.ids for w in windows] == [[0, 1, 2, 3, 4], [0, 1, 4, 5, 6], [0, 1, 6, 7, 8]]
    assert [w.span for w in windows] == [(0, 3), (2, 5), (4, 7)]
    with pytest.raises(ValueError, match="chunk_overlap=4 leaves a window no room"):
        split_windows(ids, offsets, 4, 0, 10, 3, 4)
    assert default_overlap(496) == 62 and default_overlap(0) == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_chunks_per_passage": 0}, "max_chunks_per_passage must be a positive integer"),
        ({"max_chunks_per_passage": -2}, "max_chunks_per_passage must be a positive integer"),
        ({"max_chunks_per_passage": 2.5}, "max_chunks_per_passage must be a positive integer"),
        ({"max_chunks_per_passage": True}, "max_chunks_per_passage must be a positive integer"),
        ({"chunk_overlap": -1}, "chunk_overlap must be a non-negative integer"),
        ({"chunk_overlap": "8"}, "chunk_overlap must be a non-negative integer"),
        ({"chunk_overlap": 64}, "chunk_overlap=64 leaves a window no room"),
    ],
)
def test_bad_chunk_options_are_clear_errors_at_construction_and_per_call(options, message):
    with pytest.raises(ValueError, match=message):
        BGEReranker(checkpoint("encoder"), device="cpu", max_length=64, **options)
    reranker = BGEReranker(checkpoint("encoder"), device="cpu", max_length=64)
    with pytest.raises(ValueError, match=message):
        reranker.compute_score([QUERY, LONG], **options)


def test_an_overlap_that_leaves_a_pair_no_room_says_so(one_torch_thread):
    reranker = BGEReranker(checkpoint("encoder"), device="cpu", max_length=64, query_max_length=48)
    long_query = " ".join(["What is the capital of France and Germany?"] * 6)
    assert reranker.compute_score([long_query, "hi"], max_chunks_per_passage=3, chunk_overlap=20) is not None  # fits
    with pytest.raises(ValueError, match="chunk_overlap=20 leaves a window no room: this pair leaves"):
        reranker.compute_score([long_query, LONG], max_chunks_per_passage=3, chunk_overlap=20)


def test_a_passage_format_that_does_not_end_with_the_passage_is_an_error_with_windows(one_torch_thread):
    reranker = BGEReranker(
        checkpoint("encoder"),
        device="cpu",
        max_length=64,
        passage_instruction_for_rerank="Passage",
        passage_instruction_format="{}: {} (end)",
    )
    reranker.compute_score([QUERY, LONG])  # fine when truncating
    with pytest.raises(ValueError, match="passage_instruction_format that ends with the passage"):
        reranker.compute_score([QUERY, LONG], max_chunks_per_passage=2)


def test_several_cutoff_layers_each_keep_their_best_window(one_torch_thread):
    reranker = BGEReranker(checkpoint("layerwise"), device="cpu", max_length=48)
    (group,) = reranker.score_groups([PAIRS], max_chunks_per_passage=4, cutoff_layers=[3, 6])
    assert len(group.scores) == 2 and len(group.spans) == 2 and all(len(s) == len(PAIRS) for s in group.spans)
    for layer in (3, 6):
        (single,) = reranker.score_groups([PAIRS], max_chunks_per_passage=4, cutoff_layers=[layer])
        row = [3, 6].index(layer)
        assert max(abs(a - b) for a, b in zip(single.scores, group.scores[row])) <= TOLERANCE
        assert single.spans == group.spans[row]


def test_normalize_maps_the_best_window(one_torch_thread):
    reranker = BGEReranker(checkpoint("encoder"), device="cpu", max_length=64)
    import math

    raw = reranker.compute_score(PAIRS, max_chunks_per_passage=4)
    normalized = reranker.compute_score(PAIRS, max_chunks_per_passage=4, normalize=True)
    assert all(abs(n - 1 / (1 + math.exp(-r))) < 1e-12 for r, n in zip(raw, normalized))


# --- adapters -------------------------------------------------------------------------------------


def test_langchain_reports_the_cores_best_window_without_touching_the_input(one_torch_thread):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from bge_rerank_integrations.langchain import BGERerank

    docs = [Document(LONG, metadata={"source": "a"}), Document(SHORT, metadata={"source": "b"})]
    before = copy.deepcopy(docs)
    compressor = BGERerank(
        model=checkpoint("encoder"), device="cpu", top_n=None, max_length=64, max_chunks_per_passage=4
    )
    ranked = compressor.compress_documents(docs, QUERY)
    core = BGEReranker(checkpoint("encoder"), device="cpu", max_length=64).rerank(
        QUERY, [LONG, SHORT], max_chunks_per_passage=4
    )
    assert [(d.page_content, d.metadata["relevance_score"], d.metadata.get("relevance_span")) for d in ranked] == [
        (r.text, r.score, None if r.span is None else list(r.span)) for r in core
    ]
    assert any("relevance_span" in d.metadata for d in ranked)
    assert docs == before


def test_llama_index_reports_the_cores_best_window_hidden_from_embed_and_llm_text(one_torch_thread):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from bge_rerank_integrations.llama_index import BGERerank

    nodes = [NodeWithScore(node=TextNode(text=LONG), score=0.5), NodeWithScore(node=TextNode(text=SHORT), score=0.4)]
    before = copy.deepcopy(nodes)
    rerank = BGERerank(model=checkpoint("encoder"), device="cpu", top_n=None, max_length=64, max_chunks_per_passage=4)
    ranked = rerank.postprocess_nodes(nodes, query_str=QUERY)
    core = BGEReranker(checkpoint("encoder"), device="cpu", max_length=64).rerank(
        QUERY, [LONG, SHORT], max_chunks_per_passage=4
    )
    assert [(n.node.get_content(), n.score, n.node.metadata.get("relevance_span")) for n in ranked] == [
        (r.text, r.score, None if r.span is None else list(r.span)) for r in core
    ]
    spanned = [n.node for n in ranked if "relevance_span" in n.node.metadata]
    assert spanned
    for node in spanned:
        assert "relevance_span" not in node.get_content(metadata_mode=MetadataMode.EMBED)
        assert "relevance_span" not in node.get_content(metadata_mode=MetadataMode.LLM)
    assert [n.node.metadata for n in nodes] == [n.node.metadata for n in before]
    assert all("relevance_span" not in n.node.metadata for n in nodes)


def test_llama_index_span_is_in_the_nodes_text_when_metadata_is_embedded(one_torch_thread):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from bge_rerank_integrations.llama_index import BGERerank

    node = TextNode(text=LONG, metadata={"title": "Capitals"})
    rerank = BGERerank(model=checkpoint("encoder"), device="cpu", top_n=1, max_length=64, max_chunks_per_passage=4)
    (ranked,) = rerank.postprocess_nodes([NodeWithScore(node=node)], query_str=QUERY)
    scored = node.get_content(metadata_mode=MetadataMode.EMBED)
    (result,) = BGEReranker(checkpoint("encoder"), device="cpu", max_length=64).rerank(
        QUERY, [scored], max_chunks_per_passage=4
    )
    offset = len(scored) - len(LONG)
    assert ranked.node.metadata["relevance_span"] == [max(result.span[0] - offset, 0), result.span[1] - offset]


@pytest.mark.parametrize("span", ["[0]", "[3, 1]", "[0, 999]", "[true, 2]", '"0-2"', "[0.0, 2]"])
def test_a_span_from_a_server_that_is_not_within_its_text_is_an_error(span):
    from bge_rerank_integrations.remote import RemoteReranker, RemoteRerankError

    from .stand_in_servers import StandInServer

    server = StandInServer().start()
    try:
        good = b'[{"index": 0, "score": 1.5, "span": [0, 2]}, {"index": 1, "score": 0.5}]'
        server.fail_next(1, 200, good)
        remote = RemoteReranker(f"{server.url}/tei/rerank", api="bge")
        results = remote.rerank(QUERY, ["abc", "d"], max_chunks_per_passage=2)
        assert [(r.index, r.score, r.span) for r in results] == [(0, 1.5, (0, 2)), (1, 0.5, None)]
        server.fail_next(
            1, 200, b'[{"index": 0, "score": 1.5, "span": %s}, {"index": 1, "score": 0.5}]' % span.encode()
        )
        with pytest.raises(RemoteRerankError, match="has span .* not \\[start, end\\] within its text"):
            remote.rerank(QUERY, ["abc", "d"], max_chunks_per_passage=2)
        remote.close()
    finally:
        server.stop()
