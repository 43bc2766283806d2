#!/usr/bin/env python
"""Benchmark of span label-quality scoring (tasks/extraction/span_quality.py) on Restaurant-8k train.

    python bench/span_quality_bench.py [--limit 2000] [--seed 0] [--folds 5]

The simulated teacher of bench/extraction_bench.py (``simulate_teacher``, seed 81, as there)
answers a seeded sample of ``--limit`` train texts from their gold spans: of the gold spans it
drops 15 %, moves one boundary of 10 % by one whitespace word and gives 5 % another field.
A text is CORRUPTED when the teacher's spans differ from the gold ones. ``span_quality``
then scores the teacher's spans, and a review queue takes the 10 % lowest scores first.

Reported, as the share of all corrupted texts that land in the first 10 % of the queue:

- quality_score: ascending text score (the shipped method: cleanlab's self-confidence per
  word, min per text);
- random: a random order (seeded), ~0.10 expected;
- teacher_confidence: null; the simulated teacher has no confidence (its errors are uniform
  noise, drawn without looking at the text);
- best_possible: every slot taken by a corrupted text, min(1, slots / corrupted).

``share_of_corrupted_in_top`` gives the same share deeper into the queue; ``by_kind`` for
each kind of corruption (a text can have several); ``flagged`` the precision and recall of
the texts scored below 0.5 (the cut classification's noise handling prunes on; extraction
runs have none); ``by_method`` the share for other cleanlab token and sentence scorings on
the SAME out-of-sample probabilities (captured during the timed run, no extra fitting).

``seconds`` is the wall time of ``span_quality`` end to end (word embeddings + cross-validation
+ scoring) with MiniLM already loaded; ``phases_s`` splits it. Exactly one JSON object goes to
stdout. Needs no network, no Django and no database.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from extraction_bench import (  # noqa: E402
    RESTAURANT_FIELDS,
    TEACHER_TRAIN_SEED,
    cpu_model,
    restaurant8k,
    sample,
    simulate_teacher,
)

import distillapp.ml  # noqa: E402
from tasks.extraction import span_quality  # noqa: E402

TOP_SHARE = 0.10
FLAGGED_BELOW = 0.5


def share_in_top(order: np.ndarray, hit: np.ndarray, share: float = TOP_SHARE) -> float | None:
    """The share of all hits among the first ``share`` of ``order`` (indices, most suspect first)."""
    if not hit.any():
        return None
    top = order[: int(share * len(order))]
    return round(float(hit[top].sum() / hit.sum()), 4)


def corruption_kinds(gold: list[dict], given: list[dict]) -> set[str]:
    """What the teacher did to a text's spans: missed, shifted, wrong_field (empty: nothing)."""
    kinds = set()
    given_keys = {(s["start"], s["end"]) for s in given}
    for span in gold:
        overlapping = [s for s in given if s["start"] < span["end"] and s["end"] > span["start"]]
        if not overlapping:
            kinds.add("missed")
        elif any(
            (s["start"], s["end"]) == (span["start"], span["end"]) and s["field"] != span["field"]
            for s in overlapping
        ):
            kinds.add("wrong_field")
        elif (span["start"], span["end"]) not in given_keys:
            kinds.add("shifted")
    return kinds


def run(limit: int | None, seed: int, folds: int) -> dict:
    rows = sample(restaurant8k("train"), limit, seed)
    texts = [text for text, _ in rows]
    answers, counts = simulate_teacher(rows, RESTAURANT_FIELDS, TEACHER_TRAIN_SEED)
    kinds = [
        corruption_kinds(gold["spans"], answer["spans"])
        for (_, gold), answer in zip(rows, answers, strict=True)
    ]
    corrupted = np.array([bool(k) for k in kinds])
    n = len(texts)

    start = time.perf_counter()
    distillapp.ml.embed_words(["warm up"], [[(0, 4)]])
    model_load_seconds = time.perf_counter() - start

    captured: dict[str, object] = {}
    phases = {"word_embedding": 0.0, "cross_validation": 0.0}
    embed_words = distillapp.ml.embed_words
    word_probs = span_quality.out_of_sample_word_probs

    def timed_embed(*args, **kwargs):
        began = time.perf_counter()
        out = embed_words(*args, **kwargs)
        phases["word_embedding"] += time.perf_counter() - began
        return out

    def timed_probs(features, int_labels, groups, **kwargs):
        began = time.perf_counter()
        captured.update(int_labels=int_labels, groups=groups, words=len(int_labels), dim=features.shape[1])
        captured["pred_probs"] = word_probs(features, int_labels, groups, **kwargs)
        phases["cross_validation"] += time.perf_counter() - began
        return captured["pred_probs"]

    distillapp.ml.embed_words = timed_embed
    span_quality.out_of_sample_word_probs = timed_probs
    try:
        began = time.perf_counter()
        result = span_quality.span_quality(texts, answers, folds=folds, seed=seed)
        seconds = time.perf_counter() - began
    finally:
        distillapp.ml.embed_words = embed_words
        span_quality.out_of_sample_word_probs = word_probs
    phases["scoring_and_other"] = seconds - sum(phases.values())
    scores = result.text_scores
    order = np.argsort(scores, kind="stable")

    # Other cleanlab scorings of the same probabilities (texts whose words are all of known tags:
    # at this size every tag is known, so the groups are the texts in order).
    from cleanlab.token_classification.rank import get_label_quality_scores

    groups, int_labels, pred_probs = captured["groups"], captured["int_labels"], captured["pred_probs"]
    bounds = np.flatnonzero(np.diff(groups)) + 1
    labels = [part.tolist() for part in np.split(int_labels, bounds)]
    probs = np.split(pred_probs, bounds)
    by_method = {}
    if len(labels) == n:
        for token_method in ("normalized_margin", "self_confidence", "confidence_weighted_entropy"):
            for sentence_method in ("min", "softmin"):
                text_scores, _ = get_label_quality_scores(
                    labels, probs, token_score_method=token_method, sentence_score_method=sentence_method
                )
                by_method[f"{token_method}/{sentence_method}"] = share_in_top(
                    np.argsort(text_scores, kind="stable"), corrupted
                )

    flagged = scores < FLAGGED_BELOW
    slots = int(TOP_SHARE * n)
    return {
        "dataset": "restaurant8k train",
        "texts": n,
        "words": captured.get("words"),
        "teacher": counts,
        "corrupted_texts": int(corrupted.sum()),
        "corrupted_share": round(float(corrupted.mean()), 4),
        "method": f"{span_quality.METHOD}/min",
        "folds": folds,
        "seconds": round(seconds, 1),
        "phases_s": {name: round(value, 1) for name, value in phases.items()},
        "model_load_seconds": round(model_load_seconds, 1),
        "share_of_corrupted_in_top_10pct": {
            "quality_score": share_in_top(order, corrupted),
            "random": share_in_top(np.random.default_rng(seed + 1).permutation(n), corrupted),
            "teacher_confidence": None,
            "best_possible": round(min(1.0, slots / int(corrupted.sum())), 4),
        },
        "precision_of_top_10pct": round(float(corrupted[order[:slots]].mean()), 4),
        # The same share deeper into the queue (random: the share itself).
        "share_of_corrupted_in_top": {
            f"{round(100 * share)}pct": share_in_top(order, corrupted, share) for share in (0.2, 0.3, 0.5)
        },
        "by_kind": {
            kind: share_in_top(order, np.array([kind in k for k in kinds]))
            for kind in ("missed", "shifted", "wrong_field")
        },
        "flagged": {
            "share": round(float(flagged.mean()), 4),
            "precision": round(float(corrupted[flagged].mean()), 4) if flagged.any() else None,
            "recall": round(float(flagged[corrupted].mean()), 4),
        },
        "by_method": by_method,
        "cpu": cpu_model(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=2000, help="texts (a seeded sample); 0 = all 8,198")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    options = parser.parse_args()
    print(json.dumps(run(options.limit or None, options.seed, options.folds)))
