#!/usr/bin/env python
"""Banking77 with the quick student (tasks/classification/quick.py), human labels, outside the app.

    python bench/quick_student_bench.py [--limit N] [--max-length L] [--c C] [--torch-threads T]

Trains on ../shared/data/banking77/train.csv (the human `category` labels; ``--limit N``: a
seeded random sample of N train rows, for smoke runs) and scores on all of test.csv. The
student is frozen bundled MiniLM-L6 embeddings (``distillapp.ml.embed_texts``, launch-form
max_length 64 unless ``--max-length``) with a logistic-regression head (C = 10 unless ``--c``).

Timings: ``embed_seconds`` and ``head_fit_seconds`` of training (the model load is warmed up
first and not counted), ``train_seconds`` = train()'s whole time, ``predict_seconds`` for the
test texts, and ``retrain_warm_cache_seconds``: the same training again through an embedding
cache that already holds every train text (what a review round's retrain costs).
``total_seconds`` is the whole script. Exactly one JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from banking77_distill import cpu_model  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data" / "banking77"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in rows], [row["category"] for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--limit", type=int, default=None, help="train rows (seeded sample); smoke runs")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--c", type=float, default=None)
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    args = parser.parse_args()

    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = [round(x, 2) for x in os.getloadavg()]
    import torch

    from distillapp import ml
    from tasks.classification import quick

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    train_texts, train_labels = read_csv(DATA / "train.csv")
    test_texts, test_labels = read_csv(DATA / "test.csv")
    if args.limit:
        picked = sorted(random.Random(77).sample(range(len(train_texts)), min(args.limit, len(train_texts))))
        train_texts = [train_texts[i] for i in picked]
        train_labels = [train_labels[i] for i in picked]
    names = sorted(set(train_labels) | set(test_labels))
    base_model = ml.default_base_model()
    hp = ml.Hyperparameters(max_length=args.max_length)
    c = quick.DEFAULT_C if args.c is None else args.c

    ml.embed_texts(["warm up the encoder"], model_name=base_model, max_length=args.max_length)
    log(f"training on {len(train_texts)} texts, {len(names)} labels, max_length {args.max_length}, C {c}")
    with tempfile.TemporaryDirectory(prefix="quick-bench-") as work:
        work = Path(work)
        cache = work / "cache"
        result = quick.train(
            texts=train_texts,
            answers=train_labels,
            names=names,
            base_model=base_model,
            output_dir=work / "model",
            hyperparameters=hp,
            embedding_cache_dir=cache,
            c=c,
        )
        config = json.loads((work / "model" / quick.CONFIG_FILE).read_text())
        log(f"trained in {result.seconds:.1f} s ({config['timings']})")

        predict_started = time.monotonic()
        predicted, _ = quick.predict(work / "model", test_texts)
        predict_seconds = time.monotonic() - predict_started
        accuracy = sum(p == g for p, g in zip(predicted, test_labels, strict=True)) / len(test_labels)
        log(f"test accuracy {accuracy:.4f}, predicted {len(test_texts)} in {predict_seconds:.1f} s")

        retrain_started = time.monotonic()
        quick.train(
            texts=train_texts,
            answers=train_labels,
            names=names,
            base_model=base_model,
            output_dir=work / "model-again",
            hyperparameters=hp,
            embedding_cache_dir=cache,
            c=c,
        )
        retrain_seconds = time.monotonic() - retrain_started
        log(f"retrained through the warm cache in {retrain_seconds:.1f} s")

    output = {
        "quick_student": {
            "accuracy": round(accuracy, 4),
            "train_examples": len(train_texts),
            "test_examples": len(test_texts),
            "labels": len(names),
            "embed_seconds": config["timings"]["embed_seconds"],
            "head_fit_seconds": config["timings"]["head_fit_seconds"],
            "head_iterations": config["iterations"],
            "train_seconds": round(result.seconds, 2),
            "predict_seconds": round(predict_seconds, 2),
            "retrain_warm_cache_seconds": round(retrain_seconds, 2),
            "C": c,
            "max_length": args.max_length,
        },
        "environment": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": result.device,
        },
        "run": {
            "limit": args.limit,
            "started_at": started_at,
            "total_seconds": round(time.monotonic() - started, 1),
            "loadavg_start": load_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(json.dumps(output, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
