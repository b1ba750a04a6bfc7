"""What a CPU run holds in memory: weights mapped from the checkpoint (never copied) and bounded batches.

The llm family's peak RSS once grew by ~190 MB with the same scores; what can grow it is a copy of
the weights (the 256k-row embedding read again, a tied ``lm_head`` materialised, safetensors read
into memory instead of mapped) or a forward holding more activations. ``benchmarks/bench.py`` shows
both ("peak RSS" and "w/o weights"); these tests pin the mechanisms.
"""

from __future__ import annotations

import sys

import pytest
import torch

from bge_rerank_integrations import BGEReranker
from bge_rerank_integrations import reranker as reranker_module
from bge_rerank_integrations.batching import run_batches
from bge_rerank_integrations.families.llm import LLMFamily

from .conftest import checkpoint


def test_batches_hold_at_most_max_tokens_padded_tokens():
    lengths = [300, 10, 290, 280, 20, 270, 1500]
    seen = []

    def score(batch):
        seen.append(batch)
        return torch.tensor([[float(x) for x in batch]])

    scores = run_batches(lengths, lengths, 128, score, max_tokens=1000)
    assert scores.tolist() == [[float(x) for x in lengths]], "scores come back in input order"
    assert seen == [[1500], [300, 290, 280], [270, 20, 10]]
    assert all(len(batch) * max(batch) <= 1000 for batch in seen if len(batch) > 1)


def test_cpu_batches_are_bounded_in_tokens(monkeypatch):
    reranker = BGEReranker(checkpoint("encoder"), device="cpu")
    family = reranker.load().family
    widths = []
    forward = type(family).forward

    def spy(self, batch, options):
        widths.append(len(batch) * max(len(item) for item in batch))
        return forward(self, batch, options)

    monkeypatch.setattr(type(family), "forward", spy)
    monkeypatch.setattr(reranker_module, "CPU_MAX_BATCH_TOKENS", 64)
    pairs = [("what is panda?", "panda " * (n % 7 + 3)) for n in range(40)]
    bounded = reranker.compute_score(pairs)
    assert len(widths) > 1 and max(widths) <= 64
    monkeypatch.setattr(reranker_module, "CPU_MAX_BATCH_TOKENS", None)
    widths.clear()
    whole = reranker.compute_score(pairs)
    assert max(widths) > 64
    assert max(abs(a - b) for a, b in zip(bounded, whole)) < 1e-5, "batching never moves a score"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_llm_weights_stay_mapped_from_the_checkpoint_and_the_tied_head_is_not_copied():
    family = LLMFamily.load(checkpoint("llm"), torch.device("cpu"), torch.float32)
    mapped = []
    with open("/proc/self/maps") as handle:
        for line in handle:
            if line.rstrip().endswith("llm/model.safetensors"):
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                mapped.append((start, end))
    assert mapped, "the weights file is memory-mapped"
    copied = [
        name
        for name, tensor in family.model.named_parameters()
        if not any(start <= tensor.untyped_storage().data_ptr() < end for start, end in mapped)
    ]
    assert copied == [], f"weights copied out of the mapped checkpoint: {copied}"
    head, embed = family.model.get_output_embeddings(), family.model.get_input_embeddings()
    assert head.weight.data_ptr() == embed.weight.data_ptr(), "the tied lm_head shares the embedding rows"
