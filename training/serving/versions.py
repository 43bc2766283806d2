"""Model versions: thresholds, promotion, rollback, the active version and the int8 (ONNX) gate."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from annotation.models import Project
from tasks import stats
from training.models import (
    DeploymentEvent,
    Evaluation,
    ExportJob,
    ModelVersion,
    TrainingRun,
    default_hyperparameters,
)
from training.serving.cache import forget_now_and_on_commit
from training.serving.config import ServingError, serving_config_for


def threshold_recommendation(run: TrainingRun, target_accuracy: float) -> dict | None:
    """The run's latest gold sweep judged for this target (metrics.threshold_choice), or None
    if the run has no student evaluation."""
    evaluation = run.evaluations.filter(subject=Evaluation.Subject.STUDENT).order_by("-created_at").first()
    if evaluation is None:
        return None
    m = stats.with_intervals(evaluation.metrics)
    choice = stats.threshold_choice(m.get("coverage", []), target_accuracy, examples=m.get("examples") or 0)
    return {**choice, "gold_version": evaluation.gold_set.version, "examples": m.get("examples") or 0}


def recommended_threshold(run: TrainingRun, target_accuracy: float) -> float | None:
    """The lowest threshold whose gold accuracy is at least the target with 95 % confidence.

    None when there is none: no threshold reaches it, or the gold set is too small to tell.
    """
    choice = threshold_recommendation(run, target_accuracy)
    return choice["threshold"] if choice else None


def no_threshold_reason(choice: dict) -> str:
    """Why no threshold can be recommended, in a sentence for a lead."""
    row, target = choice["row"], choice["target"]
    if choice["status"] == "too_small":
        needed = (
            f" About {choice['gold_needed']:,} gold items would show it, if that accuracy held."
            if choice["gold_needed"]
            else ""
        )
        return (
            f"Gold v{choice['gold_version']} ({choice['examples']:,} items) is too small to show accuracy "
            f"{target:g}: at confidence ≥ {row['threshold']:g} the student is right on {row['correct']} of "
            f"{row['answered']}, but the 95 % interval reaches down to {row['low']:.3f}.{needed}"
        )
    if choice["status"] == "unreached":
        return (
            f"No confidence threshold reaches accuracy {target:g} on gold v{choice['gold_version']}: "
            f"the most accurate, ≥ {row['threshold']:g}, is right on {row['correct']} of {row['answered']} "
            f"({row['accuracy']:.3f})."
        )
    return f"The evaluation on gold v{choice['gold_version']} has no confidences to choose a threshold from."


def _score(evaluation: Evaluation | None) -> float | None:
    """The task's headline score on gold (accuracy; strict entity F1 for extraction)."""
    if evaluation is None:
        return None
    return evaluation.metrics.get("score", evaluation.metrics.get("accuracy"))


def promotion_check(run: TrainingRun, *, active: ModelVersion | None = None) -> dict:
    """The run's gold score beside the teacher's and the live version's on the same frozen
    gold set, and what a lead must confirm before putting it live (`warnings`): a score
    below the teacher's or the live version's (by how much), or no evaluation on the latest
    frozen gold set. The deploy page lists these; the promote view asks before it promotes.
    `active` is the live version (looked up when not given).
    """
    project = run.project
    latest_gold = project.gold_sets.frozen_version()
    students = run.evaluations.filter(subject=Evaluation.Subject.STUDENT).select_related("gold_set")
    evaluation = (students.filter(gold_set=latest_gold).first() if latest_gold else None) or students.first()
    check = {
        "run": run,
        "evaluation": evaluation,
        "score": _score(evaluation),
        "latest_gold_version": latest_gold.version if latest_gold else None,
        "teacher_score": None,
        "teacher_delta": None,
        "live_run": None,
        "live_score": None,
        "live_delta": None,
        "warnings": [],
    }
    if evaluation is None:
        return check
    gold = evaluation.gold_set
    active = active if active is not None else active_version(project)
    teacher = (
        Evaluation.objects.filter(project=project, gold_set=gold, subject=Evaluation.Subject.TEACHER)
        .order_by("-created_at")
        .first()
    )
    check["teacher_score"] = _score(teacher)
    if active is not None and active.run_id != run.pk:
        check["live_run"] = active.run
        check["live_score"] = _score(
            active.run.evaluations.filter(subject=Evaluation.Subject.STUDENT, gold_set=gold).first()
        )
    score, name, warnings = check["score"], project.task.score_name, check["warnings"]
    for key in ("teacher", "live"):
        if score is not None and check[f"{key}_score"] is not None:
            check[f"{key}_delta"] = score - check[f"{key}_score"]
    if latest_gold is not None and gold.pk != latest_gold.pk:
        warnings.append(
            f"Run {run.number} was never evaluated on the latest gold set (v{latest_gold.version}); "
            f"its scores are from gold v{gold.version}."
        )
    if score is not None and check["teacher_score"] is not None and score < check["teacher_score"]:
        warnings.append(
            f"Run {run.number} scores {score:.3f} ({name}) on gold v{gold.version}, "
            f"{check['teacher_score'] - score:.3f} below the teacher ({check['teacher_score']:.3f})."
        )
    if score is not None and check["live_score"] is not None and score < check["live_score"]:
        warnings.append(
            f"Run {run.number} scores {score:.3f} ({name}) on gold v{gold.version}, "
            f"{check['live_score'] - score:.3f} below the live version "
            f"(run {check['live_run'].number}, {check['live_score']:.3f})."
        )
    return check


@transaction.atomic
def version_promote(
    *,
    run: TrainingRun,
    user,
    threshold: float | None = None,
    note: str = "",
    runtime: str = ModelVersion.Runtime.TORCH,
) -> ModelVersion:
    """Put the run live; as `runtime="onnx-int8"` only once its int8 export passed the gold check."""
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise ServingError(f"Run {run.number} has not finished training.", code="not_trained")
    if not run.evaluations.filter(subject=Evaluation.Subject.STUDENT).exists():
        raise ServingError(
            f"Evaluate run {run.number} on a gold set before promoting it.", code="not_evaluated"
        )
    if runtime not in ModelVersion.Runtime.values:
        raise ServingError(f"Unknown runtime {runtime!r}.", code="bad_runtime")
    quantized = _quantized_for_promotion(run) if runtime == ModelVersion.Runtime.ONNX_INT8 else {}
    if threshold is None:
        choice = threshold_recommendation(run, serving_config_for(run.project).target_accuracy)
        if choice["threshold"] is None:
            raise ServingError(
                f"{no_threshold_reason(choice)} Enter a threshold to promote run {run.number} anyway.",
                code="no_recommended_threshold",
            )
        threshold = choice["threshold"]
    if not 0 <= threshold <= 1:
        raise ServingError("The threshold must be between 0 and 1.", code="bad_threshold")
    previous = ModelVersion.objects.select_for_update().filter(project=run.project, is_active=True).first()
    if previous:
        ModelVersion.objects.filter(pk=previous.pk).update(is_active=False)
    version = ModelVersion.objects.create(
        project=run.project,
        run=run,
        threshold=threshold,
        is_active=True,
        promoted_by=user,
        note=note,
        runtime=runtime,
        **quantized,
    )
    DeploymentEvent.objects.create(
        project=run.project,
        action=DeploymentEvent.Action.PROMOTE,
        version=version,
        previous=previous,
        user=user,
    )
    forget_now_and_on_commit()
    return version


@transaction.atomic
def version_rollback(*, project: Project, user) -> ModelVersion:
    """Back to the version that was active before the current one."""
    current = ModelVersion.objects.select_for_update().filter(project=project, is_active=True).first()
    if current is None:
        raise ServingError("No model is active.", code="no_active_model")
    event = project.deployment_events.filter(version=current).order_by("-created_at").first()
    previous = event.previous if event else None
    if previous is None:
        raise ServingError("There is no earlier version to roll back to.", code="nothing_to_roll_back")
    ModelVersion.objects.filter(pk=current.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=previous.pk).update(is_active=True, promoted_at=timezone.now())
    previous.refresh_from_db()
    earlier = project.deployment_events.filter(version=previous).order_by("-created_at").first()
    DeploymentEvent.objects.create(
        project=project,
        action=DeploymentEvent.Action.ROLLBACK,
        version=previous,
        previous=earlier.previous if earlier else None,
        user=user,
    )
    forget_now_and_on_commit()
    return previous


def active_version(project: Project) -> ModelVersion | None:
    return ModelVersion.objects.select_related("run").filter(project=project, is_active=True).first()


# --- int8 quantization -------------------------------------------------------------------------------

# The rule: an int8 model may serve only if its gold score (the task's headline:
# accuracy, or strict entity F1 for extraction) is within half a point of the run's own
# (fp32) score on the same gold set.
QUANTIZED_MAX_DROP = 0.005
# Requests are split into batches of texts with the same token length, at most this big
# (ml._same_length_batches: no padding; bench/README.md "Serving").
SERVING_BATCH_SIZE = 8


# Run kinds with an int8 export: a fine-tune's whole model; a quick student's encoder (its
# scikit-learn head is copied beside it). An ensemble is served from its members' PyTorch models.
ONNX_KINDS = (TrainingRun.Kind.FINETUNE, TrainingRun.Kind.QUICK)


def onnx_dir_for(run: TrainingRun) -> Path:
    return Path(run.artifact_path) / "onnx-int8"


def quantized_may_activate(*, onnx_accuracy: float, fp32_accuracy: float) -> bool:
    # The tolerance absorbs float noise: k/n - m/n is not exact in binary.
    return fp32_accuracy - onnx_accuracy <= QUANTIZED_MAX_DROP + 1e-9


def onnx_prepare(
    *, run: TrainingRun, gold_version: int | None = None, progress: Callable[[str], None] | None = None
) -> dict:
    """Export the run to ONNX int8 and measure it against fp32 on the same frozen gold set.

    The gold set is the one of the run's latest student evaluation unless `gold_version`
    names another. Both models are scored here on the same texts with the same
    max_length. The measurement is kept beside the export (quantization.json), where
    promotion reads it. `progress(phase)` is told each stage (the export job writes it on
    its row, and may stop there).
    """
    from distillapp import ml

    if run.status != TrainingRun.Status.SUCCEEDED or not run.artifact_path:
        raise ServingError(f"Run {run.number} has no trained model to quantize.", code="not_trained")
    if run.kind not in ONNX_KINDS:
        raise ServingError(
            f"Run {run.number} is a {run.get_kind_display().lower()} run: only fine-tuned and quick runs "
            "have an ONNX int8 export; promote it on PyTorch.",
            code="no_onnx",
        )
    task = run.project.task
    student = task.student_for(run.kind)
    evaluation = run.evaluations.filter(subject=Evaluation.Subject.STUDENT).order_by("-created_at").first()
    if gold_version is not None:
        gold = run.project.gold_sets.frozen_version(gold_version)
    else:
        gold = evaluation.gold_set if evaluation else None
    if gold is None:
        raise ServingError(
            f"Evaluate run {run.number} on a gold set before quantizing it.", code="not_evaluated"
        )
    items = list(gold.items.select_related("example").order_by("pk"))
    if not items:
        raise ServingError(f"Gold set v{gold.version} has no examples.", code="empty_gold")
    max_length = {**default_hyperparameters(), **run.hyperparameters}["max_length"]
    model_dir = Path(run.artifact_path) / "model"
    progress = progress or (lambda phase: None)
    progress("exporting to ONNX int8")
    # An export stopped half-way (killed, cancelled, failed) must not leave an earlier
    # measurement standing beside a model file it did not measure.
    (onnx_dir_for(run) / "quantization.json").unlink(missing_ok=True)
    started = time.perf_counter()
    onnx_dir = student.export_onnx(model_dir, onnx_dir_for(run), max_length=max_length)
    export_seconds = time.perf_counter() - started
    # A gold item rejected as "no answer fits" has no answer to score against.
    labelled = [i for i in items if i.answer is not None]
    if not labelled:
        raise ServingError(f"Gold set v{gold.version} has no labelled examples.", code="empty_gold")
    texts, golds = [i.example.text for i in labelled], [i.answer for i in labelled]
    progress(f"measuring fp32 and int8 on gold v{gold.version}")
    fp32, _ = student.predict(model_dir, texts, max_length=max_length)
    int8, _ = student.predict_onnx(onnx_dir, texts, max_length=max_length, batch_size=SERVING_BATCH_SIZE)
    fp32 = [task.student_answer(a, text=t) for a, t in zip(fp32, texts, strict=True)]
    int8 = [task.student_answer(a, text=t) for a, t in zip(int8, texts, strict=True)]
    # The task's headline score on gold (accuracy; strict entity micro-F1 for extraction),
    # kept under the names "accuracy" that promotion and the model version store.
    fp32_accuracy = task.metrics(golds, fp32, texts=texts)["score"] or 0.0
    onnx_accuracy = task.metrics(golds, int8, texts=texts)["score"] or 0.0
    result = {
        "gold_set": gold.pk,
        "gold_version": gold.version,
        "examples": len(labelled),
        "score_name": task.score_name,
        "fp32_accuracy": fp32_accuracy,
        "onnx_accuracy": onnx_accuracy,
        "agreement": sum(task.same(a, b) for a, b in zip(fp32, int8, strict=True)) / len(labelled),
        "may_activate": quantized_may_activate(onnx_accuracy=onnx_accuracy, fp32_accuracy=fp32_accuracy),
        "export_seconds": round(export_seconds, 1),
        "size_mb": round((onnx_dir / ml.ONNX_MODEL_FILE).stat().st_size / 1e6, 1),
        "measured_at": timezone.now().isoformat(),
    }
    (onnx_dir / "quantization.json").write_text(json.dumps(result, indent=1))
    return result


def export_job_start(*, run: TrainingRun, user, gold_version: int | None = None) -> ExportJob:
    """Queue the run's int8 export and its measurement on gold (the deploy page's "Quantize").

    The gold version (by default that of the run's latest student evaluation) is read now,
    so the page can say which one is measured; the job finds and reports what goes wrong.
    """
    from distillapp import jobs

    if gold_version is None:
        evaluation = (
            run.evaluations.filter(subject=Evaluation.Subject.STUDENT).order_by("-created_at").first()
        )
        gold_version = evaluation.gold_set.version if evaluation else None
    job = ExportJob.objects.create(project=run.project, run=run, gold_version=gold_version, created_by=user)
    jobs.enqueue(ExportJob, job.pk)
    return job


def export_job_run(*, job: ExportJob) -> ExportJob:
    """onnx_prepare for the row training.jobs claimed; the measurement is written on it too.

    A killed export is simply run again: the export replaces its files whole and the
    measurement is written last (the row's result and quantization.json).
    """
    from distillapp import jobs

    with jobs.running(
        ExportJob, job.pk, held=True, expected=(ServingError,), reason=jobs.described, clear={"phase": ""}
    ) as held:
        result = onnx_prepare(
            run=job.run, gold_version=job.gold_version, progress=lambda phase: held.check(phase=phase[:40])
        )
        held.succeed(result=result, gold_version=result["gold_version"])
    job.refresh_from_db()
    return job


def onnx_measurement(run: TrainingRun) -> dict | None:
    """The last `onnx_prepare` of this run, or None if it was never quantized."""
    if not run.artifact_path:
        return None
    path = onnx_dir_for(run) / "quantization.json"
    if not path.is_file():
        return None
    measured = json.loads(path.read_text())
    # The rule is applied when read, so the page and promotion always agree with it.
    measured["may_activate"] = quantized_may_activate(
        onnx_accuracy=measured["onnx_accuracy"], fp32_accuracy=measured["fp32_accuracy"]
    )
    return measured


def _quantized_for_promotion(run: TrainingRun) -> dict:
    from distillapp import ml

    measured = onnx_measurement(run)
    if measured is None or not (onnx_dir_for(run) / ml.ONNX_MODEL_FILE).is_file():
        raise ServingError(f"Quantize run {run.number} (int8) before promoting it so.", code="not_quantized")
    onnx_accuracy, fp32_accuracy = measured["onnx_accuracy"], measured["fp32_accuracy"]
    if not quantized_may_activate(onnx_accuracy=onnx_accuracy, fp32_accuracy=fp32_accuracy):
        score = measured.get("score_name", "accuracy")
        raise ServingError(
            f"The int8 model of run {run.number} scores {onnx_accuracy:.1%} ({score}) on gold "
            f"v{measured['gold_version']}, more than {QUANTIZED_MAX_DROP * 100:g} points below the fp32 "
            f"model's {fp32_accuracy:.1%}: too inaccurate to serve.",
            code="quantized_too_inaccurate",
        )
    return {
        "onnx_path": str(onnx_dir_for(run)),
        "onnx_gold_accuracy": onnx_accuracy,
        "fp32_gold_accuracy": fp32_accuracy,
    }
