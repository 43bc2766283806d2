"""A reviewer edits a proposed summary in real Chromium: `e` edits, the word diff and the
grounding marks follow the edit, Ctrl+Enter saves it as a correction (with a rating), `u`
undoes, Enter accepts the next card unchanged; blind gold labelling saves with Ctrl+Enter."""

from __future__ import annotations

import pytest

from annotation import projects, review
from annotation.models import Example, Membership, Proposal, Review
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CALL = "Agent: Hello.\nCustomer: Parcel 771 from Leeds is late.\nAgent: It arrives Friday."
PROPOSED = "Parcel 771 is late and arrives Friday."


@pytest.fixture
def calls(django_user_model):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    reviewer = django_user_model.objects.create_user(username="rui", password="a-long-password")
    project = projects.project_create(
        name="Calls", slug="calls", user=lead, task_type="summarization", task_options={"target_length": 1}
    )
    Membership.objects.create(project=project, user=reviewer, role="reviewer")
    first = Example.objects.create(project=project, text=CALL)
    second = Example.objects.create(
        project=project, text="Agent: Hi.\nCustomer: Cancel my gym plan.\nAgent: Done."
    )
    Proposal.objects.create(
        example=first, agent="teacher:gpt:prompt-v1", value={"summary": PROPOSED}, confidence=0.2
    )
    Proposal.objects.create(
        example=second,
        agent="teacher:gpt:prompt-v1",
        value={"summary": "The gym plan was cancelled."},
        confidence=0.3,
    )
    Example.objects.filter(project=project).sync_queue_fields()
    return project, first, second


def settled(page, example) -> None:
    """Wait until the card of `example` is in and htmx has finished wiring it."""
    page.wait_for_selector(f'#card[data-example-id="{example.pk}"]')
    page.wait_for_function("!document.querySelector('.htmx-settling, .htmx-swapping, .htmx-request')")


def test_edit_with_the_keyboard_shows_the_diff_and_made_up_facts_then_saves(page, calls, artifacts):
    project, first, second = calls
    log_in(page, "rui", "a-long-password")
    page.goto(f"/p/{project.slug}/review/")
    box = page.locator("#card [data-summary-input]")
    assert box.input_value() == PROPOSED
    assert page.locator("#card [data-summary-length]").inner_text() == "7 words · 1 sentence"

    page.keyboard.press("e")
    assert page.evaluate("document.activeElement.matches('[data-summary-input]')")
    page.keyboard.type(" Paid by Maria, $40.")
    diff = page.locator("#card [data-summary-diff]")
    assert diff.is_visible()
    assert diff.locator("ins").all_inner_texts() == ["Paid", "by", "Maria,", "$40."]
    marks = page.locator("#card [data-summary-unsupported] mark").all_inner_texts()
    assert "Maria" in marks and "40" in marks
    assert "Save edited summary" in page.locator("#card [data-summary-submit]").inner_text()
    page.keyboard.press("Escape")
    page.keyboard.press("4")  # the rating
    page.screenshot(path=str(artifacts / "summarization-review-edit.png"), full_page=True)
    page.locator("#card [data-summary-input]").focus()
    page.keyboard.press("Control+Enter")
    settled(page, second)

    saved = Review.objects.get(example=first)
    assert saved.verdict == "correct"
    assert saved.value == {"summary": f"{PROPOSED} Paid by Maria, $40.", "rating": 4}

    # Undo brings the first card back; Enter on it unchanged is an accept.
    page.keyboard.press("u")
    settled(page, first)
    assert not Review.objects.filter(example=first).exists()
    page.keyboard.press("Enter")
    settled(page, second)
    accepted = Review.objects.get(example=first)
    assert accepted.verdict == "accept" and accepted.value == {"summary": PROPOSED}


def test_blind_gold_summary_is_written_and_saved_with_ctrl_enter(page, calls, django_user_model):
    project, first, _ = calls
    review.gold_draw(project=project, size=1)
    draft = review.gold_draft(project)
    item = draft.items.get()
    log_in(page, "rui", "a-long-password")
    page.goto(f"/p/{project.slug}/gold/label/")
    box = page.locator("#card [data-summary-input]")
    assert box.input_value() == ""  # blind: no proposal shown
    box.click()
    page.keyboard.type("The parcel is late.")
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        "!document.querySelector('#card [data-summary-input]') || document.querySelector('#card [data-summary-input]').value === ''"
    )
    blind = Review.objects.get(example_id=item.example_id, kind="blind")
    assert blind.value == {"summary": "The parcel is late."}
