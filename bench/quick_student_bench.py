#!/usr/bin/env python
"""Quick students: Banking77 outside the app, or (``--task extraction``) Restaurant-8k review rounds in it.

    python bench/quick_student_bench.py [--limit N] [--max-length L] [--c C] [--torch-threads T] [--single-texts N]
    python bench/quick_student_bench.py --task extraction [--limit N] [--c C] [--torch-threads T]

Trains on ../shared/data/banking77/train.csv (the human `category` labels; ``--limit N``: a
seeded random sample of N train rows, for smoke runs) and scores on all of test.csv. The
student is frozen bundled MiniLM-L6 embeddings (``distillapp.ml.embed_texts``, launch-form
max_length 64 unless ``--max-length``) with a logistic-regression head (C = 10 unless ``--c``).

Timings: ``embed_seconds`` and ``head_fit_seconds`` of training (the model load is warmed up
first and not counted), ``train_seconds`` = train()'s whole time, ``predict_seconds`` for the
test texts, and ``retrain_warm_cache_seconds``: the same training again through an embedding
cache that already holds every train text (what a review round's retrain costs).
``total_seconds`` is the whole script. ``onnx_int8_encoder``: the same student served from
its int8 encoder export (``quick.export_onnx``): test accuracy and agreement with torch, the
batch prediction time against torch's, and the median / p95 time of one text per call on
both (``--single-texts`` test texts). Exactly one JSON object goes to stdout.

``--task extraction``: the quick extraction student (tasks/extraction/quick.py) through the
app's services, as a review round runs it. An extraction project with Restaurant-8k train as
verified labels and test as attested gold v1 (bench/extraction_bench.py's ``build_project``;
``--limit N``: N seeded rows of each), then two review-round quick runs (``run_create`` with
the round's mark, ``run_claim``, ``run_execute``: embed, fit, predict every non-gold text),
the first with an empty embedding cache and the second with the first's (what every later
round costs), ``evaluate_run`` of the first on gold (strict/partial F1, as the fine-tune's
0.949 in bench/README.md "Extraction students") and ``onnx_prepare`` (the int8 encoder
measured against fp32 on the same gold, the deploy page's gate).
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
    parser.add_argument("--task", choices=["classification", "extraction"], default="classification")
    parser.add_argument("--limit", type=int, default=None, help="train rows (seeded sample); smoke runs")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--c", type=float, default=None)
    parser.add_argument("--single-texts", type=int, default=300, help="test texts timed one per call")
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
    if args.task == "extraction":
        return extraction_rounds(args, started=started, started_at=started_at, load_start=load_start)

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

        # Serving: the encoder as ONNX int8 (quick.export_onnx) against the torch encoder,
        # on the same test texts: accuracy, a batch of all of them, and one text per call
        # (what a predict API request of one text costs), no embedding cache on either side.
        export_started = time.monotonic()
        onnx_dir = quick.export_onnx(work / "model", work / "onnx-int8", max_length=args.max_length)
        export_seconds = time.monotonic() - export_started
        onnx_started = time.monotonic()
        onnx_predicted, _ = quick.predict_onnx(onnx_dir, test_texts)
        onnx_batch_seconds = time.monotonic() - onnx_started
        onnx_accuracy = sum(p == g for p, g in zip(onnx_predicted, test_labels, strict=True)) / len(
            test_labels
        )
        agreement = sum(a == b for a, b in zip(onnx_predicted, predicted, strict=True)) / len(predicted)
        singles = test_texts[: args.single_texts]
        quick.predict_onnx(onnx_dir, singles[:1])  # warm up the session
        one_by_one = {}
        for name, call in (
            ("torch", lambda text: quick.predict(work / "model", [text])),
            ("onnx_int8", lambda text: quick.predict_onnx(onnx_dir, [text])),
        ):
            timings = []
            for text in singles:
                t0 = time.perf_counter()
                call(text)
                timings.append(1000 * (time.perf_counter() - t0))
            timings.sort()
            one_by_one[name] = {
                "median_ms": round(timings[len(timings) // 2], 2),
                "p95_ms": round(timings[int(len(timings) * 0.95)], 2),
            }
        log(f"int8 encoder: accuracy {onnx_accuracy:.4f}, agreement {agreement:.4f}, one text {one_by_one}")

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
        "onnx_int8_encoder": {
            "accuracy": round(onnx_accuracy, 4),
            "accuracy_drop_points": round(100 * (accuracy - onnx_accuracy), 2),
            "agreement_with_torch": round(agreement, 4),
            "export_seconds": round(export_seconds, 1),
            "batch_predict_seconds": round(onnx_batch_seconds, 2),
            "torch_batch_predict_seconds": round(predict_seconds, 2),
            "batch_speedup": round(predict_seconds / onnx_batch_seconds, 2),
            "one_text_per_call": one_by_one,
            "one_text_speedup": round(
                one_by_one["torch"]["median_ms"] / one_by_one["onnx_int8"]["median_ms"], 2
            ),
            "single_texts": len(singles),
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


def extraction_rounds(args, *, started: float, started_at: str, load_start: list[float]) -> int:
    """Two review rounds' quick runs on Restaurant-8k through the app (module docstring)."""
    import torch
    from banking77_distill import setup_django
    from extraction_bench import RESTAURANT_FIELDS, build_project, restaurant8k, sample

    with tempfile.TemporaryDirectory(prefix="quick-extraction-bench-") as scratch:
        work = Path(scratch)
        setup_django(work / "data")
        from training import services
        from training.models import TrainingRun
        from training.services.round_refresh import ROUND_MARK
        from training.serving import onnx_prepare

        train_rows = sample(restaurant8k("train"), args.limit, 1)
        project, imports = build_project(
            slug="restaurant8k",
            fields=RESTAURANT_FIELDS,
            train_rows=train_rows,
            test_rows=sample(restaurant8k("test"), args.limit, 2),
            work=work,
        )
        log(f"imported {imports}")
        hyperparameters = {ROUND_MARK: True, **({"C": args.c} if args.c is not None else {})}
        rounds = []
        for number in (1, 2):
            round_started = time.monotonic()
            run = services.run_create(
                project=project, user=None, kind=TrainingRun.Kind.QUICK, hyperparameters=hyperparameters
            )
            if not services.run_claim(run.pk):
                raise RuntimeError(f"run {run.pk} could not be claimed")
            run = services.run_execute(run=run)
            seconds = time.monotonic() - round_started
            if run.status != TrainingRun.Status.SUCCEEDED:
                raise RuntimeError(f"run {run.number} ended {run.status}: {run.error}")
            config = json.loads((Path(run.artifact_path) / "model" / "quick_student.json").read_text())
            rounds.append(
                {
                    "cache": "empty" if number == 1 else "warm (the first round's)",
                    "round_seconds": round(seconds, 1),
                    "train_seconds": round(run.train_seconds, 1),
                    "embed_seconds": config["timings"]["embed_seconds"],
                    "head_fit_seconds": config["timings"]["head_fit_seconds"],
                    "head_iterations": config["iterations"],
                    "train_examples": run.counts["train"],
                    "train_words": config["train_words"],
                    "predicted_examples": run.counts["predicted"],
                    "validation_strict_f1": round(run.metrics["validation"]["strict_f1"], 4),
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                }
            )
            log(f"round {number}: {rounds[-1]}")
            if number == 1:
                first = run
        evaluate_started = time.monotonic()
        m = services.evaluate_run(run=first, gold_version=1).metrics
        evaluate_seconds = time.monotonic() - evaluate_started
        log(f"gold strict F1 {m['strict']['micro']['f1']:.4f} in {evaluate_seconds:.1f} s")
        int8 = onnx_prepare(run=first, gold_version=1)
        log(f"int8: {int8}")
        output = {
            "bench": "quick extraction student, review rounds",
            "restaurant8k": {
                "strict_f1": round(m["strict"]["micro"]["f1"], 4),
                "partial_f1": round(m["partial"]["micro"]["f1"], 4),
                "strict_precision": round(m["strict"]["micro"]["precision"], 4),
                "strict_recall": round(m["strict"]["micro"]["recall"], 4),
                "per_field_strict_f1": {
                    row["field"]: round(row["strict"]["f1"], 4) if row["strict"] else None
                    for row in m["per_field"]
                },
                "exact_match": round(m["exact_match"], 4),
                "gold_items": m["examples"],
                "evaluate_seconds": round(evaluate_seconds, 1),
                "finetune_strict_f1_recorded": 0.949,
                "C": first.hyperparameters["C"],
            },
            "rounds": rounds,
            "onnx_int8_encoder": int8,
            "imports": imports,
            "environment": {
                "cpu_model": cpu_model(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
            },
            "run": {
                "limit": args.limit,
                "started_at": started_at,
                "total_seconds": round(time.monotonic() - started, 1),
                "loadavg_start": load_start,
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            },
        }
    print(json.dumps(output, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
