"""The label-quality run on an extraction project: every labelled non-gold text is scored and
the "likely label errors" order serves the spoiled one first."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation import projects, review
from annotation.models import Example, Membership, Proposal
from tests.tasks.test_extraction_quality import WRONG, bookings, spoiled

pytestmark = pytest.mark.django_db

TEACHER = "teacher:m:prompt-v1"


@pytest.fixture
def extraction(lead, reviewer):
    project = projects.project_create(
        name="Bookings",
        slug="bookings",
        user=lead,
        task_type="extraction",
        labels=[("name", "Who booked"), ("people", "How many guests"), ("time", "When")],
    )
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    return project


def proposed(project, text: str, answer: dict | None, **extra) -> Example:
    example = Example.objects.create(project=project, text=text, **extra)
    if answer is not None:
        Proposal.objects.create(example=example, agent=TEACHER, value=answer, confidence=0.9)
    Example.objects.filter(pk=example.pk).sync_queue_fields()
    return example


def test_the_review_page_offers_quality_scoring_to_an_extraction_lead(
    extraction, lead_client, reviewer_client
):
    texts, answers = bookings()
    proposed(extraction, texts[0], answers[0])

    lead_page = lead_client.get(reverse("annotation:review", args=[extraction.slug])).content.decode()
    reviewer_page = reviewer_client.get(reverse("annotation:review", args=[extraction.slug])).content.decode()

    assert "Score likely label errors" in lead_page and "Likely label errors first" in lead_page
    assert "Score likely label errors" not in reviewer_page


@pytest.mark.django_db(transaction=True)
def test_quality_run_scores_extraction_and_the_errors_order_serves_the_spoiled_text_first(
    extraction, lead, lead_client, queues
):
    from rq import SimpleWorker

    texts, answers = bookings()
    answers = spoiled(answers, "wrong field")
    examples = [proposed(extraction, text, answer) for text, answer in zip(texts, answers, strict=True)]
    gold = proposed(extraction, "Zoe wants a table for 3 at 9pm for lunch", answers[0], is_gold=True)
    unlabelled = proposed(extraction, "Yan wants a table for 6 at 8pm for dinner", None)

    response = lead_client.post(reverse("annotation:review-quality", args=[extraction.slug]))
    SimpleWorker([queues["training"]], connection=queues["training"].connection).work(burst=True)

    assert response.status_code == 302
    run = extraction.quality_runs.get()
    assert run.status == "succeeded", run.error
    assert run.examples == len(texts)
    scores = dict(Example.objects.filter(project=extraction).values_list("pk", "quality_score"))
    assert all(scores[e.pk] is not None and 0 <= scores[e.pk] <= 1 for e in examples)
    assert scores[gold.pk] is None and scores[unlabelled.pk] is None
    assert min(scores[e.pk] for e in examples) == scores[examples[WRONG].pk] < 0.5
    first = review.review_next(project=extraction, user=lead, filters=review.QueueFilter(strategy="errors"))
    assert first == examples[WRONG]
