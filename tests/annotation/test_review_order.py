"""The "kept" order (review what pruning cannot catch) and "auto", which chooses it from the audit."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation import review
from annotation.models import Example, Project, Proposal, QualityRun, Review, ReviewClaim
from annotation.review.next_card import KEPT_FROM_COVERAGE
from annotation.review.quality import flag_coverage

pytestmark = pytest.mark.django_db


def scored(project, text: str, confidence: float, score: float | None, flagged: bool | None) -> Example:
    """An example with a teacher proposal and the keys a quality run writes."""
    example = Example.objects.create(project=project, text=text)
    Proposal.objects.create(example=example, agent="teacher:m:v1", value="Billing", confidence=confidence)
    Example.objects.filter(pk=example.pk).sync_queue_fields()
    Example.objects.filter(pk=example.pk).update(quality_score=score, label_issue=flagged)
    return example


@pytest.fixture
def pool(project):
    project.audit_share = 0  # no random draws between the ordered cards
    project.save()
    return {
        "flagged low": scored(project, "flagged low", 0.2, 0.10, True),
        "kept uncertain": scored(project, "kept uncertain", 0.9, 0.30, False),
        "kept sure": scored(project, "kept sure", 0.5, 0.60, False),
        "unscored": scored(project, "unscored", 0.1, None, None),
        "flagged lowest": scored(project, "flagged lowest", 0.7, 0.05, True),
    }


def served(project, user, strategy: str) -> list[str]:
    order = []
    filters = review.QueueFilter(strategy=strategy)
    while (example := review.review_next(project=project, user=user, filters=filters)) is not None:
        order.append(example.text)
        review.review_record(example=example, user=user, verdict="accept")
    return order


def test_kept_serves_the_labels_pruning_keeps_least_certain_first_and_the_flagged_last(
    project, reviewer, pool
):
    assert served(project, reviewer, "kept") == [
        "kept uncertain",
        "kept sure",
        "unscored",  # not scored since the last quality run: after the scored ones
        "flagged lowest",
        "flagged low",
    ]
    # The same order when the queue is listed rather than served card by card.
    Review.objects.all().delete()
    Example.objects.filter(project=project).sync_queue_fields()
    filters = review.QueueFilter(strategy="kept")
    assert [e.text for e in filters.order(review.queue(project, filters))][:2] == [
        "kept uncertain",
        "kept sure",
    ]


def quality_run(project, coverage: float | None) -> QualityRun:
    return QualityRun.objects.create(
        project=project,
        status=QualityRun.Status.SUCCEEDED,
        flag_coverage=coverage,
        finished_at=timezone.now(),
    )


def test_auto_serves_lowest_confidence_until_the_flags_are_measured_to_cover_the_errors(
    project, reviewer, reviewer_client, pool
):
    assert Project._meta.get_field("review_order").default == "auto"
    filters = review.QueueFilter(strategy="auto")
    assert (
        review.review_next(project=project, user=reviewer, filters=filters).text == "unscored"
    )  # no run yet
    quality_run(project, KEPT_FROM_COVERAGE - 0.01)
    assert review.resolved_strategy(project, "auto") == "confidence"
    quality_run(project, None)  # no audit estimate when the latest run scored: no measure
    assert review.resolved_strategy(project, "auto") == "confidence"
    quality_run(project, KEPT_FROM_COVERAGE)
    ReviewClaim.objects.all().delete()
    first = review.review_next(project=project, user=reviewer, filters=filters)
    assert first.text == "kept uncertain"
    # The card is recorded as served in the order "auto" chose, for the review-value page.
    assert ReviewClaim.objects.get(example=first).queue_order == "kept"
    assert review.resolved_strategy(project, "errors") == "errors"  # a chosen order stays itself
    # The reviewer sees which order "auto" serves now.
    page = reviewer_client.get(
        reverse("annotation:review", args=[project.slug]) + "?strategy=auto"
    ).content.decode()
    assert "Where review pays most (chosen from the audit): now labels training would keep" in page


def test_flag_coverage_is_flagged_unreviewed_labels_over_the_audits_estimate_of_the_wrong_ones(
    project, reviewer
):
    labels = list(project.labels.values_list("name", flat=True))
    examples = []
    for i in range(60):
        example = Example.objects.create(project=project, text=f"ticket {i}")
        Proposal.objects.create(example=example, agent="teacher:m:v1", value=labels[0], confidence=0.5)
        examples.append(example)
    Example.objects.filter(project=project).sync_queue_fields()
    # 19 audit verdicts: not enough for an estimate yet.
    for i, example in enumerate(examples[:20]):
        right = i >= 5  # 5 of the 20 audited labels are wrong: accuracy 0.75
        Review.objects.create(
            example=example,
            reviewer=reviewer,
            proposal=example.proposals.get(),
            verdict="accept" if right else "correct",
            value=labels[0] if right else labels[1],
            is_audit=True,
        )
        if i == 18:
            Example.objects.filter(project=project).sync_queue_fields()
            assert flag_coverage(project) == (0, None)
    Example.objects.filter(project=project).sync_queue_fields()
    # 40 unreviewed labels, a quarter of them wrong by the audit: 10 expected errors.
    Example.objects.filter(pk__in=[e.pk for e in examples[20:28]]).update(label_issue=True)
    # A reviewed example's flag is about the reviewer's label: pruning keeps it, so it does not count.
    Example.objects.filter(pk=examples[0].pk).update(label_issue=True)
    flagged, coverage = flag_coverage(project)
    assert flagged == 8 and coverage == pytest.approx(8 / 10)


def test_disagreement_takes_turns_between_labels_training_keeps_and_flagged_ones_riskiest_first(
    project, reviewer
):
    """Pruning leaves the flagged labels out of training: serving only them first (they are the
    riskiest) lost to random at 2.5 % reviewed on Restaurant-8k (bench/README.md)."""
    project.audit_share = 0
    project.save()
    for text, risk, flagged in [
        ("flagged 0.9", 0.9, True),
        ("flagged 0.8", 0.8, True),
        ("flagged 0.7", 0.7, True),
        ("kept 0.6", 0.6, False),
        ("kept 0.3", 0.3, False),
        ("unscored 0.5", 0.5, None),
    ]:
        example = scored(project, text, 0.5, 0.5, flagged)
        Example.objects.filter(pk=example.pk).update(risk=risk)
    listed = review.first_served(project, review.QueueFilter(strategy="disagreement"), 10)
    order = served(project, reviewer, "disagreement")
    assert order == [
        "kept 0.6",
        "flagged 0.9",
        "unscored 0.5",  # not scored: kept by pruning
        "flagged 0.8",
        "kept 0.3",
        "flagged 0.7",
    ]
    assert [Example.objects.get(pk=pk).text for pk in listed] == order
