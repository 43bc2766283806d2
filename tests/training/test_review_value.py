"""Where review pays: learning curve, errors found per queue order, review time and cost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from annotation import review
from annotation.models import Example, GoldSet, Proposal, Review
from training.models import Evaluation, ServingConfig, TrainingRun
from training.services.review_value import (
    errors_found_by_order,
    learning_curve,
    next_batch_gain,
    review_value,
)

pytestmark = pytest.mark.django_db


def evaluated(project, number, *, kind, reviewed, score):
    gold = GoldSet.objects.filter(project=project).first() or GoldSet.objects.create(
        project=project, version=1
    )
    run = TrainingRun.objects.create(
        project=project,
        number=number,
        kind=kind,
        status="succeeded",
        counts={"reviewed": reviewed, "train": 1000},
    )
    Evaluation.objects.create(
        project=project, run=run, gold_set=gold, subject="student", agent=run.agent, metrics={"score": score}
    )
    return run


def test_the_curve_and_the_next_batch_gain(project):
    evaluated(project, 1, kind="quick", reviewed=100, score=0.70)
    evaluated(project, 2, kind="finetune", reviewed=150, score=0.80)
    evaluated(project, 3, kind="quick", reviewed=300, score=0.78)
    curve = learning_curve(project)
    assert [(p["run"], p["reviewed"], p["score"]) for p in curve] == [
        (1, 100, 0.70),
        (2, 150, 0.80),
        (3, 300, 0.78),
    ]
    # Quick runs 1 -> 3: 8 points over 200 reviews = 4 points per 100.
    assert next_batch_gain(curve) == {
        "kind": "quick",
        "from_run": 1,
        "to_run": 3,
        "points_per_batch": 4.0,
        "batch": 100,
    }
    assert next_batch_gain(curve[:2]) is None  # one run per kind: no slope


def test_errors_found_per_order_with_the_audit_baseline(project, reviewer):
    labels = list(project.labels.values_list("name", flat=True))
    for i in range(30):
        example = Example.objects.create(project=project, text=f"ticket {i}")
        # The teacher is wrong on the 12 least confident texts.
        Proposal.objects.create(example=example, agent="teacher:m:v1", value=labels[0], confidence=i / 30)
    Example.objects.filter(project=project).sync_queue_fields()
    for _ in range(20):  # lowest confidence first; the 10th and 20th cards are audit draws
        example = review.review_next(
            project=project, user=reviewer, filters=review.QueueFilter(strategy="confidence")
        )
        wrong = example.teacher_confidence < 12 / 30
        review.review_record(
            example=example,
            user=reviewer,
            verdict="correct" if wrong else "accept",
            label=labels[1] if wrong else None,
        )
    rows = {row["order"]: row for row in errors_found_by_order(project)}
    assert rows["confidence"]["reviews"] == 18 and rows["random"]["reviews"] == 2
    confident_errors = Review.objects.filter(queue_order="confidence").exclude(verdict="accept").count()
    assert rows["confidence"]["errors"] == confident_errors >= 10
    assert rows["confidence"]["per_100"] == round(100 * confident_errors / 18, 1)
    assert rows["confidence"]["low"] < rows["confidence"]["per_100"] < rows["confidence"]["high"]


def test_review_time_and_cost_at_the_leads_rate(project, reviewer):
    ServingConfig.objects.create(project=project, review_usd_per_hour=Decimal("60"))
    for i, seconds in enumerate([30, 90, 5000]):  # the last one is a coffee break: capped at 600 s
        example = Example.objects.create(project=project, text=f"t{i}")
        Review.objects.create(example=example, reviewer=reviewer, verdict="reject", seconds_spent=seconds)
    Proposal.objects.create(example=example, agent="teacher:m:v1", value="Billing", cost_usd=Decimal("0.25"))
    Proposal.objects.create(example=example, agent="student:run-1", value="Billing", cost_usd=Decimal("9"))
    cost = review_value(project)["cost"]
    assert cost["hours"] == round(720 / 3600, 2) and cost["seconds_per_item"] == 240.0
    assert cost["cost_usd"] == Decimal("12.00")  # 0.2 h x 60 USD
    assert cost["next_batch_usd"] == Decimal("400.00")  # 100 x 240 s at 60 USD / h
    assert cost["api_usd"] == Decimal("0.25")  # the teacher's calls, never a student's


def test_the_page(project, reviewer, reviewer_client, outsider_client):
    evaluated(project, 1, kind="quick", reviewed=100, score=0.70)
    evaluated(project, 2, kind="quick", reviewed=200, score=0.75)
    url = reverse("training:review-value", args=[project.slug])
    page = reviewer_client.get(url).content.decode()
    assert 'data-series="quick"' in page and 'data-metric="next-batch-gain"' in page and "5.00 points" in page
    assert "Where review pays" in page
    assert outsider_client.get(url).status_code == 404


def test_the_chart_starts_at_no_reviews_so_one_run_is_not_drawn_on_the_axis():
    from training.templatetags.charts import curve_chart

    chart = curve_chart([{"kind": "quick", "reviewed": 942, "score": 0.913, "run": 11}], width=600)
    assert chart["x_min"] == 0 and chart["x_max"] == 942
    # The one run sits at the right end (942 of 0..942), not at x = 0 beside the y labels.
    assert chart["series"][0]["dots"][0]["x"] == 600.0
    two = curve_chart(
        [
            {"kind": "quick", "reviewed": 100, "score": 0.90, "run": 1},
            {"kind": "quick", "reviewed": 400, "score": 0.92, "run": 2},
        ],
        width=400,
    )
    assert [d["x"] for d in two["series"][0]["dots"]] == [100.0, 400.0]


def test_the_page_says_what_pruning_covers_and_which_order_the_default_serves(
    project, reviewer, reviewer_client
):
    from django.utils import timezone

    from annotation.models import QualityRun

    example = Example.objects.create(project=project, text="refund please")
    proposal = Proposal.objects.create(example=example, agent="teacher:m:v1", value="Billing", confidence=0.4)
    Review.objects.create(
        example=example, reviewer=reviewer, proposal=proposal, verdict="accept", value="Billing"
    )
    url = reverse("training:review-value", args=[project.slug])
    assert 'data-metric="flag-coverage"' not in reviewer_client.get(url).content.decode()  # no quality run
    QualityRun.objects.create(
        project=project, status="succeeded", flagged=1234, flag_coverage=0.2, finished_at=timezone.now()
    )
    page = reviewer_client.get(url).content.decode()
    assert "<strong>1,234</strong> unreviewed labels, <strong>20 %</strong> of the wrong ones" in page
    assert "now <em>lowest teacher confidence first</em>" in page
    QualityRun.objects.create(
        project=project, status="succeeded", flagged=900, flag_coverage=0.83, finished_at=timezone.now()
    )
    page = reviewer_client.get(url).content.decode()
    assert (
        "<strong>83 %</strong>" in page
        and "now <em>labels training would keep, least certain first</em>" in page
    )
    QualityRun.objects.create(project=project, status="succeeded", flagged=10, finished_at=timezone.now())
    assert "the audit has too few cards yet" in reviewer_client.get(url).content.decode()


def test_duplicate_review_rows_count_once_in_every_figure(project, reviewer, lead, reviewer_client):
    """Rows a replay wrote before verdicts needed a served card (issue #23) count once: each
    figure counts distinct examples, decided by their latest verdict."""
    from annotation.review.audit import teacher_estimate

    ServingConfig.objects.create(project=project, review_usd_per_hour=Decimal("60"))
    # (verdict, audit draw, rows): the first card was replayed 40 times at 1 s a post, the
    # audit card 9 times; the second was decided once, in 60 s.
    cards = [("correct", False, 40), ("accept", False, 1), ("accept", True, 9)]
    for i, (verdict, audit, copies) in enumerate(cards):
        example = Example.objects.create(project=project, text=f"ticket {i}")
        proposal = Proposal.objects.create(
            example=example, agent="teacher:m:v1", value="Billing", confidence=0.5
        )
        for _ in range(copies):
            Review.objects.create(
                example=example,
                reviewer=reviewer,
                proposal=proposal,
                verdict=verdict,
                value="Other" if verdict == "correct" else "Billing",
                is_audit=audit,
                queue_order="random" if audit else "confidence",
                seconds_spent=1 if copies > 1 else 60,
            )
    rows = {row["order"]: row for row in errors_found_by_order(project)}
    assert (rows["confidence"]["reviews"], rows["confidence"]["errors"]) == (2, 1)
    assert rows["confidence"]["per_100"] == 50.0
    assert rows["random"]["reviews"] == 1
    estimate = teacher_estimate(project)
    assert estimate["all"]["n"] == 3 and estimate["all"]["right"] == 2 and estimate["audit"]["n"] == 1

    cost = review_value(project)["cost"]
    # Three cards, each timed once by its latest row: 1 s, 60 s and 1 s.
    assert (cost["reviews"], cost["timed"]) == (3, 3)
    assert cost["seconds_per_item"] == round(62 / 3, 1)
    page = reviewer_client.get(reverse("training:review-value", args=[project.slug])).content.decode()
    assert "<dt>Verdicts</dt><dd>3 (3 timed)</dd>" in page


def test_an_extraction_project_counts_span_errors_by_kind_and_scores_the_teacher_in_strict_f1(
    lead, reviewer, reviewer_client
):
    from annotation import projects

    extraction = projects.project_create(
        name="Bookings",
        slug="bookings",
        user=lead,
        task_type="extraction",
        labels=[("people", "How many"), ("date", "The day")],
    )
    projects.membership_set(project=extraction, username=reviewer.username, role="reviewer")
    text = "Table for 4 on 12 May"
    people, date = {"start": 10, "end": 11, "field": "people"}, {"start": 15, "end": 21, "field": "date"}
    truth = {"spans": [people, date]}
    cards = [
        # (order, is audit, the teacher's spans)
        ("disagreement", False, {"spans": [people]}),  # missed the date
        ("disagreement", False, {"spans": [people, {**date, "start": 18}]}),  # the date's boundary
        ("random", True, {"spans": [people, date]}),  # right
        ("random", True, {"spans": [{**people, "field": "date"}, date]}),  # wrong field
    ]
    for i, (order, audit, spans) in enumerate(cards):
        example = Example.objects.create(project=extraction, text=f"{text} ({i})")
        proposal = Proposal.objects.create(example=example, agent="teacher:m:v1", value=spans)
        verdict = "accept" if spans == truth else "correct"
        Review.objects.create(
            example=example,
            reviewer=reviewer,
            proposal=proposal,
            verdict=verdict,
            value=truth,
            queue_order=order,
            is_audit=audit,
        )
    value = review_value(extraction)
    rows = {row["order"]: row for row in value["orders"]}
    assert rows["disagreement"]["kinds"] == {"missed": 1, "boundary": 1, "wrong_field": 0, "spurious": 0}
    assert rows["disagreement"]["kinds_per_100"]["missed"] == 50.0
    assert rows["random"]["kinds"]["wrong_field"] == 1 and rows["random"]["errors"] == 1
    # The audit cards: 3 of the teacher's 4 spans right, 3 of the 4 true spans found.
    audit = value["teacher_on_audit"]
    assert audit["n"] == 2 and audit["score"] == 0.75 and not audit["enough"]
    page = reviewer_client.get(reverse("training:review-value", args=[extraction.slug])).content.decode()
    assert "Gold strict F1 against reviewed labels" in page
    assert "Missed per 100" in page and 'data-kind="missed">50.0<' in page
    assert 'data-metric="teacher-on-audit"' in page and "<strong>0.750</strong> strict F1" in page


def test_a_classification_page_keeps_one_error_column(project, reviewer, reviewer_client):
    example = Example.objects.create(project=project, text="refund please")
    proposal = Proposal.objects.create(example=example, agent="teacher:m:v1", value="Billing")
    Review.objects.create(
        example=example,
        reviewer=reviewer,
        proposal=proposal,
        verdict="correct",
        value="Refund",
        is_audit=True,
    )
    value = review_value(project)
    assert value["orders"][0]["kinds"] == {"wrong": 1}
    assert value["teacher_on_audit"]["score"] == 0.0  # accuracy on the one audit card
    page = reviewer_client.get(reverse("training:review-value", args=[project.slug])).content.decode()
    assert "Wrong per 100" not in page and "accuracy against the reviewers" in page
