"""Blind gold labelling and adjudication with the keyboard, in real Chromium: "none of these"."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation import review
from annotation.models import Example, Membership, Proposal, Review
from tests.browser.conftest import log_in
from tests.conftest import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_blind_reject_and_skip_by_keyboard_then_adjudicate(page, django_user_model, artifacts):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    rui = django_user_model.objects.create_user(username="rui", password="a-long-password")
    sam = django_user_model.objects.create_user(username="sam", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    for user in (rui, sam):
        Membership.objects.create(project=project, user=user, role="reviewer")
    texts = [
        "WIN A FREE CRUISE!!! click here now",
        "I was charged twice for my subscription",
        "The app freezes when I upload a photo",
    ]
    for text in texts:
        example = Example.objects.create(project=project, text=text)
        Proposal.objects.create(example=example, agent="teacher:m:p1", value="Billing", confidence=0.5)
    gold = review.gold_draw(project=project, size=3, seed=1)
    by_text = {e.text: e for e in Example.objects.filter(project=project)}

    log_in(page, "rui", "a-long-password")
    page.goto("/p/support/gold/label/")

    def current() -> str:
        return page.locator("#card").get_attribute("data-example-id") or ""

    def text() -> str:
        return page.locator("#card .example-text").inner_text()

    def press(key: str) -> None:
        before = current()
        page.keyboard.press(key)
        page.wait_for_function(
            "before => (document.querySelector('#card').dataset.exampleId || '') !== before", arg=before
        )

    assert page.locator('#card [data-key="x"]').is_visible()
    answers = {texts[0]: "x", texts[1]: "1", texts[2]: "2"}
    first = text()
    press("s")  # not sure yet: it comes back after the others
    assert not Review.objects.exists()
    seen = []
    while current():
        seen.append(text())
        if seen[-1] == texts[0]:
            page.screenshot(path=str(artifacts / "gold-blind-reject.png"), full_page=True)
        press(answers[seen[-1]])
    assert seen[-1] == first and sorted(seen) == sorted(texts)

    spam = by_text[texts[0]]
    mine = {r.example_id: (r.verdict, r.value) for r in Review.objects.filter(reviewer=rui, kind="blind")}
    assert mine[spam.pk] == ("reject", None)
    assert mine[by_text[texts[1]].pk] == ("correct", "Billing")

    # The second reviewer thinks the spam is "Other": the lead settles it with x.
    for text_, label in [(texts[0], "Other"), (texts[1], "Billing"), (texts[2], "Technical support")]:
        review.gold_label_blind(gold_set=gold, example=by_text[text_], user=sam, label=label)
    page.context.clear_cookies()
    log_in(page, "lena", "a-long-password")
    page.goto("/p/support/gold/adjudicate/")
    assert "Disagreement 1 of 1" in page.locator('[data-count="adjudication-position"]').inner_text()
    assert "Reject: no label fits" in page.locator("#card .proposals").inner_text()
    page.screenshot(path=str(artifacts / "gold-adjudicate-reject.png"), full_page=True)
    page.keyboard.press("x")
    page.get_by_text("No disagreements left").wait_for()
    assert Review.objects.get(kind="adjudication").verdict == "reject"
    status = review.gold_status(gold)
    assert (status["final"], status["rejected"]) == (3, 1)


def test_the_evaluation_page_warns_when_gold_was_trained_on(
    page, django_user_model, artifacts, tmp_path, monkeypatch
):
    from annotation.models import GoldSetItem
    from tasks.classification import student as classification_student
    from training import services
    from training.models import TrainingRun
    from training.services import runs

    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    examples = []
    for i in range(8):
        example = Example.objects.create(project=project, text=f"my invoice {i} is wrong")
        Proposal.objects.create(example=example, agent="teacher:m:p1", value="Billing", confidence=0.9)
        examples.append(example)
    Example.objects.filter(project=project).sync_queue_fields()
    run = TrainingRun.objects.create(
        project=project, number=1, status="succeeded", artifact_path=str(tmp_path)
    )
    rows = services.training_set(project=project)
    runs._write_manifest(tmp_path, run, rows[:6], [], ["Billing", "Technical support", "Other"], {})
    fresh = Example.objects.create(project=project, text="the app crashes on login")
    gold = review.gold_draw(project=project, size=0)
    for example, label in [(examples[0], "Billing"), (examples[1], "Billing"), (fresh, "Technical support")]:
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=label)
    gold.freeze(user=lead)
    monkeypatch.setattr(
        classification_student,
        "predict",
        lambda model_dir, texts, **kw: (["Billing"] * len(texts), [0.9] * len(texts)),
    )
    evaluation = services.evaluate_run(run=run)

    log_in(page, "lena", "a-long-password")
    page.wait_for_url(lambda url: "/login/" not in url)
    page.goto(reverse("training:evaluation", args=[project.slug, evaluation.pk]))
    warning = page.locator('[data-warning="gold-overlap"]')
    assert "2 of 3 gold items were in run 1's training data" in warning.inner_text()
    page.screenshot(path=str(artifacts / "evaluation-gold-overlap.png"), full_page=True)
