"""Importing into an extraction project: JSONL spans or fields, CoNLL BIO, text only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation import corpus, projects
from annotation.corpus import import_batch_claim, import_batch_run
from annotation.models import Example, GoldSetItem, ImportBatch, Label, Membership, Proposal, Review
from tasks.extraction import formats
from tests.shared_data import dataset

pytestmark = pytest.mark.django_db

FIELDS = [("date", "When"), ("people", "How many people"), ("location", "Where")]
TEXT = "Table for 4 on 12 May in Paris"  # people 10-11, date 15-21, location 25-30


@pytest.fixture
def extraction(lead, reviewer):
    project = projects.project_create(
        name="Bookings", slug="bookings", user=lead, task_type="extraction", labels=FIELDS
    )
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    return project


def run_import(project, tmp_path: Path, content: str | bytes, name: str = "data.jsonl", **options):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    options.setdefault("user", None)
    batch = corpus.import_batch_create(project=project, file_name=name, path=path, **options)
    assert import_batch_claim(batch.pk)
    return import_batch_run(batch=batch)


def jsonl(*objects) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


def span(start: int, end: int, field: str) -> dict:
    return {"start": start, "end": end, "field": field}


def assert_rejected(batch: ImportBatch, project, expected: list[tuple[int, str]]) -> None:
    assert batch.status == ImportBatch.Status.FAILED, batch.error
    assert "nothing was imported" in batch.error
    report = [(row["line"], row["reason"]) for row in batch.error_report]
    assert len(report) == len(expected), report
    for (line, reason), (want_line, want) in zip(report, expected, strict=True):
        assert line == want_line and want in reason, report
    assert not Example.objects.filter(project=project).exists()
    assert not Proposal.objects.filter(example__project=project).exists()


# --- JSONL ----------------------------------------------------------------------------


def test_jsonl_spans_in_doccano_and_label_studio_shapes_are_proposals(extraction, tmp_path):
    batch = run_import(
        extraction,
        tmp_path,
        jsonl(
            {"text": TEXT, "id": "b-1", "spans": [{"start": 10, "end": 11, "label": "people"}], "lang": "en"},
            {"text": "Dinner on 3 June", "spans": [{"start": 10, "end": 16, "labels": ["date"]}]},
            {
                "text": "Lunch in Rome",
                "entities": [{"start_offset": 9, "end_offset": 13, "label": "location"}],
            },
            {"text": "Nothing to find here", "spans": []},
            {"text": "Not annotated yet"},
        ),
        label_agent="crm",
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    assert (batch.rows_read, batch.rows_created, batch.proposals_created) == (5, 5, 4)
    first = Example.objects.get(project=extraction, external_id="b-1")
    assert first.metadata == {"lang": "en"}
    proposal = first.proposals.get()
    assert (proposal.agent, proposal.value) == ("import:crm", {"spans": [span(10, 11, "people")]})
    queue_columns = list(
        Example.objects.filter(project=extraction).values_list("teacher_label", "review_state")
    )
    Example.objects.filter(project=extraction).sync_queue_fields()  # the queue's own rules agree
    assert list(Example.objects.filter(project=extraction).values_list("teacher_label", "review_state")) == (
        queue_columns
    )
    assert Example.objects.get(text="Dinner on 3 June").proposals.get().value == {
        "spans": [span(10, 16, "date")]
    }
    assert Example.objects.get(text="Lunch in Rome").proposals.get().value["spans"] == [
        span(9, 13, "location")
    ]
    assert Example.objects.get(text="Nothing to find here").proposals.get().value == {"spans": []}
    assert not Example.objects.get(text="Not annotated yet").proposals.exists()
    current = Example.objects.for_project(extraction).with_current_label().get(external_id="b-1")
    assert current.current_label == {"spans": [span(10, 11, "people")]}


def test_jsonl_fields_object_is_located_in_the_text(extraction, tmp_path):
    batch = run_import(
        extraction,
        tmp_path,
        jsonl({"text": TEXT, "fields": {"date": "12 May", "people": ["4"], "location": None}}),
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    value = Example.objects.get(project=extraction).proposals.get().value
    assert value == {"spans": [span(10, 11, "people"), span(15, 21, "date")]}


def test_spans_move_with_the_stripped_text(extraction, tmp_path):
    batch = run_import(
        extraction, tmp_path, jsonl({"text": "  \n" + TEXT + "  ", "spans": [[3 + 25, 3 + 30, "location"]]})
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    example = Example.objects.get(project=extraction)
    assert example.text == TEXT
    value = example.proposals.get().value
    assert [TEXT[s["start"] : s["end"]] for s in value["spans"]] == ["Paris"]


def test_text_only_files_import_as_today(extraction, tmp_path):
    assert run_import(extraction, tmp_path, "one text\nanother text\n", name="t.txt").rows_created == 2
    assert run_import(extraction, tmp_path, "text,channel\nthird text,web\n", name="t.csv").rows_created == 1
    assert not Proposal.objects.filter(example__project=extraction).exists()
    assert Example.objects.get(text="third text").metadata == {"channel": "web"}


@pytest.mark.parametrize(
    ("line", "obj", "reason"),
    [
        (2, {"text": TEXT, "spans": [{"start": 25, "end": 99, "label": "location"}]}, "outside the text"),
        (2, {"text": TEXT, "spans": [{"start": 11, "end": 11, "label": "people"}]}, "is empty"),
        (
            2,
            {"text": TEXT, "spans": [{"start": 25, "end": 30, "label": "location", "text": "Rome"}]},
            "'Rome'",
        ),
        (2, {"text": TEXT, "spans": [{"start": 25, "end": 30, "label": "venue"}]}, "unknown field 'venue'"),
        (2, {"text": TEXT, "fields": {"location": "Rome"}}, "'Rome' (location) is not in the text"),
        (2, {"text": TEXT, "label": "Billing"}, "single label (classification)"),
        (2, {"spans": []}, 'no "text"'),
    ],
)
def test_bad_jsonl_line_rejects_the_file_with_its_line(extraction, tmp_path, line, obj, reason):
    good = {"text": "Dinner on 3 June", "spans": [[10, 16, "date"]]}
    batch = run_import(extraction, tmp_path, jsonl(good, obj, {"text": "fine too"}))
    assert_rejected(batch, extraction, [(line, reason)])


def test_invalid_json_and_bad_encoding_name_their_lines(extraction, tmp_path):
    content = b'{"text": "fine"}\n{"text": \n{"text": "caf\xe9"}\n'
    batch = run_import(extraction, tmp_path, content)
    assert_rejected(batch, extraction, [(2, "not valid JSON"), (3, "not valid UTF-8")])


def test_json_nested_past_the_parsers_limit_is_a_bad_line(extraction, tmp_path):
    content = '{"text": "fine"}\n{"text": "x", "spans": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    batch = run_import(extraction, tmp_path, content)
    assert_rejected(batch, extraction, [(2, "nested too deeply")])


def test_one_value_field_with_two_values_is_rejected_by_the_task(extraction, tmp_path):
    Label.objects.filter(project=extraction, name="date").update(allows_many=False)
    extraction.forget_task()
    text = "From 3 June to 12 May"
    batch = run_import(extraction, tmp_path, jsonl({"text": text, "fields": {"date": ["3 June", "12 May"]}}))
    assert_rejected(batch, extraction, [(1, "field 'date' takes one value but has 2")])


def test_unknown_fields_are_created_with_palette_colours(extraction, tmp_path):
    batch = run_import(
        extraction,
        tmp_path,
        jsonl(
            {"text": TEXT, "spans": [[25, 30, "city"], [10, 11, "people"]]},
            {"text": "Call Ana at noon", "spans": [[5, 8, "name"], [12, 16, "time"]]},
        ),
        create_labels=True,
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    assert batch.labels_created == 3
    new = list(Label.objects.filter(project=extraction, name__in=["city", "name", "time"]).order_by("order"))
    assert [label.name for label in new] == ["city", "name", "time"]
    assert all(label.color.startswith("#") and label.key for label in new)
    assert len({label.color for label in new}) == 3
    assert "city" in extraction.task.names  # the cached task forgot the old fields


def test_create_labels_still_checks_offsets(extraction, tmp_path):
    batch = run_import(
        extraction, tmp_path, jsonl({"text": TEXT, "spans": [[25, 31, "city"]]}), create_labels=True
    )
    assert_rejected(batch, extraction, [(1, "outside the text")])
    assert not Label.objects.filter(project=extraction, name="city").exists()


def test_duplicates_within_the_file_and_the_project_are_skipped(extraction, tmp_path):
    run_import(extraction, tmp_path, jsonl({"text": TEXT}))
    batch = run_import(
        extraction,
        tmp_path,
        jsonl(
            {"text": "table for 4 ON 12 may in   paris", "spans": [[10, 11, "people"]]},
            {"text": "Dinner on 3 June", "spans": [[10, 16, "date"]]},
            {"text": "dinner on 3  june", "spans": [[0, 6, "date"]]},
        ),
        name="second.jsonl",
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    assert (batch.rows_created, batch.rows_duplicate, batch.proposals_created) == (1, 2, 1)
    # The first occurrence in the file wins; an example already there keeps its answers.
    assert Example.objects.get(text="Dinner on 3 June").proposals.get().value["spans"] == [
        span(10, 16, "date")
    ]
    assert not Example.objects.get(text=TEXT).proposals.exists()


def test_verified_spans_are_reviews_by_the_lead(extraction, lead, tmp_path):
    batch = run_import(
        extraction,
        tmp_path,
        jsonl({"text": TEXT, "spans": [[15, 21, "date"]]}, {"text": "No answer"}),
        label_meaning="verified",
        user=lead,
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    assert batch.proposals_created == 1
    example = Example.objects.get(text=TEXT)
    review = Review.objects.get(example=example)
    assert (review.reviewer, review.verdict, review.value, review.is_bulk) == (
        lead,
        Review.Verdict.CORRECT,
        {"spans": [span(15, 21, "date")]},
        True,
    )
    assert example.review_state == "reviewed" and not example.proposals.exists()
    assert Example.objects.get(text="No answer").review_state == "unreviewed"
    states = dict(
        Example.objects.for_project(extraction).with_current_label().values_list("text", "label_state")
    )
    assert states == {TEXT: "reviewed", "No answer": "unlabelled"}


def test_verified_spans_need_a_lead(extraction, reviewer, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(jsonl({"text": TEXT}))
    with pytest.raises(projects.ServiceError, match="Only a lead"):
        corpus.import_batch_create(
            project=extraction, user=reviewer, file_name="d.jsonl", path=path, label_meaning="verified"
        )


def test_attested_gold_file_freezes_the_spans(extraction, lead, tmp_path):
    batch = run_import(
        extraction,
        tmp_path,
        jsonl({"text": TEXT, "spans": [[25, 30, "location"]]}, {"text": "Nothing here", "spans": []}),
        gold="attested",
        user=lead,
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    gold_set = extraction.gold_sets.get()
    assert gold_set.is_frozen and batch.options["gold_items"] == 2
    labels = {i.example.text: i.answer for i in GoldSetItem.objects.filter(gold_set=gold_set)}
    assert labels == {TEXT: {"spans": [span(25, 30, "location")]}, "Nothing here": {"spans": []}}


def test_attested_gold_needs_an_answer_on_every_row(extraction, lead, tmp_path):
    batch = run_import(
        extraction,
        tmp_path,
        jsonl({"text": TEXT, "spans": []}, {"text": "no answer"}),
        gold="attested",
        user=lead,
    )
    assert_rejected(batch, extraction, [(2, "has no spans")])


def test_gold_candidates_from_a_span_file(extraction, tmp_path):
    batch = run_import(
        extraction, tmp_path, jsonl({"text": TEXT, "spans": [[25, 30, "location"]]}), gold="candidates"
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    item = GoldSetItem.objects.get(example__project=extraction)
    assert item.answer is None and not item.gold_set.is_frozen


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"label_column": "label"}, "not in a label column"),
        ({"text_column": "body"}, 'holds its text in "text"'),
        ({"fmt": "conll", "hidden_column": "truth"}, "no columns to choose"),
    ],
)
def test_column_options_that_a_span_file_cannot_have(extraction, tmp_path, options, message):
    path = tmp_path / "d.jsonl"
    path.write_text(jsonl({"text": TEXT}))
    with pytest.raises(projects.ServiceError, match=message):
        corpus.import_batch_create(project=extraction, user=None, file_name="d.jsonl", path=path, **options)


# --- CoNLL ----------------------------------------------------------------------------

CONLL = (
    "Table\tO\nfor\tO\n4\tB-people\non\tO\n12\tB-date\nMay\tI-date\n\t\nLunch\tO\nin\tO\nRome\tB-location\n\n"
)


def test_conll_sentences_become_texts_with_spans(extraction, tmp_path):
    batch = run_import(extraction, tmp_path, CONLL, name="bookings.txt", fmt="conll")
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    assert (batch.format, batch.rows_created, batch.proposals_created) == ("conll", 2, 2)
    value = Example.objects.get(text="Table for 4 on 12 May").proposals.get().value
    assert value == {"spans": [span(10, 11, "people"), span(15, 21, "date")]}
    assert Example.objects.get(text="Lunch in Rome").proposals.get().value == {
        "spans": [span(9, 13, "location")]
    }


def test_conll_extensions_are_recognised():
    assert corpus.guess_format("train.conll") == corpus.guess_format("x.BIO") == "conll"
    assert corpus.guess_format("x.txt") == "txt"  # CoNLL in a .txt file is chosen explicitly


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("Table\tO\nfor\n4\tB-people\n", 2, "expected a token and its tag"),
        ("Table\tO\n\nfor\tO\n4\tX-people\n", 4, "X-people"),
        ("Table\tO\n\nLunch\tO\nat\tB-venue\n", 3, "unknown field 'venue'"),
    ],
)
def test_malformed_conll_rejects_the_file_with_its_line(extraction, tmp_path, content, line, reason):
    batch = run_import(extraction, tmp_path, content, name="d.conll")
    assert_rejected(batch, extraction, [(line, reason)])


def test_line_numbers_stay_right_across_chunks(extraction, tmp_path, monkeypatch):
    monkeypatch.setattr("annotation.corpus.formats.ANSWER_CHUNK_LINES", 3)
    sentences = "".join(f"word{i}\tO\nParis\tB-location\n\n" for i in range(10))
    batch = run_import(extraction, tmp_path, sentences + "badline\nRome\tB-location\n", name="d.conll")
    assert_rejected(batch, extraction, [(31, "expected a token")])
    batch = run_import(extraction, tmp_path, sentences, name="ok.conll")
    assert batch.rows_created == 10 and batch.proposals_created == 10
    lines = [{"text": f"text {i}", "spans": [[0, 4, "date"]]} for i in range(7)]
    lines.insert(5, {"text": "Paris", "spans": [[0, 9, "location"]]})
    batch = run_import(extraction, tmp_path, jsonl(*lines), name="d.jsonl")
    assert batch.status == ImportBatch.Status.FAILED
    assert [(r["line"], "outside the text" in r["reason"]) for r in batch.error_report] == [(6, True)]


def test_classification_project_refuses_conll(project, tmp_path):
    path = tmp_path / "d.conll"
    path.write_text(CONLL)
    with pytest.raises(projects.ServiceError, match="CoNLL files hold extraction spans"):
        corpus.import_batch_create(project=project, user=None, file_name="d.conll", path=path)


def wnut_slice(folder: Path, sentences: int) -> str:
    """The first sentences of WNUT-17's dev file, exactly as written there."""
    kept, count = [], 0
    with (folder / "dev.conll").open(encoding="utf-8") as f:
        for line in f:
            kept.append(line)
            if not line.strip():
                count += 1
                if count == sentences:
                    break
    return "".join(kept)


def test_wnut17_slice_imports_as_is(lead, tmp_path, monkeypatch):
    content = wnut_slice(dataset("wnut17"), 300)
    monkeypatch.setattr("annotation.corpus.formats.ANSWER_CHUNK_LINES", 500)  # several chunks
    project = projects.project_create(name="WNUT", slug="wnut", user=lead, task_type="extraction")
    batch = run_import(project, tmp_path, content, name="dev.conll", create_labels=True)
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    expected = {row.text.strip(): row.spans for row in formats.read_conll(content)}
    assert batch.rows_created == len(expected) and batch.proposals_created == len(expected)
    fields = set(project.labels.values_list("name", flat=True))
    assert fields <= {"person", "location", "corporation", "product", "creative-work", "group"}
    assert len(fields) >= 4 and batch.labels_created == len(fields)
    imported = {
        e.text: e.proposals.get().value["spans"]
        for e in Example.objects.filter(project=project).prefetch_related("proposals")
    }
    assert imported == expected


# --- the upload view and the command ---------------------------------------------------


def upload_messages(client, url: str, data: dict) -> str:
    # Not followed: the project page's dashboard is another part's business.
    response = client.post(url, data)
    assert response.status_code == 302
    return " ".join(str(m) for m in get_messages(response.wsgi_request))


def test_upload_view_imports_conll_into_an_extraction_project(extraction, lead_client):
    page = lead_client.get(reverse("annotation:project-detail", args=[extraction.slug])).content.decode()
    assert 'value="conll"' in page and 'name="label_column"' not in page
    url = reverse("annotation:import-upload", args=[extraction.slug])
    conll = SimpleUploadedFile("b.conll", CONLL.encode())
    assert "Imported 2 new examples" in upload_messages(
        lead_client, url, {"file": conll, "label_meaning": "predictions"}
    )
    assert Proposal.objects.filter(example__project=extraction, agent="import").count() == 2
    # A CoNLL file always carries answers: the lead says what they are.
    said = upload_messages(lead_client, url, {"file": SimpleUploadedFile("c.conll", CONLL.encode())})
    assert "Say whether the spans are verified" in said
    bad = SimpleUploadedFile("d.jsonl", jsonl({"text": TEXT, "spans": [[25, 30, "venue"]]}).encode())
    assert "1 invalid row" in upload_messages(lead_client, url, {"file": bad})
    batch = ImportBatch.objects.filter(project=extraction).latest("pk")
    assert "unknown field 'venue'" in batch.error_report[0]["reason"]
    assert Example.objects.filter(project=extraction).count() == 2


def test_classification_upload_form_does_not_offer_conll(project, lead_client):
    page = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert 'value="conll"' not in page and 'name="label_column"' in page


def test_upload_needs_a_lead(extraction, reviewer_client):
    response = reviewer_client.post(
        reverse("annotation:import-upload", args=[extraction.slug]),
        {"file": SimpleUploadedFile("b.conll", CONLL.encode()), "label_meaning": "predictions"},
    )
    assert response.status_code == 403


def test_import_command_with_format_conll(extraction, lead, tmp_path, capsys):
    path = tmp_path / "bookings.txt"
    path.write_text(CONLL)
    call_command(
        "import_examples",
        "--project=bookings",
        f"--file={path}",
        "--format=conll",
        "--labels-are=verified",
        "--user=lena_lead",
        "--no-progress",
    )
    assert "Imported 2 new examples" in capsys.readouterr().out
    assert Review.objects.filter(example__project=extraction, reviewer=lead).count() == 2
    bad = tmp_path / "bad.conll"
    bad.write_text("Table\tO\nfor\n")
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_examples", "--project=bookings", f"--file={bad}", "--no-progress")
    assert "line 2: expected a token" in capsys.readouterr().err


def test_span_jsonl_keeps_chosen_keys_and_hides_one(extraction, tmp_path):
    line = {"text": TEXT, "spans": [[25, 30, "location"]], "lang": "en", "shop": 7, "truth": "SECRET"}
    batch = run_import(extraction, tmp_path, jsonl(line), keep_columns=["lang"], hidden_column="truth")
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error_report
    example = Example.objects.get(project=extraction)
    assert (example.metadata, example.hidden_metadata) == ({"lang": "en"}, {"truth": "SECRET"})


RECEIPT = "Burger 12.50 Subtotal 12.50 Total 12.50"


@pytest.fixture
def receipts(lead, reviewer):
    project = projects.project_create(
        name="Receipts",
        slug="receipts",
        user=lead,
        task_type="extraction",
        labels=[("total", "The sum paid")],
    )
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    return project


def test_a_fields_object_places_a_repeated_total_by_the_reviewed_receipts_and_counts_it(
    receipts, lead, tmp_path, reviewer, reviewer_client
):
    rows = [
        {"text": RECEIPT, "fields": {"total": "12.50"}},
        {"text": "Tea Total 1.20", "fields": {"total": "1.20"}},
    ]
    # Nothing reviewed yet: the first occurrence, and the import says so.
    first = run_import(receipts, tmp_path, jsonl(*rows), label_meaning="predictions")
    assert first.options["answer_notes"] == {"ambiguous": 1, "by_context": 0, "first": 1}
    proposal = Proposal.objects.get(example__text=RECEIPT)
    assert proposal.value["spans"][0]["start"] == 7  # the burger's price
    # The ambiguous placement comes first in the review queue.
    from annotation import review

    served = review.review_next(project=receipts, user=reviewer, filters=review.QueueFilter())
    assert served.text == RECEIPT
    page = reviewer_client.get(
        reverse("annotation:import-batch", args=[receipts.slug, first.pk])
    ).content.decode()
    assert 'data-metric="ambiguous-placements"' in page and 'data-field="first">1<' in page

    # Reviewed receipts whose totals follow "Total": a new file's total goes there.
    reviewed = jsonl(
        {"text": "Fries 3.00 Total 3.00", "spans": [span(17, 21, "total")]},
        {"text": "Soup 4.10 Tax 0.40 Total 4.50", "spans": [span(25, 29, "total")]},
    )
    run_import(receipts, tmp_path, reviewed, name="reviewed.jsonl", label_meaning="verified", user=lead)
    again = run_import(
        receipts,
        tmp_path,
        jsonl({"text": "Pie 12.50 Subtotal 12.50 Total 12.50", "fields": {"total": "12.50"}}),
        name="more.jsonl",
        label_meaning="predictions",
    )
    assert again.options["answer_notes"] == {"ambiguous": 1, "by_context": 1, "first": 0}
    assert Proposal.objects.get(example__text__startswith="Pie").value["spans"][0]["start"] == 31
