"""Review rounds: a budget for the lead, and the queue's keys refreshed as verdicts come in.

After every ``Project.refresh_every`` verdicts, the queue's keys that depend on a student
(teacher/student disagreement, label-error scores) are stale: the labels they were computed
from have changed. ``after_verdict`` notices that a round is over and sends
``refresh_due``; the training app answers it (training.services.rounds) by training a
quick student on the current labels in the background, whose proposals refresh the
disagreement key, and by scoring label quality again. So each batch of cards goes where
the current labels are weakest. The annotation app only says that a refresh is due: it
never imports training (the layers go one way).
"""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

from annotation.models import Project, Review

# Sent once per finished round, after the verdict's transaction commits: project=<Project>.
refresh_due = Signal()


def verdict_count(project: Project) -> int:
    return Review.objects.filter(example__project=project, kind=Review.Kind.REVIEW).count()


def round_status(project: Project) -> dict:
    """Verdicts so far, the budget left and the verdicts until the next refresh."""
    done = verdict_count(project)
    budget = project.review_budget
    until = None
    if project.refresh_every:
        until = max(0, project.refreshed_at_verdicts + project.refresh_every - done)
    return {
        "verdicts": done,
        "budget": budget,
        "budget_left": max(0, budget - done) if budget else None,
        "budget_reached": bool(budget) and done >= budget,
        "budget_percent": min(100, round(100 * done / budget)) if budget else None,
        "refresh_every": project.refresh_every,
        "until_refresh": until,
    }


def after_verdict(project: Project) -> bool:
    """Start a refresh if this verdict ended a round; True if it did (exactly one caller wins)."""
    if not project.refresh_every:
        return False
    done = verdict_count(project)
    last = Project.objects.filter(pk=project.pk).values_list("refreshed_at_verdicts", flat=True).first() or 0
    if done - last < project.refresh_every:
        return False
    # A conditional update: of two verdicts that end the same round, one starts the refresh.
    if not Project.objects.filter(pk=project.pk, refreshed_at_verdicts=last).update(
        refreshed_at_verdicts=done
    ):
        return False
    project.refreshed_at_verdicts = done
    transaction.on_commit(lambda: refresh_due.send(sender=Project, project=project))
    return True
