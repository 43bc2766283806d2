"""Outages on the review card, in real Chromium (issue #23): while Redis is down a verdict is
still saved (sessions are read from the database); while the database is down the card stays, a
dialog says the verdict was not saved, and "Try again" sends it once the database is back."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import connection
from django.urls import reverse

from annotation.models import Review
from tests.browser.conftest import log_in
from tests.browser.test_busy_card import queue  # noqa: F401 - the fixture
from tests.test_outage import database_down, redis_down

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_verdict_while_redis_is_down_is_saved_and_the_next_card_comes(page, queue):  # noqa: F811
    log_in(page, "lena", "a-long-password")
    page.goto(reverse("annotation:review", args=["support"]))
    card = page.locator("#card")
    first = card.get_attribute("data-example-id")
    with redis_down():
        page.keyboard.press("Enter")  # accept
        page.wait_for_function("f => document.querySelector('#card').dataset.exampleId !== f", arg=first)
    assert not page.locator("#error-dialog").is_visible()
    assert [(r.example_id, r.verdict) for r in Review.objects.all()] == [(int(first), "accept")]


@contextmanager
def database_down_for_the_server():
    """The live server's connection is ended by PostgreSQL and every new one is refused, as while
    the server restarts (its thread keeps its own connection: closing ours is not enough)."""
    import psycopg

    params = connection.get_connection_params()
    with database_down():
        with psycopg.connect(**params, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        yield


@pytest.mark.skipif(connection.vendor != "postgresql", reason="ends the server's connection: PostgreSQL")
def test_a_503_on_the_card_keeps_it_and_says_what_was_not_saved(page, queue, artifacts):  # noqa: F811
    log_in(page, "lena", "a-long-password")
    page.goto(reverse("annotation:review", args=["support"]))
    card = page.locator("#card")
    first = card.get_attribute("data-example-id")
    dialog = page.locator("#error-dialog")

    with database_down_for_the_server():
        page.keyboard.press("Enter")  # accept
        dialog.wait_for(state="visible", timeout=30_000)
    assert dialog.locator("[data-error-text]").inner_text() == (
        "The database is not answering, so your verdict on this card was not saved. "
        "Nothing else was lost: send it again in a few seconds."
    )
    assert card.get_attribute("data-example-id") == first  # the card stays
    assert card.get_attribute("aria-busy") is None
    assert not dialog.locator("[data-reload]").is_visible()
    page.screenshot(path=str(artifacts / "outage-card.png"))
    assert not Review.objects.exists()

    dialog.get_by_role("button", name="Try again").click()
    page.wait_for_function("f => document.querySelector('#card').dataset.exampleId !== f", arg=first)
    assert not dialog.is_visible()
    assert [(r.example_id, r.verdict) for r in Review.objects.all()] == [(int(first), "accept")]
