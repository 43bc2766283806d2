#!/usr/bin/env python
"""Noise handling for span labels, outside the app: which of the simulated teacher's spans to
train the quick extraction student on (issue #26: "chosen by the bench").

    python bench/span_noise_bench.py [--limit N] [--thresholds 0.1,0.3,0.5] [--reviewed 0,10]

Restaurant-8k train (distinct texts) answered by bench/extraction_bench.py's simulated teacher
(seed 81: misses 15 % of spans, moves 10 % of boundaries by a word, gives 5 % another field);
a seeded random share (``--reviewed``, percent) carries the true spans instead, as reviewed
labels do. The span quality run (``tasks.extraction.span_quality.span_quality``) scores every
word of the teacher's answers out of sample; then one quick student (``tasks.extraction.quick``)
per noise handling, scored in strict entity micro-F1 on Restaurant-8k test:

- none: every label as given;
- prune: the unreviewed texts whose worst word scores below ``FLAGGED_BELOW`` left out (what
  the app's "prune" does);
- mask<t>: every text kept, the unreviewed texts' words scoring below t left out of the fit
  (what the app's "mask" does at ``MASK_BELOW``);
- maskO<t>: the same, only words the teacher tagged O (a missed value);
- prune+maskO<t>: the texts "prune" keeps, with maskO's words left out of the fit.

Word vectors are cached under ``--cache`` (the first run embeds the texts: minutes on 2
cores). One JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def log(message: str) -> None:
    print(f"[span-noise] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="train texts (the first N; smoke runs)")
    parser.add_argument("--thresholds", default="0.1,0.3,0.5")
    parser.add_argument("--reviewed", default="0,10", help="percent of texts with their true spans")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "span-noise-cache")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distillapp.settings")
    import django

    django.setup()
    from banking77_distill import cpu_model
    from extraction_bench import TEACHER_TRAIN_SEED, restaurant8k, simulate_teacher

    from distillapp import ml
    from tasks.extraction import quick, span_quality
    from tasks.extraction.measure import entity_scores

    started = time.monotonic()
    seen, train = set(), []
    for text, answer in restaurant8k("train"):
        if text not in seen:
            seen.add(text)
            train.append((text, answer))
    train = train[: args.limit] if args.limit else train
    test = restaurant8k("test")
    fields = sorted({s["field"] for _, a in train for s in a["spans"]})
    teacher, counts = simulate_teacher(train, fields, TEACHER_TRAIN_SEED)
    texts, truth = [t for t, _ in train], [a for _, a in train]
    log(f"{len(texts)} train texts, {len(test)} test; teacher {counts}")
    quality = span_quality.span_quality(texts, teacher, cache_dir=args.cache)
    quality_seconds = time.monotonic() - started
    log(f"quality run {quality_seconds:.1f} s")
    hp = ml.Hyperparameters(max_length=128)
    base = ml.default_base_model()
    test_texts, test_answers = [t for t, _ in test], [a for _, a in test]
    cells = []
    work = Path(tempfile.mkdtemp(prefix="span-noise-"))

    def cell(reviewed_pct: float, name: str, answers, keep, ignore=None) -> None:
        t0 = time.monotonic()
        out = work / f"{reviewed_pct}-{name}"
        quick.train(
            texts=[texts[i] for i in keep],
            answers=[answers[i] for i in keep],
            names=fields,
            base_model=base,
            output_dir=out,
            hyperparameters=hp,
            embedding_cache_dir=args.cache,
            ignore=None if ignore is None else [ignore[i] for i in keep],
        )
        predicted, _ = quick.predict(out, test_texts, embedding_cache_dir=args.cache)
        f1 = entity_scores(test_answers, predicted, fields)["strict"]["micro"]["f1"]
        cells.append(
            {
                "reviewed_pct": reviewed_pct,
                "handling": name,
                "strict_f1": round(f1, 4),
                "texts": len(keep),
                "masked_words": sum(len(ignore[i]) for i in keep) if ignore else 0,
                "seconds": round(time.monotonic() - t0, 1),
            }
        )
        log(f"{reviewed_pct} % reviewed, {name}: {f1:.4f}")

    everything = list(range(len(texts)))
    for pct in [float(p) for p in args.reviewed.split(",")]:
        rng = random.Random(0)
        reviewed = set(rng.sample(everything, int(len(texts) * pct / 100)))
        answers = [truth[i] if i in reviewed else teacher[i] for i in everything]
        cell(pct, "none", answers, everything)
        kept = [
            i for i in everything if i in reviewed or quality.text_scores[i] >= span_quality.FLAGGED_BELOW
        ]
        cell(pct, "prune", answers, kept)
        for threshold in [float(t) for t in args.thresholds.split(",")]:
            for only_o in (False, True):
                masked = [
                    []
                    if i in reviewed
                    else [
                        word
                        for word, score, tag in zip(
                            quality.words[i], quality.word_scores[i], quality.tags[i], strict=True
                        )
                        if score < threshold and (tag == "O" or not only_o)
                    ]
                    for i in everything
                ]
                cell(pct, f"mask{'O' if only_o else ''}{threshold}", answers, everything, masked)
                if only_o:
                    cell(pct, f"prune+maskO{threshold}", answers, kept, masked)
    print(
        json.dumps(
            {
                "cpu": cpu_model(),
                "cores": os.cpu_count(),
                "load_1m_end": round(os.getloadavg()[0], 2),
                "texts": len(texts),
                "teacher": counts,
                "quality_seconds": round(quality_seconds, 1),
                "mask_below": span_quality.MASK_BELOW,
                "flagged_below": span_quality.FLAGGED_BELOW,
                "cells": cells,
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
