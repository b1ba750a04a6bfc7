"""``rerank_dataset`` on a local Ray instance: in-process scores, every row once, columns kept, faults."""

from __future__ import annotations

import threading

import pytest

from bge_rerank_integrations import BGEReranker

from .conftest import checkpoint, kill_actor_process

pytest.importorskip("ray")
pytestmark = pytest.mark.ray
import ray.data

from bge_rerank_integrations.ray import rerank_dataset

ENCODER = checkpoint("encoder")


def _rows(count: int) -> list[dict]:
    return [
        {"id": i, "query": f"question {i % 7}?", "text": "passage words " * (i % 9 + 1) + str(i), "source": f"doc-{i}"}
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def expected() -> list[float]:
    rows = _rows(500)
    return BGEReranker(ENCODER, device="cpu").compute_score([(row["query"], row["text"]) for row in rows])


def _check(result: list[dict], expected: list[float]) -> None:
    assert sorted(row["id"] for row in result) == list(range(len(expected)))  # every row, once
    for row in result:
        assert row["source"] == f"doc-{row['id']}"
        assert row["score"] == pytest.approx(expected[row["id"]], abs=1e-4)


def test_two_actors_give_in_process_scores_for_every_row(local_ray, expected):
    dataset = ray.data.from_items(_rows(500), override_num_blocks=10)
    result = rerank_dataset(dataset, ENCODER, num_actors=2, batch_size=50).take_all()
    assert len(result) == 500
    assert set(result[0]) == {"id", "query", "text", "source", "score"}
    _check(result, expected)


def test_killed_actor_is_replaced_and_every_row_is_scored_once(local_ray, expected):
    dataset = rerank_dataset(
        ray.data.from_items(_rows(500), override_num_blocks=50), ENCODER, num_actors=2, batch_size=10
    )
    result, killed, errors = [], [], []

    def consume():
        try:
            for row in dataset.iter_rows():
                result.append(row)
                if len(result) == 1:  # the pool is busy: kill one of its actors mid-job
                    killed.append(kill_actor_process("MapBatches(_PairScorer)"))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=240)
    assert not worker.is_alive(), "rerank_dataset did not finish within 240 s after an actor was killed"
    assert not errors, errors
    assert killed
    _check(result, expected)


def test_bad_row_fails_with_an_error_that_shows_the_row(local_ray):
    rows = _rows(20)
    rows[13]["text"] = None
    dataset = rerank_dataset(ray.data.from_items(rows), ENCODER, batch_size=8)
    with pytest.raises(Exception, match=r"'id': .*13.*'text' value must be a string, got NoneType"):
        dataset.take_all()


def test_options_are_checked_before_any_actor_starts(local_ray):
    dataset = ray.data.from_items([{"query": "q", "text": "t"}])
    with pytest.raises(ValueError, match="prompt"):
        rerank_dataset(dataset, ENCODER, prompt="Judge:")
    with pytest.raises(ValueError, match="overwrite"):
        rerank_dataset(dataset, ENCODER, score_column="text")
    with pytest.raises(ValueError, match="num_actors"):
        rerank_dataset(dataset, ENCODER, num_actors=(2, 1))
