from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation import importing, services
from annotation.importing import import_batch_claim, import_batch_run
from annotation.models import Example, ImportBatch, Label, Proposal

pytestmark = pytest.mark.django_db


def run_import(
    project, tmp_path: Path, content: bytes | str, name: str = "data.csv", **options
) -> ImportBatch:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    batch = services.import_batch_create(project=project, user=None, file_name=name, path=path, **options)
    assert import_batch_claim(batch.pk)
    return import_batch_run(batch=batch)


def assert_nothing_imported(project, labels_before: set[str]) -> None:
    assert Example.objects.filter(project=project).count() == 0
    assert Proposal.objects.filter(example__project=project).count() == 0
    assert set(project.labels.values_list("name", flat=True)) == labels_before


def test_csv_with_labels_ids_and_metadata(project, tmp_path):
    batch = run_import(
        project,
        tmp_path,
        "id,text,category,channel\n"
        't-1,"My card was charged twice",Billing,email\n'
        't-2,"The app crashes, every time",Technical support,chat\n'
        't-3,"Just saying hi",,\n',
        label_column="category",
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    assert (batch.rows_read, batch.rows_created, batch.rows_duplicate, batch.proposals_created) == (
        3,
        3,
        0,
        2,
    )
    crash = Example.objects.get(project=project, external_id="t-2")
    assert crash.text == "The app crashes, every time"
    assert crash.metadata == {"channel": "chat"}
    assert crash.source == Example.Source.IMPORTED and crash.import_batch == batch
    proposal = crash.proposals.get()
    assert (proposal.agent, proposal.value, proposal.confidence) == ("import", "Technical support", None)
    assert not Example.objects.get(external_id="t-3").proposals.exists()
    assert Example.objects.get(external_id="t-3").metadata == {}
    assert batch.sha256 and batch.size_bytes > 0


def test_tsv(project, tmp_path):
    batch = run_import(
        project,
        tmp_path,
        "text\tlabel\nrefund please\tBilling\nlogin fails\t\n",
        name="d.tsv",
        label_column="label",
    )
    assert batch.format == "tsv"
    assert batch.rows_created == 2 and batch.proposals_created == 1
    assert Example.objects.get(text="refund please").proposals.get().value == "Billing"


def test_jsonl_metadata_and_extra_keys(project, tmp_path):
    lines = [
        {
            "text": "Where is my invoice?",
            "id": 7,
            "label": "Billing",
            "metadata": {"lang": "en"},
            "tier": "pro",
        },
        {"text": "Bonjour, ça ne marche pas", "label": None},
    ]
    batch = run_import(
        project,
        tmp_path,
        "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n",
        name="d.jsonl",
        label_column="label",
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    invoice = Example.objects.get(external_id="7")
    assert invoice.metadata == {"lang": "en", "tier": "pro"}
    assert invoice.proposals.get().value == "Billing"
    assert Example.objects.get(text="Bonjour, ça ne marche pas").proposals.count() == 0


def test_txt_one_example_per_line_skips_blank_lines(project, tmp_path):
    batch = run_import(project, tmp_path, "first ticket\n\n  \nsecond ticket\r\nthird\n", name="d.txt")
    assert batch.rows_created == 3
    assert list(Example.objects.filter(project=project).values_list("text", flat=True)) == [
        "first ticket",
        "second ticket",
        "third",
    ]


def test_utf8_bom_is_ignored(project, tmp_path):
    batch = run_import(project, tmp_path, "\ufefftext\nhello\n".encode())
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    assert Example.objects.get(project=project).text == "hello"


def test_duplicates_within_file_and_against_project_are_skipped(project, tmp_path):
    first = run_import(project, tmp_path, "text\nRefund please\nrefund   PLEASE\nAnother one\n")
    assert (first.rows_read, first.rows_created, first.rows_duplicate) == (3, 2, 1)
    # The first occurrence in the file is the one kept.
    assert Example.objects.filter(project=project, text="Refund please").exists()
    second = run_import(project, tmp_path, "text\nanother ONE\nbrand new\n", name="more.csv")
    assert (second.rows_created, second.rows_duplicate) == (1, 1)
    assert Example.objects.filter(project=project).count() == 3


def test_same_text_in_another_project_is_not_a_duplicate(project, lead, tmp_path):
    from tests.conftest import make_project

    other = make_project(lead=lead, slug="other")
    run_import(project, tmp_path, "text\nsame words\n")
    batch = run_import(other, tmp_path, "text\nsame words\n")
    assert batch.rows_created == 1


def test_create_labels_adds_unknown_labels_with_keys(project, tmp_path):
    batch = run_import(
        project,
        tmp_path,
        "text,label\na,Shipping\nb,Returns\nc,Shipping\n",
        label_column="label",
        create_labels=True,
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED
    assert batch.labels_created == 2
    new = {
        label.name: label.key
        for label in Label.objects.filter(project=project, name__in=["Shipping", "Returns"])
    }
    assert new == {"Shipping": "4", "Returns": "5"}


@pytest.mark.parametrize(
    ("content", "options", "line", "reason"),
    [
        (b"text\nfine\ncaf\xe9 latin-1\nfine too\n", {}, 3, "not valid UTF-8"),
        ("body\nhello\n", {}, 1, "no text column 'text'"),
        ("text,label\nhello,Billing\nbye,Refunds\n", {"label_column": "label"}, 3, "unknown label 'Refunds'"),
        ("text,label\nhello,Billing\n", {"label_column": "category"}, 1, "no label column 'category'"),
        ("text,n\nok,1\nbroken,2,3\n", {}, 3, "has 3 fields but the header has 2"),
        ('text\n"fine"\n"   "\n', {}, 3, "text is empty"),
        ('text\nok\n"unterminated\n', {}, 3, "malformed CSV"),
    ],
)
def test_malformed_csv_imports_nothing_and_names_the_line(project, tmp_path, content, options, line, reason):
    before = set(project.labels.values_list("name", flat=True))
    batch = run_import(project, tmp_path, content, **options)
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.rows_created == 0
    assert "nothing was imported" in batch.error
    assert batch.error_report[0]["line"] == line
    assert reason in batch.error_report[0]["reason"]
    assert_nothing_imported(project, before)


@pytest.mark.parametrize(
    ("lines", "line", "reason"),
    [
        (['{"text": "ok"}', "{not json}"], 2, "not valid JSON"),
        (['{"text": "ok"}', '["a list"]'], 2, "is not a JSON object"),
        (['{"text": "ok"}', '{"body": "x"}'], 2, "has no 'text' field"),
        (['{"text": 42}'], 1, "is not a string"),
    ],
)
def test_malformed_jsonl_imports_nothing(project, tmp_path, lines, line, reason):
    batch = run_import(project, tmp_path, "\n".join(lines) + "\n", name="d.jsonl")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error_report[0] == {"line": line, "reason": batch.error_report[0]["reason"]}
    assert reason in batch.error_report[0]["reason"]
    assert Example.objects.filter(project=project).count() == 0


def test_over_long_text_is_rejected(project, tmp_path, settings):
    settings.IMPORT_MAX_TEXT_CHARS = 20
    batch = run_import(project, tmp_path, "text\nshort\n" + "x" * 21 + "\n")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error_report == [
        {"line": 3, "reason": "text is 21 characters, over the limit of 20 (IMPORT_MAX_TEXT_CHARS)"}
    ]


def test_line_numbers_stay_right_after_multiline_fields(project, tmp_path):
    content = 'text,label\n"a ticket\nover three\nlines",Billing\nok,Nope\n'
    batch = run_import(project, tmp_path, content, label_column="label")
    assert batch.error_report[0]["line"] == 5


def test_a_bad_row_after_many_staged_rows_still_imports_nothing(project, tmp_path, monkeypatch):
    monkeypatch.setattr(importing, "STAGE_BATCH_ROWS", 10)
    rows = [f"ticket number {i}" for i in range(95)]
    content = "text,label\n" + "".join(f"{r},Billing\n" for r in rows) + "late,Unknown\n"
    batch = run_import(project, tmp_path, content, label_column="label")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.rows_read == 96 and batch.rows_invalid == 1
    assert batch.error_report == [{"line": 97, "reason": batch.error_report[0]["reason"]}]
    assert Example.objects.filter(project=project).count() == 0


def test_error_report_lists_the_first_50_and_counts_all(project, tmp_path):
    content = "text,label\n" + "".join(f"t{i},Nope\n" for i in range(80))
    batch = run_import(project, tmp_path, content, label_column="label")
    assert batch.rows_invalid == 80
    assert len(batch.error_report) == 50
    assert [r["line"] for r in batch.error_report[:3]] == [2, 3, 4]
    assert "80 invalid rows" in batch.error


def test_staged_import_in_several_chunks_keeps_file_order(project, tmp_path, monkeypatch):
    monkeypatch.setattr(importing, "STAGE_BATCH_ROWS", 7)
    texts = [f"example {i:03d}" for i in range(50)]
    batch = run_import(project, tmp_path, "text\n" + "\n".join(texts + texts[:5]) + "\n")
    assert (batch.rows_created, batch.rows_duplicate) == (50, 5)
    assert (
        list(Example.objects.filter(project=project).order_by("pk").values_list("text", flat=True)) == texts
    )


def test_claim_is_taken_once(project, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one\n")
    batch = services.import_batch_create(project=project, user=None, file_name="a.txt", path=path)
    assert import_batch_claim(batch.pk) is True
    assert import_batch_claim(batch.pk) is False


def test_import_command(project, tmp_path, capsys):
    path = tmp_path / "tickets.csv"
    path.write_text("ref,body,team\nA1,card declined,Billing\nA2,cannot log in,Technical support\n")
    call_command(
        "import_examples",
        "--project",
        project.slug,
        "--file",
        str(path),
        "--text-column",
        "body",
        "--label-column",
        "team",
        "--id-column",
        "ref",
        "--no-progress",
    )
    assert "Imported 2 new examples" in capsys.readouterr().out
    assert set(Example.objects.filter(project=project).values_list("external_id", flat=True)) == {"A1", "A2"}


def test_import_command_reports_bad_lines(project, tmp_path, capsys):
    path = tmp_path / "tickets.csv"
    path.write_text("text,label\nok,Billing\nbad,Nope\n")
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command(
            "import_examples",
            "--project",
            project.slug,
            "--file",
            str(path),
            "--label-column",
            "label",
            "--no-progress",
        )
    assert "line 3: unknown label 'Nope'" in capsys.readouterr().err
    assert not Example.objects.filter(project=project).exists()


def test_import_command_unknown_project(tmp_path):
    with pytest.raises(CommandError, match="No project"):
        call_command("import_examples", "--project", "nope", "--file", str(tmp_path / "x.csv"))
