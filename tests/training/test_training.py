"""Training runs end to end on a tiny model, the training-set rules, evaluation and pages."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rq import SimpleWorker

from annotation.models import Example, GoldSet, GoldSetItem, Proposal, Review
from tasks import stats
from tasks.classification.task import classification_metrics
from tests.conftest import make_project
from training import services
from training.models import Evaluation, TrainingRun

pytestmark = pytest.mark.django_db

WORDS = {
    "Billing": ["invoice", "refund", "charged", "payment", "receipt", "billing"],
    "Technical support": ["crash", "error", "bug", "login", "broken", "freeze"],
}


def labelled(project, reviewer, n_per_label: int = 12):
    examples = []
    for label, words in WORDS.items():
        for i in range(n_per_label):
            example = Example.objects.create(
                project=project, text=f"{words[i % 6]} {words[(i + 1) % 6]} number {i}"
            )
            Proposal.objects.create(
                example=example, agent="teacher:m:prompt-v1", value=label, confidence=0.5 + i / 40
            )
            examples.append(example)
    Example.objects.filter(project=project).sync_queue_fields()
    return list(Example.objects.filter(pk__in=[e.pk for e in examples]).order_by("pk"))


def test_training_set_rules(project, reviewer, lead):
    examples = labelled(project, reviewer, 4)
    reviewed, rejected, gold_flagged, gold_item, synthetic = examples[:5]
    Review.objects.create(example=reviewed, reviewer=reviewer, verdict="correct", value="Technical support")
    Review.objects.create(example=rejected, reviewer=reviewer, verdict="reject")
    Example.objects.filter(pk=gold_flagged.pk).update(is_gold=True)
    gold = GoldSet.objects.create(project=project, version=1)
    GoldSetItem.objects.create(gold_set=gold, example=gold_item, answer="Billing")
    Example.objects.filter(pk=synthetic.pk).update(source="synthetic")
    Example.objects.filter(project=project).sync_queue_fields()

    rows = {r["id"]: r for r in services.training_set(project=project)}
    assert (
        reviewed.pk in rows and rows[reviewed.pk]["label"] == "Technical support"
    )  # the verdict beats the proposal
    for excluded in (rejected, gold_flagged, gold_item, synthetic):
        assert excluded.pk not in rows
    assert len(rows) == 8 - 5 + 1
    with_synthetic = services.training_set(project=project, include_synthetic=True)
    assert synthetic.pk in {r["id"] for r in with_synthetic}
    only_reviewed = services.training_set(project=project, label_source="reviewed")
    assert [r["id"] for r in only_reviewed] == [reviewed.pk]
    confident = services.training_set(
        project=project, label_source="reviewed+teacher", teacher_min_confidence=0.55
    )
    assert {r["id"] for r in confident} == {reviewed.pk} | {
        e.pk for e in examples[5:] if Example.objects.get(pk=e.pk).teacher_confidence >= 0.55
    }


def test_a_gold_example_never_reaches_training_whatever_the_options(project, reviewer, lead):
    examples = labelled(project, reviewer, 4)
    gold_example = examples[0]
    Review.objects.create(example=gold_example, reviewer=reviewer, verdict="accept", value="Billing")
    Example.objects.filter(pk=gold_example.pk).update(source="synthetic")
    gold = GoldSet.objects.create(project=project, version=1)
    GoldSetItem.objects.create(gold_set=gold, example=examples[1], answer="Billing")
    Example.objects.filter(pk=gold_example.pk).update(is_gold=True, source="imported")
    for source in ["reviewed", "reviewed+teacher", "all"]:
        for synthetic in (True, False):
            ids = {
                r["id"]
                for r in services.training_set(
                    project=project,
                    label_source=source,
                    teacher_min_confidence=0.0,
                    include_synthetic=synthetic,
                )
            }
            assert gold_example.pk not in ids and examples[1].pk not in ids


def test_validation_split_is_stratified_and_disjoint():
    rows = [{"id": i, "label": "A" if i % 2 else "B"} for i in range(40)]
    train, validation = services.split_validation(rows, fraction=0.25, seed=1)
    assert len(validation) == 10 and {r["label"] for r in validation} == {"A", "B"}
    assert not {r["id"] for r in train} & {r["id"] for r in validation}


@pytest.mark.django_db(transaction=True)
def test_tiny_run_end_to_end_through_a_real_worker(
    project, reviewer, lead, tiny_base, queues, settings, tmp_path
):
    settings.DATA_DIR = tmp_path
    examples = labelled(project, reviewer)
    gold = GoldSet.objects.create(project=project, version=1)
    for example in examples[:4]:
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=example.teacher_label)
    Example.objects.filter(pk__in=[e.pk for e in examples[:4]]).update(is_gold=True)
    gold.freeze(user=lead)

    run = services.run_create(
        project=project,
        user=lead,
        base_model=tiny_base,
        hyperparameters={"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "max_length": 16},
    )
    services.run_start(run=run)
    # run_start enqueues on commit; in a transactional test that is at once.
    SimpleWorker([queues["training"]], connection=queues["training"].connection).work(burst=True)
    run.refresh_from_db()
    assert run.status == "succeeded", run.traceback
    assert run.device == "cpu" and run.train_seconds > 0
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
    manifest = json.loads((directory / "manifest.json").read_text())
    trained = {row["id"] for row in manifest["train"]} | {row["id"] for row in manifest["validation"]}
    assert trained == {e.pk for e in examples[4:]}  # no gold example
    assert all(row["hash"] and row["label"] for row in manifest["train"])
    assert manifest["counts"]["train"] + manifest["counts"]["validation"] == 20
    assert json.loads((directory / "label_map.json").read_text()) == {
        "0": "Billing",
        "1": "Technical support",
    }
    students = Proposal.objects.filter(agent="student:run-1")
    assert students.count() == 20 and not students.filter(example__is_gold=True).exists()
    assert all(0 <= p.confidence <= 1 for p in students)
    assert Example.objects.exclude(student_label="").count() == 20  # queue fields follow

    call_command("evaluate", "--project", project.slug, "--run", "1", "--json")
    student = Evaluation.objects.get(subject="student")
    teacher = Evaluation.objects.get(subject="teacher")
    assert student.metrics["examples"] == 4 and teacher.metrics["accuracy"] == 1.0


def test_cancel_stops_the_run(project, reviewer, lead, tiny_base, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    labelled(project, reviewer)
    run = services.run_create(
        project=project, user=lead, base_model=tiny_base, hyperparameters={"epochs": 5, "batch_size": 4}
    )
    assert services.run_claim(run.pk)
    TrainingRun.objects.filter(pk=run.pk).update(is_cancel_requested=True)
    run = services.run_execute(run=run)
    assert run.status == "cancelled" and run.step == 1
    assert not Proposal.objects.filter(agent="student:run-1").exists()


def test_failed_run_records_the_error(project, reviewer, lead, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    labelled(project, reviewer, 3)
    settings.STUDENT_BASE_MODELS = [str(tmp_path / "no-such-model")]
    run = services.run_create(project=project, user=lead, base_model=str(tmp_path / "no-such-model"))
    assert services.run_claim(run.pk)
    with pytest.raises(OSError):
        services.run_execute(run=run)
    run.refresh_from_db()
    assert run.status == "failed" and run.error.startswith("OSError") and "Traceback" in run.traceback


def finished_run(project, number: int, *, kind="finetune", base_model="", modelled=100.0, wall=300.0):
    """A run that finished here: `wall` seconds, where the rough guess made for it said `modelled`."""
    now = timezone.now()
    return TrainingRun.objects.create(
        project=project,
        number=number,
        kind=kind,
        base_model=base_model,
        status=TrainingRun.Status.SUCCEEDED,
        device="cpu",
        train_seconds=wall - 10,
        counts={"train": 100, "estimate": {"modelled_seconds": modelled}},
        started_at=now - timezone.timedelta(seconds=wall),
        finished_at=now - timezone.timedelta(seconds=number),
    )


def test_time_estimate_scales_by_earlier_runs_of_the_same_kind_only(project, reviewer, lead):
    """#24 honest figures: old code took the last fine-tune speed of any project or task type
    (189 min shown for a 5-minute run). Now only runs of the same task type, run kind and base
    model calibrate the guess for these texts, and the estimate says how sure it is."""
    labelled(project, reviewer)  # 24 examples
    ask = dict(
        project=project,
        label_source=TrainingRun.LabelSource.ALL_CURRENT,
        teacher_min_confidence=0.0,
        include_synthetic=False,
        epochs=4,
    )
    first = services.training_estimate(**ask)
    rows = services.training_set(project=project, label_source=TrainingRun.LabelSource.ALL_CURRENT)
    tokens = sum(services.approx_tokens(r["text"], 64) for r in rows)
    predict = Example.objects.for_project(project).not_gold().count() * tokens / len(rows)
    fixed, train_rate, predict_rate = services.ROUGH_GUESS["finetune"]
    modelled = fixed + tokens * 4 / train_rate + predict / predict_rate
    assert first["modelled_seconds"] == round(modelled, 1)
    assert first["minutes"] == round(modelled / 60, 1) and first["sure"] == "rough"
    assert "no earlier run of this kind here, so a rough guess" in first["about"]
    # Slow runs of other kinds say nothing about this one: an extraction fine-tune, a quick
    # run, a fine-tune of another base model.
    spans = make_project(lead=lead, slug="spans")
    spans.task_type = "extraction"
    spans.save()
    finished_run(spans, 1, wall=100 * 60)
    finished_run(project, 1, kind="quick", wall=100 * 60)
    finished_run(project, 2, base_model="bert-base-uncased", wall=100 * 60)
    assert services.training_estimate(**ask)["sure"] == "rough"
    # Three fine-tunes of the bundled MiniLM on classification: 2x, 3x and 4x the guess.
    for number, wall in ((3, 200.0), (4, 300.0), (5, 400.0)):
        finished_run(project, number, wall=wall)
    measured = services.training_estimate(**ask)
    assert measured["sure"] == "measured"
    assert measured["minutes"] == round(modelled * 3 / 60, 1)
    assert measured["measured_runs"] == [f"run {n} of {project.name}" for n in (3, 4, 5)]
    assert "from 3 earlier runs of this kind here" in measured["about"]
    assert "would have taken" in measured["about"]
    # The quick kind has its own: the one quick run here (60x its guess).
    quick = services.training_estimate(**ask, kind="quick")
    assert "from the one earlier run of this kind" in quick["about"]


def test_the_launch_form_says_how_long_each_kind_takes_and_how_sure(project, reviewer, lead, lead_client):
    labelled(project, reviewer)
    finished_run(project, 1, wall=300.0)
    html = lead_client.get(reverse("training:runs", args=[project.slug])).content.decode()
    assert 'data-estimate="measured"' in html and "from the one earlier run of this kind here" in html
    assert 'data-estimate="rough"' in html  # the quick student: no quick run yet
    assert "no earlier run of this kind here, so a rough guess" in html
    assert "examples/s measured on" not in html


def test_reviewers_cannot_launch(project, reviewer, lead, reviewer_client):
    labelled(project, reviewer, 3)
    with pytest.raises(services.TrainingError, match="Only the project's leads"):
        services.run_create(project=project, user=reviewer)
    assert (
        reviewer_client.post(reverse("training:run-create", args=[project.slug]), {"epochs": 1}).status_code
        == 403
    )


def test_not_enough_data_is_refused(project, lead):
    with pytest.raises(services.TrainingError, match="Not enough labelled data"):
        services.run_create(project=project, user=lead)


def test_admin_action_launches_for_leads(
    project, reviewer, queues, django_user_model, django_capture_on_commit_callbacks
):
    from django.test import Client

    labelled(project, reviewer, 3)
    admin = django_user_model.objects.create_superuser(username="root", password="pw", email="r@example.com")
    client = Client()
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:annotation_project_changelist"),
            {"action": "launch_training_run", "_selected_action": [project.pk]},
            follow=True,
        )
    assert "run 1 queued" in response.content.decode()
    assert [j.func_name for j in queues["training"].jobs] == ["training.jobs.run_training_run"]


def test_metrics_against_a_hand_computed_case():
    golds = ["A", "A", "A", "B", "B", "C"]
    preds = ["A", "A", "B", "B", "C", "C"]
    confs = [0.9, 0.8, 0.6, 0.7, 0.55, 0.95]
    m = classification_metrics(golds, preds, confs, ["A", "B", "C"], target_accuracy=0.99)
    assert m["accuracy"] == pytest.approx(4 / 6)
    per = {c["label"]: c for c in m["per_class"]}
    # A: tp 2, fp 0, fn 1 -> P 1, R 2/3; B: tp 1, fp 1, fn 1 -> P 1/2, R 1/2; C: tp 1, fp 1, fn 0 -> P 1/2, R 1
    assert (per["A"]["precision"], per["A"]["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (per["B"]["precision"], per["B"]["recall"]) == (0.5, 0.5)
    assert (per["C"]["precision"], per["C"]["recall"], per["C"]["support"]) == (0.5, 1.0, 1)
    assert m["macro_avg"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["micro_avg"]["f1"] == pytest.approx(4 / 6)
    assert m["confusion"]["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["top_confusions"][0]["count"] == 1
    # Calibration, 10 bins: (0.5-0.6]: 0.55 wrong; [0.6,0.7): 0.6 wrong; [0.7,0.8): 0.7 right;
    # [0.8,0.9): 0.8 right; [0.9,1]: 0.9 right, 0.95 right.
    expected_ece = (abs(0 - 0.55) + abs(0 - 0.6) + abs(1 - 0.7) + abs(1 - 0.8) + 2 * abs(1 - 0.925)) / 6
    assert m["ece"] == pytest.approx(expected_ece)
    # Accuracy 1.0 is first reached at threshold 0.65 (the four right answers), coverage 4/6;
    # but 4 items cannot show 0.99 (Wilson lower bound 0.51): no threshold is recommended.
    assert m["threshold"] is None
    assert m["recommendation"]["status"] == "too_small"
    assert m["recommendation"]["row"]["threshold"] == 0.65
    assert m["recommendation"]["row"]["coverage"] == pytest.approx(4 / 6)


def test_error_overlap_cells():
    student = {1: True, 2: False, 3: True, 4: False, 5: True}
    teacher = {1: True, 2: True, 3: False, 4: False}
    assert stats.error_overlap(student, teacher) == {
        "both_right": [1],
        "only_student_wrong": [2],
        "only_teacher_wrong": [3],
        "both_wrong": [4],
    }


@pytest.mark.django_db(transaction=True)
def test_pages_for_a_finished_run(
    project,
    reviewer,
    lead,
    tiny_base,
    lead_client,
    reviewer_client,
    outsider_client,
    settings,
    tmp_path,
    queues,
):
    settings.DATA_DIR = tmp_path
    examples = labelled(project, reviewer)
    gold = GoldSet.objects.create(project=project, version=1)
    for example in examples[:6]:
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=example.teacher_label)
    gold.freeze(user=lead)
    Example.objects.filter(pk__in=[e.pk for e in examples[:6]]).update(is_gold=True)
    run = services.run_create(
        project=project, user=lead, base_model=tiny_base, hyperparameters={"epochs": 1, "batch_size": 8}
    )
    services.run_claim(run.pk)
    services.run_execute(run=run)

    assert outsider_client.get(reverse("training:runs", args=[project.slug])).status_code == 404
    page = reviewer_client.get(reverse("training:runs", args=[project.slug])).content.decode()
    assert "Run 1" in page and "Launch training" not in page
    status = lead_client.get(reverse("training:run", args=[project.slug, 1]), headers={"HX-Request": "true"})
    assert status.status_code == 286 and 'data-status="succeeded"' in status.content.decode()
    assert reviewer_client.post(reverse("training:run-evaluate", args=[project.slug, 1])).status_code == 403
    response = lead_client.post(
        reverse("training:run-evaluate", args=[project.slug, 1]), {"target_accuracy": 0.9}, follow=True
    )
    assert "Waiting for a worker to evaluate on gold v1" in response.content.decode()
    # The short queue's worker evaluates it; the run page's poll then opens the evaluation.
    SimpleWorker([queues["short"]], connection=queues["short"].connection).work(burst=True)
    job = run.evaluation_jobs.get()
    poll = lead_client.get(
        reverse("training:evaluation-job", args=[project.slug, job.pk]), headers={"HX-Request": "true"}
    )
    html = lead_client.get(poll["HX-Redirect"]).content.decode()
    assert "Confusion matrix" in html and 'data-cell="both_right"' in html
    student = Evaluation.objects.get(subject="student")
    cell = lead_client.get(
        reverse("training:evaluation-examples", args=[project.slug, student.pk]), {"cell": "both_right"}
    )
    assert cell.status_code == 200
    download = lead_client.get(reverse("training:run-download", args=[project.slug, 1]))
    names = zipfile.ZipFile(BytesIO(b"".join(download.streaming_content))).namelist()
    assert "manifest.json" in names and "model/config.json" in names
    assert "Run 1" in lead_client.get(reverse("training:compare", args=[project.slug])).content.decode()


def test_a_lead_cannot_train_from_any_path_on_the_server(
    project, reviewer, lead, lead_client, tiny_classifier
):
    """Repro (#12): the base model was free text, so another project's artifacts could be loaded."""
    labelled(project, reviewer, 3)
    other_projects_artifacts = str(tiny_classifier / "model")
    with pytest.raises(services.TrainingError, match="DISTILL_STUDENT_BASE_MODELS"):
        services.run_create(project=project, user=lead, base_model=other_projects_artifacts)
    from training.forms import LaunchForm

    form = {name: field.initial for name, field in LaunchForm().fields.items() if field.initial is not None}
    lead_client.post(
        reverse("training:run-create", args=[project.slug]), {**form, "base_model": other_projects_artifacts}
    )
    assert not TrainingRun.objects.exists()
    lead_client.post(reverse("training:run-create", args=[project.slug]), {**form, "base_model": ""})
    assert TrainingRun.objects.get().base_model == ""  # the same form with the bundled model launches


def test_run_page_before_the_first_step_says_what_it_is_doing(project, reviewer, lead, lead_client):
    from distillapp import jobs

    labelled(project, reviewer, 3)
    run = services.run_create(project=project, user=lead)
    url = reverse("training:run", args=[project.slug, run.number])
    page = lead_client.get(url).content.decode()
    assert "waiting for a training worker" in page and "step 0 / 0" not in page
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING,
        phase="preparing data",
        worker=jobs.this_worker(),
        heartbeat_at=timezone.now(),
        started_at=timezone.now(),
    )
    page = lead_client.get(url).content.decode()
    assert "preparing data…" in page and "step 0 / 0" not in page
    TrainingRun.objects.filter(pk=run.pk).update(phase="training")  # data ready, no step yet
    page = lead_client.get(url).content.decode()
    assert "loading the model and preparing the first batch" in page and "step 0 / 0" not in page
    TrainingRun.objects.filter(pk=run.pk).update(phase="training", step=3, total_steps=12)
    assert "step 3 / 12" in lead_client.get(url).content.decode()
