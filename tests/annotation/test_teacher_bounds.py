"""Teacher settings that multiply spend are bounded, and their cost shows live (issue #23)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from annotation import teacher
from annotation.models import Example, TeacherConfig
from tests.annotation.test_teacher_security import settings_form

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("self_consistency_samples", "1000"),
        ("self_consistency_samples", "-1"),
        ("max_tokens", "1000000"),
        ("max_tokens", "0"),
        ("timeout_seconds", "86400"),
        ("timeout_seconds", "0"),
        ("timeout_seconds", "nan"),
    ],
)
def test_the_settings_form_refuses_spend_without_bound(project, lead_client, field, value):
    url = reverse("annotation:teacher-settings", args=[project.slug])
    response = lead_client.post(url, settings_form(**{field: value}))
    assert response.status_code == 200  # the form again, with the field's error
    config = TeacherConfig.objects.get(project=project)
    assert str(getattr(config, field)) != value
    assert "has-error" in response.content.decode()


def test_the_model_validates_its_bounds(project):
    config = teacher.teacher_config_for(project)
    config.self_consistency_samples = 50
    config.max_tokens = 100_000
    config.timeout_seconds = 10_000
    with pytest.raises(ValidationError) as raised:
        config.full_clean()
    assert {"self_consistency_samples", "max_tokens", "timeout_seconds"} <= set(raised.value.message_dict)


def test_a_row_over_the_bounds_is_clamped_when_the_teacher_is_called(project):
    config = teacher.teacher_config_for(project)
    TeacherConfig.objects.filter(pk=config.pk).update(
        self_consistency_samples=500, max_tokens=10**6, timeout_seconds=10**6
    )
    config.refresh_from_db()
    settings = teacher.teacher_settings(config)
    assert settings.self_consistency_samples == TeacherConfig.MAX_SAMPLES
    assert settings.max_tokens == TeacherConfig.MAX_TOKENS
    assert settings.timeout_seconds == TeacherConfig.MAX_TIMEOUT_SECONDS


def test_the_cost_estimate_follows_the_unsaved_settings_live(project, lead_client):
    free_input = {"price_input_per_mtok": "0"}  # the bound then moves with the output alone
    for i in range(10):
        Example.objects.create(project=project, text=f"I was charged twice, ticket {i}")
    url = reverse("annotation:teacher-estimate", args=[project.slug])
    one = lead_client.post(
        url, settings_form(self_consistency_samples="0", **free_input), headers={"HX-Request": "true"}
    )
    five = lead_client.post(
        url, settings_form(self_consistency_samples="5", **free_input), headers={"HX-Request": "true"}
    )
    assert one.status_code == five.status_code == 200
    assert "<html" not in one.content.decode()  # the estimate fragment only

    def at_most(response) -> float:
        html = response.content.decode()
        return float(html.split('data-field="cost-at-most">$', 1)[1].split("<", 1)[0])

    assert at_most(five) > 4 * at_most(one) > 0
    # Nothing was saved by the preview.
    assert TeacherConfig.objects.get(project=project).self_consistency_samples == 0
    bad = lead_client.post(url, settings_form(max_tokens="10000000"), headers={"HX-Request": "true"})
    assert bad.status_code == 200 and "max tokens" in bad.content.decode().lower()
    # The settings page asks for it on every change of the form.
    page = lead_client.get(reverse("annotation:teacher-settings", args=[project.slug])).content.decode()
    assert url in page and 'hx-trigger="input' in page
