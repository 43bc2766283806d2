#!/usr/bin/env python
"""The extractive summarisation student on DialogSum, with lead-3 and the greedy oracle over
the same units as its floor and ceiling, and a smoke run of the abstractive student.

    python bench/summarization_bench.py [--train-limit N] [--test-limit N] [--skip-abstractive]

DialogSum is read in place from ../shared/data/dialogsum (CC BY-NC-SA 4.0: never copied):
train.jsonl (12,460 dialogues, ``dialogue`` and one ``summary``), dev.jsonl (500, ``summary``),
test.jsonl (500, ``summary1..3``). The student (tasks/summarization/student.py) is trained on
the train split's human summaries with the dev split as its validation (the length rule is
chosen there; ``train_seconds`` includes labelling every train dialogue with the oracle); its
kept turns are rewritten in the third person (``student_extract_only``: the same turns as
extracted). Scores are ROUGE-1/2/L F on test against ``summary1`` (the ``*_best``
fields: best of the three). lead3 keeps the first three turns; oracle is
``measure.oracle_units`` against summary1 (its own test reference: a ceiling, not a system);
``oracle_rewritten`` its turns rewritten the student's way (for reading; the ratio is to ``oracle``).

The abstractive smoke trains a tiny random T5 (``ml.make_tiny_seq2seq``) a few steps on 64
train dialogues and scores 20 test ones: it checks the code path, not quality.

Exactly one JSON object goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from banking77_distill import cpu_model  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "dialogsum"


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def read(name: str, limit: int | None = None) -> list[dict]:
    with (DATA / f"{name}.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return rows[:limit] if limit else rows


def scores(measure, picked: list[str], rows: list[dict]) -> dict:
    first = [measure.rouge([r["summary1"]], p) for r, p in zip(rows, picked, strict=True)]
    best = [
        measure.rouge([r["summary1"], r["summary2"], r["summary3"]], p)
        for r, p in zip(rows, picked, strict=True)
    ]
    out = {m: round(100 * sum(s[m] for s in first) / len(first), 2) for m in measure.MEASURES}
    out.update({f"{m}_best": round(100 * sum(s[m] for s in best) / len(best), 2) for m in measure.MEASURES})
    return out


def abstractive_smoke(work: Path, train: list[dict], test: list[dict]) -> dict:
    from distillapp import ml
    from tasks.summarization import measure, seq2seq

    model = ml.make_tiny_seq2seq(work / "tiny-t5")
    hp = ml.Hyperparameters(epochs=2, learning_rate=1e-3, batch_size=8, max_length=128)
    result = seq2seq.train(
        texts=[r["dialogue"] for r in train],
        answers=[{"summary": r["summary"]} for r in train],
        names=[],
        base_model=model,
        output_dir=work / "abstractive",
        hyperparameters=hp,
        target={"unit": "words", "length": 20},
    )
    answers, _ = seq2seq.predict(work / "abstractive", [r["dialogue"] for r in test])
    picked = [a["summary"] for a in answers]
    return {
        "model": "tiny random T5 (ml.make_tiny_seq2seq)",
        "steps": result.steps,
        **scores(measure, picked, test),
    }


def through_app(train: list[dict], test: list[dict], work: Path) -> dict:
    """The same student through the app's own services, on a throw-away SQLite project: the
    train dialogues imported as verified summaries, the test ones as an attested gold file
    (summary1), ``run_create`` / ``run_claim`` / ``run_execute`` with the launch form's defaults
    (its validation share, not DialogSum's dev split), then ``evaluate_run`` on gold."""
    from banking77_distill import bench_user, setup_django

    setup_django(work / "data")
    from annotation import corpus
    from annotation.corpus import import_batch_claim, import_batch_run
    from annotation.corpus.importing import GOLD_ATTESTED, LABELS_VERIFIED
    from annotation.projects import project_create
    from training import services

    user = bench_user()
    project = project_create(
        name="DialogSum",
        slug="dialogsum",
        user=user,
        task_type="summarization",
        task_options={"target_unit": "sentences", "target_length": 2},
    )

    def imported(rows: list[dict], name: str, **options) -> float:
        path = work / name
        with path.open("w", encoding="utf-8") as out:
            for r in rows:
                out.write(
                    json.dumps({"text": r["dialogue"], "summary": r.get("summary") or r["summary1"]}) + "\n"
                )
        started = time.monotonic()
        batch = corpus.import_batch_create(
            project=project, user=user, file_name=name, path=path, label_column="summary", **options
        )
        if not import_batch_claim(batch.pk):
            raise RuntimeError("the import could not be claimed")
        batch = import_batch_run(batch=batch)
        if batch.status != "succeeded":
            raise RuntimeError(f"import {name} failed: {batch.error} {batch.error_report[:3]}")
        return time.monotonic() - started

    import_seconds = imported(train, "train.jsonl", label_meaning=LABELS_VERIFIED)
    imported(test, "test.jsonl", gold=GOLD_ATTESTED)
    run = services.run_create(project=project, user=None)
    if not services.run_claim(run.pk):
        raise RuntimeError("the run could not be claimed")
    started = time.monotonic()
    run = services.run_execute(run=run)
    if run.status != "succeeded":
        raise RuntimeError(f"run failed: {run.error}")
    run_seconds = time.monotonic() - started
    evaluation = services.evaluate_run(run=run)
    m = evaluation.metrics
    return {
        "import_train_seconds": round(import_seconds, 1),
        "run_seconds": round(run_seconds, 1),
        "train_seconds": round(run.train_seconds or 0, 1),
        "train_examples": run.counts.get("train"),
        "gold_items": m.get("examples"),
        "rouge1": round(100 * m["rouge1"], 2),
        "rouge2": round(100 * m["rouge2"], 2),
        "rougeL": round(100 * m["rougeL"], 2),
        "embedding_similarity": m.get("embedding_similarity"),
        "unsupported_rate": m.get("unsupported_rate"),
        "share_right": m.get("share_right"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=None, help="the first N train dialogues")
    parser.add_argument("--test-limit", type=int, default=None, help="the first N test dialogues")
    parser.add_argument("--skip-abstractive", action="store_true")
    parser.add_argument(
        "--through-app",
        action="store_true",
        help="also import, train and evaluate the student through the app's services (SQLite)",
    )
    args = parser.parse_args()

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = [round(x, 2) for x in os.getloadavg()]
    from distillapp import ml
    from tasks.summarization import measure, student
    from tasks.summarization.units import join_units, rewrite_summary, split_units

    train, dev, test = read("train", args.train_limit), read("dev"), read("test", args.test_limit)
    units = [split_units(r["dialogue"]) for r in test]
    lead3 = [join_units(r["dialogue"], u, range(min(3, len(u)))) for r, u in zip(test, units, strict=True)]
    oracle_picks = [
        measure.oracle_units(r["dialogue"], u, r["summary1"]) for r, u in zip(test, units, strict=True)
    ]
    oracle = [join_units(r["dialogue"], u, o) for r, u, o in zip(test, units, oracle_picks, strict=True)]
    # The oracle's turns rewritten as the student rewrites its own: for the reader only, the
    # ratio is taken against the plain oracle above (the same turns, no rewrite).
    oracle_rewritten = [
        rewrite_summary(r["dialogue"], u, o) for r, u, o in zip(test, units, oracle_picks, strict=True)
    ]
    log(f"training on {len(train)} dialogues, validating on {len(dev)}")
    with tempfile.TemporaryDirectory(prefix="summarization-bench-") as work:
        work = Path(work)
        result = student.train(
            texts=[r["dialogue"] for r in train],
            answers=[{"summary": r["summary"]} for r in train],
            names=[],
            base_model=ml.default_base_model(),
            output_dir=work / "student",
            hyperparameters=ml.Hyperparameters(),
            validation=([r["dialogue"] for r in dev], [{"summary": r["summary"]} for r in dev]),
            target={"unit": "sentences", "length": 2},
        )
        log(f"trained in {result.seconds:.0f} s; validation {result.validation}")
        predict_started = time.monotonic()
        answers, confidences = student.predict(work / "student", [r["dialogue"] for r in test])
        predict_seconds = time.monotonic() - predict_started
        student_scores = scores(measure, [a["summary"] for a in answers], test)
        extracts, _ = student.predict(work / "student", [r["dialogue"] for r in test], rewrite=False)
        extract_scores = scores(measure, [a["summary"] for a in extracts], test)
        smoke = None
        if not args.skip_abstractive:
            smoke = abstractive_smoke(work, train[:64], test[:20])
        app = through_app(train, test, work) if args.through_app else None
    lead_scores, oracle_scores = scores(measure, lead3, test), scores(measure, oracle, test)
    print(
        json.dumps(
            {
                "bench": "summarization",
                "started_at": started_at,
                "cpu": cpu_model(),
                "cores": os.cpu_count(),
                "load_at_start": load_start,
                "dialogsum": {
                    "student": {
                        **student_scores,
                        "train_seconds": round(result.seconds, 1),
                        "train_examples": result.steps,
                        "predict_seconds": round(predict_seconds, 1),
                        "test_examples": len(test),
                        "rule": result.validation.get("rule"),
                        "validation_rouge1": round(100 * result.validation.get("rouge1", 0), 2),
                        "mean_confidence": round(sum(confidences) / len(confidences), 3),
                        "rewrite": True,
                    },
                    # The same model and turns without the third-person rewrite.
                    "student_extract_only": extract_scores,
                    "lead3": lead_scores,
                    "oracle": oracle_scores,
                    "oracle_rewritten": scores(measure, oracle_rewritten, test),
                    "student_vs_oracle_rouge1": round(student_scores["rouge1"] / oracle_scores["rouge1"], 3),
                    "student_minus_lead3_rouge1": round(student_scores["rouge1"] - lead_scores["rouge1"], 2),
                },
                "abstractive_smoke": smoke,
                # Through the app's services, gold = summary1 (best of one reference).
                "through_app": app,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
