"""Evaluate and Quantize in real Chromium: the click queues a job, the page polls its row
(htmx) and shows the evaluation, or the int8 measurement, once a worker has done it."""

from __future__ import annotations

import json
import shutil

import pytest
from django.urls import reverse

from annotation.models import Example, GoldSet, GoldSetItem, Proposal
from tests.browser.conftest import log_in
from tests.conftest import make_project
from tests.training.conftest import make_run
from tests.training.conftest import tiny_classifier as tiny_classifier  # the fixture
from training import jobs, serving
from training.models import Evaluation, EvaluationJob, ExportJob

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

GOLD = [
    ("I was charged twice for my subscription", "Billing"),
    ("the app crashes when I log in", "Technical support"),
    ("where is your office?", "Other"),
    ("refund please", "Billing"),
]


def test_evaluate_and_quantize_run_in_the_background(
    page, django_user_model, tiny_classifier, tmp_path, queues, artifacts
):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    gold = GoldSet.objects.create(project=project, version=1)
    for text, label in GOLD:
        example = Example.objects.create(project=project, text=text, is_gold=True)
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=label)
        Proposal.objects.create(example=example, agent="teacher:m:p1", value=label, confidence=0.9)
    gold.freeze(user=lead)
    run_dir = shutil.copytree(tiny_classifier, tmp_path / "run")
    (run_dir / "manifest.json").write_text(json.dumps({"train": [], "validation": []}))
    run = make_run(project, run_dir, evaluated=False)
    log_in(page, "lena", "a-long-password")

    page.goto(reverse("training:run", args=["support", run.number]))
    page.get_by_role("button", name="Evaluate student and teacher").click()
    waiting = page.locator('[data-evaluation-job="pending"]')
    assert "Waiting for a worker to evaluate on gold v1" in waiting.inner_text()
    page.screenshot(path=str(artifacts / "run-evaluating.png"), full_page=True)
    jobs.run_evaluation_job(EvaluationJob.objects.get().pk)  # the worker's part
    # The page's next poll opens the evaluation.
    student = Evaluation.objects.get(subject="student")
    page.wait_for_url(f"**{reverse('training:evaluation', args=['support', student.pk])}")
    assert page.get_by_text("Confusion matrix").count()

    page.goto(reverse("training:deploy", args=["support"]))
    page.get_by_role("button", name="Quantize (int8)").click()
    cell = page.locator('[data-int8="1"]')
    assert "waiting for a worker" in cell.inner_text()
    jobs.run_export_job(ExportJob.objects.get().pk)
    measured = serving.onnx_measurement(run)
    # The polled cell is swapped for the measurement, and polling stops.
    page.get_by_role("button", name="Quantize again").wait_for()
    assert f"int8 {measured['onnx_accuracy']:.3f}" in cell.inner_text()
    assert cell.get_attribute("hx-get") is None
    page.screenshot(path=str(artifacts / "deploy-quantized.png"), full_page=True)
