"""The 403 and 404 pages in the browser: the app's frame, the reason, a way back."""

from __future__ import annotations

import pytest

from tests.browser.conftest import log_in
from tests.conftest import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_refusals_are_pages_with_a_reason_and_a_way_back(
    browser, live_server, django_user_model, artifacts, size
):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    reviewer = django_user_model.objects.create_user(username="rui", password="a-long-password")
    make_project(lead=lead, reviewer=reviewer, slug="support")
    make_project(lead=lead, slug="secret")
    context = browser.new_context(base_url=live_server.url, viewport=SIZES[size])
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, "rui", "a-long-password")

    page.goto("/p/support/")
    response = page.goto("/p/support/settings/")
    assert response.status == 403
    assert page.locator("[data-error-reason]").inner_text() == "Only the project's leads can do this."
    page.screenshot(path=str(artifacts / f"error-403-{size}.png"), full_page=True)
    page.get_by_role("link", name="Back to the project").click()
    page.wait_for_url("**/p/support/")

    response = page.goto("/p/secret/")
    assert response.status == 404
    assert "No such project." in page.locator("[data-error-reason]").inner_text()
    assert page.locator(".topbar").get_by_role("link", name="Projects").is_visible()
    page.screenshot(path=str(artifacts / f"error-404-{size}.png"), full_page=True)
    page.get_by_role("link", name="Your projects").click()
    page.wait_for_url(live_server.url + "/")
    context.close()
