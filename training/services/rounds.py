"""The training side of review rounds: a quick student refreshes the queue's keys.

annotation.review.rounds sends ``refresh_due`` when a project's reviewers have given
``refresh_every`` verdicts since the last refresh. ``refresh_queue`` answers it for every
task type with a quick student (``Task.student_kinds``: classification's on sentence
embeddings, extraction's on word vectors): a quick run (seconds: the pool's embeddings are
cached) on the recommended label source, whose proposals on every non-gold example refresh
the teacher/student disagreement key, and,
where the task scores label errors, a label-quality run for the "likely errors" key.
Proposals of older refresh runs are dropped when a new one finishes (runs.py), so a
long review session does not pile up a copy of the pool per round.
"""

from __future__ import annotations

import logging

from annotation.models import Project
from training.models import TrainingRun
from training.services.advice import recommended_run
from training.services.dataset import TrainingError

logger = logging.getLogger(__name__)

# The hyperparameter that marks a run started by a review round (shown on the runs page).
ROUND_MARK = "review_round"


def refresh_queue(sender=None, *, project: Project, **kwargs) -> TrainingRun | None:
    """Start a quick run for this project's queue, unless one is already on its way."""
    from annotation import review
    from training.services.runs import run_create, run_start

    task = project.task
    if "quick" not in task.student_kinds:
        return None
    if TrainingRun.objects.filter(
        project=project,
        kind=TrainingRun.Kind.QUICK,
        status__in=[TrainingRun.Status.PENDING, TrainingRun.Status.RUNNING],
        **{f"hyperparameters__{ROUND_MARK}": True},
    ).exists():
        return None  # the running refresh will see most of these verdicts; the next round the rest
    # The advice's settings, as the launch form and the admin's action use them.
    recommended = recommended_run(project, kind=TrainingRun.Kind.QUICK)
    recommended["hyperparameters"][ROUND_MARK] = True
    try:
        run = run_create(project=project, user=None, kind=TrainingRun.Kind.QUICK, **recommended)
    except TrainingError as exc:
        logger.info("No queue refresh for %s: %s", project.slug, exc)
        return None
    run_start(run=run)
    if task.scores_label_errors:
        review.quality_run_start(project=project, user=None)
    return run
