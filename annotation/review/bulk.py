"""Bulk accept: a lead accepts every queue card whose teacher is at least so sure, after
seeing how often the teacher is right at that confidence on the gold set."""

from __future__ import annotations

from django.db import transaction

from annotation.models import STUDENT_AGENT_PREFIX, Example, Project, Proposal, Review
from annotation.review import rounds
from annotation.review.next_card import QueueFilter, queue


def teacher_accuracy_on_gold(project: Project, *, threshold: float) -> dict:
    """How often the teacher is right on gold items at or above a confidence threshold."""
    gold = project.gold_sets.frozen_version()
    if gold is None:
        return {"gold_version": None, "items": 0, "accuracy": None}
    items = gold.items.select_related("example").filter(example__teacher_confidence__gte=threshold)
    pairs = [(i.example.teacher_label, i.answer) for i in items if i.example.teacher_label and i.answer]
    accuracy = sum(t == g for t, g in pairs) / len(pairs) if pairs else None
    return {"gold_version": gold.version, "items": len(pairs), "accuracy": accuracy}


def bulk_accept_preview(*, project: Project, filters: QueueFilter, threshold: float) -> dict:
    count = queue(project, filters).filter(teacher_confidence__gte=threshold).count()
    return {"count": count, "threshold": threshold, **teacher_accuracy_on_gold(project, threshold=threshold)}


@transaction.atomic
def bulk_accept(*, project: Project, user, filters: QueueFilter, threshold: float) -> int:
    examples = list(
        queue(project, filters).filter(teacher_confidence__gte=threshold).values_list("pk", flat=True)
    )
    proposals = {}
    for proposal in (
        Proposal.objects.filter(example_id__in=examples, value__isnull=False, error="")
        .exclude(agent__startswith=STUDENT_AGENT_PREFIX)
        .order_by("example_id", "created_at", "pk")
    ):
        proposals[proposal.example_id] = proposal  # the latest wins
    Review.objects.bulk_create(
        [
            Review(
                example_id=pk,
                reviewer=user,
                proposal=p,
                verdict=Review.Verdict.ACCEPT,
                value=p.value,
                is_bulk=True,
            )
            for pk, p in proposals.items()
        ],
        batch_size=1000,
    )
    Example.objects.filter(pk__in=list(proposals)).sync_queue_fields()
    rounds.after_verdict(project)
    return len(proposals)
