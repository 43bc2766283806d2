"""The launch form's run kinds and recommendation, the review page's rounds and "more like
this" key, and the "Where review pays" page, as a lead uses them in real Chromium.

Screenshots go to test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation import jobs, review
from annotation.models import Example, GoldSet, Proposal, Review, SimilarityIndex
from tests.browser.conftest import log_in
from tests.conftest import make_project, make_user
from training.models import Evaluation, TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def seed(project, reviewer, n: int = 30) -> list[Example]:
    labels = list(project.labels.values_list("name", flat=True))
    texts = [
        "my card payment was declined at the shop",
        "the card payment failed in the store",
        "how do I change my home address",
        "I moved house, update my address please",
        "refund for the double charge please",
    ]
    examples = []
    for i in range(n):
        example = Example.objects.create(project=project, text=f"{texts[i % len(texts)]} ({i})")
        Proposal.objects.create(
            example=example, agent="teacher:m:v1", value=labels[i % 2], confidence=0.3 + i / 100
        )
        examples.append(example)
    Example.objects.filter(project=project).sync_queue_fields()
    # 20 audit verdicts, the teacher wrong on 15: a weak teacher.
    for i, example in enumerate(examples[:20]):
        proposal = example.proposals.get()
        right = i < 5
        Review.objects.create(
            example=example,
            reviewer=reviewer,
            proposal=proposal,
            verdict="accept" if right else "correct",
            value=proposal.value if right else labels[(i + 1) % 2],
            is_audit=True,
            queue_order="random",
            seconds_spent=12,
        )
    Example.objects.filter(pk__in=[e.pk for e in examples[:20]]).update(review_state="reviewed")
    return examples


def test_launch_form_switches_fields_by_kind_and_starts_from_the_recommendation(
    page, django_user_model, artifacts
):
    lead = make_user(django_user_model, "lena")
    reviewer = make_user(django_user_model, "rob")
    project = make_project(lead=lead, reviewer=reviewer)
    seed(project, reviewer)
    log_in(page, "lena", "pw-lena")
    page.goto(reverse("training:runs", args=[project.slug]))
    advice = page.locator("[data-advice]")
    assert advice.get_attribute("data-advice") == "reviewed"
    assert "The teacher is right on 25%" in advice.inner_text()
    assert page.locator("#id_label_source").input_value() == "reviewed"
    epochs, c = page.locator("#id_epochs"), page.locator("#id_C")
    assert epochs.is_visible() and not c.is_visible()
    page.check("input[name=kind][value=quick]")
    assert c.is_visible() and not epochs.is_visible()
    assert page.locator("#id_noise_handling").is_visible()
    page.check("input[name=kind][value=ensemble]")
    assert page.locator("#id_first_member").is_visible() and not c.is_visible()
    page.check("input[name=kind][value=quick]")
    page.screenshot(path=str(artifacts / "launch-form-quick.png"), full_page=True)


def test_review_page_rounds_and_more_like_this_by_key(page, django_user_model, artifacts, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    lead = make_user(django_user_model, "lena")
    reviewer = make_user(django_user_model, "rob")
    project = make_project(lead=lead, reviewer=reviewer)
    project.review_budget = 50
    project.review_budget_hours = 1
    project.refresh_every = 30
    project.save()
    seed(project, reviewer)
    # "More like this" reads the pool's cached vectors; a worker embeds them once they come in
    # (no worker runs here: the index job runs now).
    review.similarity_index_start(project_id=project.pk)
    jobs.run_similarity_index(SimilarityIndex.objects.get(project=project).pk)
    log_in(page, "rob", "pw-rob")
    page.goto(reverse("annotation:review", args=[project.slug]))
    assert page.locator('[data-count="budget-left"]').inner_text() == "30"
    # 20 cards at 12 s: 4 minutes of the hour spent; the rest buys 280 cards at that pace.
    assert page.locator('[data-count="hours-left"]').inner_text() == "0.9"
    assert page.locator('[data-count="cards-left-in-hours"]').inner_text() == "280"
    assert page.locator('[data-count="until-refresh"]').inner_text() == "10"
    first = page.locator("#card").get_attribute("data-example-id")
    page.keyboard.press("m")
    # The first lookup in a process loads the base model (seconds; more on a busy CI machine).
    page.wait_for_selector("text=Most like #" + first, timeout=90_000)
    shown = Example.objects.get(pk=page.locator("#card").get_attribute("data-example-id"))
    source = Example.objects.get(pk=first)
    # The closest text repeats the same sentence with another number.
    assert shown.text.rsplit(" (", 1)[0] == source.text.rsplit(" (", 1)[0]
    page.screenshot(path=str(artifacts / "review-more-like-this.png"), full_page=True)


def test_where_review_pays_page(page, django_user_model, artifacts):
    lead = make_user(django_user_model, "lena")
    reviewer = make_user(django_user_model, "rob")
    project = make_project(lead=lead, reviewer=reviewer)
    seed(project, reviewer)
    gold = GoldSet.objects.create(project=project, version=1)
    for number, (kind, reviewed, score) in enumerate(
        [("quick", 50, 0.61), ("quick", 150, 0.72), ("finetune", 150, 0.74), ("quick", 300, 0.79)], start=1
    ):
        run = TrainingRun.objects.create(
            project=project,
            number=number,
            kind=kind,
            status="succeeded",
            counts={"reviewed": reviewed, "train": 900},
        )
        Evaluation.objects.create(
            project=project,
            run=run,
            gold_set=gold,
            subject="student",
            agent=run.agent,
            metrics={"score": score},
        )
    log_in(page, "lena", "pw-lena")
    page.goto(reverse("training:review-value", args=[project.slug]))
    assert page.locator("polyline[data-series=quick]").count() == 1
    assert "4.67 points" in page.locator('[data-metric="next-batch-gain"]').inner_text()
    assert page.locator('tr[data-order="random"]').is_visible()
    page.screenshot(path=str(artifacts / "where-review-pays.png"), full_page=True)
