"""Launching, evaluating and quantizing models are rate-limited per account, like the other
expensive actions (issue #23): a script replaying them cannot fill the training queue."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.views._common import RATE_LIMITS
from training.models import EvaluationJob, ExportJob, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_run(project):
    return TrainingRun.objects.create(project=project, number=1, status="failed", error="worker lost")


def _posts(project, run) -> dict[str, tuple[str, dict]]:
    evaluation = EvaluationJob.objects.create(project=project, run=run, gold_version=1, status="failed")
    export = ExportJob.objects.create(project=project, run=run, gold_version=1, status="failed")
    slug = project.slug
    return {
        "launch": (reverse("training:run-create", args=[slug]), {}),
        "resume": (reverse("annotation:job-resume", args=[slug, "trainingrun", run.pk]), {}),
        "evaluate": (reverse("training:run-evaluate", args=[slug, run.number]), {}),
        "evaluation resume": (
            reverse("annotation:job-resume", args=[slug, "evaluationjob", evaluation.pk]),
            {},
        ),
        "int8 export": (reverse("training:deploy", args=[slug]), {"quantize": str(run.number)}),
        "export resume": (reverse("annotation:job-resume", args=[slug, "exportjob", export.pk]), {}),
    }


@pytest.mark.parametrize(
    "action", ["launch", "resume", "evaluate", "evaluation resume", "int8 export", "export resume"]
)
def test_each_training_action_past_the_limit_is_a_429_with_a_message(
    project, failed_run, lead_client, queues, action
):
    url, data = _posts(project, failed_run)[action]
    limit = RATE_LIMITS["training"][0]
    statuses = [lead_client.post(url, data).status_code for _ in range(limit)]
    assert 429 not in statuses
    refused = lead_client.post(url, data)
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 60
    assert f"Too many training launches, evaluations and int8 exports: at most {limit} a minute" in (
        refused.content.decode()
    )


def test_the_limit_is_one_count_over_all_training_actions_and_per_account(
    django_user_model, project, failed_run, lead_client, queues
):
    from annotation.models import Membership
    from tests.conftest import client_for, make_user

    posts = list(_posts(project, failed_run).values())
    limit = RATE_LIMITS["training"][0]
    for i in range(limit):
        url, data = posts[i % len(posts)]
        assert lead_client.post(url, data).status_code != 429
    url, data = posts[0]
    assert lead_client.post(url, data).status_code == 429
    # Past the limit nothing more is queued: the launch refused above created no run.
    assert TrainingRun.objects.filter(project=project).count() == 1
    # A second lead of the project has a count of their own.
    other = make_user(django_user_model, "lea_second_lead")
    Membership.objects.create(project=project, user=other, role=Membership.Role.LEAD)
    assert client_for(other).post(url, data).status_code == 302


def test_saving_serving_settings_is_not_counted(project, lead_client):
    url = reverse("training:deploy", args=[project.slug])
    limit = RATE_LIMITS["training"][0]
    statuses = {lead_client.post(url, {}).status_code for _ in range(limit + 2)}
    assert 429 not in statuses
