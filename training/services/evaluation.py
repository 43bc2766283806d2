"""Evaluation on frozen gold: a run, the teacher, an imported system; overlap, error analysis, comparison."""

from __future__ import annotations

import json
from pathlib import Path

from django.db import transaction
from django.db.models import Q

from annotation.models import IMPORT_AGENT, STUDENT_AGENT_PREFIX, GoldSet, Project, Proposal
from tasks import stats
from training.models import Evaluation, EvaluationJob, TrainingRun, default_hyperparameters
from training.services.dataset import TrainingError
from training.services.runs import student_predict


def _gold(project: Project, version: int | None) -> GoldSet:
    gold = project.gold_sets.frozen_version(version)
    if gold is None:
        raise TrainingError(
            f"This project has no frozen gold set{f' version {version}' if version else ''}; freeze one first."
        )
    return gold


def _finish_evaluation(
    *,
    project,
    gold,
    subject,
    agent,
    run,
    items,
    predicted: dict,
    target_accuracy: float,
    notes=None,
    save: bool = True,
) -> Evaluation:
    task = project.task
    rows = []
    # A gold item adjudicated as "no label fits" (a reject) has no gold label:
    # no answer can be right or wrong on it, so no metric counts it.
    labelled = [item for item in items if item.answer is not None]
    for item in labelled:
        label, confidence = predicted.get(item.example_id, (None, None))
        rows.append(
            {
                "example": item.example_id,
                "gold": item.answer,
                "predicted": label,
                "confidence": confidence,
                "right": task.is_right(item.answer, label),
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
    numbers["errors_by_source"] = stats.errors_by(judged, lambda r: r["source"])
    numbers["errors_by_length"] = stats.errors_by(judged, lambda r: stats.length_bucket(r["length"]))
    numbers["gold_without_label"] = len(items) - len(labelled)
    # A system with no answer on any gold text was not measured: its headline is no score, not 0
    # (a project of human labels has no teacher answers on gold; issue #24).
    numbers["answered"] = sum(r["predicted"] is not None for r in rows)
    if rows and not numbers["answered"]:
        numbers = not_measured(numbers, reason=f"no answer on any of the {len(rows)} gold texts")
    numbers.update(notes or {})
    evaluation = Evaluation(
        project=project,
        run=run,
        gold_set=gold,
        subject=subject,
        agent=agent,
        target_accuracy=target_accuracy,
        metrics=numbers,
        predictions=rows,
    )
    if save:
        evaluation.save()
    return evaluation


def not_measured(numbers: dict, *, reason: str) -> dict:
    """The metric set of a system that was not measured: every figure None (a missing answer
    would otherwise count as wrong: accuracy 0.000), with the reason said."""
    kept = ("examples", "answered", "gold_without_label")
    return {
        **{k: None for k, v in numbers.items() if k not in kept and not isinstance(v, (dict, list))},
        **{k: numbers[k] for k in kept if k in numbers},
        "score": None,
        "not_measured": reason,
    }


def evaluate_run(
    *, run: TrainingRun, gold_version: int | None = None, target_accuracy: float = 0.95, save: bool = True
) -> Evaluation:
    """The run's student on frozen gold (`save=False`: measured, not yet saved)."""
    if run.status != TrainingRun.Status.SUCCEEDED or not run.artifact_path:
        raise TrainingError(f"Run {run.number} has no trained model to evaluate.")
    gold = _gold(run.project, gold_version)
    items = list(gold.items.select_related("example").order_by("pk"))
    overlap = gold_overlap(run=run, items=items)
    # A model is right on what it learnt by heart: gold items the run trained on
    # are left out of its numbers (and flagged loudly), never scored as if unseen.
    overlap_ids = set(overlap)
    clean = [i for i in items if i.example_id not in overlap_ids]
    if overlap and not any(i.answer is not None for i in clean):
        raise TrainingError(
            f"Refused: all {len(items)} gold items were in run {run.number}'s training data, so gold "
            f"v{gold.version} cannot measure it. Train a new run (gold items never enter training) or "
            "draw gold from examples this run has not seen."
        )
    hp = {**default_hyperparameters(), **run.hyperparameters}
    scored = [i for i in clean if i.answer is not None]
    labels, confidences = student_predict(
        run.project.task,
        Path(run.artifact_path) / "model",
        [i.example.text for i in scored],
        hp["max_length"],
        kind=run.kind,
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
        save=save,
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
    *,
    project: Project,
    agent: str,
    gold_version: int | None = None,
    target_accuracy: float = 0.95,
    save: bool = True,
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
        save=save,
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
    *, project: Project, gold_version: int | None = None, target_accuracy: float = 0.95, save: bool = True
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
        save=save,
    )


# --- the evaluation job ---------------------------------------------------------------------------


def evaluation_job_start(
    *, run: TrainingRun, user, gold_version: int | None = None, target_accuracy: float = 0.95
) -> EvaluationJob:
    """Queue the evaluation of a run (and of the teacher and imported systems beside it) on gold.

    "The latest frozen version" is read now, so the page can say which version is being
    measured and the job measures that one even if another is frozen meanwhile. What can go
    wrong (no frozen gold, no model) is found by the job and shown on its row.
    """
    from distillapp import jobs

    if gold_version is None:
        latest = run.project.gold_sets.frozen_version()
        gold_version = latest.version if latest else None
    job = EvaluationJob.objects.create(
        project=run.project,
        run=run,
        gold_version=gold_version,
        target_accuracy=target_accuracy,
        created_by=user,
    )
    jobs.enqueue(EvaluationJob, job.pk)
    return job


def evaluation_job_run(*, job: EvaluationJob) -> EvaluationJob:
    """The student on the job's gold version, then the teacher and each imported system on it.

    The row was claimed by training.jobs. The Evaluations are measured first and saved
    together at the end, in the transaction that marks the row done and only while this
    process still holds it: a job killed half-way and run again never leaves a half-made
    or doubled set, and a job cancelled between stages saves nothing.
    """
    from distillapp import jobs

    with jobs.running(
        EvaluationJob,
        job.pk,
        held=True,
        expected=(TrainingError,),
        reason=jobs.described,
        clear={"phase": ""},
    ) as held:
        run, project = job.run, job.project
        held.check(phase="evaluating the student")
        student = evaluate_run(
            run=run, gold_version=job.gold_version, target_accuracy=job.target_accuracy, save=False
        )
        version = student.gold_set.version
        held.check(phase="evaluating the teacher")
        made = [
            student,
            evaluate_teacher(
                project=project, gold_version=version, target_accuracy=job.target_accuracy, save=False
            ),
        ]
        # Systems whose predictions were imported are measured beside teacher and student.
        for agent in imported_systems(project, student.gold_set):
            held.check(phase=f"evaluating {agent}"[:40])
            made.append(
                evaluate_system(
                    project=project,
                    agent=agent,
                    gold_version=version,
                    target_accuracy=job.target_accuracy,
                    save=False,
                )
            )
        with transaction.atomic():
            held.succeed(unless_cancelled=True, gold_version=version)
            for evaluation in made:
                evaluation.save()
            EvaluationJob.objects.filter(pk=job.pk).update(result=student)
    job.refresh_from_db()
    return job


def error_analysis(student: Evaluation, teacher: Evaluation | None) -> dict:
    """Student vs teacher on the same gold version: who is wrong where (the task says what is right)."""
    if teacher is None:
        return {}
    task = student.project.task

    def right(evaluation: Evaluation) -> dict[int, bool]:
        # A text the system gave no answer on is left out of every cell: a teacher that never
        # saw the gold texts (a project of human labels) is not "wrong" on them.
        return {
            row["example"]: row["right"] if "right" in row else task.is_right(row["gold"], row["predicted"])
            for row in evaluation.predictions
            if row["predicted"] is not None
        }

    return stats.error_overlap(right(student), right(teacher))


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
