"""Predictions go on while PostgreSQL restarts: the request path serves its cached token, config
and version past their TTL while the database does not answer, and the log rows wait (#23)."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from tests.test_outage import database_down
from tests.training import test_serving
from tests.training.test_serving import call, set_threshold
from training import serving
from training.models import PredictionLog
from training.serving import cache as serving_cache

pytestmark = pytest.mark.django_db(transaction=True)

live = test_serving.live  # the fixture: a promoted tiny classifier and a token


def test_predictions_go_on_while_the_database_is_down_and_their_logs_are_written_after(
    project, live, monkeypatch, caplog
):
    version, raw = live
    set_threshold(version, 0.0)
    monkeypatch.setattr(settings, "SERVING_LOG_FLUSH_SECONDS", 0.2)  # written by the background thread
    now = [1000.0]
    monkeypatch.setattr(serving_cache, "_clock", lambda: now[0])
    assert call(raw, project.slug, {"texts": ["before the restart"]})[0] == 200
    now[0] += settings.SERVING_CACHE_SECONDS + 1  # past the TTL: the next request asks the database
    with database_down():
        status, body = call(raw, project.slug, {"texts": ["during the restart"]})
    assert status == 200, body
    assert body["predictions"][0]["route"] == "student"
    assert any(
        "from the cache" in r.getMessage() for r in caplog.records if r.name == "training.serving.cache"
    )

    # Past the stale window the process no longer answers from memory: a 503 that says why.
    now[0] += serving_cache.STALE_IF_DATABASE_DOWN_SECONDS
    with database_down():
        status, body = call(raw, project.slug, {"texts": ["much later"]})
    assert status == 503 and body["error"]["code"] == "unavailable", body

    # The database is back: the writer's retries log both answered requests, once each.
    deadline = time.monotonic() + 15
    while PredictionLog.objects.filter(version=version).count() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    serving.prediction_logs.flush()
    assert PredictionLog.objects.filter(version=version).count() == 2
