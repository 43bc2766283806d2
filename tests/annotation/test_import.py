from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation import corpus, projects
from annotation.corpus import import_batch_claim, import_batch_run, importing, staging
from annotation.models import Example, ImportBatch, Label, Proposal

pytestmark = pytest.mark.django_db


def run_import(
    project, tmp_path: Path, content: bytes | str, name: str = "data.csv", **options
) -> ImportBatch:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    options.setdefault("user", None)
    batch = corpus.import_batch_create(project=project, file_name=name, path=path, **options)
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
        # Nested past the parser's recursion limit: a bad line, not a failed import with a traceback.
        (['{"text": "ok"}', "[" * 100_000 + "]" * 100_000], 2, "nested too deeply"),
        (['{"text": "ok", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}"], 1, "nested too deeply"),
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


@pytest.mark.parametrize("settle", [200_000, 20])
def test_a_bad_row_after_many_staged_rows_still_imports_nothing(project, tmp_path, monkeypatch, settle):
    # With 20-row settles PostgreSQL has moved four lots into the project before the bad row.
    monkeypatch.setattr(importing, "STAGE_BATCH_ROWS", 10)
    monkeypatch.setattr(staging, "SETTLE_ROWS", settle)
    rows = [f"ticket number {i}" for i in range(95)]
    content = "text,label\n" + "".join(f"{r},Billing\n" for r in rows) + "late,Unknown\n"
    batch = run_import(project, tmp_path, content, label_column="label")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.rows_read == 96 and batch.rows_invalid == 1
    assert batch.error_report == [{"line": 97, "reason": batch.error_report[0]["reason"]}]
    assert Example.objects.filter(project=project).count() == 0
    assert not Proposal.objects.filter(example__project=project).exists()


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


def test_a_text_another_writer_adds_during_the_import_is_skipped_not_an_error(project, tmp_path, monkeypatch):
    # The staged rows are checked against the project before the examples go in (PostgreSQL
    # then inserts without a per-row conflict check); a text that arrives in between (traffic
    # kept for review) must still count as a duplicate, get no proposal, and be the example
    # the file's gold row names.
    from annotation import review

    original = staging.Stage.insert_examples

    def racing(self, **kwargs):
        Example.objects.create(project=project, text="refund   PLEASE", source=Example.Source.TRAFFIC)
        return original(self, **kwargs)

    monkeypatch.setattr(staging.Stage, "insert_examples", racing)
    batch = run_import(
        project,
        tmp_path,
        "text,label\nRefund please,Billing\nThe app crashes,Technical support\nRefund please,Billing\n",
        label_column="label",
        gold="candidates",
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    assert (batch.rows_read, batch.rows_created, batch.rows_duplicate, batch.proposals_created) == (
        3,
        1,
        2,
        1,
    )
    raced = Example.objects.get(project=project, text="refund   PLEASE")
    assert raced.source == Example.Source.TRAFFIC and not raced.proposals.exists()
    crash = Example.objects.get(project=project, text="The app crashes")
    assert list(crash.proposals.values_list("value", flat=True)) == ["Technical support"]
    assert set(review.gold_draft(project).items.values_list("example_id", flat=True)) == {raced.pk, crash.pk}


def test_claim_is_taken_once(project, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one\n")
    batch = corpus.import_batch_create(project=project, user=None, file_name="a.txt", path=path)
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


# --- what imported labels mean, which columns are kept, gold from a file -------------------


def test_verified_labels_are_reviews_by_the_importing_lead(project, lead, tmp_path):
    from annotation.models import Review
    from annotation.teacher.service import reviewed_memory

    batch = run_import(
        project,
        tmp_path,
        "text,label\ncard charged twice,Billing\napp crashes,Technical support\nhello there,\n",
        label_column="label",
        label_meaning="verified",
        user=lead,
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    assert batch.proposals_created == 2
    assert not Proposal.objects.filter(example__project=project).exists()  # never mistaken for a teacher
    reviews = Review.objects.filter(example__project=project)
    assert {(r.reviewer, r.kind, r.verdict, r.value, r.is_bulk) for r in reviews} == {
        (lead, "review", "correct", "Billing", True),
        (lead, "review", "correct", "Technical support", True),
    }
    charged = Example.objects.with_current_label().get(text="card charged twice")
    assert (charged.label_state, charged.current_label) == ("reviewed", "Billing")
    assert (charged.review_state, charged.teacher_label) == ("reviewed", "")
    assert Example.objects.get(text="hello there").review_state == "unreviewed"
    # Reviewed examples are the teacher's few-shot memory.
    assert set(reviewed_memory(project)) == {
        ("card charged twice", "Billing"),
        ("app crashes", "Technical support"),
    }


def test_verified_labels_need_a_lead(project, reviewer, tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("text,label\nx,Billing\n")
    for user in (None, reviewer):
        with pytest.raises(projects.ServiceError, match="Only a lead"):
            corpus.import_batch_create(
                project=project,
                user=user,
                file_name="v.csv",
                path=path,
                label_column="label",
                label_meaning="verified",
            )
    assert not ImportBatch.objects.exists()


def test_predictions_are_proposals_by_the_named_system(project, tmp_path):
    batch = run_import(
        project,
        tmp_path,
        "text,label\ncard charged twice,Billing\n",
        label_column="label",
        label_agent="crm rules",
    )
    proposal = Proposal.objects.get(example__project=project)
    assert (proposal.agent, proposal.value) == ("import:crm rules", "Billing")
    assert batch.options["label_agent"] == "import:crm rules"
    with pytest.raises(projects.ServiceError, match="name takes"):
        corpus.import_batch_create(
            project=project,
            user=None,
            file_name="x.csv",
            path=tmp_path / "data.csv",
            label_column="label",
            label_agent="bad/name",
        )


def test_chosen_columns_are_kept_and_a_hidden_column_is_stored_apart(project, tmp_path):
    content = "text,channel,lang,truth\ncard charged twice,email,en,Billing\n"
    run_import(project, tmp_path, content, keep_columns=["channel"], hidden_column="truth")
    example = Example.objects.get(project=project)
    assert example.metadata == {"channel": "email"}
    assert example.hidden_metadata == {"truth": "Billing"}
    run_import(project, tmp_path, "text,channel\nanother,chat\n", name="b.csv", keep_columns=[])
    assert Example.objects.get(text="another").metadata == {}


def test_jsonl_keeps_chosen_keys_and_hides_one(project, tmp_path):
    line = {"text": "refund please", "tier": "pro", "lang": "en", "gold": "Billing"}
    run_import(
        project,
        tmp_path,
        json.dumps(line) + "\n",
        name="d.jsonl",
        keep_columns=["tier"],
        hidden_column="gold",
    )
    example = Example.objects.get(project=project)
    assert (example.metadata, example.hidden_metadata) == ({"tier": "pro"}, {"gold": "Billing"})


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"hidden_column": "truth"}, "no hidden column 'truth'"),
        ({"keep_columns": ["nope"]}, "no column 'nope' to keep"),
    ],
)
def test_unknown_hidden_or_kept_column_imports_nothing(project, tmp_path, options, reason):
    batch = run_import(project, tmp_path, "text,channel\nhello,email\n", **options)
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error_report == [{"line": 1, "reason": pytest.approx(batch.error_report[0]["reason"])}]
    assert reason in batch.error_report[0]["reason"]
    assert not Example.objects.exists()


def test_hidden_column_is_never_shown_to_reviewers_nor_exported(project, tmp_path, reviewer_client):
    from django.urls import reverse

    run_import(
        project,
        tmp_path,
        "text,channel,truth\nmy card was charged twice,email,SECRET-TRUTH\n",
        hidden_column="truth",
    )
    page = reviewer_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert "my card was charged twice" in page and "email" in page  # metadata is on the card
    assert "SECRET-TRUTH" not in page and "truth" not in page
    for fmt in ("jsonl", "csv"):
        response = reviewer_client.get(
            reverse("annotation:project-export", args=[project.slug]), {"format": fmt}
        )
        body = b"".join(response.streaming_content).decode()
        assert "my card was charged twice" in body and "SECRET-TRUTH" not in body


def test_file_as_gold_candidates_joins_the_draft_for_blind_labelling(project, tmp_path):
    from annotation import review

    run_import(project, tmp_path, "text\nalready here\ntraining text\n", name="corpus.csv")
    batch = run_import(
        project,
        tmp_path,
        "text,label\nalready here,Billing\nnew test text,Other\n",
        name="test.csv",
        label_column="label",
        gold="candidates",
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    draft = review.gold_draft(project)
    assert batch.options["gold_version"] == draft.version and batch.options["gold_items"] == 2
    assert set(draft.items.values_list("example__text", flat=True)) == {"already here", "new test text"}
    assert all(label is None for label in draft.items.values_list("answer", flat=True))  # labelled blind
    assert set(Example.objects.filter(is_gold=True).values_list("text", flat=True)) == {
        "already here",
        "new test text",
    }
    assert not Example.objects.not_gold().filter(text="new test text").exists()  # out of training


def test_candidates_cannot_claim_verified_labels(project, lead, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nx,Billing\n")
    with pytest.raises(projects.ServiceError, match="labelled blind"):
        corpus.import_batch_create(
            project=project,
            user=lead,
            file_name="t.csv",
            path=path,
            label_column="label",
            label_meaning="verified",
            gold="candidates",
        )


def test_attested_file_becomes_a_frozen_gold_version_with_provenance(project, lead, tmp_path):
    from annotation.models import GoldSet

    batch = run_import(
        project,
        tmp_path,
        "text,label\ncard charged twice,Billing\napp crashes,Technical support\n",
        name="team-test.csv",
        label_column="label",
        gold="attested",
        user=lead,
    )
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    gold = GoldSet.objects.get(project=project)
    assert gold.is_frozen and gold.is_attested
    assert (gold.attested_by, gold.attested_file, gold.attested_sha256, gold.import_batch) == (
        lead,
        "team-test.csv",
        batch.sha256,
        batch,
    )
    assert dict(gold.items.values_list("example__text", "answer")) == {
        "card charged twice": "Billing",
        "app crashes": "Technical support",
    }
    assert not Example.objects.not_gold().exists()


def test_attested_file_with_an_unlabelled_row_imports_nothing(project, lead, tmp_path):
    from annotation.models import GoldSet

    batch = run_import(
        project,
        tmp_path,
        "text,label\nfine,Billing\nmissing,\n",
        label_column="label",
        gold="attested",
        user=lead,
    )
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error_report[0]["line"] == 3 and "has no label" in batch.error_report[0]["reason"]
    assert not Example.objects.exists() and not GoldSet.objects.exists()


def test_teacher_evaluation_ignores_imported_systems(project, lead, tmp_path):
    from training import services as training_services

    run_import(
        project,
        tmp_path,
        "text,label\ncard charged twice,Billing\n",
        name="gold.csv",
        label_column="label",
        gold="attested",
        user=lead,
    )
    run_import(
        project,
        tmp_path,
        "text,label\ncard charged twice,Billing\n",
        name="crm.csv",
        label_column="label",
        label_agent="crm",
    )
    assert Proposal.objects.filter(agent="import:crm").count() == 0  # a duplicate: nothing new
    example = Example.objects.get()
    Proposal.objects.create(example=example, agent="import:crm", value="Billing")
    Proposal.objects.create(example=example, agent="import", value="Billing")
    evaluation = training_services.evaluate_teacher(project=project)
    assert evaluation.agent == "teacher"
    assert [row["predicted"] for row in evaluation.predictions] == [None]


def test_import_command_flags(project, lead, tmp_path, capsys):
    from annotation.models import GoldSet, Review

    path = tmp_path / "verified.csv"
    path.write_text("text,label,channel,lang,truth\ncard charged twice,Billing,email,en,x\n")
    call_command(
        "import_examples",
        project=project.slug,
        file=str(path),
        label_column="label",
        labels_are="verified",
        user=lead.username,
        keep_columns="channel",
        hidden_column="truth",
        no_progress=True,
    )
    assert "1 labels as verified reviews" in capsys.readouterr().out
    example = Example.objects.get()
    assert (example.metadata, example.hidden_metadata) == ({"channel": "email"}, {"truth": "x"})
    assert Review.objects.get().reviewer == lead

    gold = tmp_path / "gold.csv"
    gold.write_text("text,label\napp crashes,Technical support\n")
    call_command(
        "import_examples",
        "--project",
        project.slug,
        "--file",
        str(gold),
        "--label-column",
        "label",
        "--gold",
        "attested",
        "--user",
        lead.username,
        "--no-metadata",
        "--no-progress",
    )
    assert "into gold v1" in capsys.readouterr().out
    assert GoldSet.objects.get().attested_by == lead
    with pytest.raises(CommandError, match="Only a lead"):
        call_command(
            "import_examples",
            project=project.slug,
            file=str(gold),
            label_column="label",
            labels_are="verified",
            no_progress=True,
        )


def test_import_command_takes_a_string_path(project, tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("one\ntwo\n")
    call_command("import_examples", project=project.slug, file=str(path), no_progress=True)
    assert Example.objects.count() == 2
