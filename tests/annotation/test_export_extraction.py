"""Exporting an extraction project: JSONL with spans and fields, CoNLL BIO, and back again."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation import corpus, projects
from annotation.models import Example, Label, Membership
from tasks.extraction import formats
from tests.annotation.test_import_extraction import CONLL, FIELDS, TEXT, jsonl, run_import, span

pytestmark = pytest.mark.django_db


@pytest.fixture
def extraction(lead, reviewer):
    project = projects.project_create(
        name="Bookings", slug="bookings", user=lead, task_type="extraction", labels=FIELDS
    )
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    Label.objects.filter(project=project, name="date").update(allows_many=False)
    project.forget_task()
    return project


SOURCE = [
    {"text": TEXT, "id": "b-1", "spans": [[10, 11, "people"], [15, 21, "date"], [25, 30, "location"]]},
    {"text": "Lunch in Rome or Paris", "spans": [[9, 13, "location"], [17, 22, "location"]], "lang": "it"},
    {"text": "Nothing to find here", "spans": []},
    {"text": "Not annotated yet"},
]


def export(project, fmt: str = "jsonl", **scope) -> str:
    examples, gold_set = corpus.examples_for_export(project=project, **scope)
    records = corpus.export_records(examples, gold_set=gold_set)
    out = io.StringIO()
    corpus.write_export(records, fmt=fmt, out=out, task=project.task)
    return out.getvalue()


def test_jsonl_export_has_spans_with_text_fields_and_provenance(extraction, lead, tmp_path):
    run_import(extraction, tmp_path, jsonl(*SOURCE), label_meaning="verified", user=lead)
    lines = [json.loads(line) for line in export(extraction).splitlines()]
    first = lines[0]
    assert list(first)[:3] == ["text", "spans", "fields"] and "label" not in first
    assert first["spans"] == [
        {"start": 10, "end": 11, "label": "people", "text": "4"},
        {"start": 15, "end": 21, "label": "date", "text": "12 May"},
        {"start": 25, "end": 30, "label": "location", "text": "Paris"},
    ]
    assert first["fields"] == {"date": "12 May", "people": ["4"], "location": ["Paris"]}
    assert (first["id"], first["label_state"], first["source"]) == ("b-1", "reviewed", "imported")
    review = first["provenance"]["reviews"][0]
    assert (review["reviewer"], review["value"]["spans"][0]) == ("lena_lead", span(10, 11, "people"))
    assert lines[1]["fields"]["location"] == ["Rome", "Paris"] and lines[1]["metadata"] == {"lang": "it"}
    assert lines[2]["spans"] == [] and lines[2]["fields"] == {"date": None, "people": [], "location": []}
    assert "spans" not in lines[3] and "fields" not in lines[3] and lines[3]["label_state"] == "unlabelled"


def test_conll_export_holds_the_labelled_texts(extraction, tmp_path):
    run_import(extraction, tmp_path, jsonl(*SOURCE))
    text = export(extraction, "conll")
    sentences = text.split("\n\n")
    assert text.endswith("\n\n") and len([s for s in sentences if s]) == 3  # the unlabelled one is left out
    assert sentences[0].splitlines() == [
        "Table\tO",
        "for\tO",
        "4\tB-people",
        "on\tO",
        "12\tB-date",
        "May\tI-date",
        "in\tO",
        "Paris\tB-location",
    ]


def test_jsonl_export_imports_again_unchanged(extraction, lead, tmp_path):
    run_import(extraction, tmp_path, jsonl(*SOURCE), label_meaning="verified", user=lead)
    first = export(extraction)
    copy = projects.project_create(name="Copy", slug="copy", user=lead, task_type="extraction", labels=FIELDS)
    Label.objects.filter(project=copy, name="date").update(allows_many=False)
    copy.forget_task()
    batch = run_import(copy, tmp_path, first, name="export.jsonl", label_meaning="verified", user=lead)
    assert batch.status == "succeeded", batch.error_report
    assert batch.rows_created == 4 and batch.proposals_created == 3

    def answers(text: str) -> list[tuple]:
        return [
            (r["id"], r["text"], r.get("spans"), r.get("fields"), r["metadata"], r["label_state"])
            for r in map(json.loads, text.splitlines())
        ]

    assert answers(export(copy)) == answers(first)
    # Importing an export into its own project finds every text already there.
    again = run_import(extraction, tmp_path, first, name="again.jsonl")
    assert (again.rows_created, again.rows_duplicate) == (0, 4)


def test_conll_export_imports_again_unchanged(extraction, lead, tmp_path):
    run_import(extraction, tmp_path, CONLL, name="b.conll", label_meaning="verified", user=lead)
    first = export(extraction, "conll")
    assert [(r.text, r.spans) for r in formats.read_conll(first)] == [
        (r.text, r.spans) for r in formats.read_conll(CONLL)
    ]
    copy = projects.project_create(name="Copy", slug="copy", user=lead, task_type="extraction")
    batch = run_import(copy, tmp_path, first, name="export.conll", create_labels=True)
    assert batch.status == "succeeded", batch.error_report
    assert export(copy, "conll") == first


def test_gold_draft_items_are_not_exported(extraction, tmp_path):
    run_import(extraction, tmp_path, jsonl(SOURCE[0]), gold="candidates")
    # Gold leaves only through a frozen version's export (issue #23).
    assert export(extraction) == "" and export(extraction, "conll") == ""


def test_frozen_gold_version_exports_its_spans(extraction, lead, tmp_path):
    run_import(extraction, tmp_path, jsonl(*SOURCE[:3]), gold="attested", user=lead)
    lines = [json.loads(line) for line in export(extraction, scope="gold", gold_version=1).splitlines()]
    assert [len(r["spans"]) for r in lines] == [3, 2, 0]
    assert all(r["label_state"] == "gold" for r in lines)


def test_export_form_offers_conll_only_to_extraction(extraction, project, lead_client):
    page = lead_client.get(reverse("annotation:project-detail", args=[extraction.slug])).content.decode()
    export_form = page[page.index('action="/p/bookings/export') :]
    assert '<option value="conll">' in export_form and '<option value="csv">' not in export_form
    page = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    export_form = page[page.index(f'action="/p/{project.slug}/export') :]
    assert '<option value="csv">' in export_form and 'value="conll"' not in export_form


def test_export_view_streams_conll_and_refuses_csv(extraction, reviewer_client, tmp_path):
    run_import(extraction, tmp_path, jsonl(*SOURCE))
    url = reverse("annotation:project-export", args=[extraction.slug])
    response = reviewer_client.get(url, {"format": "conll"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert (
        'filename="bookings-all-' in response["Content-Disposition"]
        and ".conll" in response["Content-Disposition"]
    )
    assert b"Paris\tB-location" in b"".join(response.streaming_content)
    response = reviewer_client.get(url)  # JSONL by default
    assert json.loads(next(iter(response.streaming_content)))["spans"][0]["text"] == "4"
    response = reviewer_client.get(url, {"format": "csv"})
    assert response.status_code == 302


def test_export_command_conll_and_csv_refused(extraction, tmp_path, capsys):
    run_import(extraction, tmp_path, jsonl(*SOURCE))
    out = tmp_path / "out.conll"
    call_command("export_examples", "--project=bookings", "--format=conll", f"--out={out}")
    assert "Wrote 3 examples" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == export(extraction, "conll")
    with pytest.raises(CommandError, match="exports jsonl or conll, not csv"):
        call_command("export_examples", "--project=bookings", "--format=csv")


def test_classification_export_is_unchanged_by_the_task(project, tmp_path):
    run_import(project, tmp_path, "text,label\nrefund please,Billing\n", name="d.csv", label_column="label")
    record = json.loads(export(project))
    assert record["label"] == "Billing" and "spans" not in record
    with pytest.raises(Exception, match="exports csv or jsonl, not conll"):
        export(project, "conll")
    assert Example.objects.filter(project=project).count() == 1
