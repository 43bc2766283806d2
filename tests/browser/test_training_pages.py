"""The evaluation, run, deploy, monitor and cost pages as a lead sees them, in real Chromium.

Each page is screenshotted to test-artifacts/ for a person to look at; the asserts check
what was broken before: label names cut in the confusion matrix, charts without values,
numbers without their intervals, generated form labels.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.models import Example, GoldSet, Proposal
from tasks.base import Category
from tasks.classification.task import ClassificationTask
from tests.browser.conftest import log_in
from tests.conftest import make_project
from tests.training.conftest import make_run
from training import serving
from training.models import Evaluation, ModelVersion, PredictionLog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MANY_LABELS = [
    (name, "")
    for name in [
        "Card arrival",
        "Card payment fee charged",
        "Exchange rate",
        "Top up by bank transfer charge",
        "Refund not showing up",
        "Pending cash withdrawal",
        "Verify my identity",
        "Lost or stolen card",
        "Declined card payment",
        "Wrong amount of cash received",
        "Transfer not received by recipient",
        "Apple Pay or Google Pay",
        "Cancel transfer",
        "Country support",
    ]
]


def evaluate(project, golds, preds, confs, *, run=None, version=1) -> Evaluation:
    gold = GoldSet.objects.get_or_create(project=project, version=version)[0]
    labels = list(project.labels.values_list("name", flat=True))
    return Evaluation.objects.create(
        project=project,
        run=run,
        gold_set=gold,
        subject="student",
        agent=run.agent if run else "student:run-1",
        target_accuracy=0.95,
        metrics=ClassificationTask([Category(name) for name in labels]).metrics(
            golds, preds, confidences=confs, target_accuracy=0.95
        ),
        predictions=[
            {"example": i, "gold": g, "predicted": p, "confidence": c, "source": "import", "length": 40}
            for i, (g, p, c) in enumerate(zip(golds, preds, confs, strict=True))
        ],
    )


def test_training_pages_read_well(page, django_user_model, artifacts, tmp_path):
    rng = random.Random(3)
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    project = make_project(lead=lead, slug="support")

    # A run with a loss curve, evaluated on a 40-item gold set: the 17-of-17 case.
    run = make_run(project, tmp_path, evaluated=False)  # the pages never load the model
    run.loss_history = [[s, 1.1 * 0.93**s + 0.05 * rng.random()] for s in range(0, 60, 2)]
    run.total_steps, run.train_seconds = 60, 67.78919281600008
    run.counts = {**run.counts, "train": 950, "validation": 50, "estimate": {"examples": 1000}}
    run.save()
    golds = ["Billing"] * 17 + ["Technical support"] * 15 + ["Other"] * 8
    preds = (
        ["Billing"] * 17
        + ["Technical support"] * 9
        + ["Other"] * 6
        + ["Technical support"] * 6
        + ["Other"] * 2
    )
    confs = [0.5] * 17 + [0.42] * 23
    small = evaluate(project, golds, preds, confs, run=run)

    # Serving: a live version, a month of traffic with a few cold (slow) first requests.
    version = ModelVersion.objects.create(project=project, run=run, threshold=0.45, is_active=True)
    now = timezone.now()
    logs = []
    for i in range(400):
        route = "student" if i % 5 else rng.choice(["teacher", "review"])
        logs.append(
            PredictionLog(
                project=project,
                version=version,
                route=route,
                answer_summary="Billing",
                student_answer_summary=rng.choice(["Billing", "Technical support", "Other"]),
                confidence=rng.uniform(0.3, 1.0),
                latency_ms=4000.0
                if i < 3
                else rng.gauss(12, 2)
                if route == "student"
                else rng.gauss(900, 150),
            )
        )
    PredictionLog.objects.bulk_create(logs)
    for i, log in enumerate(PredictionLog.objects.all()):
        PredictionLog.objects.filter(pk=log.pk).update(created_at=now - timedelta(days=i % 12))
    example = Example.objects.create(project=project, text="a teacher-labelled ticket")
    # 6,000 teacher calls at about $0.0023: $14 of data, paid back in about two months.
    Proposal.objects.bulk_create(
        Proposal(
            example=example,
            agent="teacher:gpt:prompt-v1",
            value="Billing",
            cost_usd=Decimal(rng.choice(["0.0021", "0.0019", "0.0030"])),
            latency_ms=int(rng.gauss(850, 120)),
        )
        for _ in range(6000)
    )
    config = serving.serving_config_for(project)
    config.monthly_volume, config.hosting_usd_per_month = 20000, Decimal("30")
    config.save()

    # A project with many long label names, for the crowded confusion matrix.
    crowded = make_project(lead=lead, slug="banking", labels=MANY_LABELS)
    names = [n for n, _ in MANY_LABELS]
    golds = [rng.choice(names) for _ in range(300)]
    preds = [g if rng.random() < 0.8 else rng.choice(names) for g in golds]
    many = evaluate(crowded, golds, preds, [rng.uniform(0.4, 1.0) for _ in golds])

    log_in(page, "lena", "a-long-password")

    page.goto(reverse("training:evaluation", args=["support", small.pk]))
    warning = page.locator('[data-recommendation="too_small"]')
    assert "too small to support the target accuracy of 0.95" in warning.inner_text()
    assert "172" in warning.inner_text()
    assert "95 % CI" in page.locator('[data-interval="accuracy"]').inner_text()
    # Every label name is shown whole in the matrix: nothing cut off.
    for header in page.locator("#confusion th.col span, #confusion th.row").all():
        assert header.evaluate(
            "e => e.scrollWidth <= e.clientWidth + 1 && e.scrollHeight <= e.clientHeight + 1"
        )
    assert "Technical support" in page.locator("#confusion thead").inner_text()
    matrix_width = page.locator("#confusion table").bounding_box()["width"]
    assert matrix_width > 400  # not a postage stamp in a wide card
    page.screenshot(path=str(artifacts / "evaluation-small-gold.png"), full_page=True)
    page.locator("#confusion").screenshot(path=str(artifacts / "confusion-few-labels.png"))

    page.goto(reverse("training:evaluation", args=["banking", many.pk]))
    long_name = page.locator("#confusion th.col", has_text="Transfer not received").first
    assert long_name.get_attribute("title") == "predicted Transfer not received by recipient"
    page.screenshot(path=str(artifacts / "evaluation-many-labels.png"), full_page=True)
    page.locator("#confusion").screenshot(path=str(artifacts / "confusion-many-labels.png"))
    for header in page.locator("#confusion th.col span, #confusion th.row").all():
        assert header.evaluate(
            "e => e.scrollWidth <= e.clientWidth + 1 && e.scrollHeight <= e.clientHeight + 1"
        )
    page.locator("#confusion").screenshot(path=str(artifacts / "confusion-many-labels.png"))

    page.goto(reverse("training:run", args=["support", run.number]))
    assert page.locator(".loss-curve [data-y-tick]").count() >= 3
    assert page.locator(".loss-curve [data-x-tick]").count() >= 3
    page.screenshot(path=str(artifacts / "run-loss-chart.png"), full_page=True)

    page.goto(reverse("training:deploy", args=["support"]))
    assert "about 172 items needed" in page.locator('[data-recommended="1"]').inner_text()
    assert page.get_by_label("Hosting (USD per month)").is_visible()
    assert page.get_by_label("API price per call (USD)").is_visible()
    page.screenshot(path=str(artifacts / "deploy.png"), full_page=True)

    page.goto(reverse("training:monitor", args=["support"]))
    p50 = float(page.locator('[data-latency="student-p50"]').inner_text())
    assert 8 < p50 < 16  # the median: the three 4 s cold requests do not move it
    page.screenshot(path=str(artifacts / "monitor.png"), full_page=True)

    page.goto(reverse("training:cost", args=["support"]))
    assert page.locator(".cost-chart [data-y-tick]").count() >= 3
    assert page.locator(".cost-chart [data-x-tick]").count() >= 3
    assert "break-even: month" in page.locator(".cost-chart [data-break-even]").text_content()
    page.screenshot(path=str(artifacts / "cost.png"), full_page=True)
