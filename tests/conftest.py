"""Shared test fixtures: the small random checkpoints and the reference's golden scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CHECKPOINTS = FIXTURES / "checkpoints"
GOLDENS = FIXTURES / "goldens"
FAMILIES = ("encoder", "llm", "layerwise", "lightweight")
#: Every checkpoint with reference goldens: one per family, and per family a variant whose tokenizer.json
#: has an NFKC normalizer and another pre-tokenizer (what transformers 5 would not rebuild as written).
GOLDEN_FIXTURES = (*FAMILIES, *(f"{family}-nfkc" for family in FAMILIES))
#: How far a score may be from the reference's, or from the same score computed another way (batching,
#: padding): float32 kernels differ between CPUs (AVX2 vs AVX-512 moved goldens by up to 4e-5), while a
#: wrong input or formula moves these random-weight scores by 0.01 or more.
TOLERANCE = 1e-4


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Server, Ray and notebook tests are slow too: ``python -m pytest -m "not slow"`` is the quick loop."""
    for item in items:
        if any(item.get_closest_marker(name) for name in ("server", "ray", "notebook")):
            item.add_marker(pytest.mark.slow)


def checkpoint(name: str) -> str:
    """Path of the small random checkpoint ``name`` (a family, or a GOLDEN_FIXTURES variant; official on-disk format)."""
    return str(CHECKPOINTS / name)


def load_goldens(name: str) -> dict:
    """The reference's golden cases for the checkpoint ``name`` (written by tools/goldens.py)."""
    with open(GOLDENS / f"{name}.json", encoding="utf-8") as handle:
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


def reference_score(name: str, case_id: str, query: str, passage: str) -> float:
    """The reference's score for ``[query, passage]`` in golden case ``case_id`` of checkpoint ``name``."""
    (case,) = [case for case in load_goldens(name)["cases"] if case["id"] == case_id]
    return case["scores"][case["pairs"].index([query, passage])]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs, no dashboard) for a test module, shut down after it, also on failure."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def kill_actor_process(class_name_part: str) -> int:
    """SIGKILL the process of one live Ray actor whose class name contains ``class_name_part``; its pid."""
    import os
    import signal

    from ray._private import state  # the GCS actor table: the public state API needs the dashboard

    for actor in state.actors().values():
        if class_name_part in actor["ActorClassName"] and actor["State"] == "ALIVE" and actor["Pid"]:
            os.kill(actor["Pid"], signal.SIGKILL)
            return actor["Pid"]
    raise AssertionError(f"no live actor whose class name contains {class_name_part!r}")
