from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotation import corpus, projects
from annotation.corpus import formats
from annotation.models import Example, GoldSet, GoldSetItem, Proposal, Review
from tests.annotation.test_import import run_import
from tests.conftest import make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(project, reviewer, lead):
    """Five examples in every label state, with metadata and ids."""
    texts = ["card charged twice", "app crashes on start", "hello there", "spam spam", "where is my invoice"]
    examples = [
        Example.objects.create(project=project, text=t, external_id=f"ext-{i}", metadata={"n": i})
        for i, t in enumerate(texts)
    ]
    Proposal.objects.create(example=examples[0], agent="teacher:m:p1", value="Billing", confidence=0.8)
    p1 = Proposal.objects.create(example=examples[1], agent="teacher:m:p1", value="Billing", confidence=0.4)
    Review.objects.create(
        example=examples[1], reviewer=reviewer, proposal=p1, verdict="correct", value="Technical support"
    )
    Review.objects.create(example=examples[3], reviewer=reviewer, verdict="reject")
    Proposal.objects.create(example=examples[4], agent="teacher:m:p1", value=None, error="invalid JSON")
    return examples


def export(project, fmt: str, **kwargs) -> str:
    examples, gold_set = corpus.examples_for_export(project=project, **kwargs)
    out = io.StringIO()
    corpus.write_export(corpus.export_records(examples, gold_set=gold_set), fmt=fmt, out=out)
    return out.getvalue()


def test_jsonl_export_has_current_labels_and_provenance(project, labelled):
    rows = [json.loads(line) for line in export(project, "jsonl").splitlines()]
    assert [(r["text"], r["label"], r["label_state"]) for r in rows] == [
        ("card charged twice", "Billing", "proposed"),
        ("app crashes on start", "Technical support", "reviewed"),
        ("hello there", None, "unlabelled"),
        ("spam spam", None, "rejected"),
        ("where is my invoice", None, "unlabelled"),
    ]
    crash = rows[1]
    assert crash["id"] == "ext-1" and crash["metadata"] == {"n": 1}
    assert crash["provenance"]["latest_proposal"]["value"] == "Billing"
    assert crash["provenance"]["reviews"][0]["verdict"] == "correct"
    assert crash["provenance"]["reviews"][0]["reviewer"] == "rui_reviewer"
    assert rows[4]["provenance"]["proposals"][0]["error"] == "invalid JSON"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_round_trips_through_import(project, labelled, lead, tmp_path, fmt):
    text = export(project, fmt)
    copy = make_project(lead=lead, slug=f"copy-{fmt}")
    batch = run_import(copy, tmp_path, text, name=f"export.{fmt}", label_column="label")
    assert batch.status == "succeeded", batch.error_report

    def snapshot(p):
        return [
            (e.text, e.external_id, e.metadata, e.current_label)
            for e in Example.objects.for_project(p).with_current_label().order_by("pk")
        ]

    assert snapshot(copy) == snapshot(project)
    # Re-importing the same export into the same project adds nothing.
    again = run_import(project, tmp_path, text, name=f"again.{fmt}", label_column="label")
    assert (again.rows_created, again.rows_duplicate) == (0, 5)


def test_csv_export_columns(project, labelled):
    rows = list(csv.DictReader(io.StringIO(export(project, "csv"))))
    assert rows[0]["proposed_by"] == "teacher:m:p1"
    assert rows[0]["proposed_confidence"] == "0.8000"
    assert rows[1]["reviews"] == "correct:rui_reviewer:Technical support"
    assert rows[3]["label"] == "" and rows[3]["label_state"] == "rejected"


def test_reviewed_scope(project, labelled):
    rows = [json.loads(line) for line in export(project, "jsonl", scope="reviewed").splitlines()]
    assert [r["label_state"] for r in rows] == ["reviewed", "rejected"]


def test_gold_scope_exports_one_frozen_version_with_its_labels(project, labelled, lead):
    v1 = GoldSet.objects.create(project=project, version=1)
    GoldSetItem.objects.create(gold_set=v1, example=labelled[0], answer="Other")
    GoldSetItem.objects.create(gold_set=v1, example=labelled[2], answer="Billing")
    v1.freeze(user=lead)
    draft = GoldSet.objects.create(project=project, version=2)
    GoldSetItem.objects.create(gold_set=draft, example=labelled[3], answer="Other")

    rows = [json.loads(line) for line in export(project, "jsonl", scope="gold", gold_version=1).splitlines()]
    assert [(r["text"], r["label"], r["gold_versions"]) for r in rows] == [
        ("card charged twice", "Other", [1]),
        ("hello there", "Billing", [1]),
    ]
    with pytest.raises(projects.ServiceError, match="no frozen gold set version 2"):
        export(project, "jsonl", scope="gold", gold_version=2)


def test_export_command_writes_a_file(project, labelled, tmp_path):
    out = tmp_path / "out.jsonl"
    call_command("export_examples", "--project", project.slug, "--format", "jsonl", "--out", str(out))
    assert len(out.read_text().splitlines()) == 5
    with pytest.raises(CommandError, match="no frozen gold set"):
        call_command("export_examples", "--project", project.slug, "--gold", "3")


def test_an_export_never_shows_labels_of_a_gold_set_being_labelled(
    project, labelled, lead, reviewer, reviewer_client, django_user_model
):
    """A reviewer must not read another reviewer's blind label (or the teacher's) on a draft item."""
    from django.urls import reverse

    other = django_user_model.objects.create_user(username="olga_other", password="pw")
    draft = GoldSet.objects.create(project=project, version=1)
    item = labelled[0]  # the teacher proposed "Billing"
    GoldSetItem.objects.create(gold_set=draft, example=item)
    Example.objects.filter(pk=item.pk).update(is_gold=True)
    Review.objects.create(example=item, reviewer=other, kind="blind", verdict="correct", value="Other")
    Review.objects.create(example=item, reviewer=lead, kind="adjudication", verdict="correct", value="Other")

    for fmt in ("jsonl", "csv"):
        response = reviewer_client.get(
            reverse("annotation:project-export", args=[project.slug]), {"format": fmt, "scope": "all"}
        )
        body = b"".join(response.streaming_content).decode()
        # Gold leaves only through the gold export (issue #23): the draft item is not there at all.
        assert "card charged twice" not in body and "olga_other" not in body and "adjudication" not in body
    rows = [json.loads(line) for line in export(project, "jsonl").splitlines()]
    assert item.pk not in {r["example_id"] for r in rows}
    # Were it exported (export_records is handed a draft item), it shows no answer at all.
    hidden = next(corpus.export_records(Example.objects.filter(pk=item.pk).with_current_label()))
    assert hidden["label"] is None and hidden["label_state"] == "gold_draft"
    assert hidden["provenance"]["reviews"] == [] and hidden["provenance"]["proposals"] == []
    reviewed = [json.loads(line) for line in export(project, "jsonl", scope="reviewed").splitlines()]
    assert item.pk not in {r["example_id"] for r in reviewed}

    # Once frozen, the version's provenance is exported in full.
    GoldSetItem.objects.filter(pk=draft.items.get().pk).update(answer="Other")
    draft.freeze(user=lead)
    rows = [json.loads(line) for line in export(project, "jsonl", scope="gold", gold_version=1).splitlines()]
    frozen = next(r for r in rows if r["example_id"] == item.pk)
    assert {r["kind"] for r in frozen["provenance"]["reviews"]} == {"blind", "adjudication"}


DANGEROUS = ['=HYPERLINK("http://evil","x")', "+1+2", "-2+3 degrees", "@SUM(A1)", "'quoted already"]


def test_csv_cells_cannot_start_a_spreadsheet_formula(project, lead, tmp_path):
    for i, text in enumerate(DANGEROUS):
        Example.objects.create(project=project, text=text, external_id=f"=id{i}", metadata={"note": "=1+1"})
    Example.objects.create(project=project, text="plain text", external_id="-5")
    Example.objects.create(project=project, text="tab\tinside", external_id="@x", metadata={"=k": "@v"})
    rows = list(csv.DictReader(io.StringIO(export(project, "csv"))))
    for row in rows:
        for name, cell in row.items():
            assert not cell or cell[0] not in "=+-@\t\r", (name, cell)
    assert rows[0]["text"] == '\'=HYPERLINK("http://evil","x")' and rows[0]["id"] == "'=id0"
    assert rows[4]["text"] == "''quoted already"  # a leading quote is doubled, so the import can undo it
    assert rows[5]["text"] == "plain text" and rows[5]["id"] == "'-5"
    assert rows[6]["text"] == "tab\tinside" and rows[6]["id"] == "'@x"

    # The import of that export gives back the original texts, ids and metadata.
    copy = make_project(lead=lead, slug="copy-formula")
    batch = run_import(copy, tmp_path, export(project, "csv"), name="export.csv", label_column="label")
    assert batch.status == "succeeded", batch.error_report

    def snapshot(p):
        return list(
            Example.objects.filter(project=p).order_by("pk").values_list("text", "external_id", "metadata")
        )

    assert snapshot(copy) == snapshot(project)
    # A file that is not an export keeps its quotes as written.
    again = run_import(copy, tmp_path, "text\n'=not an export\n", name="plain.csv")
    assert again.status == "succeeded", again.error_report
    assert Example.objects.filter(project=copy, text="'=not an export").exists()


@pytest.mark.parametrize("value", ["=1", "+", "-x", "@a", "\tx", "\rx", "'", "''", "'a", "a", "", "a=b"])
def test_the_formula_guard_is_undone_exactly(value):
    guarded = formats.neutralise_cell(value)
    assert not guarded.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert formats.restore_cell(guarded) == value
