"""A verdict sent while Redis is down, in real Chromium (issue #23): the card stays, a dialog says
the verdict was not saved, and "Try again" sends it once Redis is back."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.models import Review
from tests.browser.conftest import log_in
from tests.browser.test_busy_card import queue  # noqa: F401 - the fixture
from tests.test_outage import redis_down

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_503_on_the_card_keeps_it_and_says_what_was_not_saved(page, queue, artifacts):  # noqa: F811
    log_in(page, "lena", "a-long-password")
    page.goto(reverse("annotation:review", args=["support"]))
    card = page.locator("#card")
    first = card.get_attribute("data-example-id")
    dialog = page.locator("#error-dialog")

    with redis_down():
        page.keyboard.press("Enter")  # accept
        dialog.wait_for(state="visible")
    assert dialog.locator("[data-error-text]").inner_text() == (
        "Redis (sessions and job queues) is not answering, so your verdict on this card was not saved. "
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
