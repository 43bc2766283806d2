"""Evaluation on gold: a run that trained on gold items is flagged, and those items are left out."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation import review
from annotation.models import Example, GoldSetItem, Proposal, Review
from tasks.classification import student as classification_student
from training import jobs, services
from training.models import Evaluation, TrainingRun
from training.services import runs

pytestmark = pytest.mark.django_db

LABELS = ["Billing", "Technical support", "Other"]


@pytest.fixture
def corpus(project):
    examples = []
    for i in range(12):
        example = Example.objects.create(project=project, text=f"ticket number {i}")
        Proposal.objects.create(example=example, agent="teacher:m:p1", value=LABELS[i % 3], confidence=0.9)
        examples.append(example)
    Example.objects.filter(project=project).sync_queue_fields()
    return examples


def trained_run(project, tmp_path, *, number: int = 1) -> TrainingRun:
    """A finished run whose manifest lists what it trained on (today's labels, before any gold draw)."""
    run = TrainingRun.objects.create(
        project=project, number=number, status="succeeded", artifact_path=str(tmp_path / f"run-{number}")
    )
    (tmp_path / f"run-{number}").mkdir()
    rows = services.training_set(project=project)
    runs._write_manifest(tmp_path / f"run-{number}", run, rows[:-2], rows[-2:], LABELS, {})
    return run


@pytest.fixture
def memorising_student(monkeypatch, project):
    """A student that learnt its training set by heart and knows nothing else (the torch boundary, faked)."""
    seen = dict(
        Example.objects.filter(project=project).with_current_label().values_list("text", "current_label")
    )

    def predict(model_dir, texts, **kwargs):
        labels = [seen[t] if t in memorised else "Other" for t in texts]
        return labels, [0.99] * len(texts)

    memorised: set[str] = set()
    monkeypatch.setattr(classification_student, "predict", predict)
    return memorised


def freeze_gold(project, examples, lead, reviewer, labels=None):
    """Gold v-next over these examples, labelled by two blind reviewers who agree, then frozen."""
    from django.contrib.auth import get_user_model

    second, _ = get_user_model().objects.get_or_create(username="sam_second")
    gold = review.gold_draft(project) or review.gold_draw(project=project, size=0)
    for example in examples:
        GoldSetItem.objects.create(gold_set=gold, example=example)
        Example.objects.filter(pk=example.pk).update(is_gold=True)
        label = (labels or {}).get(example.pk, example.teacher_label)
        for user in (reviewer, second):
            Review.objects.create(
                example=example, reviewer=user, kind="blind", verdict="correct", value=label
            )
    return review.gold_freeze(gold_set=gold, user=lead)


def test_gold_drawn_from_a_runs_training_data_is_flagged_and_left_out(
    project, corpus, lead, reviewer, tmp_path, memorising_student
):
    run = trained_run(project, tmp_path)
    manifest = json.loads((tmp_path / "run-1" / "manifest.json").read_text())
    trained = {r["id"] for r in manifest["train"]} | {r["id"] for r in manifest["validation"]}
    memorising_student.update(e.text for e in corpus if e.pk in trained)
    # Gold drawn after the run: four items it trained on, two it never saw (it gets those wrong).
    overlapping = [e for e in corpus if e.pk in trained][:4]
    unseen = Example.objects.create(project=project, text="never seen one")
    unseen_too = Example.objects.create(project=project, text="never seen two")
    freeze_gold(
        project,
        [*overlapping, unseen, unseen_too],
        lead,
        reviewer,
        labels={unseen.pk: "Billing", unseen_too.pk: "Billing"},
    )

    evaluation = services.evaluate_run(run=run)
    overlap = evaluation.metrics["gold_overlap"]
    assert overlap["count"] == 4
    assert overlap["example_ids"] == sorted(e.pk for e in overlapping)
    # Old code scored the memorised items too (accuracy 4/6); only the unseen two count now.
    assert evaluation.metrics["examples"] == 2 and evaluation.accuracy == 0.0
    assert {r["example"] for r in evaluation.predictions} == {unseen.pk, unseen_too.pk}


def test_a_gold_set_entirely_inside_the_training_data_is_refused(
    project, corpus, lead, reviewer, tmp_path, memorising_student
):
    run = trained_run(project, tmp_path)
    memorising_student.update(e.text for e in corpus)
    freeze_gold(project, corpus[:5], lead, reviewer)  # old code: accuracy 1.0
    with pytest.raises(services.TrainingError, match="all 5 gold items were in run 1's training data"):
        services.evaluate_run(run=run)
    assert not Evaluation.objects.exists()


def test_the_same_text_under_another_id_counts_as_overlap(
    project, corpus, lead, reviewer, tmp_path, memorising_student
):
    run = trained_run(project, tmp_path)
    # The trained example is deleted and its text comes back in a later import.
    trained = corpus[0]
    Proposal.objects.filter(example=trained).delete()
    Example.objects.filter(pk=trained.pk).delete()
    again = Example.objects.create(project=project, text=trained.text)
    fresh = Example.objects.create(project=project, text="a text no run has seen")
    freeze_gold(project, [again, fresh], lead, reviewer, labels={again.pk: "Billing", fresh.pk: "Other"})
    evaluation = services.evaluate_run(run=run)
    assert evaluation.metrics["gold_overlap"]["example_ids"] == [again.pk]


def test_the_evaluate_command_reports_the_overlap_and_fails_unless_allowed(
    project, corpus, lead, reviewer, tmp_path, memorising_student
):
    trained_run(project, tmp_path)
    fresh = Example.objects.create(project=project, text="a text no run has seen")
    freeze_gold(
        project, [corpus[0], fresh], lead, reviewer, labels={fresh.pk: "Other"}
    )  # corpus[0] was trained on
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 gold item was in run 1's training data"):
        call_command("evaluate", "--project", project.slug, "--run", "1", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["gold_overlap"] == {
        "count": 1,
        "example_ids": [corpus[0].pk],
        "excluded_from_metrics": True,
        "gold_items": 2,
    }
    out = io.StringIO()
    call_command("evaluate", "--project", project.slug, "--run", "1", "--json", "--allow-overlap", stdout=out)
    assert json.loads(out.getvalue())["gold_overlap"]["count"] == 1


def test_no_overlap_is_reported_as_zero(project, corpus, lead, reviewer, tmp_path, memorising_student):
    run = trained_run(project, tmp_path)
    fresh = [Example.objects.create(project=project, text=f"fresh {i}") for i in range(3)]
    freeze_gold(project, fresh, lead, reviewer, labels={e.pk: "Other" for e in fresh})
    out = io.StringIO()
    call_command("evaluate", "--project", project.slug, "--run", "1", "--json", stdout=out)
    assert json.loads(out.getvalue())["gold_overlap"] == {
        "count": 0,
        "example_ids": [],
        "excluded_from_metrics": True,
        "gold_items": 3,
    }
    assert Evaluation.objects.get(run=run).accuracy == 1.0


def test_the_evaluation_page_warns_about_overlap(
    project, corpus, lead, reviewer, tmp_path, memorising_student, reviewer_client
):
    run = trained_run(project, tmp_path)
    fresh = Example.objects.create(project=project, text="a text no run has seen")
    freeze_gold(project, [corpus[0], fresh], lead, reviewer, labels={fresh.pk: "Other"})
    evaluation = services.evaluate_run(run=run)
    html = reviewer_client.get(
        reverse("training:evaluation", args=[project.slug, evaluation.pk])
    ).content.decode()
    assert 'data-warning="gold-overlap"' in html
    assert "1 of 2 gold items" in html and "left out" in html


def test_gold_items_rejected_as_no_label_fits_are_left_out_of_every_metric(
    project, corpus, lead, reviewer, tmp_path, memorising_student, lead_client
):
    run = trained_run(project, tmp_path)
    spam, fine = (Example.objects.create(project=project, text=t) for t in ("buy cheap pills", "fresh one"))
    Proposal.objects.create(example=spam, agent="teacher:m:p1", value="Billing", confidence=0.6)
    gold = review.gold_draw(project=project, size=0)
    for example in (spam, fine):
        GoldSetItem.objects.create(gold_set=gold, example=example)
    from django.contrib.auth import get_user_model

    second = get_user_model().objects.create_user(username="sam_second")
    for user in (reviewer, second):
        review.gold_label_blind(gold_set=gold, example=spam, user=user, verdict="reject")
        review.gold_label_blind(gold_set=gold, example=fine, user=user, label="Other")
    review.gold_freeze(gold_set=gold, user=lead)

    student = services.evaluate_run(run=run)
    teacher = services.evaluate_teacher(project=project)
    for evaluation in (student, teacher):
        assert evaluation.metrics["examples"] == 1 and evaluation.metrics["gold_without_label"] == 1
        assert [r["example"] for r in evaluation.predictions] == [fine.pk]
    html = lead_client.get(reverse("training:evaluation", args=[project.slug, student.pk])).content.decode()
    assert "1 gold item of this version has no label" in html


def test_an_imported_system_is_evaluated_as_itself_beside_teacher_and_student(
    project, corpus, tmp_path, memorising_student, lead, lead_client
):
    """#14 item 2b: another system's imported predictions are measured as that named agent."""
    run = trained_run(project, tmp_path)
    gold = review.gold_draw(project=project, size=0)
    fresh = [Example.objects.create(project=project, text=f"new ticket {i}") for i in range(4)]
    for example, label in zip(fresh, ["Billing", "Billing", "Other", "Technical support"], strict=True):
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=label)
        # The CRM's rules say Billing for everything: right on 2 of 4.
        Proposal.objects.create(example=example, agent="import:crm", value="Billing")
    gold.freeze(user=lead)
    assert services.imported_systems(project, gold) == ["import:crm"]
    lead_client.post(
        reverse("training:run-evaluate", args=[project.slug, run.number]), {"target_accuracy": "0.95"}
    )
    job = run.evaluation_jobs.get()
    jobs.run_evaluation_job(job.pk)  # what a training worker runs (the student faked here)
    system = Evaluation.objects.get(subject=Evaluation.Subject.SYSTEM)
    assert (system.agent, system.metrics["accuracy"]) == ("import:crm", 0.5)
    teacher = Evaluation.objects.get(subject=Evaluation.Subject.TEACHER)
    assert teacher.agent != "import:crm"
    done = lead_client.get(reverse("training:evaluation-job", args=[project.slug, job.pk]))
    page = lead_client.get(done["Location"]).content.decode()
    assert 'data-system="import:crm"' in page and "0.500" in page
    with pytest.raises(services.TrainingError, match="not an imported system"):
        services.evaluate_system(project=project, agent="teacher:m:p1")


def test_evaluate_json_says_a_teacher_with_no_answer_on_gold_was_not_measured(
    project, corpus, lead, reviewer, tmp_path, memorising_student
):
    """#24 honest figures: a project of human labels has no teacher answers on gold. Old code:
    ``teacher.accuracy: 0.0`` and every gold item counted "only the teacher is wrong"."""
    trained_run(project, tmp_path)
    fresh = [Example.objects.create(project=project, text=f"human-labelled {i}") for i in range(4)]
    for example in fresh:  # verified labels imported, never a teacher's answer
        Proposal.objects.create(example=example, agent="import", value="Other")
    freeze_gold(project, fresh, lead, reviewer, labels={e.pk: "Other" for e in fresh})
    out = io.StringIO()
    call_command("evaluate", "--project", project.slug, "--run", "1", "--json", stdout=out)
    report = json.loads(out.getvalue())
    teacher = report["teacher"]
    assert teacher["accuracy"] is None and teacher["score"] is None
    assert "no answer on any of the 4 gold texts" in teacher["not_measured"]
    assert "per_class" not in teacher and "coverage" not in teacher
    assert report["student"]["accuracy"] == 1.0
    assert report["overlap"]["only_teacher_wrong"] == 0 and report["overlap"]["both_wrong"] == 0
    text = io.StringIO()
    call_command("evaluate", "--project", project.slug, "--run", "1", stdout=text)
    assert "teacher accuracy not measured (no answer on any of the 4 gold texts)" in text.getvalue()
