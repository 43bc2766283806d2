"""Extraction through the training machinery: the training set, a tiny run through a real
worker, the manifest, the student's span proposals, evaluation of student and teacher, pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse
from rq import SimpleWorker

from annotation.models import Example, GoldSet, GoldSetItem, Label, Proposal
from distillapp import ml
from tests.conftest import make_project
from training import services
from training.models import Evaluation

pytestmark = pytest.mark.django_db

BOOKINGS = Path(__file__).resolve().parents[2] / "annotation" / "demo" / "bookings.jsonl"
FIELDS = [
    ("date", "The day of the booking"),
    ("time", "The time of the booking"),
    ("people", "How many people"),
    ("name", "The name the booking is under"),
]


def bookings(n: int) -> list[tuple[str, dict]]:
    """(text, answer) of the demo's first `n` booking requests (written for distillapp)."""
    rows = []
    for line in BOOKINGS.read_text(encoding="utf-8").splitlines()[:n]:
        record = json.loads(line)
        spans = [{"start": s["start"], "end": s["end"], "field": s["label"]} for s in record["spans"]]
        rows.append((record["text"], {"spans": sorted(spans, key=lambda s: (s["start"], s["end"]))}))
    return rows


@pytest.fixture(scope="session")
def tiny_base_path(tmp_path_factory) -> str:
    return ml.make_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture
def tiny_base(tiny_base_path, settings) -> str:
    """The tiny model, on the operator's list of base models (as a deployment would add it)."""
    settings.STUDENT_BASE_MODELS = [tiny_base_path]
    return tiny_base_path


@pytest.fixture
def extraction(lead, reviewer):
    project = make_project(lead=lead, reviewer=reviewer, slug="bookings", labels=FIELDS)
    project.task_type = "extraction"
    project.save(update_fields=["task_type"])
    Label.objects.filter(project=project, name="name").update(allows_many=False)
    project.forget_task()
    return project


def proposed(project, n: int = 34) -> list[Example]:
    """Teacher proposals for the first `n` requests, as a labelling job stores them."""
    examples = []
    for i, (text, answer) in enumerate(bookings(n)):
        example = Example.objects.create(project=project, text=text)
        Proposal.objects.create(
            example=example, agent="teacher:m:prompt-v1", value=answer, confidence=0.6 + (i % 4) / 10
        )
        examples.append(example)
    Example.objects.filter(project=project).sync_queue_fields()
    return examples


def test_training_set_keeps_span_answers_and_splits_by_the_fields_present(extraction):
    examples = proposed(extraction)
    # An answer naming a field the project no longer has is left out, not trained on.
    Proposal.objects.filter(example=examples[0]).update(
        value={"spans": [{"start": 0, "end": 2, "field": "venue"}]}
    )
    rows = services.training_set(project=extraction)
    assert [r["id"] for r in rows] == [e.pk for e in examples[1:]]
    assert all(set(r["label"]) == {"spans"} for r in rows)
    task = extraction.task
    train, validation = services.split_validation(rows, fraction=0.25, seed=1, stratum=task.stratum)
    assert validation and not {r["id"] for r in train} & {r["id"] for r in validation}
    assert len(train) + len(validation) == len(rows)
    # Stratified by the set of fields a text holds: the common "all four" group is in both.
    assert "date+name+people+time" in {task.stratum(r["label"]) for r in validation}
    estimate = services.training_estimate(
        project=extraction,
        label_source="all",
        teacher_min_confidence=0.0,
        include_synthetic=False,
        epochs=1,
    )
    assert estimate["examples"] == len(rows)
    assert set(estimate["per_label"]) == {"date", "time", "people", "name"}  # spans per field
    assert estimate["per_label"]["date"] == sum(
        s["field"] == "date" for r in rows for s in r["label"]["spans"]
    )


@pytest.mark.django_db(transaction=True)
def test_tiny_extraction_run_end_to_end_through_a_real_worker(
    extraction, lead, lead_client, tiny_base, queues, settings, tmp_path
):
    settings.DATA_DIR = tmp_path
    examples = proposed(extraction)
    gold = GoldSet.objects.create(project=extraction, version=1)
    gold_examples = examples[:4]
    for example in gold_examples:
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=example.proposals.get().value)
    Example.objects.filter(pk__in=[e.pk for e in gold_examples]).update(is_gold=True)
    gold.freeze(user=lead)

    run = services.run_create(
        project=extraction,
        user=lead,
        base_model=tiny_base,
        hyperparameters={
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_length": 48,
            "validation_fraction": 0.1,
        },
    )
    services.run_start(run=run)
    SimpleWorker([queues["training"]], connection=queues["training"].connection).work(burst=True)
    run.refresh_from_db()
    assert run.status == "succeeded", run.traceback
    assert run.step == run.total_steps > 0 and run.loss_history
    directory = Path(run.artifact_path)
    for name in [
        "model/config.json",
        "model/tokenizer.json",
        "manifest.json",
        "label_map.json",
        "metrics.json",
    ]:
        assert (directory / name).exists(), name
    # The model's head: BIO over the project's fields.
    config = json.loads((directory / "model" / "config.json").read_text())
    assert set(config["id2label"].values()) == {
        "O",
        *(f"{p}-{f}" for f in ("date", "time", "people", "name") for p in "BI"),
    }
    assert json.loads((directory / "label_map.json").read_text()) == {
        "0": "date",
        "1": "time",
        "2": "people",
        "3": "name",
    }
    manifest = json.loads((directory / "manifest.json").read_text())
    seen = manifest["train"] + manifest["validation"]
    assert {row["id"] for row in seen} == {e.pk for e in examples[4:]}  # never a gold example
    assert manifest["counts"]["train"] + manifest["counts"]["validation"] == 30
    assert manifest["counts"]["validation"] > 0
    answers = {e.pk: e.proposals.get(agent="teacher:m:prompt-v1").value for e in examples}
    assert all(row["label"] == answers[row["id"]] for row in seen)  # the span answers themselves
    assert set(manifest["counts"]["per_label"]) == {"date", "time", "people", "name"}
    validation = json.loads((directory / "metrics.json").read_text())["validation"]
    assert 0 <= validation["strict_f1"] <= 1 and validation["examples"] == manifest["counts"]["validation"]

    students = Proposal.objects.filter(agent="student:run-1")
    assert students.count() == 30 and not students.filter(example__is_gold=True).exists()
    for proposal in students:
        assert 0 <= proposal.confidence <= 1
        extraction.task.validate(proposal.value, text=proposal.example.text)  # a valid span set
        assert all(0 <= s["confidence"] <= 1 for s in proposal.value["spans"])

    student = services.evaluate_run(run=run)
    teacher = services.evaluate_teacher(project=extraction)
    assert student.metrics["examples"] == teacher.metrics["examples"] == 4
    assert teacher.metrics["score"] == 1.0 and teacher.metrics["exact_match"] == 1.0
    assert 0 <= student.metrics["score"] <= 1
    assert student.metrics["score"] == student.metrics["strict"]["micro"]["f1"]
    assert {f["field"] for f in student.metrics["per_field"]} >= {"date", "time", "people", "name"}
    assert student.metrics["coverage"] and student.metrics["with_confidence"] == 4
    assert all("right" in row for row in student.predictions)
    overlap = services.error_analysis(student, teacher)
    assert sum(len(ids) for ids in overlap.values()) == 4
    assert not overlap["only_teacher_wrong"] and not overlap["both_wrong"]  # the teacher is gold here

    html = lead_client.get(
        reverse("training:evaluation", args=[extraction.slug, student.pk])
    ).content.decode()
    assert 'data-table="per-field"' in html and 'data-field-row="people"' in html
    assert "strict F1" in html and 'data-metric="missed"' in html
    assert "Exact match vs coverage" in html
    wrong = [row for row in student.predictions if not row["right"]]
    if wrong:  # the worst examples, gold and predicted highlighted
        assert f'data-example="{wrong[0]["example"]}"' in html and "span-mark" in html
    cells = lead_client.get(
        reverse("training:evaluation-examples", args=[extraction.slug, student.pk]) + "?cell=both_right"
    )
    assert cells.status_code == 200
    for page in ("training:runs", "training:compare"):
        assert lead_client.get(reverse(page, args=[extraction.slug])).status_code == 200
    assert lead_client.get(reverse("training:run", args=[extraction.slug, 1])).status_code == 200
    assert Evaluation.objects.filter(project=extraction).count() == 2


def test_the_launch_form_offers_capitals_for_extraction_only(extraction, project, lead_client):
    from training.forms import LaunchForm

    form = LaunchForm(project=extraction)
    assert form.fields["case_feature"].initial is True
    assert form.fields["learning_rate"].initial == 1e-4
    assert "case_feature" not in LaunchForm(project=project).fields
    assert (
        "Mark capitals" not in lead_client.get(reverse("training:runs", args=[project.slug])).content.decode()
    )

    page = lead_client.get(reverse("training:runs", args=[extraction.slug])).content.decode()
    assert "Mark capitals" in page and 'name="case_feature"' in page
    proposed(extraction, 12)
    values = {n: f.initial for n, f in form.fields.items() if f.initial is not None}
    values.pop("case_feature")  # an unticked box sends nothing
    response = lead_client.post(reverse("training:run-create", args=[extraction.slug]), values)
    assert response.status_code == 302
    run = extraction.training_runs.get()
    assert run.hyperparameters["case_feature"] is False and run.hyperparameters["learning_rate"] == 1e-4
