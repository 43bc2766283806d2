"""A reviewer signed out in another tab presses Enter: a sign-in dialog over the same card, and
the verdict is recorded once signed in again (no login page inside the card, no 405)."""

from __future__ import annotations

import pytest

from annotation.models import Example, Membership, Proposal, Review
from tests.browser.conftest import log_in
from tests.conftest import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_a_verdict_after_sign_out_is_sent_once_signed_in(
    browser, live_server, django_user_model, artifacts, size
):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    reviewer = django_user_model.objects.create_user(username="rui", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    project.audit_share = 0  # follow the confidence order card by card
    project.save()
    Membership.objects.create(project=project, user=reviewer, role="reviewer")
    for i in range(4):
        example = Example.objects.create(project=project, text=f"Ticket {i}: my invoice shows a wrong amount")
        Proposal.objects.create(
            example=example, agent="teacher:m:prompt-v1", value="Billing", confidence=0.2 + i / 10
        )
    Example.objects.filter(project=project).sync_queue_fields()

    context = browser.new_context(base_url=live_server.url, viewport=SIZES[size])
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, "rui", "a-long-password")
    page.goto("/p/support/review/")
    first = page.locator("#card").get_attribute("data-example-id")

    # Another tab of the same browser signs out.
    other = context.new_page()
    other.goto("/p/support/review/")
    other.get_by_role("button", name="Sign out rui").click()
    other.wait_for_url("**/login/")
    other.close()

    page.keyboard.press("Enter")
    dialog = page.locator("#signin-dialog")
    dialog.wait_for(state="visible")
    # The card stays as it was; no login page was swapped into it, nothing was recorded.
    assert page.locator("#card").get_attribute("data-example-id") == first
    assert page.locator("#card .topbar, #card input[name=password]").count() == 0
    assert not Review.objects.exists()
    page.screenshot(path=str(artifacts / f"signed-out-dialog-{size}.png"))

    # A wrong password says so and keeps the dialog.
    dialog.locator("input[name=password]").fill("wrong")
    dialog.get_by_role("button", name="Sign in and continue").click()
    error = dialog.locator("[data-signin-error]")
    error.wait_for(state="visible")
    assert "correct username and password" in error.inner_text()

    dialog.locator("input[name=password]").fill("a-long-password")
    dialog.get_by_role("button", name="Sign in and continue").click()
    page.wait_for_function("first => document.querySelector('#card').dataset.exampleId !== first", arg=first)
    assert not dialog.is_visible()
    review = Review.objects.get()
    assert (review.example_id, review.verdict, review.reviewer.username) == (int(first), "accept", "rui")

    # The page now carries the new CSRF token: the next verdict goes through as usual.
    second = page.locator("#card").get_attribute("data-example-id")
    page.keyboard.press("x")
    page.wait_for_function(
        "second => document.querySelector('#card').dataset.exampleId !== second", arg=second
    )
    assert Review.objects.get(example_id=int(second)).verdict == "reject"
    page.screenshot(path=str(artifacts / f"signed-in-again-{size}.png"))
    context.close()


def test_a_verdict_the_server_refuses_says_why_over_the_card(page, django_user_model, artifacts):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    reviewer = django_user_model.objects.create_user(username="rui", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    membership = Membership.objects.create(project=project, user=reviewer, role="reviewer")
    example = Example.objects.create(project=project, text="My invoice shows a wrong amount")
    Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value="Billing", confidence=0.3)
    Example.objects.filter(project=project).sync_queue_fields()
    log_in(page, "rui", "a-long-password")
    page.goto("/p/support/review/")

    membership.delete()  # a lead removes the reviewer while the card is open
    page.keyboard.press("Enter")
    dialog = page.locator("#error-dialog")
    dialog.wait_for(state="visible")
    assert "No such project." in dialog.inner_text()
    assert page.locator("#card").get_attribute("data-example-id") == str(example.pk)
    page.screenshot(path=str(artifacts / "refused-verdict-dialog.png"))
