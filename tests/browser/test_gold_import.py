"""A lead imports the team's own test file as gold, in real Chromium: once as candidates
for blind labelling, once as a frozen version whose labels the lead attests."""

from __future__ import annotations

import pytest

from annotation.models import Example, GoldSet
from tests.browser.conftest import log_in
from tests.conftest import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_lead_imports_a_test_file_as_attested_gold_and_as_candidates(
    page, django_user_model, tmp_path, artifacts
):
    lead = django_user_model.objects.create_user(username="lena", password="a-long-password")
    project = make_project(lead=lead, slug="support")
    attested = tmp_path / "team-test.csv"
    attested.write_text(
        "id,text,label,channel,truth\n"
        "1,I was charged twice this month,Billing,email,x\n"
        "2,The app crashes when I open a board,Technical support,chat,y\n"
        "3,Do you have a dark mode?,Other,email,z\n"
    )
    candidates = tmp_path / "fresh-sample.csv"
    candidates.write_text(
        "text,channel\nWhere is my invoice for March?,email\nCannot reset my password,chat\n"
    )

    log_in(page, "lena", "a-long-password")
    page.goto("/p/support/")
    page.set_input_files("input[name=file]", str(attested))
    page.select_option("select[name=gold]", "attested")
    page.fill("input[name=label_column]", "label")
    page.locator("details.more-options summary").click()
    page.fill("input[name=keep_columns]", "channel")
    page.fill("input[name=hidden_column]", "truth")
    page.screenshot(path=str(artifacts / "import-form-gold.png"), full_page=True)
    page.get_by_role("button", name="Upload and import").click()

    page.get_by_text("gold v1 is frozen with its 3 attested labels").wait_for()
    provenance = page.locator('[data-field="attested"]')
    assert "attested as verified by lena" in provenance.inner_text()
    assert "team-test.csv" in provenance.inner_text()
    gold = GoldSet.objects.get(project=project)
    assert gold.is_frozen and gold.attested_by == lead and gold.items.count() == 3
    assert Example.objects.get(external_id="2").hidden_metadata == {"truth": "y"}

    page.goto("/p/support/")
    page.set_input_files("input[name=file]", str(candidates))
    page.select_option("select[name=gold]", "candidates")
    page.get_by_role("button", name="Upload and import").click()
    page.get_by_text("2 are gold candidates in v2, to label blind").wait_for()
    assert page.locator('[data-count="gold-items"]').inner_text() == "2"
    page.screenshot(path=str(artifacts / "gold-after-import.png"), full_page=True)
    assert not GoldSet.objects.get(project=project, version=2).is_frozen
