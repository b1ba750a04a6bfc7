"""Write tests/fixtures/beir-mini: a small BEIR-format dataset, made here and shipped (deterministic).

    python tools/make_beir_mini.py            # rewrites the folder; the committed files are its output

30 passages on six topics, seven queries in ``queries.jsonl``: six judged in the test split with
graded relevance (2 highly relevant, 1 relevant, 0 judged not relevant), one judged in test with
no relevant passage (skipped by the evaluation, which says so), and one judged only in the dev split.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "beir-mini"

#: (id, title, text)
CORPUS = [
    (
        "panda-1",
        "Giant panda",
        "The giant panda is a bear species endemic to China, living in mountain bamboo forests.",
    ),
    (
        "panda-2",
        "Panda diet",
        "Bamboo makes up almost all of a giant panda's diet; an adult eats up to 38 kg of it a day.",
    ),
    (
        "panda-3",
        "Red panda",
        "The red panda is a small mammal of the eastern Himalayas, not closely related to the giant panda.",
    ),
    (
        "panda-4",
        "Panda conservation",
        "Giant panda numbers in the wild have risen since reserves protected their bamboo habitat.",
    ),
    ("panda-5", "Zoo visitors", "Many zoos attract visitors with panda enclosures and souvenir shops."),
    (
        "coffee-1",
        "Coffee brewing",
        "Espresso is brewed by forcing hot water under pressure through finely ground coffee.",
    ),
    (
        "coffee-2",
        "Coffee origins",
        "Coffee plants are native to Ethiopia, and coffee drinking spread from Yemen in the 15th century.",
    ),
    (
        "coffee-3",
        "Caffeine",
        "Caffeine in coffee blocks adenosine receptors in the brain, which reduces the feeling of tiredness.",
    ),
    ("coffee-4", "Tea", "Tea is brewed from the leaves of Camellia sinensis and also contains caffeine."),
    ("coffee-5", "Cafe culture", "Vienna's coffee houses were meeting places for writers and artists."),
    (
        "volcano-1",
        "Volcanic eruptions",
        "A volcano erupts when magma rises through the crust and pressure from dissolved gases is released.",
    ),
    (
        "volcano-2",
        "Lava",
        "Lava is molten rock that flows out of a volcano; basaltic lava is runny, rhyolitic lava is thick.",
    ),
    ("volcano-3", "Mount Vesuvius", "Mount Vesuvius buried Pompeii under ash in the eruption of 79 AD."),
    (
        "volcano-4",
        "Earthquakes",
        "Earthquakes happen when rock along a fault slips suddenly, often near plate boundaries.",
    ),
    ("volcano-5", "Hot springs", "Hot springs are heated by geothermal energy, sometimes near volcanic regions."),
    (
        "python-1",
        "Python lists",
        "In Python, a list is a mutable sequence; append adds an item to the end of the list.",
    ),
    (
        "python-2",
        "Python dictionaries",
        "A Python dict maps keys to values and keeps the order in which keys were inserted.",
    ),
    ("python-3", "Python snakes", "Pythons are large non-venomous snakes that kill their prey by constriction."),
    (
        "python-4",
        "List comprehensions",
        "A list comprehension builds a new Python list from an iterable in a single expression.",
    ),
    ("python-5", "Java", "Java is a statically typed language that runs on the Java virtual machine."),
    (
        "photo-1",
        "Photosynthesis",
        "Photosynthesis turns light energy, water and carbon dioxide into glucose and oxygen in chloroplasts.",
    ),
    (
        "photo-2",
        "Chlorophyll",
        "Chlorophyll absorbs red and blue light and reflects green, which is why leaves look green.",
    ),
    (
        "photo-3",
        "Cellular respiration",
        "Cellular respiration releases the energy stored in glucose, using oxygen and producing carbon dioxide.",
    ),
    (
        "photo-4",
        "Autumn leaves",
        "In autumn chlorophyll breaks down and the yellow and orange pigments of leaves show.",
    ),
    ("photo-5", "Greenhouses", "Greenhouses keep plants warm by trapping heat from sunlight."),
    (
        "bike-1",
        "Bicycle gears",
        "Bicycle gears change how far the wheel turns for each turn of the pedals, making hills easier.",
    ),
    (
        "bike-2",
        "Fixing a flat",
        "To fix a flat tyre, remove the inner tube, find the puncture, patch it and inflate the tube again.",
    ),
    (
        "bike-3",
        "Bicycle history",
        "The first pedal bicycles appeared in France in the 1860s; the safety bicycle followed in the 1880s.",
    ),
    ("bike-4", "Cycling safety", "Wearing a helmet and using lights at night make cycling safer."),
    ("bike-5", "Motorcycles", "A motorcycle is a two-wheeled vehicle driven by an engine."),
]

#: (id, text)
QUERIES = [
    ("q-panda", "what do giant pandas eat"),
    ("q-coffee", "where does coffee come from"),
    ("q-volcano", "why do volcanoes erupt"),
    ("q-python", "how to add an item to a python list"),
    ("q-photo", "how does photosynthesis work in leaves"),
    ("q-bike", "how to repair a punctured bicycle tyre"),
    ("q-none", "which planet has the most moons"),
    ("q-dev", "is tea caffeinated"),
]

#: split -> (query id, passage id, grade)
QRELS = {
    "test": [
        ("q-panda", "panda-2", 2),
        ("q-panda", "panda-1", 1),
        ("q-panda", "panda-4", 1),
        ("q-panda", "panda-3", 0),
        ("q-coffee", "coffee-2", 2),
        ("q-coffee", "coffee-1", 0),
        ("q-coffee", "coffee-4", 0),
        ("q-volcano", "volcano-1", 2),
        ("q-volcano", "volcano-2", 1),
        ("q-volcano", "volcano-3", 1),
        ("q-volcano", "volcano-4", 0),
        ("q-python", "python-1", 2),
        ("q-python", "python-4", 1),
        ("q-python", "python-3", 0),
        ("q-photo", "photo-1", 2),
        ("q-photo", "photo-2", 1),
        ("q-photo", "photo-3", 0),
        ("q-photo", "photo-4", 1),
        ("q-bike", "bike-2", 2),
        ("q-bike", "bike-1", 0),
        ("q-none", "volcano-5", 0),
        ("q-none", "photo-5", 0),
    ],
    "dev": [("q-dev", "coffee-4", 2), ("q-dev", "coffee-3", 1)],
}


def main() -> None:
    (OUT / "qrels").mkdir(parents=True, exist_ok=True)
    with open(OUT / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for doc_id, title, text in CORPUS:
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n")
    with open(OUT / "queries.jsonl", "w", encoding="utf-8") as handle:
        for query_id, text in QUERIES:
            handle.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")
    for split, judgements in QRELS.items():
        with open(OUT / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            handle.writelines(f"{q}\t{d}\t{g}\n" for q, d, g in judgements)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
