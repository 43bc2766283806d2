"""Summarisation through the training machinery: an extractive run on the demo's call notes
through a real worker, its gold evaluation beside the teacher's, the student served by the API;
and the abstractive path on a tiny random T5 the operator allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse
from rq import SimpleWorker

from annotation import projects
from annotation.models import Example, GoldSet, GoldSetItem, Proposal
from distillapp import ml
from training import services, serving

pytestmark = pytest.mark.django_db(transaction=True)

CALLS = Path(__file__).resolve().parents[2] / "annotation" / "demo" / "calls.jsonl"


def calls() -> list[dict]:
    return [json.loads(line) for line in CALLS.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def notes(lead):
    project = projects.project_create(
        name="Calls", slug="calls", user=lead, task_type="summarization", task_options={"target_length": 2}
    )
    # The 20 written summaries as the teacher's; the 40 bare calls get the first ones' summaries
    # rotated, so the run has enough rows (a test of the path, not of quality).
    records = calls()
    written = [r for r in records if "summary" in r]
    for i, record in enumerate(records):
        example = Example.objects.create(project=project, text=record["text"])
        summary = record.get("summary") or written[i % len(written)]["summary"]
        Proposal.objects.create(
            example=example, agent="teacher:m:prompt-v1", value={"summary": summary}, confidence=0.5
        )
    Example.objects.filter(project=project).sync_queue_fields()
    return project


def freeze_gold(project, lead, count: int = 6) -> list[Example]:
    gold = GoldSet.objects.create(project=project, version=1)
    examples = list(Example.objects.filter(project=project).order_by("pk")[:count])
    for example in examples:
        answer = example.proposals.get().value
        GoldSetItem.objects.create(
            gold_set=gold, example=example, answer={**answer, "references": ["Another view."]}
        )
    Example.objects.filter(pk__in=[e.pk for e in examples]).update(is_gold=True)
    gold.freeze(user=lead)
    return examples


def test_an_extractive_run_trains_evaluates_and_serves_summaries(
    notes, lead, lead_client, queues, settings, tmp_path
):
    settings.DATA_DIR = tmp_path
    gold_examples = freeze_gold(notes, lead)
    run = services.run_create(project=notes, user=lead, hyperparameters={"validation_fraction": 0.2})
    services.run_start(run=run)
    SimpleWorker([queues["training"]], connection=queues["training"].connection).work(burst=True)
    run.refresh_from_db()
    assert run.status == "succeeded", run.traceback
    manifest = json.loads((Path(run.artifact_path) / "manifest.json").read_text())
    seen = {row["id"] for row in manifest["train"] + manifest["validation"]}
    assert not seen & {e.pk for e in gold_examples} and len(seen) == 54
    validation = json.loads((Path(run.artifact_path) / "metrics.json").read_text())["validation"]
    assert 0 < validation["rouge1"] <= 1

    # The student's summaries are turns of each call, each led by its speaker and rewritten in
    # the third person ("Customer: I was charged" -> "Customer was charged").
    students = Proposal.objects.filter(agent="student:run-1").select_related("example")
    assert students.count() == 54
    for proposal in students[:10]:
        summary, text = proposal.value["summary"], proposal.example.text
        assert summary and 0 <= proposal.confidence <= 1
        words = set(text.lower().replace(",", " ").replace(".", " ").split())
        for line in filter(str.strip, summary.split("\n")):
            assert line.startswith(("Agent", "Customer")), line
            said = line.lower().replace(",", " ").replace(".", " ").split()
            assert sum(w in words for w in said) >= 0.6 * len(said), (line, text)

    student = services.evaluate_run(run=run)
    teacher = services.evaluate_teacher(project=notes)
    assert student.metrics["examples"] == teacher.metrics["examples"] == 6
    assert teacher.metrics["score"] == pytest.approx(1.0)  # the gold summary is the teacher's here
    assert 0 < student.metrics["score"] < 1 and student.metrics["coverage"]
    html = lead_client.get(reverse("training:evaluation", args=[notes.slug, student.pk])).content.decode()
    assert "ROUGE-L" in html and "Worst summaries" in html and "Which do people prefer?" in html
    assert "The teacher's" in html

    serving.version_promote(run=run, user=lead, threshold=0.0)
    _, raw = serving.token_create(project=notes, name="app", user=lead)
    response = lead_client.post(
        f"/api/v1/projects/{notes.slug}/predict",
        {"texts": [calls()[30]["text"]]},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 200, response.content
    prediction = response.json()["predictions"][0]
    assert prediction["route"] == "student" and prediction["summary"] and "label" not in prediction
    # The OpenAI-compatible drop-in answers the summary as the message content.
    chat = lead_client.post(
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": calls()[30]["text"]}]},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert chat.status_code == 200, chat.content
    assert chat.json()["choices"][0]["message"]["content"] == prediction["summary"]


def test_an_allowed_seq2seq_checkpoint_trains_the_abstractive_student(
    notes, lead, queues, settings, tmp_path
):
    settings.DATA_DIR = tmp_path
    base = ml.make_tiny_seq2seq(tmp_path / "tiny-t5")
    settings.STUDENT_BASE_MODELS = [str(base)]
    run = services.run_create(
        project=notes,
        user=lead,
        base_model=str(base),
        hyperparameters={"epochs": 1, "batch_size": 8, "max_length": 64, "learning_rate": 1e-3},
    )
    services.run_start(run=run)
    SimpleWorker([queues["training"]], connection=queues["training"].connection).work(burst=True)
    run.refresh_from_db()
    assert run.status == "succeeded", run.traceback
    assert json.loads((Path(run.artifact_path) / "model" / "config.json").read_text())["is_encoder_decoder"]
    proposal = Proposal.objects.filter(agent="student:run-1").first()
    assert proposal is not None and isinstance(proposal.value["summary"], str)
    assert 0 <= proposal.confidence <= 1


def test_a_teacher_with_no_answer_on_gold_is_not_measured_not_zero(notes, lead):
    freeze_gold(notes, lead)
    Proposal.objects.filter(example__is_gold=True).delete()  # the teacher never saw the gold texts
    teacher = services.evaluate_teacher(project=notes)
    assert teacher.metrics["answered"] == 0 and teacher.metrics["score"] is None


def test_the_likely_errors_order_serves_a_summary_with_made_up_facts_first(notes, lead, lead_client, queues):
    """ "Score likely label errors" on a summarisation project: the grounding check scores each
    summary, and the errors order serves the one naming what its call does not say first."""
    from annotation import review

    examples = list(Example.objects.filter(project=notes).order_by("pk"))
    # Only the calls with their own written summaries (the fixture lends the others someone
    # else's, which the check rightly scores low too).
    Proposal.objects.filter(example__in=examples[20:]).delete()
    example = examples[7]
    Proposal.objects.filter(example=example).update(
        value={"summary": "Mr Zoltan Fischer paid $9,999 on 31 March."}
    )
    response = lead_client.post(reverse("annotation:review-quality", args=[notes.slug]))
    SimpleWorker([queues["training"]], connection=queues["training"].connection).work(burst=True)
    assert response.status_code == 302
    run = notes.quality_runs.get()
    assert run.status == "succeeded", run.error
    example.refresh_from_db()
    assert example.quality_score < 0.5
    first = review.review_next(project=notes, user=lead, filters=review.QueueFilter(strategy="errors"))
    assert first == example
