"""A lead promotes from the list of runs; a weak run asks first and says by how much."""

from __future__ import annotations

import pytest
from django.utils import timezone

from annotation.models import GoldSet
from tests.browser.conftest import log_in
from tests.conftest import make_project
from tests.training.test_deploy_promote import make_run, teacher_scores
from training.models import ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_a_run_below_the_teacher_is_promoted_only_once_confirmed(
    browser, live_server, django_user_model, artifacts, tmp_path, size
):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    project = make_project(lead=lead, slug="bookings")
    gold = GoldSet.objects.create(project=project, version=1, frozen_at=timezone.now())
    teacher_scores(project, gold, 0.308)
    make_run(project, tmp_path, 1, gold=gold, score=0.0)
    make_run(project, tmp_path, 2, gold=gold, score=0.42)

    context = browser.new_context(base_url=live_server.url, viewport=SIZES[size])
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, "lena", "a-long-password")
    page.goto("/training/p/bookings/deploy/")
    # The recommended threshold is filled in; the teacher's score sits beside each run.
    assert page.locator('input[name="threshold-1"]').input_value() == "0.5"
    assert page.locator('[data-teacher-score="1"]').inner_text().startswith("0.308")
    assert "0.308 below the teacher" in page.locator('[data-warning="1"]').inner_text()
    page.screenshot(path=str(artifacts / f"deploy-promote-list-{size}.png"), full_page=True)

    page.locator('input[name="run"][value="1"]').check()
    page.locator('input[name="threshold-1"]').fill("0.6")
    page.get_by_role("button", name="Promote the chosen run").click()
    page.get_by_role("heading", name="Promote run 1?").wait_for()
    assert "0.308 below the teacher" in page.locator("[data-warning]").inner_text()
    assert not ModelVersion.objects.exists()
    page.screenshot(path=str(artifacts / f"deploy-promote-confirm-{size}.png"), full_page=True)

    page.get_by_role("button", name="Promote run 1 anyway").click()
    page.get_by_text("Run 1 is live at threshold 0.60").wait_for()
    version = ModelVersion.objects.get(is_active=True)
    assert (version.run.number, version.threshold) == (1, 0.6)
    assert "below the teacher" in page.locator("[data-promoted-despite]").inner_text()
    context.close()
