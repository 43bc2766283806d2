"""Excel workbooks import like CSV (first sheet, header row, all or nothing, duplicates
skipped, errors naming the sheet's row); other office files get a plain error; a failed
upload's settings and file are kept for the next try."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import openpyxl
import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation import corpus, projects
from annotation.corpus import import_batch_claim, import_batch_run
from annotation.models import Example, ImportBatch

pytestmark = pytest.mark.django_db


def workbook(rows: list[list], *, title: str = "Tickets", more_sheets: int = 0) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    for n in range(more_sheets):
        book.create_sheet(f"Notes {n + 1}").append(["ignored"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def run_import(project, tmp_path: Path, content: bytes, name: str = "tickets.xlsx", **options) -> ImportBatch:
    path = tmp_path / name
    path.write_bytes(content)
    options.setdefault("user", None)
    batch = corpus.import_batch_create(project=project, file_name=name, path=path, **options)
    assert import_batch_claim(batch.pk)
    return import_batch_run(batch=batch)


TICKETS = [
    ["id", "text", "label", "channel", None],
    [1, "My card was charged twice", "Billing", "email"],
    [],  # an empty row, as a blank line
    [2.0, "The app crashes on start", "Technical support", None],
    [3, "my card was  charged twice", "Billing", "chat"],  # a duplicate of row 2
    [4, "Opened on", None, dt.datetime(2024, 5, 17)],
]


def test_first_sheet_imports_like_a_csv(project, tmp_path):
    batch = run_import(project, tmp_path, workbook(TICKETS, more_sheets=1), label_column="label")
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    assert batch.format == "xlsx"
    assert (batch.rows_read, batch.rows_created, batch.rows_duplicate, batch.proposals_created) == (
        4,
        3,
        1,
        2,
    )
    assert (batch.options["sheet"], batch.options["sheet_count"]) == ("Tickets", 2)
    # Whole numbers read as the sheet shows them (Excel stores every number as a float).
    assert set(Example.objects.values_list("external_id", flat=True)) == {"1", "2", "4"}
    assert Example.objects.get(external_id="1").metadata == {"channel": "email"}
    assert Example.objects.get(external_id="4").metadata == {"channel": "2024-05-17"}
    assert Example.objects.get(external_id="2").proposals.get().value == "Technical support"


def test_a_bad_row_imports_nothing_and_is_named_by_its_sheet_row(project, tmp_path):
    rows = [["text", "label"], ["fine", "Billing"], [], ["wrong", "Shipping"], ["far", "Billing", None, "x"]]
    batch = run_import(project, tmp_path, workbook(rows), label_column="label")
    assert batch.status == ImportBatch.Status.FAILED
    assert [e["line"] for e in batch.error_report] == [4, 5]
    assert "unknown label 'Shipping'" in batch.error_report[0]["reason"]
    assert "column D" in batch.error_report[1]["reason"]
    assert batch.options["sheet"] == "Tickets"
    assert not Example.objects.exists()


def test_a_missing_text_column_names_the_sheet_header(project, tmp_path):
    batch = run_import(project, tmp_path, workbook([["message"], ["hello"]]))
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error_report[0]["line"] == 1
    assert "the sheet header has no text column 'text' (columns: message)" in batch.error_report[0]["reason"]


def test_a_workbook_chosen_as_csv_is_read_as_a_workbook(project, tmp_path):
    # Before: read as CSV, it failed with the csv module's newline-mode message.
    batch = run_import(project, tmp_path, workbook([["text"], ["hello"]]), name="tickets.csv", fmt="csv")
    assert batch.status == ImportBatch.Status.SUCCEEDED and batch.format == "xlsx"
    assert Example.objects.get().text == "hello"


def zipped(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    "name,content,fmt,about",
    [
        (
            "old.xls",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100,
            None,
            "an Excel 97–2003 workbook (.xls)",
        ),
        (
            "old.xls",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100,
            "csv",
            "an Excel 97–2003 workbook (.xls)",
        ),
        (
            "sheet.ods",
            zipped({"mimetype": b"application/vnd.oasis.opendocument.spreadsheet"}),
            None,
            "an OpenDocument spreadsheet (.ods)",
        ),
        ("notes.docx", zipped({"word/document.xml": b"<w/>"}), "txt", "a Word document (.docx)"),
        ("export.csv", b"%PDF-1.7\n...", None, "a PDF document"),
    ],
)
def test_other_office_files_are_named_with_the_way_to_a_csv(project, tmp_path, name, content, fmt, about):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(projects.ServiceError) as caught:
        corpus.import_batch_create(project=project, file_name=name, path=path, fmt=fmt, user=None)
    message = str(caught.value)
    assert f"{name!r} is {about}, which cannot be imported" in message
    assert "save (or export) the sheet as “CSV UTF-8”" in message
    assert not ImportBatch.objects.exists()


# --- the upload view ----------------------------------------------------------------------


def post_upload(client, project, data: dict):
    response = client.post(reverse("annotation:import-upload", args=[project.slug]), data)
    return response, " ".join(str(m) for m in get_messages(response.wsgi_request))


def test_upload_view_imports_a_workbook(project, lead_client):
    page = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert 'value="xlsx"' in page
    xlsx = SimpleUploadedFile("tickets.xlsx", workbook(TICKETS))
    response, said = post_upload(
        lead_client, project, {"file": xlsx, "label_column": "label", "label_meaning": "predictions"}
    )
    assert response.status_code == 302
    assert "Imported 3 new examples from tickets.xlsx (1 duplicates skipped)" in said


def test_an_xls_upload_gets_a_plain_error(project, lead_client):
    xls = SimpleUploadedFile("tickets.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100)
    _, said = post_upload(lead_client, project, {"file": xls})
    # Before: "Cannot tell the format from the file name; choose one."
    assert "'tickets.xls' is an Excel 97–2003 workbook (.xls), which cannot be imported" in said
    assert "Cannot tell the format" not in said


def test_after_an_error_the_settings_and_the_file_are_kept_for_the_next_try(project, lead_client, settings):
    detail = reverse("annotation:project-detail", args=[project.slug])
    folder = Path(settings.UPLOAD_DIR) / "held"
    before = set(folder.iterdir()) if folder.exists() else set()
    xlsx = SimpleUploadedFile("tickets.xlsx", workbook([["message", "label"], ["hello", "Billing"]]))
    response, said = post_upload(
        lead_client,
        project,
        {"file": xlsx, "label_column": "label", "label_meaning": "predictions", "label_agent": "crm-rules"},
    )
    assert "not imported" in said and "the file “tickets.xlsx” are kept in the import form" in said
    batch = ImportBatch.objects.get()
    assert response.url == reverse("annotation:import-batch", args=[project.slug, batch.pk])
    assert "Change the settings and import again" in lead_client.get(response.url).content.decode()

    page = lead_client.get(detail).content.decode()
    assert "Kept from your last try: “tickets.xlsx”" in page
    assert 'name="label_agent" value="crm-rules"' in page
    held = list(set(folder.iterdir()) - before)
    assert len(held) == 1

    # The next try names the right text column and chooses no file: the kept one is read.
    _, said = post_upload(
        lead_client,
        project,
        {
            "text_column": "message",
            "label_column": "label",
            "label_meaning": "predictions",
            "label_agent": "crm-rules",
        },
    )
    assert "Imported 1 new examples from tickets.xlsx" in said
    assert Example.objects.get().proposals.get().agent == "import:crm-rules"
    assert not held[0].exists()
    page = lead_client.get(detail).content.decode()
    assert "Kept from your last try" not in page and 'value="crm-rules"' not in page


def test_a_kept_file_belongs_to_its_user_and_project(project, lead_client, reviewer, tmp_path):
    xlsx = SimpleUploadedFile("tickets.xlsx", workbook([["message"], ["hello"]]))
    post_upload(lead_client, project, {"file": xlsx})
    other = projects.project_create(
        name="Other", slug="other", user=project.memberships.get(role="lead").user
    )
    # Another project of the same lead offers nothing, and an empty file field is still required there.
    _, said = post_upload(lead_client, other, {"text_column": "message"})
    assert "This field is required" in said
    assert not Example.objects.exists()
