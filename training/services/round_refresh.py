"""The training side of review rounds: a quick student refreshes the queue's keys.

annotation.review.rounds sends ``refresh_due`` when a project's reviewers have given
``refresh_every`` verdicts since the last refresh, inside the transaction of the verdict
that ended the round. ``round_refresh_start`` answers it with a ``RoundRefresh`` row (one
per round: a unique constraint) that commits with the verdict, and queues it; the worker's
``round_refresh_run`` does what was too slow for the reviewer's request (choosing the label
source and counting the training set read every label: 2.2 s at 100,000 examples, bench/
README.md "Review queue"). For every task type with a quick student (``Task.student_kinds``:
classification's on sentence embeddings, extraction's on word vectors) it starts a quick
run (seconds: the pool's embeddings are cached) on the recommended label source, whose
proposals on every non-gold example refresh the teacher/student disagreement key, and,
where the task scores label errors, a label-quality run for the "likely errors" key.
Proposals of older refresh runs are dropped when a new one finishes (runs.py), so a
long review session does not pile up a copy of the pool per round.

The row is the truth, as for every job: a refresh whose worker died is queued again by
the recovery sweep, one that failed shows its reason on the runs page and can be resumed.
"""

from __future__ import annotations

import logging

from django.db import transaction

from annotation.models import Project
from distillapp import jobs
from training.models import RoundRefresh, TrainingRun
from training.services.advice import recommended_run
from training.services.dataset import TrainingError

logger = logging.getLogger(__name__)

# The hyperparameter that marks a run started by a review round (shown on the runs page).
ROUND_MARK = "review_round"


def round_refresh_start(*, project: Project, verdicts: int) -> RoundRefresh | None:
    """Record the refresh of the round that ended at `verdicts` and queue it (after commit);
    None when this round's refresh is recorded already (it is never queued twice)."""
    refresh, created = RoundRefresh.objects.get_or_create(project=project, verdicts=verdicts)
    if not created:
        return None
    jobs.enqueue(RoundRefresh, refresh.pk, note="; resume it from the runs page")
    return refresh


def round_refresh_run(*, refresh: RoundRefresh) -> RoundRefresh:
    """Start the round's quick run and quality run; record what was done on the row.

    All in one transaction with the row's outcome: a worker killed half-way leaves nothing
    started, and the recovered refresh starts them once."""
    with jobs.running(RoundRefresh, refresh.pk) as held, transaction.atomic():
        run, outcome = refresh_queue(project=refresh.project)
        held.succeed(run=run, outcome=outcome)
    refresh.refresh_from_db()
    return refresh


def refresh_queue(*, project: Project) -> tuple[TrainingRun | None, str]:
    """Start a quick run for this project's queue, unless one is already on its way; the run
    and what was done, in words."""
    from annotation import review
    from training.services.runs import run_create, run_start

    task = project.task
    if "quick" not in task.student_kinds:
        return None, f"{task.title} projects have no quick student to refresh."
    on_its_way = (
        TrainingRun.objects.unfinished()
        .filter(project=project, kind=TrainingRun.Kind.QUICK, **{f"hyperparameters__{ROUND_MARK}": True})
        .first()
    )
    if on_its_way is not None:
        # The running refresh will see most of these verdicts; the next round the rest.
        return None, f"Run {on_its_way.number} of an earlier round was still on its way."
    # The advice's settings, as the launch form and the admin's action use them.
    recommended = recommended_run(project, kind=TrainingRun.Kind.QUICK)
    recommended["hyperparameters"][ROUND_MARK] = True
    try:
        run = run_create(project=project, user=None, kind=TrainingRun.Kind.QUICK, **recommended)
    except TrainingError as exc:
        logger.info("No queue refresh for %s: %s", project.slug, exc)
        return None, f"No quick run: {exc}"
    run_start(run=run)
    outcome = f"Quick run {run.number} started"
    if task.scores_label_errors:
        review.quality_run_start(project=project, user=None)
        outcome += " with a label-error scoring run"
    return run, outcome + "."
