"""A reviewer works the queue with the keyboard only, in real Chromium."""

from __future__ import annotations

import pytest

from annotation.models import Example, Membership, Proposal, Review
from tests.browser.conftest import log_in
from tests.conftest import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_ten_items_with_the_keyboard_only(page, django_user_model, artifacts):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    reviewer = django_user_model.objects.create_user(username="rui", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    # No random audit cards here: this test follows the confidence order card by card
    # (tests/annotation/test_audit.py covers the audit draws).
    project.audit_share = 0
    project.save()
    Membership.objects.create(project=project, user=reviewer, role="reviewer")
    for i in range(12):
        example = Example.objects.create(
            project=project, text=f"Ticket {i:02d}: my invoice shows a wrong amount"
        )
        # Confidence rises with i, so the queue shows them in this order.
        Proposal.objects.create(
            example=example, agent="teacher:m:prompt-v1", value="Billing", confidence=0.2 + i / 20
        )
    Example.objects.filter(project=project).sync_queue_fields()

    log_in(page, "rui", "a-long-password")
    page.goto("/p/support/review/")

    def current() -> str:
        return page.locator("#card").get_attribute("data-example-id")

    def press(key: str) -> None:
        before = current()
        page.keyboard.press(key)
        page.wait_for_function(
            "before => document.querySelector('#card').dataset.exampleId !== before", arg=before
        )

    keys = ["Enter", "a", "2", "x", "3", "Enter", "1", "x", "Enter", "2"]
    for key in keys:
        press(key)
    page.screenshot(path=str(artifacts / "review-queue.png"), full_page=True)
    assert page.locator("[data-count=reviewed-today]").inner_text() == "10"
    press("u")  # undo the last verdict (the "2" on ticket 09)
    assert Example.objects.get(pk=int(current())).text.startswith("Ticket 09")
    press("s")  # skip it

    reviews = {r.example.text[:9]: (r.verdict, r.value) for r in Review.objects.select_related("example")}
    assert reviews == {
        "Ticket 00": ("accept", "Billing"),
        "Ticket 01": ("accept", "Billing"),
        "Ticket 02": ("correct", "Technical support"),
        "Ticket 03": ("reject", None),
        "Ticket 04": ("correct", "Other"),
        "Ticket 05": ("accept", "Billing"),
        "Ticket 06": ("accept", "Billing"),  # key 1 is Billing, the proposed label
        "Ticket 07": ("reject", None),
        "Ticket 08": ("accept", "Billing"),
    }
    assert all(r.reviewer == reviewer and r.seconds_spent is not None for r in Review.objects.all())
    assert current() == str(Example.objects.get(text__startswith="Ticket 10").pk)


def test_help_overlay_opens_with_question_mark(page, django_user_model):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    Example.objects.create(project=project, text="hello")
    log_in(page, "lena", "a-long-password")
    page.goto("/p/support/review/")
    assert page.locator("#keys-help").is_hidden()
    page.keyboard.press("?")
    assert page.locator("#keys-help").is_visible()
    page.keyboard.press("Escape")
    assert page.locator("#keys-help").is_hidden()
