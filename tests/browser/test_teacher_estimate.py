"""The teacher settings form's cost estimate follows the settings as they are typed (issue #23)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation import teacher
from annotation.models import Example, TeacherConfig
from tests.browser.conftest import log_in
from tests.conftest import make_project, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_estimate_changes_live_with_the_samples(page, django_user_model, artifacts):
    lead = make_user(django_user_model, "lena_lead")
    project = make_project(lead=lead)
    for i in range(20):
        Example.objects.create(project=project, text=f"I was charged twice for order {i}")
    config = teacher.teacher_config_for(project)
    TeacherConfig.objects.filter(pk=config.pk).update(provider="openai", price_input_per_mtok=0)
    log_in(page, "lena_lead", "pw-lena_lead")
    page.goto(reverse("annotation:teacher-settings", args=[project.slug]))
    at_most = page.locator("[data-field=cost-at-most]")
    before = at_most.inner_text()
    page.fill("input[name=teacher-self_consistency_samples]", "5")
    page.wait_for_function(
        "before => document.querySelector('[data-field=cost-at-most]').innerText !== before", arg=before
    )
    after = at_most.inner_text()
    assert float(after.lstrip("$")) == pytest.approx(5 * float(before.lstrip("$")))
    page.fill("input[name=teacher-max_tokens]", "999999")
    page.locator("[data-field=estimate-error]").wait_for()
    assert "4096" in page.locator("[data-field=estimate-error]").inner_text()
    page.screenshot(path=str(artifacts / "teacher-estimate.png"), full_page=True)
    assert TeacherConfig.objects.get(pk=config.pk).self_consistency_samples == 0  # nothing saved
