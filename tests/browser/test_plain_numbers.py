"""Numbers in words (issue #24 item 10), in real Chromium at desktop and phone size, on the three
demo projects after a first pass of the loop (tests/browser/loop_state.py).

Each assert is a number a reviewer or lead saw bare before: a review card's "0.31", "token κ
(109 tokens)", "calibration error 0.430" over long calibration and coverage tables, the cost
formula and "Never" over a chart on a project with nothing deployed, epochs and a learning rate
on a quick run, "Target accuracy" and a LABEL column on an extraction project. Pages are
screenshotted to test-artifacts/words-*.png.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.browser.conftest import log_in
from tests.browser.loop_state import PASSWORD, build, lead_urls

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(params=list(SIZES))
def sized(request, browser, live_server):
    phone = request.param == "phone"
    context = browser.new_context(
        base_url=live_server.url,
        viewport=SIZES[request.param],
        is_mobile=phone,
        has_touch=phone,
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield request.param, page
    context.close()


def shot(page, artifacts, size: str, url: str) -> None:
    name = url.strip("/").replace("/", "_")
    page.screenshot(path=str(artifacts / f"words-{size}-{name}.png"), full_page=True)


def test_every_number_a_lead_reads_comes_with_words(sized, monkeypatch, tmp_path, artifacts):
    size, page = sized
    state = build(monkeypatch, tmp_path)
    log_in(page, "demo", PASSWORD)

    # Evaluation pages: calibration and coverage are charts, the tables folded away, the
    # calibration error said in a sentence ("when the student says about 70 %, it is right …").
    for slug, s in state.items():
        url = reverse("training:evaluation", args=[slug, s["evaluation"].pk])
        assert page.goto(url).status == 200
        for chart in ("calibration", "coverage"):
            svg = page.locator(f"svg[data-chart={chart}]")
            assert svg.is_visible(), (slug, chart)
            assert svg.bounding_box()["width"] <= SIZES[size]["width"]
            assert svg.locator("title").count() > 0  # each point's numbers, in words
        assert not page.locator("table.coverage").is_visible()  # the long table, folded
        sentence = page.locator("[data-words=score]").inner_text()
        assert re.search(r"When the student says about \d+ %, it is right \d+ % of the time", sentence), (
            sentence
        )
        assert "points away from how often it is right" in sentence
        shot(page, artifacts, size, url)

    # Review cards: "31 % sure" with what a confidence is, not a bare 0.31.
    page.goto(reverse("annotation:review", args=["support-tickets"]))
    conf = page.locator("#card .conf").first
    assert re.fullmatch(r"\d+ % sure", conf.inner_text().strip()), conf.inner_text()
    assert "own estimate, not how often it is right" in conf.get_attribute("title")

    # Gold agreement: κ named and banded, the word count said as what it is.
    page.goto(reverse("annotation:gold", args=["table-bookings"]))
    text = page.locator("main").inner_text()
    assert "token κ" not in text and not re.search(r"\(\d+ tokens\)", text)
    assert re.search(r"word-level κ: (almost perfect|substantial|moderate|fair|slight) agreement", text)
    assert re.search(r"over the \d+ words both reviewers read", text)
    page.goto(reverse("annotation:gold", args=["support-tickets"]))
    assert re.search(r"Cohen's κ: \w[\w ]* agreement", page.locator("main").inner_text())

    # Cost: a project with nothing deployed says what is missing and what to do, not "Never"
    # over a chart; the formula is in words.
    url = reverse("training:cost", args=["table-bookings"])
    page.goto(url)
    assert page.locator("[data-missing=model]").is_visible()
    assert page.locator("[data-missing=traffic]").is_visible()
    assert page.locator("svg.cost-chart").count() == 0 and "Never" not in page.locator("main").inner_text()
    assert "plus hosting every month" in page.locator("[data-words=formula]").inner_text()
    shot(page, artifacts, size, url)

    page.goto(reverse("training:monitor", args=["table-bookings"]))
    assert page.locator("[data-missing=model]").is_visible()

    # A quick run lists the settings a quick run has: no epochs, no learning rate.
    page.goto(reverse("training:run", args=["table-bookings", state["table-bookings"]["run"].number]))
    settings = page.locator("[data-field=settings]").inner_text()
    assert "Regularisation C: 10" in settings
    assert "epochs" not in settings.lower() and "learning" not in settings.lower()

    # An extraction project speaks of fields and of its own score.
    page.goto(reverse("training:deploy", args=["table-bookings"]))
    assert page.get_by_label("Target exact match").count() == 1
    assert "Target accuracy" not in page.locator("main").inner_text()
    page.goto(reverse("annotation:project-detail", args=["table-bookings"]))
    headers = page.locator("table th").all_inner_texts()
    assert "LABEL" not in [h.strip().upper() for h in headers if h.strip().upper() == "LABEL"]
    assert "FIELD" in [h.strip().upper() for h in headers]

    # Nothing here is wider than a phone.
    if size == "phone":
        for url in lead_urls(state):
            page.goto(url)
            assert page.evaluate("document.documentElement.scrollWidth") <= SIZES["phone"]["width"], url
