"""A lead logs in, uploads a CSV and sees the counts change, in real Chromium."""

from __future__ import annotations

import pytest

from annotation.models import Example
from tests.browser.conftest import log_in
from tests.conftest import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_lead_uploads_csv_and_sees_counts(page, django_user_model, tmp_path, artifacts):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    csv_file = tmp_path / "tickets.csv"
    csv_file.write_text(
        "id,text,label\n"
        "1,I was charged twice this month,Billing\n"
        "2,The app crashes when I open a board,Technical support\n"
        "3,Do you have a dark mode?,\n"
    )

    log_in(page, "lena", "a-long-password")
    page.get_by_role("link", name="Support").click()
    assert page.locator('[data-count="examples"]').inner_text() == "0"

    page.set_input_files("input[name=file]", str(csv_file))
    page.fill("input[name=label_column]", "label")
    page.select_option("select[name=label_meaning]", "predictions")
    page.get_by_role("button", name="Upload and import").click()

    page.get_by_text("Imported 3 new examples").wait_for()
    assert page.locator('[data-count="examples"]').inner_text() == "3"
    assert page.locator('[data-count="proposed"]').inner_text() == "2"
    assert page.locator('[data-count="unlabelled"]').inner_text() == "1"
    assert page.get_by_role("cell", name="tickets.csv").is_visible()
    page.screenshot(path=str(artifacts / "project-after-import.png"), full_page=True)
    assert Example.objects.filter(project=project).count() == 3


def test_malformed_upload_shows_the_bad_line(page, django_user_model, tmp_path, artifacts):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    make_project(lead=lead, slug="support")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,Billing\nwrong,Shipping\n")

    log_in(page, "lena", "a-long-password")
    page.goto("/p/support/")
    page.set_input_files("input[name=file]", str(bad))
    page.fill("input[name=label_column]", "label")
    page.select_option("select[name=label_meaning]", "predictions")
    page.get_by_role("button", name="Upload and import").click()

    page.get_by_role("heading", name="Rows to fix").wait_for()
    row = page.locator("table.report tbody tr").first
    assert row.locator("td").nth(0).inner_text() == "3"
    assert "unknown label 'Shipping'" in row.locator("td").nth(1).inner_text()
    page.screenshot(path=str(artifacts / "import-rejected.png"), full_page=True)
    assert not Example.objects.exists()
