"""A summarisation project's files: texts with a summary column in, summaries with provenance out."""

from __future__ import annotations

import csv
import io
import json

import pytest

from annotation import corpus, projects, review
from annotation.models import Example, GoldSetItem, Membership, Proposal, Review
from tests.annotation.test_import_extraction import assert_rejected, jsonl, run_import
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

CALLS = [
    {
        "id": "c1",
        "text": "Agent: Hello.\nCustomer: My parcel 771 is late.\nAgent: It arrives Friday.",
        "summary": "Parcel 771 is late; it arrives Friday.",
    },
    {
        "id": "c2",
        "text": "Agent: Hi.\nCustomer: I was charged $20 twice.\nAgent: I refunded $20.",
        "summary": "A $20 double charge was refunded.",
    },
    {"id": "c3", "text": "Agent: Good morning.\nCustomer: Please cancel my gym plan."},
]


@pytest.fixture
def calls(lead, reviewer):
    project = projects.project_create(
        name="Calls", slug="calls", user=lead, task_type="summarization", task_options={"target_length": 1}
    )
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    return project


def export(project, fmt: str = "jsonl", **scope) -> str:
    examples, gold_set = corpus.examples_for_export(project=project, **scope)
    out = io.StringIO()
    corpus.write_export(
        corpus.export_records(examples, gold_set=gold_set), fmt=fmt, out=out, task=project.task
    )
    return out.getvalue()


def test_a_jsonl_summary_column_imports_as_verified_reviews(calls, lead, tmp_path):
    batch = run_import(
        calls, tmp_path, jsonl(*CALLS), label_column="summary", label_meaning="verified", user=lead
    )
    assert batch.status == "succeeded", batch.error
    assert (batch.rows_created, batch.proposals_created) == (3, 2)
    values = {r.example.external_id: r.value for r in Review.objects.select_related("example")}
    assert values == {
        "c1": {"summary": "Parcel 771 is late; it arrives Friday."},
        "c2": {"summary": "A $20 double charge was refunded."},
    }
    assert Example.objects.get(external_id="c3").review_state == "unreviewed"


def test_a_csv_summary_column_imports_as_another_systems_proposals(calls, tmp_path):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "summary"])
    for call in CALLS:
        writer.writerow([call["text"], call.get("summary", "")])
    batch = run_import(
        calls,
        tmp_path,
        out.getvalue(),
        name="calls.csv",
        label_column="summary",
        label_meaning="predictions",
        label_agent="crm",
    )
    assert batch.status == "succeeded", batch.error
    proposal = Proposal.objects.get(example__text__contains="771")
    assert (proposal.agent, proposal.value) == (
        "import:crm",
        {"summary": "Parcel 771 is late; it arrives Friday."},
    )
    assert Proposal.objects.count() == 2


def test_a_summary_too_long_rejects_the_file_naming_the_line(calls, lead, tmp_path):
    rows = [*CALLS[:2], {"text": "Agent: x\nCustomer: y", "summary": "word " * 2000}]
    batch = run_import(
        calls, tmp_path, jsonl(*rows), label_column="summary", label_meaning="verified", user=lead
    )
    assert_rejected(batch, calls, [(3, "characters, over")])


def test_a_summarisation_project_refuses_conll_files(calls, lead, tmp_path):
    with pytest.raises(projects.ServiceError, match="a summarisation project reads csv"):
        corpus.import_batch_create(project=calls, user=lead, file_name="x.conll", path=tmp_path / "x.conll")


def test_the_export_writes_summaries_as_text_and_imports_again(calls, lead, tmp_path):
    run_import(calls, tmp_path, jsonl(*CALLS), label_column="summary", label_meaning="verified", user=lead)
    lines = [json.loads(line) for line in export(calls).splitlines()]
    assert [line["label"] for line in lines] == [CALLS[0]["summary"], CALLS[1]["summary"], None]
    assert lines[0]["provenance"]["reviews"][0]["value"] == {"summary": CALLS[0]["summary"]}
    rows = list(csv.DictReader(io.StringIO(export(calls, fmt="csv"))))
    assert rows[1]["label"] == "A $20 double charge was refunded."

    copy = projects.project_create(name="Copy", slug="copy", user=lead, task_type="summarization")
    batch = run_import(
        copy,
        tmp_path,
        export(calls),
        label_column="label",
        label_meaning="verified",
        user=lead,
        name="again.jsonl",
    )
    assert batch.status == "succeeded", batch.error
    assert sorted(r.value["summary"] for r in Review.objects.filter(example__project=copy)) == sorted(
        c["summary"] for c in CALLS[:2]
    )


def test_a_frozen_gold_item_keeps_both_reviewers_summaries_as_references(
    calls, lead, reviewer, django_user_model, tmp_path
):
    run_import(calls, tmp_path, jsonl(*CALLS), gold="candidates")
    second = make_user(django_user_model, "sam_second")
    Membership.objects.create(project=calls, user=second, role=Membership.Role.REVIEWER)
    draft = review.gold_draft(calls)
    examples = [item.example for item in draft.items.select_related("example").order_by("pk")]
    for number, example in enumerate(examples):
        example.project = calls
        review.gold_label_blind(
            gold_set=draft,
            example=example,
            user=reviewer,
            value={"summary": f"First view {number}.", "rating": 4},
        )
        review.gold_label_blind(
            gold_set=draft,
            example=example,
            user=second,
            value={"summary": f"Second view {number}.", "rating": 5},
        )
        review.gold_adjudicate(
            gold_set=draft, example=example, user=lead, value={"summary": f"Final {number}."}
        )
    status = review.gold_status(draft)
    assert status["agreement"]["rougeL"] is not None and status["agreement"]["rated"] == 3
    review.gold_freeze(gold_set=draft, user=lead)
    item = GoldSetItem.objects.get(gold_set=draft, example=examples[0])
    assert item.answer == {"summary": "Final 0.", "references": ["First view 0.", "Second view 0."]}
    line = json.loads(export(calls, scope="gold").splitlines()[0])
    assert line["label"] == "Final 0." and line["references"] == ["First view 0.", "Second view 0."]


def test_the_lead_changes_the_target_and_style_on_the_settings_page(calls, lead):
    from django.urls import reverse

    from annotation.models import Project
    from tests.conftest import client_for

    url = reverse("annotation:project-settings", args=[calls.slug])
    page = client_for(lead).get(url).content.decode()
    assert 'name="option__target_length"' in page and 'name="option__style"' in page
    form = {
        "name": "Calls",
        "guidelines": "",
        "review_order": "auto",
        "refresh_every": 100,
        "audit_share": 0.1,
    }
    options = {"option__target_unit": "words", "option__target_length": 40, "option__style": "Keep amounts."}
    assert client_for(lead).post(url, {**form, **options}).status_code == 302
    task = Project.objects.get(pk=calls.pk).task
    assert task.target == {"unit": "words", "length": 40} and "Keep amounts." in task.prompt_block()
    refused = client_for(lead).post(url, {**form, **options, "option__target_length": 0})
    assert refused.status_code == 200 and Project.objects.get(pk=calls.pk).task.target["length"] == 40


@pytest.mark.parametrize(
    "name, content, line",
    [
        ("bad.csv", 'text,summary\nAgent: hi,fine\n,orphan summary\nAgent: ok,"' + "word " * 1200 + '"\n', 3),
        ("bad.tsv", "text\tsummary\nAgent: hi\tfine\nAgent: a\tb\tc\n", 3),
        ("bad.jsonl", '{"text": "Agent: hi", "summary": "fine"}\n{"text": "Agent: x", "summary": 5}\n', 2),
    ],
)
def test_every_format_refuses_a_bad_summary_file_naming_its_line(calls, lead, tmp_path, name, content, line):
    batch = run_import(
        calls, tmp_path, content, name=name, label_column="summary", label_meaning="verified", user=lead
    )
    assert batch.status == "failed" and "nothing was imported" in batch.error
    assert batch.error_report[0]["line"] == line, batch.error_report
    assert not Example.objects.filter(project=calls).exists()
