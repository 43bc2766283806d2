#!/usr/bin/env python
"""Benchmark of the offline embedding teacher (tasks.classification.offline) on Banking77.

    python bench/embedding_teacher_bench.py

On the full test split (3,080 texts, 77 labels), with each category name as its
label's description (underscores turned into spaces, e.g. "card_arrival: card
arrival"):

- zero_shot_accuracy: no memory;
- five_shot_accuracy: 5 train examples per label (drawn with a fixed seed) as memory;
- examples_per_second: zero-shot predict() throughput on the test split, end to
  end (embedding included, the model already loaded).

Exactly one JSON object goes to stdout. Needs no Django settings and no network.
"""

from __future__ import annotations

import csv
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tasks.classification.offline import EmbeddingTeacher  # noqa: E402

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "banking77"


def read_split(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(row["text"], row["category"]) for row in csv.DictReader(f)]


def sample_memory(train: list[tuple[str, str]], *, shots: int, seed: int) -> list[tuple[str, str]]:
    by_label: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
    for text, label in train:
        by_label[label].append((text, label))
    rng = random.Random(seed)
    return [pair for label in sorted(by_label) for pair in rng.sample(by_label[label], shots)]


def accuracy(teacher: EmbeddingTeacher, test: list[tuple[str, str]]) -> tuple[float, float]:
    """(accuracy, examples per second of predict())."""
    texts = [text for text, _ in test]
    start = time.perf_counter()
    predictions = teacher.predict(texts)
    seconds = time.perf_counter() - start
    correct = sum(p.label == label for p, (_, label) in zip(predictions, test, strict=True))
    return correct / len(test), len(test) / seconds


def run(data_dir: Path | None = None, shots: int = 5, seed: int = 0) -> dict:
    data_dir = data_dir or DEFAULT_DATA_DIR
    train = read_split(data_dir / "train.csv")
    test = read_split(data_dir / "test.csv")
    categories = json.loads((data_dir / "categories.json").read_text(encoding="utf-8"))
    labels = [(name, name.replace("_", " ")) for name in categories]

    zero_shot = EmbeddingTeacher(labels)
    # Loads the model, so that the throughput below measures predict() only.
    zero_shot.predict(["warm-up"])
    zero_shot_accuracy, examples_per_second = accuracy(zero_shot, test)

    few_shot = EmbeddingTeacher(labels, sample_memory(train, shots=shots, seed=seed))
    few_shot_accuracy, _ = accuracy(few_shot, test)
    return {
        "zero_shot_accuracy": round(zero_shot_accuracy, 4),
        "five_shot_accuracy": round(few_shot_accuracy, 4),
        "examples_per_second": round(examples_per_second, 1),
        "test_examples": len(test),
        "labels": len(labels),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
