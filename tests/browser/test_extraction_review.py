"""A reviewer corrects an extraction proposal in real Chromium: mouse and keyboard selection,
field keys, Tab and Delete, local undo, Enter; the stored Review is what the card showed."""

from __future__ import annotations

import pytest

from annotation import projects
from annotation.models import Example, Label, Membership, Proposal, Review
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TEXT = "Table for 4 on 12 May at 19:30, name Ana Lopez. Allergic to nuts, please call +44 20 7946 0018."
PEOPLE = {"start": 10, "end": 11, "field": "people"}
DATE = {"start": 15, "end": 21, "field": "date"}

# The screen position of a code-point range of the card's text, for a mouse drag.
DRAG_POINTS = """([start, end]) => {
  const el = document.querySelector("#card article.example .example-text");
  function box(cp) {
    for (const seg of el.querySelectorAll("[data-start]")) {
      const s = +seg.dataset.start, e = +seg.dataset.end;
      if (cp >= s && cp < e) {
        const range = document.createRange();
        range.setStart(seg.firstChild, cp - s);
        range.setEnd(seg.firstChild, cp - s + 1);
        return range.getBoundingClientRect();
      }
    }
  }
  const a = box(start), b = box(end - 1);
  return [a.left + 1, a.top + a.height / 2, b.right - 1, b.top + b.height / 2];
}"""


def test_correct_spans_with_mouse_and_keyboard(page, django_user_model, artifacts):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    reviewer = django_user_model.objects.create_user(username="rui", password="a-long-password")
    project = projects.project_create(
        name="Bookings",
        slug="bookings",
        user=lead,
        task_type="extraction",
        labels=[
            ("people", "How many guests"),
            ("date", "The day of the booking"),
            ("time", "The time of the booking"),
            ("name", "Who booked"),
            ("phone", "A number to call back"),
        ],
    )
    Label.objects.filter(project=project, name="date").update(allows_many=False)
    Label.objects.filter(project=project, name="name").update(color="#6d9dc5")
    Membership.objects.create(project=project, user=reviewer, role="reviewer")
    keys = dict(Label.objects.filter(project=project).values_list("name", "key"))
    example = Example.objects.create(project=project, text=TEXT)
    Proposal.objects.create(
        example=example, agent="teacher:gpt:prompt-v2", value={"spans": [PEOPLE, DATE]}, confidence=0.62
    )
    Example.objects.filter(project=project).sync_queue_fields()
    assert TEXT[37:46] == "Ana Lopez" and TEXT[25:30] == "19:30" and TEXT[78:94] == "+44 20 7946 0018"

    log_in(page, "rui", "a-long-password")
    page.goto("/p/bookings/review/")
    editor = page.locator("[data-span-editor]")
    page.wait_for_selector("[data-span-editor][data-span-count='2']")
    assert page.locator("#card .span-mark").count() == 2  # the proposal, marked in the text

    # Mouse: drag across "na Lo" (inside two words); the field key snaps it to "Ana Lopez".
    x1, y1, x2, y2 = page.evaluate(DRAG_POINTS, [38, 43])
    page.mouse.move(x1, y1)
    page.mouse.down()
    page.mouse.move(x2, y2, steps=6)
    page.mouse.up()
    page.keyboard.press(keys["name"])
    page.wait_for_selector("[data-span-editor][data-span-count='3']")
    assert "Ana Lopez" in page.locator("[data-span-list]").inner_text()

    # Keyboard: → selects a word at a time ("Table", "for", "4", "on", "12", "May", "at", "19"),
    # shift+→ grows the selection (":" then "30"), the field key marks "19:30".
    page.keyboard.press("Escape")
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    assert page.evaluate("window.getSelection().toString()") == "19:30"
    page.keyboard.press(keys["time"])
    page.wait_for_selector("[data-span-editor][data-span-count='4']")

    # The span just marked is focused; with none focused (Esc), Tab goes to the first
    # span (people "4"); Delete removes it; u brings it back, focused; Delete again.
    assert page.locator("[data-span-list] li.is-focused").inner_text().startswith("time")
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    assert page.locator("[data-span-list] li.is-focused").inner_text().startswith("people")
    page.keyboard.press("Delete")
    page.wait_for_selector("[data-span-editor][data-span-count='3']")
    page.keyboard.press("u")
    page.wait_for_selector("[data-span-editor][data-span-count='4']")
    assert page.locator("[data-span-list] li.is-focused").inner_text().startswith("people")
    page.keyboard.press("Delete")
    page.wait_for_selector("[data-span-editor][data-span-count='3']")
    assert page.locator("#card .span-mark.is-focused").inner_text() == "12 May"  # focus moved on
    assert editor.get_attribute("data-changed") == "yes"
    assert "Save corrected spans" in page.locator("[data-span-submit]").inner_text()
    assert Review.objects.count() == 0  # nothing is stored before Enter

    # A last span for the screenshot: the phone number by mouse, focused with Tab.
    x1, y1, x2, y2 = page.evaluate(DRAG_POINTS, [78, 94])
    page.mouse.move(x1, y1)
    page.mouse.down()
    page.mouse.move(x2, y2, steps=6)
    page.mouse.up()
    page.keyboard.press(keys["phone"])
    page.wait_for_selector("[data-span-editor][data-span-count='4']")
    page.keyboard.press("Shift+Tab")
    page.screenshot(path=str(artifacts / "extraction-review.png"), full_page=True)

    page.keyboard.press("Enter")
    page.wait_for_function("() => !document.querySelector('#card').dataset.exampleId")
    stored = Review.objects.get()
    assert stored.reviewer == reviewer and stored.verdict == "correct"
    assert stored.value == {
        "spans": [
            DATE,
            {"start": 25, "end": 30, "field": "time"},
            {"start": 37, "end": 46, "field": "name"},
            {"start": 78, "end": 94, "field": "phone"},
        ]
    }


def test_enter_on_an_untouched_card_is_an_accept(page, django_user_model):
    reviewer = django_user_model.objects.create_user(username="rui", password="a-long-password")
    project = projects.project_create(
        name="Bookings",
        slug="bookings",
        user=reviewer,
        task_type="extraction",
        labels=[("people", ""), ("date", "")],
    )
    example = Example.objects.create(project=project, text=TEXT)
    Proposal.objects.create(example=example, agent="teacher:gpt:prompt-v2", value={"spans": [PEOPLE, DATE]})
    Example.objects.filter(project=project).sync_queue_fields()
    log_in(page, "rui", "a-long-password")
    page.goto("/p/bookings/review/")
    page.wait_for_selector("[data-span-editor][data-span-count='2']")
    page.keyboard.press("Enter")
    page.wait_for_function("() => !document.querySelector('#card').dataset.exampleId")
    stored = Review.objects.get()
    assert stored.verdict == "accept" and stored.value == {"spans": [PEOPLE, DATE]}


def test_adjudicate_two_blind_span_sets(page, django_user_model, artifacts):
    from annotation import review

    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    first = django_user_model.objects.create_user(username="rui", password="a-long-password")
    second = django_user_model.objects.create_user(username="sara", password="a-long-password")
    project = projects.project_create(
        name="Bookings",
        slug="bookings",
        user=lead,
        task_type="extraction",
        labels=[("people", ""), ("date", ""), ("time", ""), ("name", ""), ("phone", "")],
    )
    keys = dict(Label.objects.filter(project=project).values_list("name", "key"))
    example = Example.objects.create(project=project, text=TEXT)
    gold = review.gold_draw(project=project, size=1, seed=1)
    name = {"start": 37, "end": 46, "field": "name"}
    review.gold_label_blind(gold_set=gold, example=example, user=first, value={"spans": [PEOPLE, DATE, name]})
    review.gold_label_blind(
        gold_set=gold, example=example, user=second, value={"spans": [PEOPLE, {**DATE, "end": 17}, name]}
    )

    log_in(page, "lena", "a-long-password")
    page.goto("/p/bookings/gold/adjudicate/")
    # The final answer starts from what both marked (people, name); each side is marked too.
    page.wait_for_selector("[data-span-editor][data-span-count='2']")
    assert page.locator("[data-span-view='0'] .span-mark.is-only").inner_text() == "12 May"
    assert page.locator("[data-span-view='1'] .span-mark.is-only").inner_text() == "12"
    page.keyboard.press("[")  # edit from reviewer 1's spans
    page.wait_for_selector("[data-span-editor][data-span-count='3']")
    x1, y1, x2, y2 = page.evaluate(DRAG_POINTS, [78, 94])
    page.mouse.move(x1, y1)
    page.mouse.down()
    page.mouse.move(x2, y2, steps=6)
    page.mouse.up()
    page.keyboard.press(keys["phone"])
    page.wait_for_selector("[data-span-editor][data-span-count='4']")
    page.screenshot(path=str(artifacts / "extraction-adjudicate.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=No disagreements left")
    final = Review.objects.get(kind="adjudication")
    assert final.reviewer == lead
    assert final.value == {"spans": [PEOPLE, DATE, name, {"start": 78, "end": 94, "field": "phone"}]}


def test_the_blind_card_starts_empty_and_snaps_like_the_server(page, django_user_model):
    """spans.js's snapping mirrors tasks/extraction/spans.snap_to_words, accents and emoji included."""
    import random

    from annotation import review
    from tasks.extraction.spans import snap_to_words

    reviewer = django_user_model.objects.create_user(username="rui", password="a-long-password")
    project = projects.project_create(
        name="Bookings", slug="bookings", user=reviewer, task_type="extraction", labels=[("people", "")]
    )
    Example.objects.create(project=project, text=TEXT)
    review.gold_draw(project=project, size=1, seed=1)
    log_in(page, "rui", "a-long-password")
    page.goto("/p/bookings/gold/label/")
    page.wait_for_selector("[data-span-editor][data-span-count='0']")
    assert "people: 4" not in page.content()  # blind: no proposal anywhere

    texts = [
        TEXT,
        "Café de l'Opéra 👩‍👩‍👧 x2, 13:00pm — «Zoë»  ",
        "Cafe\u0301 for 3\u20e3 at 7 p.m.\nname: 李小龙_2",
    ]
    rng = random.Random(7)
    cases = [(t, rng.randrange(len(t) + 1), rng.randrange(len(t) + 1)) for t in texts for _ in range(60)]
    got = page.evaluate(
        "cases => cases.map(([t, s, e]) => window.distillSpans.snapToWords(t, s, e))",
        [list(c) for c in cases],
    )
    expected = [list(snap_to_words(t, s, e)) for t, s, e in cases]
    assert [tuple(g) for g in got] == [tuple(x) for x in expected]


def test_the_card_shows_each_proposed_spans_confidence(page, django_user_model):
    reviewer = django_user_model.objects.create_user(username="rui", password="a-long-password")
    project = projects.project_create(
        name="Bookings",
        slug="bookings",
        user=reviewer,
        task_type="extraction",
        labels=[("people", ""), ("date", "")],
    )
    example = Example.objects.create(project=project, text=TEXT)
    spans = [{**PEOPLE, "confidence": 0.912}, DATE]  # the date came without one
    Proposal.objects.create(
        example=example,
        agent="teacher:gpt:prompt-v2",
        value={"spans": spans},
        confidence=0.912,
        confidence_method="logprobs",
    )
    Example.objects.filter(project=project).sync_queue_fields()
    log_in(page, "rui", "a-long-password")
    page.goto("/p/bookings/review/")
    page.wait_for_selector("[data-span-editor][data-span-count='2']")
    shown = page.locator("[data-span-confidence]")
    assert shown.count() == 1 and shown.inner_text() == "0.91"
    # Removing the span removes its confidence with it.
    page.locator("[data-span-list] li:has([data-span-confidence]) .span-remove").click()
    assert page.locator("[data-span-confidence]").count() == 0
    assert page.locator("[data-span-list] li").count() == 1
