"""Run kinds: the quick student (frozen embeddings + logistic regression) and the ensemble of
two runs, through the same run machinery, evaluation and serving as a fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone
from rq import SimpleWorker

from annotation.models import Example, GoldSet, GoldSetItem, Proposal
from training import services
from training.models import TrainingRun
from training.serving import ServingError
from training.serving.routing import student_predict as served_predict
from training.serving.versions import onnx_prepare, version_promote

from .test_training import labelled

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(project, reviewer, lead, settings, tmp_path):
    """20 labelled pool examples and a frozen 4-item gold set."""
    settings.DATA_DIR = tmp_path
    examples = labelled(project, reviewer)
    gold = GoldSet.objects.create(project=project, version=1)
    for example in examples[:4]:
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=example.teacher_label)
    Example.objects.filter(pk__in=[e.pk for e in examples[:4]]).update(is_gold=True)
    gold.freeze(user=lead)
    return examples


def run_now(run: TrainingRun) -> TrainingRun:
    assert services.run_claim(run.pk)
    services.run_execute(run=run)
    run.refresh_from_db()
    assert run.status == "succeeded", run.traceback
    return run


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "embeddings").rglob("chunk-*.npz"))


@pytest.mark.django_db(transaction=True)
def test_quick_run_end_to_end_through_a_real_worker(project, lead, tiny_base, data, queues, tmp_path):
    run = services.run_create(project=project, user=lead, base_model=tiny_base, kind="quick")
    assert run.hyperparameters["C"] == 10.0 and run.hyperparameters["max_length"] == 128
    services.run_start(run=run)
    SimpleWorker([queues["training"]], connection=queues["training"].connection).work(burst=True)
    run.refresh_from_db()
    assert run.status == "succeeded", run.traceback
    assert run.step == run.total_steps > 1 and run.loss is not None
    model = Path(run.artifact_path) / "model"
    config = json.loads((model / "quick_student.json").read_text())
    assert config["names"] == ["Billing", "Technical support"] and config["C"] == 10.0
    manifest = json.loads((Path(run.artifact_path) / "manifest.json").read_text())
    assert manifest["kind"] == "quick"
    trained = {row["id"] for row in manifest["train"]} | {row["id"] for row in manifest["validation"]}
    assert trained == {e.pk for e in data[4:]}  # never a gold example
    students = Proposal.objects.filter(agent="student:run-1")
    assert students.count() == 20 and not students.filter(example__is_gold=True).exists()
    assert Example.objects.exclude(student_label="").count() == 20
    # The pool's embeddings were cached: the next quick run embeds nothing again.
    before = cache_files(tmp_path)
    assert before
    again = run_now(services.run_create(project=project, user=lead, base_model=tiny_base, kind="quick"))
    assert cache_files(tmp_path) == before
    assert again.total_steps == 1  # no embedding batch, only the head's fit

    evaluation = services.evaluate_run(run=run)
    assert evaluation.metrics["examples"] == 4 and evaluation.agent == "student:run-1"


def test_a_quick_run_is_promoted_and_served_like_any_run(project, lead, tiny_base, data):
    run = run_now(services.run_create(project=project, user=lead, base_model=tiny_base, kind="quick"))
    services.evaluate_run(run=run)
    version = version_promote(run=run, user=lead, threshold=0.0)
    answers, confidences = served_predict(
        version, ["refund my invoice please", "the login page shows an error"]
    )
    assert set(answers) <= {"Billing", "Technical support"} and all(0.5 <= c <= 1 for c in confidences)
    # Its encoder quantizes like a fine-tune, measured on the same gold set, and serves as int8.
    measured = onnx_prepare(run=run)
    assert measured["examples"] == 4 and 0.0 <= measured["onnx_accuracy"] <= 1.0
    if measured["may_activate"]:
        int8 = version_promote(run=run, user=lead, threshold=0.0, runtime="onnx-int8")
        assert int8.runtime == "onnx-int8"
        int8_answers, _ = served_predict(int8, ["refund my invoice please", "the login page shows an error"])
        assert set(int8_answers) <= {"Billing", "Technical support"}


def test_an_ensemble_has_no_int8_export(project, lead, lead_client, tiny_base, data):
    finetune = run_now(
        services.run_create(
            project=project,
            user=lead,
            base_model=tiny_base,
            hyperparameters={"epochs": 1, "batch_size": 8, "max_length": 16},
        )
    )
    quick = run_now(services.run_create(project=project, user=lead, base_model=tiny_base, kind="quick"))
    ensemble = run_now(
        services.run_create(project=project, user=lead, kind="ensemble", members=[quick, finetune])
    )
    services.evaluate_run(run=ensemble)
    with pytest.raises(ServingError, match="only fine-tuned and quick runs have an ONNX int8 export"):
        onnx_prepare(run=ensemble)
    # The deploy page offers int8 for the other two only.
    services.evaluate_run(run=quick)
    page = lead_client.get(reverse("training:deploy", args=[project.slug])).content.decode()
    assert f'data-no-int8="{ensemble.number}"' in page
    assert f'name="quantize" value="{quick.number}"' in page
    assert f'name="quantize" value="{ensemble.number}"' not in page


def test_ensemble_averages_a_fine_tune_and_a_quick_student(project, lead, tiny_base, data):
    finetune = run_now(
        services.run_create(
            project=project,
            user=lead,
            base_model=tiny_base,
            hyperparameters={"epochs": 1, "batch_size": 8, "max_length": 16, "validation_fraction": 0.2},
        )
    )
    quick = run_now(
        services.run_create(
            project=project,
            user=lead,
            base_model=tiny_base,
            kind="quick",
            hyperparameters={"validation_fraction": 0.2},
        )
    )
    assert services.default_ensemble_members(project) == [finetune, quick]
    ensemble = run_now(
        services.run_create(project=project, user=lead, kind="ensemble", members=[quick, finetune])
    )
    validation = ensemble.metrics["validation"]
    # The same seed and fraction split both members alike: their validation rows, which neither trained on.
    assert validation["examples"] == finetune.counts["validation"] == quick.counts["validation"] > 0
    assert 0.0 <= validation["weight"] <= 1.0
    assert len(validation["member_accuracy"]) == 2
    config = json.loads((Path(ensemble.artifact_path) / "model" / "ensemble.json").read_text())
    assert [m["kind"] for m in config["members"]] == ["finetune", "quick"]  # the weight is the fine-tune's
    manifest = json.loads((Path(ensemble.artifact_path) / "manifest.json").read_text())
    assert {r["id"] for r in manifest["train"]} == {
        r["id"]
        for m in (finetune, quick)
        for r in json.loads((Path(m.artifact_path) / "manifest.json").read_text())["train"]
    }
    assert Proposal.objects.filter(agent=ensemble.agent).count() == 20
    # Its probabilities are the weighted average of the members'.
    from tasks.classification import ensemble as ensemble_student
    from tasks.classification import quick as quick_student
    from tasks.classification import student as finetune_student

    texts = ["refund my invoice", "crash on login"]
    model = Path(ensemble.artifact_path) / "model"
    averaged, names = ensemble_student.predict_proba(model, texts)
    p_fine, fine_names = finetune_student.predict_proba(
        Path(finetune.artifact_path) / "model", texts, max_length=16
    )
    p_quick, quick_names = quick_student.predict_proba(Path(quick.artifact_path) / "model", texts)
    assert names == fine_names == quick_names
    w = config["weight"]
    assert averaged == pytest.approx(w * p_fine + (1 - w) * p_quick, abs=1e-5)

    evaluation = services.evaluate_run(run=ensemble)
    assert evaluation.metrics["examples"] == 4
    assert evaluation.metrics["gold_overlap"]["count"] == 0


def test_ensemble_members_are_checked(project, lead, tiny_base, data):
    quick = run_now(services.run_create(project=project, user=lead, base_model=tiny_base, kind="quick"))
    with pytest.raises(services.TrainingError, match="two different finished runs"):
        services.run_create(project=project, user=lead, kind="ensemble", members=[quick, quick])
    failed = TrainingRun.objects.create(project=project, number=9, status="failed")
    with pytest.raises(services.TrainingError, match="Run 9 cannot be averaged"):
        services.run_create(project=project, user=lead, kind="ensemble", members=[quick, failed])
    assert TrainingRun.objects.count() == 2


def test_extraction_projects_have_the_fine_tune_and_the_quick_student(lead, lead_client, settings, tmp_path):
    from annotation.projects import project_create

    settings.DATA_DIR = tmp_path
    project = project_create(
        name="Bookings", slug="bookings", user=lead, task_type="extraction", labels=[("date", "")]
    )
    with pytest.raises(services.TrainingError, match="no 'ensemble' student"):
        services.run_create(project=project, user=lead, kind="ensemble")
    page = lead_client.get(reverse("training:runs", args=[project.slug])).content.decode()
    assert 'value="finetune"' in page and 'value="quick"' in page and 'value="ensemble"' not in page
    assert "Regularisation C" in page
    response = lead_client.post(
        reverse("training:run-create", args=[project.slug]), {"kind": "ensemble"}, follow=True
    )
    assert "Select a valid choice" in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_launch_form_launches_a_quick_run_with_its_own_fields(project, lead, lead_client, tiny_base, data):
    from training.forms import LaunchForm

    page = lead_client.get(reverse("training:runs", args=[project.slug])).content.decode()
    assert 'value="quick"' in page and 'value="ensemble"' in page and "Regularisation C" in page
    form = {n: f.initial for n, f in LaunchForm(project=project).fields.items() if f.initial is not None}
    response = lead_client.post(
        reverse("training:run-create", args=[project.slug]),
        {**form, "kind": "quick", "C": 2.5, "base_model": tiny_base, "epochs": 9},
    )
    assert response.status_code == 302
    run = TrainingRun.objects.get()
    assert run.kind == "quick" and run.hyperparameters["C"] == 2.5
    assert run.hyperparameters["max_length"] == 128  # the quick student's own length
    assert run.hyperparameters["epochs"] == 4  # a fine-tune's field, ignored for a quick run


def test_the_fine_tune_speed_estimate_ignores_quick_runs(project, lead):
    now = timezone.now()
    TrainingRun.objects.create(
        project=project,
        number=1,
        kind="quick",
        status="succeeded",
        device="cpu",
        train_seconds=60,
        counts={"train": 100_000, "estimate": {"modelled_seconds": 1.0}},
        hyperparameters={"epochs": 4},
        started_at=now - timezone.timedelta(seconds=60),
        finished_at=now,
    )
    assert services.measured_runs(task_type="classification", kind="finetune", base_model="") == []
    assert len(services.measured_runs(task_type="classification", kind="quick", base_model="")) == 1


def test_the_train_command_trains_a_quick_student_and_an_ensemble(project, lead, tiny_base, data, capsys):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    call_command(
        "train",
        "--project",
        project.slug,
        "--base-model",
        tiny_base,
        "--epochs",
        "1",
        "--max-length",
        "16",
        "--wait",
    )
    call_command(
        "train", "--project", project.slug, "--base-model", tiny_base, "--kind", "quick", "--c", "3", "--wait"
    )
    quick = TrainingRun.objects.get(number=2)
    assert quick.kind == "quick" and quick.hyperparameters["C"] == 3.0 and quick.status == "succeeded"
    with pytest.raises(CommandError, match="--members"):
        call_command("train", "--project", project.slug, "--kind", "ensemble")
    with pytest.raises(CommandError, match="no run 7"):
        call_command("train", "--project", project.slug, "--kind", "ensemble", "--members", "1", "7")
    call_command("train", "--project", project.slug, "--kind", "ensemble", "--members", "1", "2", "--wait")
    ensemble = TrainingRun.objects.get(number=3)
    assert ensemble.kind == "ensemble" and ensemble.status == "succeeded"
    assert set(ensemble.members.values_list("number", flat=True)) == {1, 2}
    assert "Run 3 done" in capsys.readouterr().out
