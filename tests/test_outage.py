"""A database or Redis that does not answer: a 503 that says so (a page, or JSON for the API and
htmx), with Retry-After, never a traceback; a POST is told whether what it sent was saved (#23).

The outage is real: the connection is pointed at a closed loopback port (PostgreSQL) or a file
that cannot be opened (SQLite), the cache at a closed Redis port.
"""

from __future__ import annotations

import socket
import sqlite3
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connections
from django.db.utils import OperationalError
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse

from annotation import review
from annotation.models import Example, Proposal, Review
from distillapp import views
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HX-Request": "true"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def database_down():
    connection = connections["default"]
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-outage-dir/db.sqlite3"
    else:
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port()))
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)


def redis_down():
    return override_settings(
        CACHES={
            name: {**config, "LOCATION": f"redis://127.0.0.1:{closed_port()}/0"}
            for name, config in settings.CACHES.items()
        }
    )


def served_card(project, reviewer) -> Example:
    example = Example.objects.create(project=project, text="my card was charged twice")
    Proposal.objects.create(example=example, agent="teacher:m:v1", value="Billing", confidence=0.4)
    Example.objects.filter(project=project).sync_queue_fields()
    served = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
    assert served == example
    return example


def assert_no_traceback(response) -> None:
    body = response.content.decode()
    assert "Traceback" not in body and "OperationalError" not in body and "ConnectionError" not in body


def test_a_page_while_the_database_is_down_is_a_503_page_saying_so(project, reviewer):
    client = client_for(reviewer)
    with database_down():
        response = client.get(reverse("annotation:review", args=[project.slug]))
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "The database is not answering. Nothing you did was lost: try again in a few seconds." in html
    assert 'class="topbar"' in html and "data-error-reason" in html
    assert_no_traceback(response)
    # Back up: the same page answers.
    assert client.get(reverse("annotation:review", args=[project.slug])).status_code == 200


def test_a_verdict_sent_while_the_database_is_down_is_not_saved_and_says_so(project, reviewer):
    example = served_card(project, reviewer)
    client = client_for(reviewer)
    url = reverse("annotation:review-act", args=[project.slug])
    with database_down():
        response = client.post(url, {"example_id": example.pk, "verdict": "accept"}, headers=HTMX)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    body = response.json()
    assert body["error"] == "unavailable"
    assert body["message"] == (
        "The database is not answering, so your verdict on this card was not saved. "
        "Nothing else was lost: send it again in a few seconds."
    )
    assert_no_traceback(response)
    assert not Review.objects.exists()
    # The card is still the reviewer's: sent again, it is stored once.
    assert client.post(url, {"example_id": example.pk, "verdict": "accept"}, headers=HTMX).status_code == 200
    assert Review.objects.filter(example=example).count() == 1


def test_a_verdict_saved_before_the_database_stopped_says_it_was_saved(project, reviewer, monkeypatch):
    example = served_card(project, reviewer)
    client = client_for(reviewer)
    real_next = review.review_next
    outage = database_down()

    def database_stops_before_the_next_card(**kwargs):
        outage.__enter__()
        return real_next(**kwargs)

    monkeypatch.setattr(review, "review_next", database_stops_before_the_next_card)
    try:
        response = client.post(
            reverse("annotation:review-act", args=[project.slug]),
            {"example_id": example.pk, "verdict": "accept"},
            headers=HTMX,
        )
    finally:
        outage.__exit__(None, None, None)
    assert response.status_code == 503
    assert response.json()["message"] == (
        "The database is not answering. Your verdict on this card was saved; only the page after it "
        "could not be shown. Reload in a few seconds."
    )
    assert Review.objects.filter(example=example).count() == 1


def test_a_verdict_whose_commit_met_the_outage_says_it_may_have_been_saved(project, reviewer):
    # The server dies during COMMIT (a deferred trigger ends its own backend): it may have
    # committed before dying, so "not saved" could be a lie (the fault bench saw one).
    if connections["default"].vendor != "postgresql":
        pytest.skip("a backend that ends itself at commit needs PostgreSQL")
    example = served_card(project, reviewer)
    client = client_for(reviewer)
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION outage_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE CONSTRAINT TRIGGER outage_at_commit AFTER INSERT ON annotation_review "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION outage_at_commit()"
        )
    try:
        response = client.post(
            reverse("annotation:review-act", args=[project.slug]),
            {"example_id": example.pk, "verdict": "accept"},
            headers=HTMX,
        )
    finally:
        connections["default"].close()
        with connections["default"].cursor() as cursor:
            cursor.execute("DROP TRIGGER outage_at_commit ON annotation_review")
            cursor.execute("DROP FUNCTION outage_at_commit()")
    assert response.status_code == 503
    assert response.json()["message"] == (
        "The database is not answering: it stopped as it was saving, so your verdict on this card may or "
        "may not have been saved; sending it again is safe: a verdict is never stored twice. "
        "Reload in a few seconds to see."
    )


def test_a_plain_form_post_gets_the_page_naming_what_was_not_saved(project, reviewer):
    example = served_card(project, reviewer)
    client = client_for(reviewer)
    with database_down():
        response = client.post(
            reverse("annotation:review-act", args=[project.slug]),
            {"example_id": example.pk, "verdict": "accept"},
        )
    assert response.status_code == 503
    html = response.content.decode()
    assert "so your verdict on this card was not saved" in html
    assert "history.back()" in html
    assert_no_traceback(response)


def test_the_api_answers_503_in_its_own_error_shape(project):
    client = Client()
    with database_down():
        response = client.post(
            reverse("api-predict", args=[project.slug]),
            {"texts": ["hello"]},
            content_type="application/json",
            headers={"Authorization": "Bearer dst_not_checked_while_down"},
        )
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    error = response.json()["error"]
    assert error["code"] == "unavailable" and error["type"] == "server_error"
    assert error["message"].startswith("The database is not answering")
    assert_no_traceback(response)


def test_signing_in_while_the_database_is_down_says_you_are_not_signed_in(reviewer):
    client = Client()
    with database_down():
        assert client.get(reverse("login")).status_code == 200  # the form needs no database
        response = client.post(reverse("login"), {"username": "rui_reviewer", "password": "pw-rui_reviewer"})
    assert response.status_code == 503
    assert "so you are not signed in" in response.content.decode()
    assert_no_traceback(response)


def test_signed_in_pages_and_verdicts_work_while_redis_is_down(project, reviewer, caplog):
    # Sessions live in the database too; only their reads go through Redis (distillapp/sessions.py).
    example = served_card(project, reviewer)
    client = client_for(reviewer)
    url = reverse("annotation:review", args=[project.slug])
    with redis_down():
        page = client.get(url)
        act = client.post(
            reverse("annotation:review-act", args=[project.slug]),
            {"example_id": example.pk, "verdict": "accept"},
            headers=HTMX,
        )
    assert page.status_code == 200 and "my card was charged twice" in page.content.decode()
    assert act.status_code == 200, act.content[:300]
    assert Review.objects.filter(example=example, reviewer=reviewer).count() == 1
    said = [r.getMessage() for r in caplog.records if r.name == "distillapp.sessions"]
    assert said and all(m.startswith("Sessions read from the database: Redis is not answering") for m in said)


def test_signing_out_while_redis_is_down_is_a_503_page_or_json(project, reviewer):
    # A cached copy of the session left in Redis would sign the user in again once it is back.
    client = client_for(reviewer)
    with redis_down():
        response = client.post(reverse("logout"))
        htmx_response = client.post(reverse("logout"), headers=HTMX)
    assert response.status_code == 503
    assert "Redis (sessions and job queues) is not answering" in response.content.decode()
    assert_no_traceback(response)
    response = htmx_response
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"


def test_an_outage_outside_a_view_is_a_503_too(caplog):
    # handler500 sees what a middleware raised after the view (the session saved at the end).
    request = RequestFactory().get("/p/tickets/review/")
    try:
        raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")
    except OperationalError:
        response = views.server_error(request)
    assert response.status_code == 503
    assert "The database is not answering" in response.content.decode()
    assert [r.getMessage() for r in caplog.records] == [
        "503 GET /p/tickets/review/: OperationalError: connection to server at 127.0.0.1 failed: Connection refused"
    ]
    assert not any(r.exc_info for r in caplog.records)


def test_a_missing_sqlite_table_is_a_bug_not_an_outage():
    try:
        raise OperationalError("no such table: annotation_example") from sqlite3.OperationalError()
    except OperationalError as exc:
        assert not views.is_outage(exc)
