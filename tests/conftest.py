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
