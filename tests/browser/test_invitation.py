"""A lead invites someone new from the Members page and that person joins through the link,
on a desktop and on a phone, in real Chromium (issue #24: no Django admin needed)."""

from __future__ import annotations

import pytest

from annotation.models import Membership
from tests.browser.conftest import log_in
from tests.conftest import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("size", SIZES)
def test_a_lead_invites_and_the_newcomer_joins(
    page, browser, live_server, django_user_model, artifacts, size
):
    page.set_viewport_size(SIZES[size])
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    project = make_project(lead=lead, slug="support")

    log_in(page, "lena", "a-long-password")
    page.goto("/p/support/members/")
    page.get_by_label("New user name").fill("nina")
    page.get_by_role("button", name="Create invitation link").click()
    box = page.locator("[data-invitation-link]")
    box.wait_for()
    assert "works once" in box.inner_text()
    link = page.input_value("[data-link]")
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]
    page.screenshot(path=str(artifacts / f"invitation-link-{size}.png"), full_page=True)

    context = browser.new_context(base_url=live_server.url, viewport=SIZES[size])
    newcomer = context.new_page()
    newcomer.goto(link)
    assert newcomer.locator("[data-username]").inner_text() == "nina"
    newcomer.fill("input[name=new_password1]", "a-fresh-long-passphrase")
    newcomer.fill("input[name=new_password2]", "a-fresh-long-passphrase")
    newcomer.screenshot(path=str(artifacts / f"invitation-accept-{size}.png"), full_page=True)
    newcomer.get_by_role("button", name="Set my password and join").click()
    newcomer.get_by_text("Welcome, nina").wait_for()
    assert newcomer.url.endswith("/p/support/")
    assert project.memberships.get(user__username="nina").role == Membership.Role.REVIEWER

    newcomer.goto(link)  # once only
    assert "does not work" in newcomer.locator("h1").inner_text()
    context.close()
