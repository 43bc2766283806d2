"""Expensive actions are rate-limited per account (issue #23)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation import review
from annotation.models import Example, QualityRun
from annotation.views._common import RATE_LIMITS

pytestmark = pytest.mark.django_db


def test_more_like_this_past_the_limit_is_a_429_for_that_account_only(
    project, reviewer, reviewer_client, lead_client, monkeypatch
):
    monkeypatch.setattr(
        "annotation.views.review.similar_to",
        lambda example: review.Similar(ids=[example.pk], ready=1, total=1, has_card=True),
    )
    example = Example.objects.create(project=project, text="charged twice")
    url = reverse("annotation:review-similar", args=[project.slug])
    limit = RATE_LIMITS["similar"][0]
    for _ in range(limit):
        assert reviewer_client.post(url, {"example_id": example.pk}).status_code == 302
    refused = reviewer_client.post(url, {"example_id": example.pk})
    assert refused.status_code == 429 and int(refused["Retry-After"]) <= 60
    assert "at most 30 a minute" in refused.content.decode()
    # Another account has its own count.
    assert lead_client.post(url, {"example_id": example.pk}).status_code == 302
    # The next minute counts afresh.
    monkeypatch.setattr("annotation.views._common._rate_clock", lambda: 1_800_000_090.0)
    assert reviewer_client.post(url, {"example_id": example.pk}).status_code == 302


def test_quality_runs_past_the_limit_start_nothing(project, lead_client, queues):
    url = reverse("annotation:review-quality", args=[project.slug])
    limit = RATE_LIMITS["quality"][0]
    statuses = [lead_client.post(url).status_code for _ in range(limit + 3)]
    assert statuses[-3:] == [429, 429, 429]
    assert QualityRun.objects.filter(project=project).count() <= limit


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("annotation:labeling-start", "teacher"),
        ("annotation:synthetic-start", "teacher"),
        ("annotation:import-upload", "import"),
    ],
)
def test_teacher_runs_and_imports_are_limited(project, lead, lead_client, name, action, queues):
    url = reverse(name, args=[project.slug])
    limit = RATE_LIMITS[action][0]
    statuses = [lead_client.post(url, {}).status_code for _ in range(limit + 1)]
    assert 429 not in statuses[:limit] and statuses[-1] == 429


def test_the_count_is_shared_through_a_redis_cache(project, lead_client, settings, queues):
    """With Django's cache on the app's Redis, every web process counts into the same key."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.RQ_QUEUES["default"]["URL"],
            "KEY_PREFIX": "distill-test",
        }
    }
    url = reverse("annotation:review-quality", args=[project.slug])
    limit = RATE_LIMITS["quality"][0]
    statuses = [lead_client.post(url).status_code for _ in range(limit + 1)]
    assert 429 not in statuses[:limit] and statuses[-1] == 429
