#!/usr/bin/env python
"""Extraction students on Restaurant-8k and WNUT-17 through the app's own services, with the
launch form's default hyperparameters, and a student trained on a SIMULATED teacher's spans.

    python bench/extraction_bench.py [--part restaurant8k|wnut17|teacher|all] [--limit N] [--epochs E]

Everything runs in this process on a throw-away SQLite database: DISTILL_DATA_DIR is a temp
dir, DATABASE_URL and REDIS_URL are removed, DJANGO_SETTINGS_MODULE=distillapp.settings, then
``migrate`` (bench/banking77_distill.py's ``setup_django``). Each part is its own extraction
project, built and trained with the calls the app makes:

1. ``annotation.projects.project_create(task_type="extraction")`` with the dataset's fields;
2. the train rows written as JSONL (``{"text", "spans"}``) and imported with
   ``import_batch_create`` + ``import_batch_claim`` / ``import_batch_run`` as VERIFIED labels
   (reviews by the bench's lead), or, for the simulated teacher, as predictions of the agent
   ``import:simulated-teacher`` (proposals: each example's current label);
3. the test rows imported as an ATTESTED gold file (``gold="attested"``): gold v1, frozen,
   with the file's spans;
4. ``training.services.run_create(kind="finetune")`` with no hyperparameters (the launch
   form's defaults for an extraction project: ``run_defaults``, i.e.
   ``training.models.default_hyperparameters()`` under ``ExtractionTask.default_hyperparameters``),
   ``run_claim`` and ``run_execute`` in this process (``run_start`` would queue it), then
   ``evaluate_run`` on gold v1: strict / partial entity micro-F1 (nervaluate, in
   tasks/extraction/measure.py) from the Evaluation's metrics.

The import deduplicates texts (normalised), and gold examples never enter training: a test
text that also occurs in train is gold only. So Restaurant-8k's 8,198 train rows give fewer
training examples (7,906 distinct texts, 98 of them also test texts) and its 3,731 test rows
3,644 gold items; WNUT-17's rows are nearly all distinct. ``train_examples`` is the run's own
count, after the validation share (``validation_fraction``, stratified by the fields a text holds).

Parts:
1. restaurant8k: ../shared/data/restaurant8k train.json -> test.json (5 slots, character
   offsets; ``valueSpan`` leaves out ``startIndex`` when it is 0).
2. wnut17: ../shared/data/wnut17 train.conll -> test.conll (6 entity types, BIO), read with
   the app's CoNLL reader (tokens joined by single spaces).
3. teacher: Restaurant-8k again, the student trained on a SIMULATED teacher's spans of the
   train texts (no LLM is called): of the gold spans, a seeded draw drops 15 %, moves one
   boundary of 10 % by one whitespace word (grow or shrink, start or end, whichever is
   possible) and gives 5 % another field. The same simulation (another seed) answers the
   test texts, imported as predictions before the attested gold file; ``teacher_strict_f1``
   is ``evaluate_system`` of that agent on gold v1, ``student_strict_f1`` the run's
   ``evaluate_run`` (a test text already imported with the train file keeps the train
   simulation's answer: an import answers only the examples it creates). The simulation is
   uniform noise, not the errors of a real LLM (those depend on the text).

Exactly one JSON object goes to stdout; progress goes to stderr. ``--limit N`` (a seeded
sample of N train rows and N test rows per dataset) and ``--epochs`` are for smoke runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from banking77_distill import cpu_model  # noqa: E402

SHARED_DATA = Path(os.environ.get("DISTILL_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
RESTAURANT_FIELDS = ["date", "time", "people", "first_name", "last_name"]
WNUT_FIELDS = ["corporation", "creative-work", "group", "location", "person", "product"]
TARGETS = {"restaurant8k": 0.93, "wnut17": 0.40}
TARGET_TRAIN_SECONDS = 20 * 60
TEACHER_TRAIN_SEED = 81
TEACHER_TEST_SEED = 82
TEACHER_AGENT = "import:simulated-teacher"
MISS, SHIFT, WRONG_FIELD = 0.15, 0.10, 0.05


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- data ---------------------------------------------------------------------------------------


def restaurant8k(split: str) -> list[tuple[str, dict]]:
    from tasks.extraction.spans import normalise_spans

    rows = json.loads((SHARED_DATA / "restaurant8k" / f"{split}.json").read_text(encoding="utf-8"))
    out = []
    for row in rows:
        text = row["userInput"]["text"]
        spans = [
            {
                "start": label["valueSpan"].get("startIndex", 0),
                "end": label["valueSpan"]["endIndex"],
                "field": label["slot"],
            }
            for label in row.get("labels", [])
        ]
        out.append((text, {"spans": normalise_spans(text, spans)}))
    return out


def wnut17(split: str) -> list[tuple[str, dict]]:
    from tasks.extraction.formats import read_conll

    source = (SHARED_DATA / "wnut17" / f"{split}.conll").read_text(encoding="utf-8")
    return [(row.text, {"spans": row.spans}) for row in read_conll(source)]


def sample(rows: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(rows):
        return rows
    return random.Random(seed).sample(rows, limit)


# --- the simulated teacher ----------------------------------------------------------------------


def _shifted(text: str, span: dict, rng: random.Random) -> dict | None:
    """The span with one boundary moved by one whitespace word, or None if no move is possible."""
    from tasks.extraction.spans import whitespace_tokens

    words = whitespace_tokens(text)
    start, end = span["start"], span["end"]
    inner = [(max(s, start), min(e, end)) for s, e in words if s < end and e > start]
    before = [s for s, e in words if e <= start]
    after = [e for s, e in words if s >= end]
    moves = []
    if before:
        moves.append((before[-1], end))  # grow the start by the word before
    if after:
        moves.append((start, after[0]))  # grow the end by the word after
    if len(inner) > 1:
        moves.append((inner[1][0], end))  # shrink: drop the first word
        moves.append((start, inner[-2][1]))  # shrink: drop the last word
    if not moves:
        return None
    new_start, new_end = rng.choice(moves)
    return {"start": new_start, "end": new_end, "field": span["field"]}


def simulate_teacher(
    rows: list[tuple[str, dict]], fields: list[str], seed: int
) -> tuple[list[dict], dict[str, int]]:
    """The simulated teacher's answers for the rows' texts (see the module docstring)."""
    from tasks.extraction.spans import normalise_spans

    rng = random.Random(seed)
    counts = {"spans": 0, "missed": 0, "shifted": 0, "wrong_field": 0, "unchanged": 0}
    answers = []
    for text, gold in rows:
        spans = []
        for span in gold["spans"]:
            counts["spans"] += 1
            draw = rng.random()
            if draw < MISS:
                counts["missed"] += 1
                continue
            if draw < MISS + SHIFT:
                moved = _shifted(text, span, rng)
                if moved is not None:
                    counts["shifted"] += 1
                    spans.append(moved)
                    continue
            elif draw < MISS + SHIFT + WRONG_FIELD:
                counts["wrong_field"] += 1
                spans.append({**span, "field": rng.choice([f for f in fields if f != span["field"]])})
                continue
            counts["unchanged"] += 1
            spans.append(dict(span))
        answers.append({"spans": normalise_spans(text, spans)})
    return answers, counts


# --- the app: a project, its imports, a run and its evaluation ---------------------------------


def write_jsonl(path: Path, texts: list[str], answers: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for text, answer in zip(texts, answers, strict=True):
            spans = [{"start": s["start"], "end": s["end"], "field": s["field"]} for s in answer["spans"]]
            f.write(json.dumps({"text": text, "spans": spans}, ensure_ascii=False) + "\n")
    return path


def import_jsonl(project, user, path: Path, **options) -> dict:
    from annotation.corpus.importing import import_batch_claim, import_batch_create, import_batch_run
    from annotation.models import ImportBatch

    started = time.monotonic()
    batch = import_batch_create(
        project=project, user=user, file_name=path.name, path=path, fmt="jsonl", **options
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
        "answers_created": batch.proposals_created,
        "gold_items": batch.options.get("gold_items"),
        "seconds": round(time.monotonic() - started, 2),
    }


def build_project(
    *,
    slug: str,
    fields: list[str],
    train_rows: list[tuple[str, dict]],
    test_rows: list[tuple[str, dict]],
    work: Path,
    teacher: tuple[list[dict], list[dict]] | None = None,
):
    """An extraction project: train rows as verified labels (or, with `teacher`, the teacher's
    train and test answers as predictions) and the test rows as attested gold v1."""
    from banking77_distill import bench_user

    from annotation.corpus.importing import GOLD_ATTESTED, LABELS_PREDICTIONS, LABELS_VERIFIED
    from annotation.projects import project_create

    user = bench_user()
    project = project_create(
        name=slug,
        slug=slug,
        user=user,
        task_type="extraction",
        labels=[(name, "") for name in fields],
    )
    train_texts, test_texts = [t for t, _ in train_rows], [t for t, _ in test_rows]
    imports = []
    if teacher is None:
        path = write_jsonl(work / f"{slug}-train.jsonl", train_texts, [a for _, a in train_rows])
        imports.append(import_jsonl(project, user, path, label_meaning=LABELS_VERIFIED))
    else:
        taught = {"label_meaning": LABELS_PREDICTIONS, "label_agent": TEACHER_AGENT.partition(":")[2]}
        path = write_jsonl(work / f"{slug}-train.jsonl", train_texts, teacher[0])
        imports.append(import_jsonl(project, user, path, **taught))
        # Before the gold file: an import adds answers only to the examples it creates.
        path = write_jsonl(work / f"{slug}-test-teacher.jsonl", test_texts, teacher[1])
        imports.append(import_jsonl(project, user, path, **taught))
    path = write_jsonl(work / f"{slug}-test.jsonl", test_texts, [a for _, a in test_rows])
    imports.append(import_jsonl(project, user, path, gold=GOLD_ATTESTED))
    return project, imports


def train_and_evaluate(project, *, overrides: dict) -> dict:
    from banking77_distill import RunWatcher

    from training import services as training_services
    from training.models import TrainingRun

    run = training_services.run_create(
        project=project,
        user=None,
        kind=TrainingRun.Kind.FINETUNE,
        hyperparameters=overrides or None,  # None: the launch form's defaults
    )
    if not training_services.run_claim(run.pk):
        raise RuntimeError(f"run {run.pk} could not be claimed")
    log(f"{project.slug}: run {run.number}, {run.hyperparameters}, estimate {run.counts['estimate']}")
    watcher = RunWatcher(run.pk, project.slug)
    watcher.start()
    started = time.monotonic()
    try:
        run = training_services.run_execute(run=run)
    finally:
        watcher.stop.set()
        watcher.join()
    execute_seconds = time.monotonic() - started
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise RuntimeError(f"run {run.number} of {project.slug} ended {run.status}: {run.error}")
    started = time.monotonic()
    evaluation = training_services.evaluate_run(run=run, gold_version=1)
    evaluate_seconds = time.monotonic() - started
    m = evaluation.metrics
    validation = (run.metrics or {}).get("validation") or {}
    part = {
        "strict_f1": round(m["strict"]["micro"]["f1"], 4),
        "partial_f1": round(m["partial"]["micro"]["f1"], 4),
        "strict_precision": round(m["strict"]["micro"]["precision"], 4),
        "strict_recall": round(m["strict"]["micro"]["recall"], 4),
        "strict_macro_f1": round(m["strict"]["macro"]["f1"], 4),
        "per_field_strict_f1": {
            row["field"]: round(row["strict"]["f1"], 4) if row["strict"] else None for row in m["per_field"]
        },
        "exact_match": round(m["exact_match"], 4),
        "train_seconds": round(run.train_seconds, 1),
        "train_examples": run.counts.get("train"),
        "train_steps": run.total_steps,
        "validation_examples": run.counts.get("validation"),
        "validation_strict_f1": round(validation["strict_f1"], 4) if "strict_f1" in validation else None,
        "gold_items": m["examples"],
        "gold_overlap_excluded": m["gold_overlap"]["count"],
        "test_spans": sum(len(row["gold"]["spans"]) for row in evaluation.predictions),
        "run_execute_seconds": round(execute_seconds, 1),
        "predicted_examples": run.counts.get("predicted"),
        "evaluate_seconds": round(evaluate_seconds, 1),
        "confidence_quartiles": confidence_quartiles(project.task, evaluation.predictions),
        "hyperparameters": run.hyperparameters,
        "device": run.device,
        "loadavg_during_training": watcher.loads,
    }
    # Each part's numbers as soon as they exist: a long run stopped later keeps them.
    log(f"{project.slug} result: {json.dumps(part)}")
    return part


def confidence_quartiles(task, rows: list[dict]) -> list[dict]:
    """Share of wholly right texts in each quarter of the gold texts ordered by the student's
    text confidence (low first), from an Evaluation's rows."""
    order = sorted(rows, key=lambda r: r["confidence"] if r["confidence"] is not None else -1.0)
    out = []
    for q in range(4):
        part = order[q * len(order) // 4 : (q + 1) * len(order) // 4]
        if not part:
            continue
        out.append(
            {
                "texts": len(part),
                "confidence_from": round(part[0]["confidence"] or 0.0, 4),
                "confidence_to": round(part[-1]["confidence"] or 0.0, 4),
                "exact_match": round(
                    sum(task.is_right(r["gold"], r["predicted"]) for r in part) / len(part), 4
                ),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--part", choices=["restaurant8k", "wnut17", "teacher", "all"], default="all")
    parser.add_argument("--limit", type=int, default=None, help="seeded sample of N train and N test rows")
    parser.add_argument("--epochs", type=float, default=None, help="override the default epochs (smoke runs)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one default hyperparameter (a screen, e.g. learning_rate=1e-4 or case_feature=true)",
    )
    args = parser.parse_args()
    overrides = {"epochs": args.epochs} if args.epochs is not None else {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value)

    import torch
    from banking77_distill import loadavg, setup_django

    parts = ["restaurant8k", "wnut17", "teacher"] if args.part == "all" else [args.part]
    with tempfile.TemporaryDirectory(prefix="extraction-bench-") as scratch:
        work = Path(scratch)
        setup_django(work / "data")
        from tasks.extraction.task import ExtractionTask
        from training.services import run_defaults

        report: dict = {
            "bench": "extraction",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "path": (
                "the app's services: project_create, import_batch_create/claim/run (train: verified "
                "or teacher predictions; test: attested gold v1), run_create/run_claim/run_execute, "
                "evaluate_run (evaluate_system for the simulated teacher)"
            ),
            "hyperparameters": run_defaults(ExtractionTask([]), "finetune"),
            "hyperparameters_source": "training.services.run_defaults (the launch form's, for extraction)",
            "overrides": overrides,
            "limit": args.limit,
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "loadavg_at_start": loadavg(),
        }
        if "restaurant8k" in parts or "teacher" in parts:
            r8k_train = sample(restaurant8k("train"), args.limit, 1)
            r8k_test = sample(restaurant8k("test"), args.limit, 2)
        if "restaurant8k" in parts:
            project, imports = build_project(
                slug="restaurant8k",
                fields=RESTAURANT_FIELDS,
                train_rows=r8k_train,
                test_rows=r8k_test,
                work=work,
            )
            report["restaurant8k"] = {**train_and_evaluate(project, overrides=overrides), "imports": imports}
        if "wnut17" in parts:
            project, imports = build_project(
                slug="wnut17",
                fields=WNUT_FIELDS,
                train_rows=sample(wnut17("train"), args.limit, 1),
                test_rows=sample(wnut17("test"), args.limit, 2),
                work=work,
            )
            report["wnut17"] = {**train_and_evaluate(project, overrides=overrides), "imports": imports}
        if "teacher" in parts:
            from training.services import evaluate_system

            taught, train_counts = simulate_teacher(r8k_train, RESTAURANT_FIELDS, TEACHER_TRAIN_SEED)
            teacher_test, _ = simulate_teacher(r8k_test, RESTAURANT_FIELDS, TEACHER_TEST_SEED)
            project, imports = build_project(
                slug="simulated-teacher",
                fields=RESTAURANT_FIELDS,
                train_rows=r8k_train,
                test_rows=r8k_test,
                work=work,
                teacher=(taught, teacher_test),
            )
            teacher = evaluate_system(project=project, agent=TEACHER_AGENT, gold_version=1).metrics
            trained = train_and_evaluate(project, overrides=overrides)
            report["simulated_teacher"] = {
                "teacher_strict_f1": round(teacher["strict"]["micro"]["f1"], 4),
                "teacher_partial_f1": round(teacher["partial"]["micro"]["f1"], 4),
                "student_strict_f1": trained["strict_f1"],
                "student_partial_f1": trained["partial_f1"],
                "train_seconds": trained["train_seconds"],
                "train_examples": trained["train_examples"],
                "gold_items": trained["gold_items"],
                "noise": {"miss": MISS, "shift_one_word": SHIFT, "wrong_field": WRONG_FIELD},
                "noise_applied_to_train_spans": train_counts,
                "loadavg_during_training": trained["loadavg_during_training"],
                "imports": imports,
            }
    for name, target in TARGETS.items():
        if name in report:
            report[name]["target_strict_f1"] = target
            report[name]["meets_target"] = (
                report[name]["strict_f1"] >= target and report[name]["train_seconds"] < TARGET_TRAIN_SECONDS
            )
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
