#!/usr/bin/env python
"""Extraction students on Restaurant-8k and WNUT-17 with the launch form's default
hyperparameters, and a student trained on a SIMULATED teacher's spans.

    python bench/extraction_bench.py [--part restaurant8k|wnut17|teacher|all] [--limit N] [--epochs E]

For now this calls the student module (tasks/extraction/student.py) directly: train on the
train split less a seeded validation share (the launch form's ``validation_fraction``),
predict the test split, score with tasks/extraction/measure.py (nervaluate: strict = exact
start, end and field; partial = overlapping spans of the same field). The lead will route it
through the app's services (import, gold set, run_create / run_execute, evaluate_run) once
extraction runs exist there; the numbers should not change, the plumbing will.

Parts:
1. restaurant8k: ../shared/data/restaurant8k train.json -> test.json (5 slots, character
   offsets; ``valueSpan`` leaves out ``startIndex`` when it is 0).
2. wnut17: ../shared/data/wnut17 train.conll -> test.conll (6 entity types, BIO), read with
   the app's CoNLL reader (tokens joined by single spaces).
3. teacher: Restaurant-8k again, the student trained on a SIMULATED teacher's spans of the
   train texts (no LLM is called): of the gold spans, a seeded draw drops 15 %, moves one
   boundary of 10 % by one whitespace word (grow or shrink, start or end, whichever is
   possible) and gives 5 % another field. ``teacher_strict_f1`` is the same simulation on the
   test texts (another seed) against their gold; ``student_strict_f1`` is the student on
   gold. The simulation is uniform noise, not the errors of a real LLM (those depend on
   the text).

Hyperparameters: ``training.models.default_hyperparameters()`` (what the launch form
offers), read after ``django.setup()`` on a throw-away data dir; if Django cannot start,
``ml.Hyperparameters()`` defaults. The JSON says which, and the values used.

Exactly one JSON object goes to stdout; progress goes to stderr. ``--limit N`` (a seeded
sample of N train rows and N test rows per dataset) and ``--epochs`` are for smoke runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = Path(os.environ.get("DISTILL_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
RESTAURANT_FIELDS = ["date", "time", "people", "first_name", "last_name"]
WNUT_FIELDS = ["corporation", "creative-work", "group", "location", "person", "product"]
TARGETS = {"restaurant8k": 0.93, "wnut17": 0.40}
TARGET_TRAIN_SECONDS = 20 * 60
SPLIT_SEED = 7
TEACHER_TRAIN_SEED = 81
TEACHER_TEST_SEED = 82
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


# --- training and measuring ---------------------------------------------------------------------


def default_hyperparameters() -> tuple[dict, str]:
    """The launch form's defaults, or ml.Hyperparameters' if Django cannot start here."""
    try:
        os.environ["DISTILL_DATA_DIR"] = tempfile.mkdtemp(prefix="extraction-bench-")
        os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("REDIS_URL", None)
        import django

        django.setup()
        from training.models import default_hyperparameters as launch_form_defaults

        return dict(launch_form_defaults()), "training.models.default_hyperparameters (launch form)"
    except Exception as exc:  # noqa: BLE001 - any failure means: use the library defaults
        from dataclasses import asdict

        from distillapp import ml

        log(f"launch form defaults not readable ({exc!r}); using ml.Hyperparameters()")
        return {**asdict(ml.Hyperparameters()), "validation_fraction": 0.05}, "distillapp.ml.Hyperparameters"


def confidence_quartiles(gold: list[dict], predicted: list[dict], confidences: list[float]) -> list[dict]:
    """Share of wholly right texts in each quarter of the texts ordered by confidence (low first)."""
    from tasks.extraction.spans import span_key

    order = sorted(range(len(gold)), key=confidences.__getitem__)
    out = []
    for q in range(4):
        part = order[q * len(order) // 4 : (q + 1) * len(order) // 4]
        if not part:
            continue
        right = sum(
            {span_key(s) for s in gold[i]["spans"]} == {span_key(s) for s in predicted[i]["spans"]}
            for i in part
        )
        out.append(
            {
                "texts": len(part),
                "confidence_from": round(confidences[part[0]], 4),
                "confidence_to": round(confidences[part[-1]], 4),
                "exact_match": round(right / len(part), 4),
            }
        )
    return out


def train_and_test(
    name: str,
    train_rows: list[tuple[str, dict]],
    test_rows: list[tuple[str, dict]],
    fields: list[str],
    hp_values: dict,
    work: Path,
) -> dict:
    from distillapp import ml
    from tasks.extraction import student
    from tasks.extraction.measure import extraction_metrics

    hp = ml.Hyperparameters(
        **{k: v for k, v in hp_values.items() if k in ml.Hyperparameters.__dataclass_fields__}
    )
    shuffled = random.Random(SPLIT_SEED).sample(train_rows, len(train_rows))
    held_out = round(len(shuffled) * hp_values.get("validation_fraction", 0.0))
    validation, train = shuffled[:held_out], shuffled[held_out:]
    log(f"{name}: training on {len(train)} texts ({len(validation)} held out for validation), {hp}")
    steps = {"last": 0}

    def on_progress(progress: ml.Progress) -> None:
        if progress.step - steps["last"] >= 50 or progress.step == progress.total_steps:
            steps["last"] = progress.step
            log(f"{name}: step {progress.step}/{progress.total_steps}, loss {progress.loss}")

    result = student.train(
        texts=[t for t, _ in train],
        answers=[a for _, a in train],
        names=fields,
        base_model=ml.default_base_model(),
        output_dir=work / name,
        hyperparameters=hp,
        validation=([t for t, _ in validation], [a for _, a in validation]) if validation else None,
        on_progress=on_progress,
    )
    log(
        f"{name}: trained in {result.seconds:.1f} s on {result.device}; predicting {len(test_rows)} test texts"
    )
    texts, gold = [t for t, _ in test_rows], [a for _, a in test_rows]
    started = time.monotonic()
    predicted, confidences = student.predict(work / name, texts, max_length=hp.max_length)
    predict_seconds = time.monotonic() - started
    metrics = extraction_metrics(gold, predicted, texts=texts, fields=fields)
    part = {
        "strict_f1": round(metrics["strict"]["micro"]["f1"], 4),
        "partial_f1": round(metrics["partial"]["micro"]["f1"], 4),
        "strict_precision": round(metrics["strict"]["micro"]["precision"], 4),
        "strict_recall": round(metrics["strict"]["micro"]["recall"], 4),
        "strict_macro_f1": round(metrics["strict"]["macro"]["f1"], 4),
        "per_field_strict_f1": {
            row["field"]: round(row["strict"]["f1"], 4) if row["strict"] else None
            for row in metrics["per_field"]
        },
        "exact_match": round(metrics["exact_match"], 4),
        "train_seconds": round(result.seconds, 1),
        "train_examples": len(train),
        "train_steps": result.steps,
        "validation_examples": len(validation),
        "validation_strict_f1": round(result.validation.get("strict_f1", float("nan")), 4)
        if result.validation
        else None,
        "test_examples": len(test_rows),
        "test_spans": sum(len(a["spans"]) for a in gold),
        "predict_seconds": round(predict_seconds, 1),
        "predict_texts_per_second": round(len(texts) / predict_seconds, 1) if predict_seconds else None,
        "confidence_quartiles": confidence_quartiles(gold, predicted, confidences),
        "device": result.device,
    }
    # Each part's numbers as soon as they exist: a long run stopped later keeps them.
    log(f"{name} result: {json.dumps(part)}")
    return part


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["restaurant8k", "wnut17", "teacher", "all"], default="all")
    parser.add_argument("--limit", type=int, default=None, help="seeded sample of N train and N test rows")
    parser.add_argument("--epochs", type=float, default=None, help="override the default epochs (smoke runs)")
    args = parser.parse_args()

    hp_values, hp_source = default_hyperparameters()
    if args.epochs is not None:
        hp_values["epochs"] = args.epochs

    import torch

    report: dict = {
        "bench": "extraction",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "path": "tasks.extraction.student called directly (not yet through the app's services)",
        "hyperparameters": hp_values,
        "hyperparameters_source": hp_source,
        "limit": args.limit,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    parts = ["restaurant8k", "wnut17", "teacher"] if args.part == "all" else [args.part]
    with tempfile.TemporaryDirectory(prefix="extraction-bench-") as scratch:
        work = Path(scratch)
        if "restaurant8k" in parts or "teacher" in parts:
            r8k_train = sample(restaurant8k("train"), args.limit, 1)
            r8k_test = sample(restaurant8k("test"), args.limit, 2)
        if "restaurant8k" in parts:
            report["restaurant8k"] = train_and_test(
                "restaurant8k", r8k_train, r8k_test, RESTAURANT_FIELDS, hp_values, work
            )
        if "wnut17" in parts:
            report["wnut17"] = train_and_test(
                "wnut17",
                sample(wnut17("train"), args.limit, 1),
                sample(wnut17("test"), args.limit, 2),
                WNUT_FIELDS,
                hp_values,
                work,
            )
        if "teacher" in parts:
            from tasks.extraction.measure import extraction_metrics

            taught, train_counts = simulate_teacher(r8k_train, RESTAURANT_FIELDS, TEACHER_TRAIN_SEED)
            teacher_test, _ = simulate_teacher(r8k_test, RESTAURANT_FIELDS, TEACHER_TEST_SEED)
            texts = [t for t, _ in r8k_test]
            teacher = extraction_metrics(
                [a for _, a in r8k_test], teacher_test, texts=texts, fields=RESTAURANT_FIELDS
            )
            trained = train_and_test(
                "simulated_teacher",
                [(t, a) for (t, _), a in zip(r8k_train, taught, strict=True)],
                r8k_test,
                RESTAURANT_FIELDS,
                hp_values,
                work,
            )
            report["simulated_teacher"] = {
                "teacher_strict_f1": round(teacher["strict"]["micro"]["f1"], 4),
                "teacher_partial_f1": round(teacher["partial"]["micro"]["f1"], 4),
                "student_strict_f1": trained["strict_f1"],
                "student_partial_f1": trained["partial_f1"],
                "train_seconds": trained["train_seconds"],
                "train_examples": trained["train_examples"],
                "noise": {"miss": MISS, "shift_one_word": SHIFT, "wrong_field": WRONG_FIELD},
                "noise_applied_to_train_spans": train_counts,
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
