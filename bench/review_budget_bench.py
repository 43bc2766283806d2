#!/usr/bin/env python
"""Where review pays (issue #13): gold accuracy of the student against the share of the pool
reviewed, per review order, measured through the app's services on Banking77.

    python bench/review_budget_bench.py [--task classification|extraction] [--limit N] [--budgets 0,2.5,5,10,20]
        [--orders random,confidence,errors,disagreement,default]
        [--teachers simulated,embedding,weak] [--no-finetune] [--plot PATH] [--save PATH]
        [--noise-variants prune,none] [--refresh-every N] [--gold-limit N] [--torch-threads T]
        [--ceiling-from SAVED.json] [--finetune-budgets 0,10]

``--task extraction``: Restaurant-8k with the simulated span teacher instead, the reviewer
correcting with the true spans, strict F1 on gold, and the error kinds the first 10 % of the
queue holds (bench/review_budget_spans.py). The rest of this text is about Banking77.

Everything runs in this process on a throw-away SQLite database (DISTILL_DATA_DIR is a temp
dir, DATABASE_URL and REDIS_URL removed, then ``migrate``), as bench/banking77_distill.py
does. The pool is Banking77's train split (10,003 rows, 9,999 distinct texts; ``--limit N``:
a seeded sample of N rows for smoke runs); gold is its test split (3,080 rows, 3,079
distinct texts), imported as an attested gold file, so every project's gold v1 is frozen
and holds the REAL test labels. The 7 test texts that are also train texts become gold and
leave the pool (the app never trains on gold).

One project per teacher and order, built through the app:

- ``annotation.projects.project_create`` with the 77 labels (description = the name in
  words), a reviewer member (``membership_set``);
- ``annotation.corpus.import_batch_create`` / ``import_batch_claim`` / ``import_batch_run``
  of the pool texts (no labels), then of the test split with ``gold="attested"``;
- the teacher's answers:
  * ``simulated``: bench/simulated_teacher.py (a SIMULATION: exactly 81.6 % right, each
    error the nearest other label by name) on the pool, as proposals by the agent
    ``import:simulated-teacher`` (bulk-created, then ``sync_queue_fields()``, as the
    importer would if files carried confidences). Its confidence is SIMULATED too: the
    app's zero-shot embedding teacher's probability of the simulated label for the text
    (as bench/label_quality_bench.py does), so confident answers are more often right;
  * ``embedding``: the app's own offline teacher (tasks/classification/offline.py, its
    memory chosen by annotation/teacher/memory.py): a reviewer labels 5 pool examples per label (``review_record``, the seeds: 385 reviews
    that every budget below comes on top of), the prompt lets the 10 most similar
    reviewed examples vote (``prompt_version_update(few_shot="similar", few_shot_k=10)``)
    and a labelling job (``labeling_job_create(selection="unlabelled")``, claim, run)
    labels the rest of the pool; its errors depend on the text;
  * ``weak``: the simulated teacher at 45 %.
- the queue's keys at the start: a label-quality run (``review.quality_run_start``; the
  "errors" order and the "prune" noise handling read its scores), and the budget-0 quick
  student, whose proposals are the student key of the "disagreement" order.

Orders: ``random``, ``confidence`` (lowest teacher confidence first), ``errors`` (label-error
score of the first quality run, lowest first), ``disagreement`` (teacher vs the budget-0
student first) — these four with ``refresh_every = 0``, so their keys stay as they were at
the start — and ``default``: the project as the app creates it (``Project.review_order``,
``refresh_every`` verdicts a round; after each round the app's ``refresh_due`` signal calls
``training.services.round_refresh``'s ``RoundRefresh`` job, which starts a quick run and a quality run). All
orders keep the app's random audit share (``Project.audit_share``: every 10th card is drawn
at random and marked ``Review.is_audit``). There is no rq worker here: the bench replaces
``distillapp.jobs.enqueue`` with a list and
works that list off after every verdict, as an idle worker would at once (``run_claim`` + ``run_execute`` for a run, ``jobs.claim`` +
``review.quality_run`` for a quality run).

The simulated reviewer takes the next card (``review.review_next``) and answers with the
truth (``review.review_record``: ``accept`` if the teacher's label is the true one, else
``correct`` with the true label). At each budget (a share of the pool's examples, in
verdicts on top of any seeds) a quick student is trained on what the app recommends
(``training.services.label_source_advice``: label source, teacher confidence floor, noise
handling) with ``run_create(kind="quick")``, ``run_claim``, ``run_execute`` and scored with
``evaluate_run`` on gold v1. A measuring run's proposals are removed afterwards (and the
queue keys synced again) where the order reads the student key (``disagreement``), so
measuring does not refresh a static order. With fine-tunes on (no ``--no-finetune``), the
``default`` order also gets a fine-tune at 0 % and 10 %. The human-label ceiling is a
project whose pool is imported with the true labels as verified labels: a quick student and
(with fine-tunes) a fine-tune on all of them. ``weak``: the default order up to 10 %, then
the recommended quick student and one on the reviewed labels alone (in that order: a
reviewed-only student evaluated on gold changes the advice).

``quick_round_seconds``: one review round on the simulated teacher's default-order project
(the largest pool here: 10,000 examples at full size): ``refresh_queue`` plus working off
the quick run it starts (retrain on the cached embeddings, predict the pool, sync the queue
keys) and the quality run (label-error scores), one after the other as one worker would.
The bench keeps ``distillapp.ml.embed_texts`` results in memory (the same text and
length always give the same vector) so the grid does not embed the pool again for every
quality run; that memo is OFF while the round is timed, so the time is the app's own.

``--noise-variants prune,none`` also trains each quick cell on the recommended labels with
those noise handlings instead of the recommended one (cells marked ``variant``; a diagnosis of
the recommendation, left out of the order comparison and the plot).

Exactly one JSON object goes to stdout; progress goes to stderr. ``--save PATH`` also writes
it to PATH and appends each cell as it is measured to PATH.cells.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from banking77_distill import cpu_model  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data" / "banking77"
ORDERS = ("random", "confidence", "errors", "disagreement", "default")
TEACHERS = ("simulated", "embedding", "weak")
BUDGETS = (0.0, 2.5, 5.0, 10.0, 20.0)
FINETUNE_BUDGETS = (0.0, 10.0)
WEAK_BUDGET = 10.0
WEAK_ACCURACY = 0.45
SIMULATED_SEED = 77
SEEDS_PER_LABEL = 5
SEED_PICK = 13
OFFLINE_K = 10  # tasks/classification/offline.py: 10 neighbours measured best at 5-20 per label
TARGET_GAP_POINTS = 1.0
TARGET_GAP_POINTS_SPANS = 1.5  # strict F1 points, issue #26
TARGET_MISSED_TIMES_RANDOM = 3.0  # the first 10 % of the default queue, issue #26
TARGET_ROUND_SECONDS = 60.0
SIMULATED_AGENT_NAME = "simulated-teacher"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def git_state() -> dict:
    """The commit the app's code came from, and its files changed since (others work here too)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if line[3:].startswith(("annotation/", "training/", "tasks/", "distillapp/"))
    ]
    return {"commit": git("rev-parse", "--short", "HEAD"), "app_files_changed": changed}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in fields})
    return path


def label_words(name: str) -> str:
    return name.replace("_", " ")


# --- Django and the worker-less queue -----------------------------------------------------------


def setup_django(data_dir: Path) -> None:
    os.environ["DISTILL_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    os.environ.pop("DATABASE_URL", None)  # the embedded SQLite file in the data dir
    os.environ.pop("REDIS_URL", None)  # nothing reaches Redis: see JobList
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


class JobList:
    """Stands in for rq: ``distillapp.jobs.enqueue`` appends here and ``work()`` runs the jobs
    in order, in this process, the way the app's job functions do (claim, then run)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, int]] = []
        self.done: list[dict] = []

    def install(self) -> None:
        from distillapp import jobs as job_rows

        def enqueue(model, pk, queue_name=None, func_path=None, *, note="", on_failed=None):
            self.pending.append((model._meta.label, int(pk)))

        job_rows.enqueue = enqueue

    def work(self) -> list[dict]:
        from annotation import review
        from annotation.models import QualityRun
        from distillapp import jobs as job_rows
        from training import services
        from training.models import TrainingRun

        finished = []
        while self.pending:
            label, pk = self.pending.pop(0)
            started = time.monotonic()
            if label == "training.RoundRefresh":
                from training.jobs import run_round_refresh

                run_round_refresh(pk)  # starts the round's quick run and quality run: next in the list
                entry = {"job": "refresh"}
            elif label == "training.TrainingRun":
                if not services.run_claim(pk):
                    raise RuntimeError(f"run {pk} could not be claimed")
                run = services.run_execute(run=TrainingRun.objects.get(pk=pk))
                if run.status != TrainingRun.Status.SUCCEEDED:
                    raise RuntimeError(f"run {run.number} ended {run.status}: {run.error}")
                entry = {"job": "quick_run" if run.kind == "quick" else f"{run.kind}_run", "run": run.number}
            elif label == "annotation.QualityRun":
                if not job_rows.claim(QualityRun, pk):
                    raise RuntimeError(f"quality run {pk} could not be claimed")
                quality = review.quality_run(run=QualityRun.objects.get(pk=pk))
                if quality.status != QualityRun.Status.SUCCEEDED:
                    raise RuntimeError(f"quality run {pk} ended {quality.status}: {quality.error}")
                entry = {"job": "quality_run", "examples": quality.examples}
            elif label == "annotation.SimilarityIndex":
                # "More like this" after an import: no order here reads it.
                entry = {"job": "similarity_index", "skipped": True}
            else:
                raise RuntimeError(f"no worker here for {label}")
            entry["seconds"] = round(time.monotonic() - started, 2)
            finished.append(entry)
        self.done += finished
        return finished


class EmbedMemo:
    """``distillapp.ml.embed_texts`` with each (model, max_length, text) computed once in this
    process: same vectors, less waiting. ``enabled = False`` passes every call through."""

    def __init__(self) -> None:
        from distillapp import ml

        self.ml = ml
        self.original = ml.embed_texts
        self.store: dict[tuple, dict] = defaultdict(dict)
        self.enabled = True
        self.computed = 0

    def install(self) -> None:
        self.ml.embed_texts = self

    def __call__(self, texts, *, model_name=None, batch_size=64, max_length=128):
        import numpy as np

        texts = list(texts)
        if not self.enabled or not texts:
            return self.original(texts, model_name=model_name, batch_size=batch_size, max_length=max_length)
        store = self.store[(model_name or self.ml.default_base_model(), max_length)]
        missing = list(dict.fromkeys(t for t in texts if t not in store))
        if missing:
            vectors = self.original(
                missing, model_name=model_name, batch_size=batch_size, max_length=max_length
            )
            store.update(zip(missing, vectors, strict=True))
            self.computed += len(missing)
        return np.stack([store[t] for t in texts])


class RunWatcher(threading.Thread):
    """Logs a long run's progress from its row once a minute (fine-tunes)."""

    def __init__(self, run_id: int, name: str, every: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.run_id, self.run_name, self.every = run_id, name, every
        self.stop = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from training.models import TrainingRun

        try:
            while not self.stop.wait(self.every):
                row = (
                    TrainingRun.objects.filter(pk=self.run_id).values("phase", "step", "total_steps").first()
                )
                if row:
                    log(
                        f"    {self.run_name}: {row['phase'] or '...'} {row['step']}/{row['total_steps']} load {loadavg()}"
                    )
        finally:
            connection.close()


# --- the data -----------------------------------------------------------------------------------


class Data:
    """The pool (train) and gold (test) rows, each text once (first occurrence, as the import)."""

    def __init__(self, *, limit: int | None, gold_limit: int | None, work: Path) -> None:
        from annotation.models import content_hash

        self.categories = json.loads((DATA / "categories.json").read_text())
        train, test = read_csv(DATA / "train.csv"), read_csv(DATA / "test.csv")
        if limit:
            train = [
                train[i] for i in sorted(random.Random(13).sample(range(len(train)), min(limit, len(train))))
            ]
        if gold_limit:
            test = [
                test[i]
                for i in sorted(random.Random(14).sample(range(len(test)), min(gold_limit, len(test))))
            ]
        self.truth: dict[str, str] = {}  # content hash -> true label, pool and gold
        for row in train + test:
            self.truth.setdefault(content_hash(row["text"]), row["category"])
        self.pool_rows, self.gold_rows = train, test
        self.pool_csv = write_csv(work / "pool.csv", train, ["text"])
        self.pool_human_csv = write_csv(work / "pool_human.csv", train, ["text", "category"])
        self.gold_csv = write_csv(work / "gold.csv", test, ["text", "category"])
        self._zero_shot: dict[str, dict[str, float]] | None = None
        self._nearest: dict[str, str] | None = None

    score_key = "accuracy"

    def verdict(self, example) -> tuple[str, dict, bool]:
        """(verdict, review_record's answer arguments, was the teacher wrong): the truth."""
        truth = self.truth[example.content_hash]
        if example.teacher_label == truth:
            return "accept", {}, False
        return "correct", {"label": truth}, True

    @property
    def nearest(self) -> dict[str, str]:
        from simulated_teacher import nearest_other_labels

        if self._nearest is None:
            self._nearest = nearest_other_labels(self.categories)
        return self._nearest

    def zero_shot_scores(self, texts: list[str]) -> dict[str, dict[str, float]]:
        """The app's zero-shot embedding teacher's probability of every label, per text."""
        from tasks.classification.offline import EmbeddingTeacher

        if self._zero_shot is None:
            self._zero_shot = {}
        missing = [t for t in dict.fromkeys(texts) if t not in self._zero_shot]
        if missing:
            teacher = EmbeddingTeacher([(name, label_words(name)) for name in self.categories])
            for text, prediction in zip(missing, teacher.predict(missing), strict=True):
                self._zero_shot[text] = prediction.scores
        return self._zero_shot


# --- building a project -------------------------------------------------------------------------


def users():
    from django.contrib.auth import get_user_model

    model = get_user_model()
    lead, _ = model.objects.get_or_create(username="bench-lead", defaults={"is_staff": True})
    reviewer, _ = model.objects.get_or_create(username="bench-reviewer")
    return lead, reviewer


def import_file(project, user, path: Path, **options) -> dict:
    from annotation import corpus
    from annotation.models import ImportBatch

    batch = corpus.import_batch_create(project=project, user=user, file_name=path.name, path=path, **options)
    if not corpus.import_batch_claim(batch.pk):
        raise RuntimeError(f"import batch {batch.pk} could not be claimed")
    batch = corpus.import_batch_run(batch=batch)
    if batch.status != ImportBatch.Status.SUCCEEDED:
        raise RuntimeError(f"import of {path.name} failed: {batch.error} {batch.error_report[:5]}")
    return {"file": path.name, "rows_read": batch.rows_read, "rows_created": batch.rows_created}


def new_project(data: Data, slug: str, *, human_labels: bool = False):
    """Project, labels, reviewer, the pool imported (with verified true labels for the ceiling)
    and the test split as attested gold v1."""
    from annotation import projects

    if hasattr(data, "new_project"):  # extraction: bench/review_budget_spans.py
        return data.new_project(slug, human_labels=human_labels)

    lead, reviewer = users()
    project = projects.project_create(
        name=slug, slug=slug, user=lead, labels=[(c, label_words(c)) for c in data.categories]
    )
    projects.membership_set(project=project, username=reviewer.username, role="reviewer")
    if human_labels:
        import_file(project, lead, data.pool_human_csv, label_column="category", label_meaning="verified")
    else:
        import_file(project, lead, data.pool_csv)
    import_file(project, lead, data.gold_csv, label_column="category", gold="attested")
    return project


def pool_examples(project) -> list[tuple[int, str, str]]:
    from annotation.models import Example

    return list(
        Example.objects.for_project(project)
        .not_gold()
        .order_by("pk")
        .values_list("pk", "text", "content_hash")
    )


def add_simulated_teacher(project, data: Data, *, accuracy: float) -> dict:
    """Proposals of the SIMULATED teacher on every pool example, with simulated confidences."""
    from simulated_teacher import simulate_teacher_labels

    from annotation.models import IMPORT_AGENT, Example, Proposal

    pool = pool_examples(project)
    truth = [data.truth[digest] for _, _, digest in pool]
    labels = simulate_teacher_labels(
        truth, label_names=data.categories, accuracy=accuracy, seed=SIMULATED_SEED, nearest=data.nearest
    )
    scores = data.zero_shot_scores([text for _, text, _ in pool])
    Proposal.objects.bulk_create(
        [
            Proposal(
                example_id=pk,
                agent=f"{IMPORT_AGENT}:{SIMULATED_AGENT_NAME}",
                value=label,
                confidence=min(1.0, max(0.0, scores[text][label])),
                confidence_method="softmax",
            )
            for (pk, text, _), label in zip(pool, labels, strict=True)
        ],
        batch_size=2000,
    )
    Example.objects.filter(project=project).sync_queue_fields()
    right = sum(a == b for a, b in zip(labels, truth, strict=True))
    return {"teacher_accuracy_on_pool": round(right / len(pool), 4), "pool": len(pool)}


def add_embedding_teacher(project, data: Data) -> dict:
    """The app's offline teacher after a reviewer labelled SEEDS_PER_LABEL examples per label."""
    from django.utils import timezone

    from annotation import review, teacher
    from annotation.models import Example, LabelingJob, ReviewClaim

    lead, reviewer = users()
    pool = pool_examples(project)
    by_label: dict[str, list[int]] = defaultdict(list)
    for pk, _, digest in pool:
        by_label[data.truth[digest]].append(pk)
    rng = random.Random(SEED_PICK)
    seeds = [
        pk
        for label in sorted(by_label)
        for pk in rng.sample(by_label[label], min(SEEDS_PER_LABEL, len(by_label[label])))
    ]
    truth_by_pk = {pk: data.truth[digest] for pk, _, digest in pool}
    for example in Example.objects.filter(pk__in=seeds).order_by("pk"):
        # A verdict needs the card served to its reviewer (the queue's claim): serve the seed.
        now = timezone.now()
        ReviewClaim.objects.create(example=example, user=reviewer, claimed_at=now, expires_at=now)
        review.review_record(example=example, user=reviewer, verdict="correct", label=truth_by_pk[example.pk])
    current = teacher.prompt_version_current(project, user=lead)
    teacher.prompt_version_update(
        project=project,
        user=lead,
        instructions=current.instructions,
        few_shot="similar",
        few_shot_k=OFFLINE_K,
        few_shot_per_label=current.few_shot_per_label,
        fixed_examples=[],
    )
    config = teacher.teacher_config_for(project)
    assert config.provider == "embedding", config.provider
    started = time.monotonic()
    job = teacher.labeling_job_create(project=project, user=lead, selection="unlabelled")
    if not teacher.labeling_job_claim(job.pk):
        raise RuntimeError("labelling job could not be claimed")
    job = teacher.labeling_job_run(job=job)
    if job.status != LabelingJob.Status.SUCCEEDED:
        raise RuntimeError(f"labelling job ended {job.status}: {job.error}")
    labelled = dict(
        Example.objects.filter(project=project, is_gold=False, review_state="unreviewed").values_list(
            "pk", "teacher_label"
        )
    )
    right = sum(truth_by_pk[pk] == label for pk, label in labelled.items())
    return {
        "teacher_accuracy_on_pool": round(right / len(labelled), 4),
        "seed_reviews": len(seeds),
        "pool": len(pool),
        "labelled_by_teacher": len(labelled),
        "labelling_seconds": round(time.monotonic() - started, 1),
    }


# --- training a cell ----------------------------------------------------------------------------


# The gold metric a cell reports: "accuracy" (classification) or "strict_f1" (extraction), both
# the evaluation's headline ``metrics["score"]``.
SCORE = "accuracy"


def train_cell(project, *, kind: str, advice: dict | None, label_source: str | None = None) -> dict:
    """A run of `kind` on the recommended labels (or `label_source`), evaluated on gold v1."""
    from training import services
    from training.models import TrainingRun

    hyperparameters = {}
    if advice is not None:
        source, floor, noise = (
            advice["label_source"],
            advice["teacher_min_confidence"],
            advice["noise_handling"],
        )
        if kind == TrainingRun.Kind.FINETUNE and "label_smoothing" in advice:
            hyperparameters["label_smoothing"] = advice["label_smoothing"]  # as the launch form's initial
    else:
        source, floor, noise = label_source, 0.0, "none"
    started = time.monotonic()
    run = services.run_create(
        project=project,
        user=None,
        kind=kind,
        label_source=source,
        teacher_min_confidence=floor,
        hyperparameters={"noise_handling": noise, **hyperparameters},
    )
    if not services.run_claim(run.pk):
        raise RuntimeError(f"run {run.pk} could not be claimed")
    watcher = None
    if kind == TrainingRun.Kind.FINETUNE:
        estimate = run.counts["estimate"]
        log(f"    fine-tune run {run.number}: {estimate['examples']} examples, {estimate['about']}")
        watcher = RunWatcher(run.pk, f"{project.slug} run {run.number}")
        watcher.start()
    try:
        run = services.run_execute(run=run)
    finally:
        if watcher is not None:
            watcher.stop.set()
            watcher.join()
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise RuntimeError(f"run {run.number} ended {run.status}: {run.error}")
    evaluation = services.evaluate_run(run=run, gold_version=1)
    noise_report = (run.counts or {}).get("noise") or {}
    return {
        "run": run,
        SCORE: round(evaluation.metrics["score"], 4),
        "label_source": source,
        "teacher_min_confidence": floor,
        "noise_handling": noise,
        "label_smoothing": run.hyperparameters.get("label_smoothing"),
        "train_examples": run.counts.get("train"),
        "reviewed_in_train": run.counts.get("reviewed"),
        "pruned": noise_report.get("pruned"),
        "train_seconds": round(run.train_seconds or 0.0, 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def forget_run_proposals(project, run) -> None:
    """Take a measuring run's proposals off the queue, so a static order keeps its keys."""
    from annotation.models import Example, Proposal

    Proposal.objects.filter(example__project=project, agent=run.agent).delete()
    Example.objects.filter(project=project).sync_queue_fields()


# --- one order, all budgets ---------------------------------------------------------------------


class Recorder:
    def __init__(self, save: Path | None) -> None:
        self.path = Path(f"{save}.cells.jsonl") if save else None

    def cell(self, row: dict) -> None:
        log(f"  cell {json.dumps(row)}")
        if self.path:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def run_order(
    project,
    data: Data,
    jobs: JobList,
    recorder: Recorder,
    *,
    teacher: str,
    order: str,
    budgets: list[float],
    finetune_budgets: list[float],
    refresh_every: int | None,
    noise_variants: list[str] = (),
) -> dict:
    """Review `project` in `order` up to each budget, training the cells on the way."""
    from annotation import review
    from annotation.models import Example, Project, QualityRun, Review
    from annotation.review.rounds import round_status
    from training import services

    _, reviewer = users()
    defaults = {
        f.name: f.default for f in Project._meta.fields if f.name in ("refresh_every", "review_order")
    }
    if order == "default":
        project.refresh_every = defaults["refresh_every"] if refresh_every is None else refresh_every
        strategy = project.review_order if project.review_order in review.STRATEGIES else "confidence"
    else:
        project.refresh_every = 0
        strategy = order
    project.save(update_fields=["refresh_every"])
    pool = len(pool_examples(project))
    restore_student_key = strategy == "disagreement"

    # The keys at the start: label-quality scores, then the budget-0 student.
    started = time.monotonic()
    review.quality_run_start(project=project, user=None)
    jobs.work()
    setup_seconds = round(time.monotonic() - started, 1)

    cells, rounds = [], []
    queue_first = None
    verdicts = corrections = audits = 0
    review_seconds = 0.0
    last_status = None
    targets = sorted(set(budgets) | set(finetune_budgets))
    if restore_student_key and 0.0 not in targets:
        train_cell(project, kind="quick", advice=services.label_source_advice(project))  # the student key
    for budget in targets:
        goal = round(budget / 100 * pool)
        review_started = time.monotonic()
        while verdicts < goal:
            example = review.review_next(
                project=project, user=reviewer, filters=review.QueueFilter(strategy=strategy)
            )
            if example is None:
                log(f"  the queue ran dry at {verdicts} verdicts")
                break
            verdict, answer, teacher_wrong = data.verdict(example)
            made = review.review_record(example=example, user=reviewer, verdict=verdict, **answer)
            corrections += teacher_wrong
            audits += made.is_audit
            verdicts += 1
            if jobs.pending:
                review_seconds += time.monotonic() - review_started
                for entry in jobs.work():
                    rounds.append({"at_verdicts": verdicts, **entry})
                review_started = time.monotonic()
        review_seconds += time.monotonic() - review_started
        last_status = round_status(project)
        advice = services.label_source_advice(project)
        estimate = advice["audit"]["estimate"]
        common = {
            "teacher": teacher,
            "budget": budget,
            "order": order,
            "verdicts": verdicts,
            "teacher_errors_found": corrections,
            "errors_per_100_reviews": round(100 * corrections / verdicts, 1) if verdicts else None,
            "audit_verdicts": audits,
            "audit_estimate": round(estimate["accuracy"], 4) if estimate else None,
            # The orders the cards were served in ("auto" serves "confidence" or "kept").
            "served_as": dict(
                Counter(
                    Review.objects.filter(example__project=project, kind=Review.Kind.REVIEW).values_list(
                        "queue_order", flat=True
                    )
                )
            ),
            "flag_coverage": [
                None if c is None else round(c, 3)
                for c in QualityRun.objects.filter(project=project)
                .order_by("pk")
                .values_list("flag_coverage", flat=True)
            ],
        }
        kinds = (["quick"] if budget in budgets else []) + (
            ["finetune"] if budget in finetune_budgets else []
        )
        for kind in kinds:
            log(
                f"  {teacher}/{order} at {budget} % ({verdicts} verdicts): {kind} on {advice['label_source']} "
                f"(noise {advice['noise_handling']}, floor {advice['teacher_min_confidence']}), load {loadavg()}"
            )
            variants = [None]
            if kind == "quick":
                variants += [v for v in noise_variants if v != advice["noise_handling"]]
            for variant in variants:
                # A variant: the same recommended labels with another noise handling (a diagnosis
                # of the recommendation; not part of the order comparison).
                result = train_cell(
                    project,
                    kind=kind,
                    advice=advice if variant is None else {**advice, "noise_handling": variant},
                )
                run = result.pop("run")
                if restore_student_key and kind == "quick" and budget > 0:
                    forget_run_proposals(project, run)
                cell = {**common, "student": kind, **result}
                if variant is not None:
                    cell["variant"] = f"noise={variant}"
                cells.append(cell)
                recorder.cell(cell)
        if budget == 0 and order == "default" and hasattr(data, "queue_errors"):
            # The queue the reviewers start from, with the budget-0 student's key in place.
            queue_first = data.queue_errors(
                project,
                {
                    "default": review.resolved_strategy(project, strategy),
                    "random": "random",
                    "errors": "errors",
                    "confidence": "confidence",
                },
            )
            log(f"  first 10 % of the queue: {json.dumps(queue_first)}")
    unreviewed = Example.objects.filter(project=project, is_gold=False, review_state="unreviewed")
    return {
        "cells": cells,
        "summary": {
            "strategy": strategy,
            "refresh_every": project.refresh_every,
            "pool": pool,
            "verdicts": verdicts,
            "teacher_errors_found": corrections,
            "audit_verdicts": audits,
            "review_seconds": round(review_seconds, 1),
            "ms_per_verdict": round(1000 * review_seconds / verdicts, 1) if verdicts else None,
            "setup_seconds": setup_seconds,
            "rounds": rounds,
            "round_status": last_status,
            "unreviewed_left": unreviewed.count(),
            **({"queue_first_10pct": queue_first} if queue_first is not None else {}),
        },
    }


# --- the parts ----------------------------------------------------------------------------------


def build_teacher_project(data: Data, teacher: str, slug: str):
    project = new_project(data, slug)
    if hasattr(data, "add_teacher"):  # extraction: the simulated teacher came with the import
        return project, data.add_teacher(project, teacher)
    if teacher == "embedding":
        project.refresh_every = 0  # no rounds while the seeds are labelled; run_order sets it
        project.save(update_fields=["refresh_every"])
        info = add_embedding_teacher(project, data)
    else:
        info = add_simulated_teacher(project, data, accuracy=WEAK_ACCURACY if teacher == "weak" else 0.816)
    return project, info


def part_ceiling(data: Data, *, finetune: bool, recorder: Recorder) -> dict:
    log("ceiling: the pool with its human labels (verified import)")
    project = new_project(data, "ceiling-human", human_labels=True)
    out = {}
    for kind in ["quick"] + (["finetune"] if finetune else []):
        result = train_cell(project, kind=kind, advice=None, label_source="all")
        result.pop("run")
        out[kind] = result
        recorder.cell({"teacher": "human", "student": kind, **result})
    return out


def part_teacher(
    data: Data, teacher: str, args, jobs: JobList, recorder: Recorder, ceiling: dict
) -> tuple[dict, object]:
    orders = args.orders
    summaries, cells, info = {}, [], None
    default_project = None
    for order in orders:
        log(f"{teacher} teacher, order {order}: building the project")
        project, info = build_teacher_project(data, teacher, f"{teacher}-{order}")
        log(f"  teacher: {info}")
        finetune_budgets = (
            list(args.finetune_budgets) if (order == "default" and not args.no_finetune) else []
        )
        result = run_order(
            project,
            data,
            jobs,
            recorder,
            teacher=teacher,
            order=order,
            budgets=args.budgets,
            finetune_budgets=finetune_budgets,
            refresh_every=args.refresh_every,
            noise_variants=args.noise_variants,
        )
        cells += result["cells"]
        summaries[order] = result["summary"]
        if order == "default":
            default_project = project
    accuracy = {(c["order"], c["budget"], c["student"]): c[SCORE] for c in cells if "variant" not in c}
    comparisons = []
    for budget in args.budgets:
        d, r = accuracy.get(("default", budget, "quick")), accuracy.get(("random", budget, "quick"))
        if d is not None and r is not None:
            comparisons.append(
                {"budget": budget, "default": d, "random": r, "points": round(100 * (d - r), 2)}
            )
    judged = [c for c in comparisons if c["budget"] > 0]
    at10_finetune = accuracy.get(("default", 10.0, "finetune"))
    at10_quick = accuracy.get(("default", 10.0, "quick"))
    ceiling_finetune = (ceiling.get("finetune") or {}).get(SCORE)
    ceiling_quick = (ceiling.get("quick") or {}).get(SCORE)
    return {
        "teacher": info,
        "ceiling_finetune": ceiling_finetune,
        "ceiling_quick": ceiling_quick,
        "gap_at_10pct_points": (
            round(100 * (ceiling_finetune - at10_finetune), 2)
            if ceiling_finetune is not None and at10_finetune is not None
            else None
        ),
        "gap_at_10pct_points_quick": (
            round(100 * (ceiling_quick - at10_quick), 2)
            if ceiling_quick is not None and at10_quick is not None
            else None
        ),
        # Budget 0 is left out: nothing is reviewed there, so every order trains the same student.
        "default_beats_random_everywhere": all(c["default"] > c["random"] for c in judged)
        if judged
        else None,
        "default_vs_random": comparisons,
        "cells": cells,
        "orders": summaries,
    }, default_project


def part_weak(data: Data, args, jobs: JobList, recorder: Recorder) -> dict:
    from training import services

    log("weak teacher (simulated at 45 %), default order to 10 %")
    project, info = build_teacher_project(data, "weak", "weak-default")
    # Review up to the budget and train on the recommendation there; then on reviewed labels
    # only (second: a reviewed-only student evaluated on gold changes the advice).
    result = run_order(
        project,
        data,
        jobs,
        recorder,
        teacher="weak",
        order="default",
        budgets=[WEAK_BUDGET],
        finetune_budgets=[],
        refresh_every=args.refresh_every,
    )
    recommended = result["cells"][0]
    advice = services.label_source_advice(project)  # what the launch form says after that run
    reviewed_only = train_cell(project, kind="quick", advice=None, label_source="reviewed")
    reviewed_only.pop("run")
    recorder.cell(
        {
            "teacher": "weak",
            "budget": WEAK_BUDGET,
            "order": "default",
            "student": "quick",
            "label_source_forced": "reviewed",
            **reviewed_only,
        }
    )
    return {
        "teacher": info,
        "budget": WEAK_BUDGET,
        "recommended_accuracy": recommended["accuracy"],
        "reviewed_only_accuracy": reviewed_only["accuracy"],
        "recommended_source": recommended["label_source"],
        "recommended_teacher_min_confidence": recommended["teacher_min_confidence"],
        "recommended_noise_handling": recommended["noise_handling"],
        "recommended_train_examples": recommended["train_examples"],
        "reviewed_only_train_examples": reviewed_only["train_examples"],
        "recommended_at_least_reviewed_only": recommended["accuracy"] >= reviewed_only["accuracy"],
        "audit_estimate": recommended["audit_estimate"],
        "advice_warning": advice.get("warning"),
        "advice_reason": advice.get("reason"),
        "review": result["summary"],
    }


def measure_round(project, jobs: JobList, memo: EmbedMemo) -> dict:
    """One review round as the app runs it: refresh_queue, then its quick run and quality run."""
    from annotation.models import Example
    from training.services.round_refresh import refresh_queue

    examples = Example.objects.for_project(project).not_gold().count()
    memo.enabled = False
    try:
        started = time.monotonic()
        run, outcome = refresh_queue(project=project)
        if run is None:
            raise RuntimeError(f"refresh_queue started nothing: {outcome}")
        call_seconds = time.monotonic() - started
        entries = jobs.work()
        total = time.monotonic() - started
    finally:
        memo.enabled = True
    by_job = {e["job"]: e["seconds"] for e in entries}
    return {
        "seconds": round(total, 1),
        "examples": examples,
        "refresh_queue_call_seconds": round(call_seconds, 2),
        "quick_run_seconds": by_job.get("quick_run"),
        "quality_run_seconds": by_job.get("quality_run"),
        "label_source": run.label_source,
        "noise_handling": run.hyperparameters.get("noise_handling"),
    }


# --- the plot -----------------------------------------------------------------------------------


def plot(output: dict, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot"
    parts = [t for t in ("simulated", "embedding", "extraction") if output.get(t)]
    if not parts:
        return "nothing to plot"
    fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 4.0), squeeze=False, sharey=False)
    styles = {
        "random": ("tab:gray", "o"),
        "confidence": ("tab:blue", "s"),
        "errors": ("tab:red", "^"),
        "disagreement": ("tab:purple", "D"),
        "default": ("tab:green", "*"),
    }
    for ax, teacher in zip(axes[0], parts, strict=True):
        part = output[teacher]
        by_order: dict[str, list] = defaultdict(list)
        for cell in part["cells"]:
            if cell["student"] == "quick" and "variant" not in cell:
                weighted = "weight" in (cell.get("noise_handling") or "")
                by_order[cell["order"]].append((cell["budget"], cell[SCORE], weighted))
        for order in [o for o in ORDERS if o in by_order]:
            points = sorted(by_order[order])
            colour, marker = styles.get(order, ("black", "x"))
            ax.plot([p[0] for p in points], [p[1] for p in points], color=colour, label=order, lw=1.4)
            for x, y, weighted in points:  # hollow: the advice chose weighting by teacher confidence
                ax.plot([x], [y], marker=marker, color=colour, ms=6, mfc="white" if weighted else colour)
        finetunes = sorted((c["budget"], c[SCORE]) for c in part["cells"] if c["student"] == "finetune")
        if finetunes:
            ax.plot(
                [p[0] for p in finetunes],
                [p[1] for p in finetunes],
                "k*",
                ms=11,
                mfc="none",
                label="fine-tune (default)",
            )
        if part.get("ceiling_quick") is not None:
            ax.axhline(part["ceiling_quick"], color="tab:green", ls=":", lw=1, label="human labels, quick")
        if part.get("ceiling_finetune") is not None:
            ax.axhline(
                part["ceiling_finetune"], color="black", ls="--", lw=1, label="human labels, fine-tune"
            )
        acc = part["teacher"]["teacher_accuracy_on_pool"]
        ax.set_title(f"{teacher} teacher ({acc:.1%} right on the pool)", fontsize=10)
        ax.set_xlabel("pool reviewed (%)")
        ax.set_ylabel("gold accuracy (Banking77 test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "Quick student on the app's recommended labels, by review order\n"
        "(hollow marker: the advice weighted teacher labels by confidence)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


# --- main ---------------------------------------------------------------------------------------


def merged(paths: list[Path]) -> dict:
    """Saved outputs of several runs as one: the first run's cells, plus the cells (and ceiling
    numbers) of later runs that it lacks, e.g. a grid run with --no-finetune and a fine-tune run."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    out = runs[0]
    for other in runs[1:]:
        for teacher in ("simulated", "embedding"):
            if not other.get(teacher):
                continue
            if not out.get(teacher):
                out[teacher] = other[teacher]
                continue
            part = out[teacher]
            have = {(c["order"], c["budget"], c["student"], c.get("variant")) for c in part["cells"]}
            part["cells"] += [
                c
                for c in other[teacher]["cells"]
                if (c["order"], c["budget"], c["student"], c.get("variant")) not in have
            ]
            for key in ("ceiling_finetune", "ceiling_quick"):
                if part.get(key) is None:
                    part[key] = other[teacher].get(key)
            at10 = {
                c["student"]: c["accuracy"]
                for c in part["cells"]
                if c["order"] == "default" and c["budget"] == 10.0 and "variant" not in c
            }
            if part.get("ceiling_finetune") is not None and "finetune" in at10:
                part["gap_at_10pct_points"] = round(100 * (part["ceiling_finetune"] - at10["finetune"]), 2)
    return out


def parse_list(text: str, allowed=None, cast=str) -> list:
    values = [cast(v.strip()) for v in text.split(",") if v.strip()]
    if allowed is not None:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
    return values


def main() -> int:
    global SCORE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--task",
        choices=("classification", "extraction"),
        default="classification",
        help="classification: Banking77; extraction: Restaurant-8k with the simulated span teacher",
    )
    parser.add_argument("--limit", type=int, default=None, help="pool rows (a seeded sample; smoke runs)")
    parser.add_argument(
        "--gold-limit", type=int, default=None, help="gold rows (a seeded sample; smoke runs)"
    )
    parser.add_argument("--budgets", type=lambda s: parse_list(s, cast=float), default=list(BUDGETS))
    parser.add_argument(
        "--finetune-budgets",
        type=lambda s: parse_list(s, cast=float),
        default=list(FINETUNE_BUDGETS),
        help="budgets with a fine-tune (default order only; default 0,10)",
    )
    parser.add_argument("--orders", type=lambda s: parse_list(s, ORDERS), default=list(ORDERS))
    parser.add_argument("--teachers", type=lambda s: parse_list(s, TEACHERS), default=list(TEACHERS))
    parser.add_argument(
        "--no-finetune", action="store_true", help="skip the fine-tunes (quick students only)"
    )
    parser.add_argument(
        "--refresh-every", type=int, default=None, help="default order's rounds (default: the app's)"
    )
    parser.add_argument(
        "--noise-variants",
        type=lambda s: parse_list(s, ("none", "prune", "weight", "prune+weight", "mask", "prune+mask")),
        default=[],
        help="also train each quick cell with these noise handlings (diagnosis; marked variant)",
    )
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument("--plot", type=Path, default=None, help="PNG of accuracy against budget per order")
    parser.add_argument("--save", type=Path, default=None, help="also write the JSON here (+ .cells.jsonl)")
    parser.add_argument("--keep", action="store_true", help="keep the temp data dir")
    parser.add_argument(
        "--ceiling-from",
        type=Path,
        default=None,
        help="take the human-label ceiling from this saved output (--save) instead of training it again",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        nargs="+",
        default=None,
        help="no run: merge these saved outputs (--save) and draw --plot from them",
    )
    args = parser.parse_args()
    args.budgets = sorted(set(args.budgets))
    if args.replot:
        output = merged(args.replot)
        output["plot"] = plot(output, args.plot) if args.plot else None
        print(json.dumps(output, indent=1, default=str))
        return 0

    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="review-budget-"))
    git = git_state()
    log(f"data dir {work}; load {load_start}; {vars(args)}; git {git}")
    real_stdout = sys.stdout
    output: dict = {}
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
            setup_django(work / "data")
            import torch

            if args.torch_threads:
                torch.set_num_threads(args.torch_threads)
            jobs = JobList()
            jobs.install()
            memo = EmbedMemo()
            memo.install()
            recorder = Recorder(args.save)
            if args.task == "extraction":
                from review_budget_spans import SpanData

                data = SpanData(limit=args.limit, gold_limit=args.gold_limit, work=work)
                SCORE = data.score_key
                args.teachers = ["simulated"]
            else:
                data = Data(limit=args.limit, gold_limit=args.gold_limit, work=work)
            log(f"pool rows {len(data.pool_rows)}, gold rows {len(data.gold_rows)}")

            teachers = [t for t in args.teachers if t in ("simulated", "embedding")]
            if args.ceiling_from:
                ceiling = {
                    **json.loads(args.ceiling_from.read_text())["ceiling"],
                    "from": str(args.ceiling_from),
                }
            elif teachers:
                ceiling = part_ceiling(data, finetune=not args.no_finetune, recorder=recorder)
            else:
                ceiling = {}
            output["ceiling"] = ceiling
            round_project = None
            for teacher in teachers:
                output[teacher], default_project = part_teacher(data, teacher, args, jobs, recorder, ceiling)
                if teacher == "simulated" or round_project is None:
                    round_project = default_project or round_project
            if "weak" in args.teachers:
                output["weak"] = part_weak(data, args, jobs, recorder)
            if round_project is not None:
                log(f"timing one review round on {round_project.slug} (embedding memo off)")
                output["quick_round"] = measure_round(round_project, jobs, memo)
                output["quick_round_seconds"] = output["quick_round"]["seconds"]
                log(f"  {output['quick_round']}")
            else:
                output["quick_round_seconds"] = None
            if args.task == "extraction":
                output["extraction"] = output.pop("simulated")
            sim = output.get("simulated") or output.get("extraction") or {}
            gap_target = TARGET_GAP_POINTS_SPANS if args.task == "extraction" else TARGET_GAP_POINTS
            output["targets"] = {
                "gap_at_10pct_points_max": gap_target,
                "gap_met": (sim["gap_at_10pct_points"] <= gap_target)
                if sim.get("gap_at_10pct_points") is not None
                else None,
                "default_beats_random_everywhere": {
                    t: output[t]["default_beats_random_everywhere"]
                    for t in ("simulated", "embedding", "extraction")
                    if t in output
                },
                "quick_round_seconds_max": TARGET_ROUND_SECONDS,
                "round_met": (output["quick_round_seconds"] < TARGET_ROUND_SECONDS)
                if output["quick_round_seconds"] is not None
                else None,
                "weak_recommended_at_least_reviewed_only": (output.get("weak") or {}).get(
                    "recommended_at_least_reviewed_only"
                ),
            }
            first = ((sim.get("orders") or {}).get("default") or {}).get("queue_first_10pct")
            if first:
                missed = first["default"]["times_random"]["missed"]
                output["targets"]["missed_in_first_10pct_times_random"] = missed
                output["targets"]["missed_met"] = missed is not None and missed >= TARGET_MISSED_TIMES_RANDOM
            if args.plot:
                output["plot"] = plot(output, args.plot)
            output["cpu"] = {
                "model": cpu_model(),
                "cores": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "cuda": torch.cuda.is_available(),
                "loadavg_start": load_start,
                "loadavg_end": loadavg(),
            }
            output["run"] = {
                "started_at": started_at,
                "total_seconds": round(time.monotonic() - started, 1),
                "pool_rows": len(data.pool_rows),
                "gold_rows": len(data.gold_rows),
                "limit": args.limit,
                "gold_limit": args.gold_limit,
                "budgets": args.budgets,
                "orders": args.orders,
                "teachers": args.teachers,
                "finetune": not args.no_finetune,
                "refresh_every": args.refresh_every,
                "texts_embedded_by_the_memo": memo.computed,
                "git": git,
            }
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(output, indent=1, default=str)
    if args.save:
        args.save.write_text(text + "\n")
    print(text, file=real_stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
