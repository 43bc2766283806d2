"""A lead imports an Excel workbook, on a desktop and on a phone, in real Chromium (issue #24,
item 5): a wrong setting fails with the sheet's row named, and the retry keeps the settings
and the file, so the lead only fixes the setting."""

from __future__ import annotations

import io

import openpyxl
import pytest

from annotation.models import Example
from tests.browser.conftest import log_in
from tests.conftest import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("size", SIZES)
def test_a_failed_excel_import_is_retried_without_choosing_the_file_again(
    page, django_user_model, tmp_path, artifacts, size
):
    page.set_viewport_size(SIZES[size])
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "March"
    sheet.append(["message", "label"])
    sheet.append(["I was charged twice this month", "Billing"])
    sheet.append(["The app crashes when I open a board", "Technical support"])
    out = io.BytesIO()
    book.save(out)
    xlsx = tmp_path / "tickets.xlsx"
    xlsx.write_bytes(out.getvalue())

    log_in(page, "lena", "a-long-password")
    page.goto("/p/support/")
    page.set_input_files("input[name=file]", str(xlsx))
    page.fill("input[name=label_column]", "label")
    page.select_option("select[name=label_meaning]", "verified")
    page.get_by_role("button", name="Upload and import").click()

    page.get_by_role("heading", name="Rows to fix").wait_for()
    assert page.locator("table.report thead th").first.text_content() == "Sheet row"
    assert "the sheet header has no text column 'text'" in page.locator("table.report tbody").inner_text()
    assert "Rows of the sheet “March”" in page.locator('[data-field="sheet"]').inner_text()
    page.screenshot(path=str(artifacts / f"xlsx-rejected-{size}.png"), full_page=True)

    page.get_by_role("link", name="Change the settings and import again").click()
    assert "Kept from your last try: “tickets.xlsx”" in page.locator("#import").inner_text()
    assert page.input_value("input[name=label_column]") == "label"
    assert page.input_value("select[name=label_meaning]") == "verified"
    page.fill("input[name=text_column]", "message")
    page.screenshot(path=str(artifacts / f"xlsx-retry-{size}.png"), full_page=True)
    page.get_by_role("button", name="Upload and import").click()

    page.get_by_text("Imported 2 new examples from tickets.xlsx").wait_for()
    assert Example.objects.filter(project=project).count() == 2
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= SIZES[size]["width"]
