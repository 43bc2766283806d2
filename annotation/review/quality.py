"""The label-quality run: how likely each example's current label is wrong (confident learning).

A ``QualityRun`` scores every labelled, non-gold example of a project and stores the score
in ``Example.quality_score``; the review queue's "likely label errors" order serves the
lowest first, and training's noise handling can leave out the ones below 0.5. How an
answer is scored belongs to the task type (``Task.label_quality_scores``): for
classification, cross-validated logistic regression on MiniLM sentence embeddings
(tasks/classification/label_quality.py); for extraction, the same per word over the BIO tags of
the spans, on contextual word vectors, with a text scored by its worst word
(tasks/extraction/span_quality.py). Both are out-of-sample scores in [0, 1] from cleanlab.
"""

from __future__ import annotations

from django.db import transaction

from annotation.models import Example, Project, QualityRun, ReviewState
from tasks.base import AnswerError


def latest_quality_run(project: Project) -> QualityRun | None:
    """The project's last finished label-quality scoring (whose keys the queue serves now)."""
    return (
        QualityRun.objects.filter(project=project, status=QualityRun.Status.SUCCEEDED)
        .order_by("-finished_at", "-pk")
        .first()
    )


def flag_coverage(project: Project) -> tuple[int, float | None]:
    """How many unreviewed labels are flagged, and what share of the wrong unreviewed labels
    that is: flagged / ((1 - the audit's accuracy estimate) × unreviewed labels). Above 1 the
    flags are more than the errors (some right labels among them); far below 1, most errors
    are not flagged, so pruning cannot remove them. None before the audit has an estimate,
    or when the audit finds the teacher always right."""
    from annotation.review.audit import teacher_estimate

    unreviewed = (
        Example.objects.for_project(project)
        .not_gold()
        .filter(review_state=ReviewState.UNREVIEWED)
        .exclude(teacher_label="")
    )
    flagged = unreviewed.filter(label_issue=True).count()
    estimate = teacher_estimate(project)["estimate"]
    if estimate is None or estimate["accuracy"] >= 1:
        return flagged, None
    wrong = (1 - estimate["accuracy"]) * unreviewed.count()
    return flagged, flagged / wrong if wrong else None


def quality_run_start(*, project: Project, user) -> QualityRun:
    from distillapp import jobs

    run = QualityRun.objects.create(project=project, created_by=user)
    jobs.enqueue(QualityRun, run.pk)
    return run


def quality_run(*, run: QualityRun) -> QualityRun:
    """Score every labelled, non-gold example: low scores are likely label errors.

    Out-of-sample scores from the project's task type (``Task.label_quality_scores``),
    so an example's own label never vouches for itself. An answer that no longer fits the
    project's categories is not scored (training leaves it out too).
    """
    import time

    from distillapp import jobs

    started = time.monotonic()  # the row was claimed by annotation.jobs.run_quality_run
    with jobs.running(QualityRun, run.pk) as held:
        task = run.project.task
        rows = []
        for pk, text, label in (
            Example.objects.for_project(run.project)
            .not_gold()
            .with_current_label()
            .filter(current_label__isnull=False)
            .values_list("pk", "text", "current_label")
        ):
            try:
                rows.append((pk, text, task.validate(label, text=text)))
            except AnswerError:
                continue
        scores, issues, parts = (
            task.label_quality_parts([t for _, t, _ in rows], [a for _, _, a in rows])
            if rows
            else ([], None, None)
        )
        decided = issues is not None  # the task type flags likely errors (else it only scores)
        if not decided:
            issues = [None] * len(rows)
        if parts is None:
            parts = [None] * len(rows)
        with transaction.atomic():
            Example.objects.filter(project=run.project).update(
                quality_score=None, label_issue=None, label_flags=None
            )
            Example.objects.bulk_update(
                [
                    Example(
                        pk=pk,
                        quality_score=float(s),
                        label_issue=None if flag is None else bool(flag),
                        label_flags=part or None,
                    )
                    for (pk, _, _), s, flag, part in zip(rows, scores, issues, parts, strict=True)
                ],
                ["quality_score", "label_issue", "label_flags"],
                batch_size=2000,
            )
        flagged, coverage = flag_coverage(run.project) if decided else (None, None)
        held.succeed(
            examples=len(rows), flagged=flagged, flag_coverage=coverage, seconds=time.monotonic() - started
        )
    run.refresh_from_db()
    return run
