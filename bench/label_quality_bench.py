#!/usr/bin/env python
"""Benchmark of label quality scoring (tasks/classification/label_quality.py) on Banking77.

    python bench/label_quality_bench.py [--seed 0] [--folds 5]

A simulated teacher labels the full train split (10,003 texts, 77 labels) with
81.5 % accuracy: 18.5 % of the examples (drawn with a fixed seed) get the label whose
prototype is most similar to their true label's (MiniLM cosine similarity of
``"name: name with spaces"``, as in bench/embedding_teacher_bench.py), so the teacher
errs toward close labels, like a real one. ``label_quality_scores`` then scores the
teacher's labels, and a review queue takes the 10 % lowest scores first.

Reported, as the share of all teacher errors that land in the first 10 % of the queue:

- quality_score: ascending ``label_quality_scores`` (the shipped method);
- teacher_confidence: ascending confidence of the teacher in its own label, simulated as
  the zero-shot EmbeddingTeacher's probability of that label (softmax of the text's
  similarities to the 77 prototypes at temperature 0.05, the teacher's default);
- random: a random order (seeded), ~0.10 expected;
- best_possible: every slot taken by an error, min(1, slots / errors).

``by_method`` gives the same share for other cleanlab scoring methods on the *same*
out-of-sample probabilities (captured during the timed run, so no extra fitting).

``seconds`` is the wall time of ``label_quality_scores(texts, labels)`` end to end
(embedding + cross-validation + scoring) with MiniLM already loaded (loading it is
``model_load_seconds``, done while embedding the prototypes); ``phases_s`` splits it.

Exactly one JSON object goes to stdout. Needs no network; Django is set up on a throw-away
data dir, and no database is touched.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import distillapp.ml  # noqa: E402

os.environ["DISTILL_DATA_DIR"] = tempfile.mkdtemp(prefix="label-quality-bench-")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distillapp.settings")
import django  # noqa: E402

django.setup()
from tasks.classification import label_quality  # noqa: E402

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "banking77"
TEACHER_ERROR_RATE = 0.185
TEMPERATURE = 0.05
TOP_SHARE = 0.10
OTHER_METHODS = ("normalized_margin", "self_confidence", "confidence_weighted_entropy")


def read_split(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(row["text"], row["category"]) for row in csv.DictReader(f)]


def share_in_top(order: np.ndarray, is_error: np.ndarray, share: float = TOP_SHARE) -> float:
    """The share of all errors among the first ``share`` of ``order`` (indices, most suspect first)."""
    top = order[: int(share * len(order))]
    return float(is_error[top].sum() / is_error.sum())


def run(data_dir: Path | None = None, seed: int = 0, folds: int = 5) -> dict:
    data_dir = data_dir or DEFAULT_DATA_DIR
    train = read_split(data_dir / "train.csv")
    categories = json.loads((data_dir / "categories.json").read_text(encoding="utf-8"))
    index = {name: i for i, name in enumerate(categories)}
    texts = [text for text, _ in train]
    true = np.array([index[label] for _, label in train], dtype=np.intp)
    n = len(texts)

    start = time.perf_counter()
    prototypes = distillapp.ml.embed_texts([f"{name}: {name.replace('_', ' ')}" for name in categories])
    model_load_seconds = time.perf_counter() - start

    # The simulated teacher: a fixed 18.5 % of the examples get their label's nearest other label.
    similarity = prototypes @ prototypes.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    rng = np.random.default_rng(seed)
    wrong = rng.choice(n, size=round(TEACHER_ERROR_RATE * n), replace=False)
    teacher = true.copy()
    teacher[wrong] = nearest[true[wrong]]
    is_error = teacher != true
    teacher_labels = [categories[i] for i in teacher]

    # Capture what the timed run computes anyway (text embeddings, out-of-sample probabilities).
    captured: dict[str, object] = {}
    phases = {"embedding": 0.0, "cross_validation": 0.0}
    embed_texts = distillapp.ml.embed_texts
    pred_probs = label_quality.out_of_sample_pred_probs

    def timed_embed(*args, **kwargs):
        began = time.perf_counter()
        captured["embeddings"] = embed_texts(*args, **kwargs)
        phases["embedding"] += time.perf_counter() - began
        return captured["embeddings"]

    def timed_pred_probs(*args, **kwargs):
        began = time.perf_counter()
        captured["pred_probs"] = pred_probs(*args, **kwargs)
        phases["cross_validation"] += time.perf_counter() - began
        return captured["pred_probs"]

    distillapp.ml.embed_texts = timed_embed
    label_quality.out_of_sample_pred_probs = timed_pred_probs
    try:
        start = time.perf_counter()
        scores = label_quality.label_quality_scores(texts, teacher_labels, folds=folds, seed=seed)
        seconds = time.perf_counter() - start
    finally:
        distillapp.ml.embed_texts = embed_texts
        label_quality.out_of_sample_pred_probs = pred_probs
    phases["scoring_and_other"] = seconds - phases["embedding"] - phases["cross_validation"]

    # Simulated teacher confidence: the zero-shot teacher's probability of the teacher's label.
    logits = captured["embeddings"].astype(np.float64) @ prototypes.T.astype(np.float64) / TEMPERATURE
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    teacher_confidence = probabilities[np.arange(n), teacher]

    # The same probabilities scored with other cleanlab methods. No singleton labels here, so
    # the columns are the sorted category names of the teacher's labels.
    from cleanlab.rank import get_label_quality_scores

    classes = sorted(set(teacher_labels))
    column = {name: i for i, name in enumerate(classes)}
    int_labels = np.array([column[label] for label in teacher_labels], dtype=np.intp)
    by_method = {
        method: round(
            share_in_top(
                np.argsort(
                    get_label_quality_scores(int_labels, captured["pred_probs"], method=method), kind="stable"
                ),
                is_error,
            ),
            4,
        )
        for method in OTHER_METHODS
    }

    slots = int(TOP_SHARE * n)
    return {
        "examples": n,
        "labels": len(categories),
        "teacher_accuracy": round(1 - float(is_error.mean()), 4),
        "teacher_errors": int(is_error.sum()),
        "method": label_quality.METHOD,
        "folds": folds,
        "seconds": round(seconds, 1),
        "phases_s": {name: round(value, 1) for name, value in phases.items()},
        "model_load_seconds": round(model_load_seconds, 1),
        "share_of_teacher_errors_in_top_10pct": {
            "quality_score": round(share_in_top(np.argsort(scores, kind="stable"), is_error), 4),
            "teacher_confidence": round(
                share_in_top(np.argsort(teacher_confidence, kind="stable"), is_error), 4
            ),
            "random": round(share_in_top(np.random.default_rng(seed + 1).permutation(n), is_error), 4),
            "best_possible": round(min(1.0, slots / int(is_error.sum())), 4),
        },
        "by_method": by_method,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    options = parser.parse_args()
    print(json.dumps(run(seed=options.seed, folds=options.folds)))
