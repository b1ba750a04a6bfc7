"""Time and peak memory of long passages scored in 1, 2, 4 and 8 windows (``max_chunks_per_passage``).

    .venv/bin/python benchmarks/long_passages.py                       # a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/long_passages.py --passages 4 --tokens 2000 --threads 2 --repeat 2

Builds, in a temporary directory, a random checkpoint of the bge-reranker-base shape (XLM-R base:
12 layers, hidden 768, 250,002-token vocabulary, 514 positions; transformers' own class, the fixture
tokenizer), loads it through the package, and scores the same ``--passages`` passages of
``--tokens`` tokens each against one query at ``max_length=512``: truncated (N=1, today's
behaviour) and in up to N = 2, 4, 8 windows with the default overlap (an eighth of a window).

Reported per N: the windows actually scored (a 2,000-token passage needs 5 windows of ~490 tokens
at the default overlap, so N=8 costs what N=5 does), wall and process-CPU time of the call
(medians of ``--repeat``), the cost relative to truncation, and the peak resident memory *above*
the loaded model during the call (the kernel's VmHWM, see ``lightweight_compression.PeakMemory``).
Nothing is asserted: a measurement tool. On a shared machine the times are noisy.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lightweight_compression import PeakMemory

from bge_rerank_integrations import BGEReranker

FIXTURE = ROOT / "tests" / "fixtures" / "checkpoints" / "encoder"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model")
SENTENCES = [
    "The giant panda lives in the mountains of central China and eats bamboo for most of the day.",
    "Photosynthesis converts light energy into chemical energy in the leaves of green plants.",
    "Berlin is the capital of Germany, and Madrid is the capital of Spain.",
    "Water boils at one hundred degrees Celsius at sea level, and less on a mountain.",
    "A reranker reads the query and the passage together and outputs a single relevance score.",
]


def build_base_checkpoint(directory: Path) -> Path:
    """A random bge-reranker-base-shaped checkpoint (XLM-R base, 1 label) with the fixture tokenizer."""
    import shutil

    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=1,
    )
    model = XLMRobertaForSequenceClassification(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (FIXTURE / name).exists():
            shutil.copy(FIXTURE / name, directory / name)
    return directory


def passage_of(tokenizer, tokens: int, start: int) -> str:
    """A text of exactly ``tokens`` tokens (cut at a token's end), from the sentences starting at ``start``."""
    text, i = "", start
    while len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]) <= tokens:
        text += SENTENCES[i % len(SENTENCES)] + " "
        i += 1
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return text[: offsets[tokens - 1][1]]


def run(reranker: BGEReranker, pairs: list[list[str]], chunks: int, repeat: int) -> dict:
    walls, cpus, peaks = [], [], []
    for _ in range(repeat):
        with PeakMemory() as peak:
            wall, cpu = time.perf_counter(), time.process_time()
            reranker.compute_score(pairs, max_chunks_per_passage=chunks)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        peaks.append(peak.mib)
    (group,) = reranker.score_groups([[tuple(p) for p in pairs[:1]]], max_chunks_per_passage=chunks)
    windows = len(
        reranker._encode(
            reranker.load().family, [tuple(pairs[0])], reranker.check_options(max_chunks_per_passage=chunks)
        )
    )
    return {
        "chunks": chunks,
        "windows": windows,
        "tokens": group.tokens[0],
        "wall": statistics.median(walls),
        "cpu": statistics.median(cpus),
        "peak": max(peaks),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, default=4, help="passages scored per call (default 4)")
    ap.add_argument("--tokens", type=int, default=2000, help="tokens per passage (default 2000)")
    ap.add_argument("--chunks", default="1,2,4,8", help="max_chunks_per_passage values (default 1,2,4,8)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per setting; medians reported (default 2)")
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass (default 8)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bge-long-") as workdir:
        path = build_base_checkpoint(Path(workdir))
        reranker = BGEReranker(str(path), device="cpu", max_length=512, batch_size=args.batch_size)
        tokenizer = reranker.load().family.tokenizer
        query = "Which city is the capital of Spain?"
        pairs = [[query, passage_of(tokenizer, args.tokens, i)] for i in range(args.passages)]
        reranker.compute_score(pairs[:1])  # warm-up
        rows = [run(reranker, pairs, int(n), args.repeat) for n in args.chunks.split(",")]
    print(
        f"# {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), float32; shared machine: noisy figures"
    )
    print(
        f"# bge-reranker-base shape, {args.passages} passages x {args.tokens} tokens, max_length=512, batch_size={args.batch_size}"
    )
    print(
        "| max_chunks_per_passage | windows per passage | tokens per passage read | wall s | CPU s | x truncated (CPU) | peak MiB above model |"
    )
    print("|---|---|---|---|---|---|---|")
    base = rows[0]["cpu"]
    for row in rows:
        label = f"{row['chunks']} (truncated)" if row["chunks"] == 1 else str(row["chunks"])
        print(
            f"| {label} | {row['windows']} | {row['tokens']} | {row['wall']:.2f} | {row['cpu']:.2f} | "
            f"{row['cpu'] / base:.2f} | {row['peak']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
