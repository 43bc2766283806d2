#!/usr/bin/env python
"""Banking77 end to end through the app: import, gold, train the student with the DEFAULT
hyperparameters, evaluate; once on the human labels and once on a SIMULATED teacher's labels.

    python bench/banking77_distill.py [--part human|teacher|all] [--limit N] [--epochs E] [--keep]

Everything runs in this process on a fresh temp SQLite database: DISTILL_DATA_DIR is a temp dir,
DATABASE_URL and REDIS_URL are removed, DJANGO_SETTINGS_MODULE=distillapp.settings, then
``migrate``. The calls are the ones the app makes (no app code is changed):

1. human_labels: ``annotation.projects.project_create`` with the 77 labels;
   ``import_batch_create`` (+ ``import_batch_claim`` / ``import_batch_run``) of train.csv with
   ``label_column="category"`` and ``create_labels=True`` (each label arrives as an ``import``
   proposal, the current label); test.csv is imported into the same project as plain examples
   (its category column ends up in the metadata), all of them go into GoldSet v1 with the test
   category as the gold label, are marked ``is_gold`` and the set is frozen. Then
   ``training.services.run_create(project=..., user=None)`` with no hyperparameters (the
   launch form's defaults), ``run_claim``, ``run_execute`` and ``evaluate_run`` on gold v1.
   Then a quick run (``kind="quick"``) and the ensemble of both (``kind="ensemble"``), each
   created, executed and evaluated the same way: ``quick_accuracy``, ``ensemble_accuracy``,
   ``ensemble_train_seconds`` (the three runs' wall time together).
   ``run_execute`` also predicts every non-gold example afterwards (the student's proposals);
   that is timed on its own (``predict_all_seconds``) by wrapping
   ``training.services.runs.student_predict_all`` at run time; ``phases_s`` breaks the whole run down.
2. simulated_teacher: a second project built the same way, except that the train texts carry
   the labels of bench/simulated_teacher.py (a SIMULATION of gpt-3.5-turbo 8-shot: exactly
   81.6 % right, every error the nearest other label by name) and test.csv is imported with the
   simulated teacher's labels of the test texts; gold = the real test labels.
   ``teacher_accuracy`` is the simulated teacher on the 3,080 test rows against the real labels;
   ``teacher_accuracy_app`` is the same measured by ``services.evaluate_teacher`` on gold v1.
   ``student_accuracy`` is ``evaluate_run`` of the student trained on the teacher's labels.
3. inference_texts_per_second: the student of part 1 predicting the 3,080 test texts
   (``student.predict``, batch_size=64, max_length = the run's 64, as evaluate_run uses) after one
   warm-up call.

Notes on the data: the import deduplicates by normalised text, so the 10,003 train rows give
9,999 examples and the 3,080 test rows 3,079 gold items; 7 test texts also occur in train: they
become gold (the app never trains on a gold example), so 9,992 examples are labelled for
training, of which the run holds out validation_fraction (10 %) for its validation score.

Exactly one JSON object goes to stdout; progress goes to stderr. ``--limit N`` (a seeded random
sample of N train rows) and ``--epochs`` are for smoke tests only; the real run uses neither.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

DATA = Path("/work/shared/data/banking77")
TRAIN_CSV = DATA / "train.csv"
TEST_CSV = DATA / "test.csv"
CATEGORIES = DATA / "categories.json"
TARGET_ACCURACY = 0.92
TARGET_TRAIN_SECONDS = 20 * 60
TARGET_ENSEMBLE_ACCURACY = 0.935
TARGET_ENSEMBLE_SECONDS = 15 * 60
TEACHER_TRAIN_SEED = 77
TEACHER_TEST_SEED = 78


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    """The CPU's model name, for the JSON (the bench machines differ between sessions)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "category"])
        writer.writeheader()
        for row in rows:
            writer.writerow({"text": row["text"], "category": row["category"]})
    return path


# --- Django -------------------------------------------------------------------------------------


def setup_django(data_dir: Path) -> None:
    os.environ["DISTILL_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    os.environ.pop("DATABASE_URL", None)  # the embedded SQLite file in the data dir
    os.environ.pop("REDIS_URL", None)  # nothing here is queued
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


class Phases:
    """Wall time in named functions, wrapped at run time (the app's code is not changed)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.stack: list[str] = []  # a call inside another wrapped one counts as "outer/inner"

    @contextlib.contextmanager
    def wrap(self, module, name: str, key: str | None = None):
        original = getattr(module, name)
        key = key or name

        def timed(*args, **kwargs):
            self.stack.append(key)
            path = "/".join(self.stack)
            started = time.monotonic()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[path] = self.seconds.get(path, 0.0) + time.monotonic() - started
                self.stack.pop()

        setattr(module, name, timed)
        try:
            yield
        finally:
            setattr(module, name, original)


class RunWatcher(threading.Thread):
    """Logs a training run's progress (from its row, as the page shows it) and samples the load."""

    def __init__(self, run_id: int, name: str, every: float = 60.0) -> None:
        super().__init__(daemon=True, name=f"watch-run-{run_id}")
        self.run_id, self.run_name, self.every = run_id, name, every
        self.stop = threading.Event()
        self.loads: list[list[float]] = []

    def run(self) -> None:
        from django.db import connection

        from training.models import TrainingRun

        try:
            while not self.stop.wait(self.every):
                self.loads.append(loadavg())
                row = (
                    TrainingRun.objects.filter(pk=self.run_id)
                    .values("phase", "step", "total_steps", "epoch", "loss")
                    .first()
                )
                if row:
                    loss = f"{row['loss']:.4f}" if row["loss"] is not None else "-"
                    log(
                        f"  {self.run_name}: {row['phase'] or '...'} step {row['step']}/{row['total_steps']} "
                        f"epoch {row['epoch']:.2f} loss {loss} load {self.loads[-1]}"
                    )
        finally:
            connection.close()


# --- building a project -------------------------------------------------------------------------


def bench_user():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
    return user


def import_file(project, user, path: Path, *, label_column: str) -> dict:
    from annotation import corpus
    from annotation.corpus import import_batch_claim, import_batch_run
    from annotation.models import ImportBatch

    started = time.monotonic()
    batch = corpus.import_batch_create(
        project=project,
        user=user,
        file_name=path.name,
        path=path,
        label_column=label_column,
        create_labels=True,
    )
    if not import_batch_claim(batch.pk):
        raise RuntimeError(f"import batch {batch.pk} could not be claimed")
    batch = import_batch_run(batch=batch)
    if batch.status != ImportBatch.Status.SUCCEEDED:
        raise RuntimeError(f"import of {path.name} failed: {batch.error} {batch.error_report[:5]}")
    return {
        "file": path.name,
        "rows_read": batch.rows_read,
        "rows_created": batch.rows_created,
        "rows_duplicate": batch.rows_duplicate,
        "proposals_created": batch.proposals_created,
        "labels_created": batch.labels_created,
        "seconds": round(time.monotonic() - started, 3),
    }


def build_project(
    *,
    slug: str,
    name: str,
    categories: list[str],
    train_csv: Path,
    test_csv: Path,
    test_label_column: str,
    test_rows: list[dict],
) -> tuple:
    """A project with the labels, the train import (labels as proposals), the test import and a
    frozen gold v1 holding every test text with its REAL category."""
    from django.db import transaction

    from annotation import projects
    from annotation.models import Example, GoldSet, GoldSetItem, content_hash

    user = bench_user()
    started = time.monotonic()
    project = projects.project_create(name=name, slug=slug, user=user, labels=[(c, "") for c in categories])
    imports = [
        import_file(project, user, train_csv, label_column="category"),
        import_file(project, user, test_csv, label_column=test_label_column),
    ]
    gold_started = time.monotonic()
    gold_labels: dict[str, str] = {}
    for row in test_rows:  # the first occurrence of a text wins, as in the import
        gold_labels.setdefault(content_hash(row["text"].strip()), row["category"])
    by_hash = dict(
        Example.objects.filter(project=project, content_hash__in=list(gold_labels)).values_list(
            "content_hash", "pk"
        )
    )
    missing = set(gold_labels) - set(by_hash)
    if missing:
        raise RuntimeError(f"{len(missing)} test texts were not imported")
    with transaction.atomic():
        gold = GoldSet.objects.create(project=project, version=1, note="Banking77 test split")
        for digest, label in gold_labels.items():
            GoldSetItem.objects.create(gold_set=gold, example_id=by_hash[digest], answer=label)
        Example.objects.filter(pk__in=list(by_hash.values())).update(is_gold=True)
    gold.freeze(user=user)
    gold_seconds = time.monotonic() - gold_started
    return project, {
        "imports": imports,
        "gold_items": len(gold_labels),
        "gold_seconds": round(gold_seconds, 3),
        "setup_seconds": round(time.monotonic() - started, 3),
    }


# --- training -----------------------------------------------------------------------------------


def train_and_evaluate(project, *, epochs: float | None) -> dict:
    from tasks.classification import student
    from training import services as training_services
    from training.models import TrainingRun
    from training.services import runs as training_runs  # where run_execute looks them up

    hyperparameters = {"epochs": epochs} if epochs is not None else None  # None: the defaults
    phases = Phases()
    started = time.monotonic()
    run = training_services.run_create(project=project, user=None, hyperparameters=hyperparameters)
    create_seconds = time.monotonic() - started
    if not training_services.run_claim(run.pk):
        raise RuntimeError(f"run {run.pk} could not be claimed")
    estimate = run.counts["estimate"]
    log(
        f"run {run.number} of {project.slug}: hyperparameters {run.hyperparameters}, "
        f"estimate {estimate['examples']} examples, {estimate['about']}"
    )
    watcher = RunWatcher(run.pk, f"{project.slug} run {run.number}")
    watcher.start()
    execute_started = time.monotonic()
    try:
        with (
            phases.wrap(training_runs, "training_set"),
            phases.wrap(student, "train"),
            phases.wrap(training_runs, "student_predict_all"),
            phases.wrap(student, "predict"),
        ):
            run = training_services.run_execute(run=run)
    finally:
        watcher.stop.set()
        watcher.join()
    execute_seconds = time.monotonic() - execute_started
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise RuntimeError(f"run {run.number} ended {run.status}: {run.error}")
    log(f"run {run.number} done: train {run.train_seconds:.0f} s, execute {execute_seconds:.0f} s")
    evaluate_started = time.monotonic()
    evaluation = training_services.evaluate_run(run=run, gold_version=1)
    evaluate_seconds = time.monotonic() - evaluate_started
    metrics = evaluation.metrics
    log(f"run {run.number} on gold v1: accuracy {metrics['accuracy']:.4f}")
    train_fn = phases.seconds.get("train", 0.0)
    predict_all = phases.seconds.get("student_predict_all", 0.0)
    predict_all_model = phases.seconds.get("student_predict_all/predict", 0.0)
    return {
        "run": run,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_avg"]["f1"],
        "train_seconds": run.train_seconds,
        "device": run.device,
        "train_examples": run.counts.get("train"),
        "validation_examples": run.counts.get("validation"),
        "validation_accuracy": (run.metrics.get("validation") or {}).get("accuracy"),
        "predict_all_seconds": round(predict_all, 3),
        "predicted_examples": run.counts.get("predicted"),
        "gold_examples": metrics.get("examples"),
        "missing_predictions": metrics.get("missing_predictions"),
        "ece": metrics.get("ece"),
        "hyperparameters": run.hyperparameters,
        "seconds": {
            "run_create": round(create_seconds, 3),
            "run_execute": round(execute_seconds, 3),
            "evaluate_run": round(evaluate_seconds, 3),
        },
        "phases_s": {
            "training_set": round(phases.seconds.get("training_set", 0.0), 3),
            "train_classifier_total": round(train_fn, 3),
            "model_load_save_validation": round(train_fn - (run.train_seconds or 0.0), 3),
            "validation_predict": round(phases.seconds.get("train/predict", 0.0), 3),
            "student_predict_all": round(predict_all, 3),
            "student_predict_all_model": round(predict_all_model, 3),
            "student_predict_all_db": round(predict_all - predict_all_model, 3),
            "other": round(execute_seconds - sum(v for k, v in phases.seconds.items() if "/" not in k), 3),
        },
        "loadavg_during_training": watcher.loads,
    }


# --- the parts ----------------------------------------------------------------------------------


def part_human(*, train_rows, test_rows, categories, train_csv: Path, epochs) -> dict:
    log("part 1: human labels")
    project, setup = build_project(
        slug="banking77-human",
        name="Banking77 (human labels)",
        categories=categories,
        train_csv=train_csv,
        test_csv=TEST_CSV,
        test_label_column="",
        test_rows=test_rows,
    )
    log(f"  set up: {setup}")
    result = train_and_evaluate(project, epochs=epochs)
    result["setup"] = setup
    result.update(quick_and_ensemble(project, result["run"]))
    return result


def quick_and_ensemble(project, finetune) -> dict:
    """The quick student and the ensemble of both runs, with the launch form's defaults.

    ``ensemble_train_seconds`` is the wall time of both students together, as a lead would wait
    for them: the fine-tune's run_execute (training, validation, predicting the pool), the quick
    run's run_execute (embedding, head, calibration, predicting the pool) and the ensemble's
    (weight on the shared validation split, predicting the pool).
    """
    from training import services as training_services

    out: dict = {}
    walls = {"finetune": finetune_wall(finetune)}
    runs = {}
    for kind in ("quick", "ensemble"):
        started = time.monotonic()
        run = training_services.run_create(
            project=project,
            user=None,
            kind=kind,
            members=[finetune, runs["quick"]] if kind == "ensemble" else None,
        )
        if not training_services.run_claim(run.pk):
            raise RuntimeError(f"run {run.pk} could not be claimed")
        run = training_services.run_execute(run=run)
        walls[kind] = time.monotonic() - started
        if run.status != "succeeded":
            raise RuntimeError(f"{kind} run {run.number} ended {run.status}: {run.error}")
        runs[kind] = run
        evaluation = training_services.evaluate_run(run=run, gold_version=1)
        out[f"{kind}_accuracy"] = evaluation.metrics["accuracy"]
        out[f"{kind}_ece"] = evaluation.metrics.get("ece")
        out[f"{kind}_wall_seconds"] = round(walls[kind], 1)
        log(
            f"{kind} run {run.number}: gold accuracy {evaluation.metrics['accuracy']:.4f} in {walls[kind]:.0f} s"
        )
    out["ensemble_weight_on_finetune"] = runs["ensemble"].metrics["validation"].get("weight")
    out["quick_validation_calibration"] = runs["quick"].metrics["validation"].get("calibration")
    out["finetune_wall_seconds"] = round(walls["finetune"], 1)
    out["ensemble_train_seconds"] = round(sum(walls.values()), 1)
    return out


def finetune_wall(run) -> float:
    # run_execute's wall time of the fine-tune (started/finished stamps of its row).
    run.refresh_from_db()
    return (run.finished_at - run.started_at).total_seconds() if run.started_at and run.finished_at else 0.0


def part_inference(run, test_rows) -> dict:
    import torch

    from tasks.classification import student
    from training.models import default_hyperparameters

    model_dir = Path(run.artifact_path) / "model"
    max_length = {**default_hyperparameters(), **run.hyperparameters}["max_length"]
    texts = [r["text"] for r in test_rows]
    student.predict(model_dir, texts[:64], batch_size=64, max_length=max_length)  # warm-up
    started = time.monotonic()
    labels, _ = student.predict(model_dir, texts, batch_size=64, max_length=max_length)
    seconds = time.monotonic() - started
    correct = sum(p == r["category"] for p, r in zip(labels, test_rows, strict=True))
    log(f"inference: {len(texts)} texts in {seconds:.2f} s")
    return {
        "texts": len(texts),
        "seconds": round(seconds, 3),
        "texts_per_second": round(len(texts) / seconds, 1),
        "batch_size": 64,
        "max_length": max_length,
        "torch_threads": torch.get_num_threads(),
        "accuracy_on_3080_rows": round(correct / len(texts), 4),
    }


def part_teacher(*, train_rows, test_rows, categories, work: Path, epochs) -> dict:
    from simulated_teacher import (
        PUBLISHED_ACCURACY,
        accuracy_of,
        label_text,
        nearest_other_labels,
        simulate_teacher_labels,
    )

    from training import services as training_services

    log("part 2: simulated teacher (a SIMULATION, no LLM is called)")
    nearest = nearest_other_labels(categories)
    train_truth = [r["category"] for r in train_rows]
    test_truth = [r["category"] for r in test_rows]
    train_teacher = simulate_teacher_labels(
        train_truth, label_names=categories, seed=TEACHER_TRAIN_SEED, nearest=nearest
    )
    test_teacher = simulate_teacher_labels(
        test_truth, label_names=categories, seed=TEACHER_TEST_SEED, nearest=nearest
    )
    teacher_train_csv = write_csv(
        work / "train_teacher.csv",
        [{"text": r["text"], "category": t} for r, t in zip(train_rows, train_teacher, strict=True)],
    )
    teacher_test_csv = write_csv(
        work / "test_teacher.csv",
        [{"text": r["text"], "category": t} for r, t in zip(test_rows, test_teacher, strict=True)],
    )
    project, setup = build_project(
        slug="banking77-teacher",
        name="Banking77 (simulated teacher)",
        categories=categories,
        train_csv=teacher_train_csv,
        test_csv=teacher_test_csv,
        test_label_column="category",
        test_rows=test_rows,  # gold: the REAL test labels
    )
    log(f"  set up: {setup}")
    teacher_eval = training_services.evaluate_teacher(project=project, gold_version=1)
    result = train_and_evaluate(project, epochs=epochs)
    pairs = sorted(nearest.items())
    return {
        "simulation": "bench/simulated_teacher.py: exactly 81.6 % right, errors = nearest other label name",
        "published_accuracy": PUBLISHED_ACCURACY,
        "teacher_accuracy": round(accuracy_of(test_teacher, test_truth), 4),
        "teacher_accuracy_app": teacher_eval.metrics["accuracy"],
        "teacher_train_label_accuracy": round(accuracy_of(train_teacher, train_truth), 4),
        "student_accuracy": result["accuracy"],
        "student_macro_f1": result["macro_f1"],
        "train_seconds": result["train_seconds"],
        "device": result["device"],
        "train_examples": result["train_examples"],
        "validation_accuracy_on_teacher_labels": result["validation_accuracy"],
        "predict_all_seconds": result["predict_all_seconds"],
        "seconds": result["seconds"],
        "phases_s": result["phases_s"],
        "setup": setup,
        "loadavg_during_training": result["loadavg_during_training"],
        "nearest_label_examples": {label_text(a): label_text(b) for a, b in pairs[:8]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["human", "teacher", "all"], default="all")
    parser.add_argument("--limit", type=int, default=None, help="only N train rows (smoke test)")
    parser.add_argument("--epochs", type=float, default=None, help="override (smoke tests only)")
    parser.add_argument("--keep", action="store_true", help="keep the temp data dir")
    args = parser.parse_args()

    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="banking77-distill-"))
    log(f"data dir {work}; load {load_start}")
    real_stdout = sys.stdout
    output: dict = {}
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
            setup_django(work / "data")
            import torch

            from training.models import default_hyperparameters

            categories = json.loads(CATEGORIES.read_text())
            train_rows = read_csv(TRAIN_CSV)
            test_rows = read_csv(TEST_CSV)
            train_csv = TRAIN_CSV
            if args.limit:
                keep = sorted(
                    random.Random(13).sample(range(len(train_rows)), min(args.limit, len(train_rows)))
                )
                train_rows = [train_rows[i] for i in keep]
                train_csv = write_csv(work / "train_limited.csv", train_rows)
            output = {
                "human_labels": None,
                "simulated_teacher": None,
                "inference_texts_per_second": None,
                "hyperparameters": {
                    **default_hyperparameters(),
                    **({"epochs": args.epochs} if args.epochs is not None else {}),
                },
                "loadavg": None,
            }
            if args.part in ("human", "all"):
                human = part_human(
                    train_rows=train_rows,
                    test_rows=test_rows,
                    categories=categories,
                    train_csv=train_csv,
                    epochs=args.epochs,
                )
                run = human.pop("run")
                inference = part_inference(run, test_rows)
                output["human_labels"] = human
                output["inference_texts_per_second"] = inference["texts_per_second"]
                output["inference"] = inference
                output["hyperparameters"] = human["hyperparameters"]
            if args.part in ("teacher", "all"):
                output["simulated_teacher"] = part_teacher(
                    train_rows=train_rows,
                    test_rows=test_rows,
                    categories=categories,
                    work=work,
                    epochs=args.epochs,
                )
            human = output["human_labels"]
            output["targets"] = {
                "accuracy_min": TARGET_ACCURACY,
                "train_seconds_max": TARGET_TRAIN_SECONDS,
                "accuracy_met": human["accuracy"] >= TARGET_ACCURACY if human else None,
                "train_time_met": human["train_seconds"] <= TARGET_TRAIN_SECONDS if human else None,
                # Issue #13: both students and their average in 15 minutes, at 0.935 or better.
                "ensemble_accuracy_min": TARGET_ENSEMBLE_ACCURACY,
                "ensemble_seconds_max": TARGET_ENSEMBLE_SECONDS,
                "ensemble_accuracy_met": human["ensemble_accuracy"] >= TARGET_ENSEMBLE_ACCURACY
                if human
                else None,
                "ensemble_time_met": human["ensemble_train_seconds"] <= TARGET_ENSEMBLE_SECONDS
                if human
                else None,
            }
            output["environment"] = {
                "cpu": cpu_model(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "cuda": torch.cuda.is_available(),
            }
            output["run"] = {
                "part": args.part,
                "limit": args.limit,
                "epochs_override": args.epochs,
                "started_at": started_at,
                "total_seconds": round(time.monotonic() - started, 1),
                "loadavg_start": load_start,
            }
            output["loadavg"] = loadavg()
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(output, indent=1, default=str), file=real_stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
