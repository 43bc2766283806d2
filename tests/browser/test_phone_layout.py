"""The app on a phone (390 x 844), in real Chromium, on the three demo projects (issue #24, item 2).

No page may be wider than the screen (a wide table scrolls inside its own box, with a
shadow at the edge that hides more), the tabs scroll with the same hint and show the
current one, and the review card's decisions are big buttons in reach of a thumb: a bar
fixed at the bottom of the screen, the labels as big buttons. Every page is screenshotted
to test-artifacts/phone-*.png for a person to look at.
"""

from __future__ import annotations

import io
import random

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotation import review
from annotation.models import Example, ImportBatch, Project, Proposal
from tasks.base import Category
from tasks.classification.task import ClassificationTask
from tests.browser.conftest import log_in
from tests.training.conftest import make_run
from training.models import Evaluation, ModelVersion, PredictionLog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
PASSWORD = "a-long-password"
SLUGS = ["support-tickets", "table-bookings", "call-notes"]
TAP_SIZE = 44  # px: the smallest comfortable touch target (Apple HIG, WCAG 2.5.5)


@pytest.fixture
def demo(monkeypatch, tmp_path):
    """The three demo projects as `run.sh` seeds them, plus what a lead's pages show later:
    teacher proposals on the tickets, a gold draft per project, and on the tickets a run
    that is evaluated, live and serving traffic."""
    monkeypatch.setenv("DEMO_PASSWORD", PASSWORD)
    call_command("seed_demo", stdout=io.StringIO())
    rng = random.Random(24)
    tickets = Project.objects.get(slug="support-tickets")
    labels = list(tickets.labels.values_list("name", flat=True))
    Proposal.objects.bulk_create(
        Proposal(
            example=e, agent="teacher:offline:prompt-v1", value=rng.choice(labels), confidence=rng.random()
        )
        for e in Example.objects.filter(project=tickets)
    )
    Example.objects.filter(project=tickets).sync_queue_fields()
    for slug in SLUGS:
        review.gold_draw(project=Project.objects.get(slug=slug), size=4, seed=1)

    run = make_run(tickets, tmp_path, evaluated=False)
    run.loss_history = [[s, 1.1 * 0.93**s] for s in range(0, 40, 2)]
    run.save()
    golds = [rng.choice(labels) for _ in range(60)]
    preds = [g if rng.random() < 0.8 else rng.choice(labels) for g in golds]
    confs = [rng.uniform(0.3, 1.0) for _ in golds]
    evaluation = Evaluation.objects.create(
        project=tickets,
        run=run,
        gold_set=tickets.gold_sets.first(),
        subject="student",
        agent=run.agent,
        target_accuracy=0.95,
        metrics=ClassificationTask([Category(n) for n in labels]).metrics(
            golds, preds, confidences=confs, target_accuracy=0.95
        ),
        predictions=[
            {"example": i, "gold": g, "predicted": p, "confidence": c, "source": "import", "length": 40}
            for i, (g, p, c) in enumerate(zip(golds, preds, confs, strict=True))
        ],
    )
    version = ModelVersion.objects.create(project=tickets, run=run, threshold=0.6, is_active=True)
    PredictionLog.objects.bulk_create(
        PredictionLog(
            project=tickets,
            version=version,
            route=rng.choice(["student", "student", "teacher", "review"]),
            answer_summary=rng.choice(labels),
            student_answer_summary=rng.choice(labels),
            confidence=rng.uniform(0.3, 1.0),
            latency_ms=rng.gauss(12, 2),
        )
        for _ in range(200)
    )
    return {"run": run, "evaluation": evaluation, "tickets": tickets}


@pytest.fixture
def phone(browser, live_server):
    context = browser.new_context(
        base_url=live_server.url, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def lead_pages(demo) -> list[str]:
    pages = [reverse("annotation:project-list")]
    for slug in SLUGS:
        pages += [
            reverse("annotation:project-detail", args=[slug]),
            reverse("annotation:review", args=[slug]),
            reverse("annotation:review-bulk", args=[slug]),
            reverse("annotation:gold", args=[slug]),
            reverse("annotation:gold-label", args=[slug]),
            reverse("annotation:teacher-settings", args=[slug]),
            reverse("annotation:project-labels", args=[slug]),
            reverse("annotation:project-members", args=[slug]),
            reverse("annotation:project-settings", args=[slug]),
            reverse("training:runs", args=[slug]),
            reverse("training:deploy", args=[slug]),
            reverse("training:monitor", args=[slug]),
            reverse("training:cost", args=[slug]),
            reverse("training:review-value", args=[slug]),
        ]
    tickets = demo["tickets"]
    pages += [
        reverse("training:run", args=[tickets.slug, demo["run"].number]),
        reverse("training:evaluation", args=[tickets.slug, demo["evaluation"].pk]),
        reverse("training:evaluation-examples", args=[tickets.slug, demo["evaluation"].pk]),
        reverse("training:compare", args=[tickets.slug]) + f"?run={demo['run'].number}",
        reverse("annotation:project-create"),
        reverse("api-docs"),
        reverse(
            "annotation:import-batch",
            args=[tickets.slug, ImportBatch.objects.filter(project=tickets).first().pk],
        ),
    ]
    return pages


def test_no_page_is_wider_than_a_phone(demo, phone, artifacts):
    log_in(phone, "demo", PASSWORD)
    too_wide = []
    for url in lead_pages(demo):
        response = phone.goto(url)
        assert response.status == 200, url
        width = phone.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            # Name the elements that stick out, so a failure says where to look.
            culprits = phone.evaluate(
                """w => [...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > w + 1)
                .filter(e => !e.parentElement.closest('.table, .heatmap-wrap, .tabs, pre'))
                .slice(0, 4).map(e => e.tagName.toLowerCase() + '.' + [...e.classList].join('.'))""",
                PHONE["width"],
            )
            too_wide.append((url, width, culprits))
        name = url.strip("/").replace("/", "_") or "projects"
        phone.screenshot(path=str(artifacts / f"phone-{name}.png"), full_page=True)
    assert too_wide == [], "\n".join(map(str, too_wide))


def test_wide_tables_scroll_in_their_own_box_with_a_hint(demo, phone):
    log_in(phone, "demo", PASSWORD)
    phone.goto(reverse("annotation:project-detail", args=["support-tickets"]))
    imports = phone.locator(".table", has_text="Duplicates").first
    box = imports.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert imports.evaluate("t => t.scrollWidth > t.clientWidth")  # it scrolls, the page does not
    assert "gradient" in imports.evaluate("t => getComputedStyle(t).backgroundImage")  # the edge shadow


def test_tabs_scroll_with_a_hint_and_show_the_current_one(demo, phone):
    log_in(phone, "demo", PASSWORD)
    phone.goto(reverse("training:review-value", args=["support-tickets"]))
    tabs = phone.locator("nav.tabs")
    assert tabs.evaluate("t => t.scrollWidth > t.clientWidth")  # more tabs than fit: it scrolls
    assert "gradient" in tabs.evaluate("t => getComputedStyle(t).backgroundImage")
    current = tabs.locator("[aria-current=page]").bounding_box()
    assert current["x"] >= 0 and current["x"] + current["width"] <= PHONE["width"]
    assert current["height"] >= TAP_SIZE - 4


def in_thumb_reach(locator) -> dict:
    assert locator.is_visible()
    box = locator.bounding_box()
    assert box["height"] >= TAP_SIZE, box
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
    # In the lower half of the screen without scrolling: where a thumb holding the phone reaches.
    assert PHONE["height"] / 2 <= box["y"] and box["y"] + box["height"] <= PHONE["height"], box
    return box


@pytest.mark.parametrize("slug", SLUGS)
def test_review_card_decisions_are_big_buttons_at_the_bottom(demo, phone, artifacts, slug):
    log_in(phone, "demo", PASSWORD)
    phone.goto(reverse("annotation:review", args=[slug]))
    card = phone.locator("#card")
    first = card.get_attribute("data-example-id")
    assert first
    accept, reject, skip = (card.locator(f"[data-key={k}]").first for k in "axs")
    for button in (accept, reject, skip):
        in_thumb_reach(button)
    phone.screenshot(path=str(artifacts / f"phone-review-{slug}.png"))
    # Still there after scrolling down the card: the bar is fixed to the screen.
    phone.mouse.wheel(0, 2000)
    phone.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    for button in (accept, reject, skip):
        in_thumb_reach(button)
    # Nothing on the card hides behind the bar: the page leaves room for it at the end.
    last = card.locator("section.card").last.bounding_box()
    bar_top = min(accept.bounding_box()["y"], reject.bounding_box()["y"])
    assert last["y"] + last["height"] <= bar_top + 1
    if slug == "support-tickets":
        for label in card.locator(".label-button").all():
            box = label.bounding_box()
            assert box["height"] >= TAP_SIZE and box["width"] >= 120, box
    skip.tap()
    phone.wait_for_function("f => document.querySelector('#card').dataset.exampleId !== f", arg=first)


def test_gold_blind_card_decisions_are_big_buttons_at_the_bottom(demo, phone):
    log_in(phone, "demo", PASSWORD)
    phone.goto(reverse("annotation:gold-label", args=["support-tickets"]))
    card = phone.locator("#card")
    for key in "xs":
        in_thumb_reach(card.locator(f"[data-key={key}]"))
    for label in card.locator(".label-button").all():
        assert label.bounding_box()["height"] >= TAP_SIZE
