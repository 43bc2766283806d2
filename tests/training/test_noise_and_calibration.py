"""Noise-aware training (pruning flagged teacher labels, weighting by confidence) and the
calibrated confidences of both student kinds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse

from annotation.models import Example, Review
from distillapp import embeddings
from tasks import stats
from tasks.classification import quick as quick_student
from tasks.classification import student as finetune_student
from training import services
from training.services.dataset import handle_noise

from .test_extraction_training import FIELDS, proposed
from .test_run_kinds import run_now
from .test_training import labelled

pytestmark = pytest.mark.django_db


def row(pk, state, confidence=None, quality=None):
    return {"id": pk, "state": state, "confidence": confidence, "quality": quality}


def test_pruning_and_weights_touch_only_unreviewed_labels():
    rows = [
        row(1, "reviewed", 0.2, 0.1),  # flagged, but a person said so: kept at weight 1
        row(2, "proposed", 0.9, 0.1),  # flagged: pruned
        row(3, "proposed", 0.6, 0.8),
        row(4, "proposed", 0.01, None),  # never scored: kept, weight floored
        row(5, "proposed", None, 0.49),  # flagged: pruned
    ]
    kept, weights, report = handle_noise(rows, "prune+weight")
    assert [r["id"] for r in kept] == [1, 3, 4]
    assert weights == [1.0, 0.6, 0.05]
    assert report == {
        "noise_handling": "prune+weight",
        "pruned": 2,
        "pruned_share": 0.5,
        "unscored": 1,
        "mean_weight": round((1.0 + 0.6 + 0.05) / 3, 4),
    }
    assert handle_noise(rows, "none") == (rows, None, {"noise_handling": "none"})
    with pytest.raises(services.TrainingError, match="Unknown noise handling"):
        handle_noise(rows, "drop-everything")


def test_where_the_quality_run_decided_its_verdict_prunes_not_the_score():
    rows = [
        {**row(1, "proposed", quality=0.3), "issue": False},  # a low margin cleanlab keeps
        {**row(2, "proposed", quality=0.7), "issue": True},  # its class's noise rate flags it
        {**row(3, "proposed", quality=0.4), "issue": None},  # not decided: the score flags it
        {**row(4, "reviewed", quality=0.1), "issue": True},  # a person's label stays
    ]
    kept, _, report = handle_noise(rows, "prune")
    assert [r["id"] for r in kept] == [1, 4] and report["pruned"] == 2


@pytest.mark.parametrize("kind", ["quick", "finetune"])
def test_a_run_leaves_out_flagged_teacher_labels_and_records_it(
    kind, project, reviewer, lead, tiny_base, settings, tmp_path
):
    settings.DATA_DIR = tmp_path
    examples = labelled(project, reviewer)
    flagged, reviewed_flagged = examples[0], examples[1]
    Example.objects.filter(pk__in=[flagged.pk, reviewed_flagged.pk]).update(quality_score=0.05)
    Example.objects.exclude(pk__in=[flagged.pk, reviewed_flagged.pk]).update(quality_score=0.9)
    Review.objects.create(example=reviewed_flagged, reviewer=reviewer, verdict="correct", value="Billing")
    run = services.run_create(
        project=project,
        user=lead,
        base_model=tiny_base,
        kind=kind,
        hyperparameters={
            "noise_handling": "prune+weight",
            "validation_fraction": 0,
            "epochs": 1,
            "batch_size": 8,
            "max_length": 16,
        },
    )
    assert services.run_claim(run.pk)
    services.run_execute(run=run)
    run.refresh_from_db()
    assert run.status == "succeeded", run.traceback
    manifest = json.loads((Path(run.artifact_path) / "manifest.json").read_text())
    trained = {r["id"] for r in manifest["train"]}
    assert flagged.pk not in trained and reviewed_flagged.pk in trained and len(trained) == 23
    assert manifest["hyperparameters"]["noise_handling"] == "prune+weight"
    assert run.counts["noise"]["pruned"] == 1 and run.counts["noise"]["pruned_share"] == round(1 / 23, 4)


def test_extraction_runs_refuse_the_noise_handling_that_does_not_apply_and_say_why(
    lead, reviewer, settings, tmp_path
):
    from annotation.projects import project_create

    settings.DATA_DIR = tmp_path

    project = project_create(name="B", slug="b", user=lead, task_type="extraction", labels=FIELDS)
    examples = proposed(project, 12)
    # The fine-tune takes no per-text weights, whatever the teacher measured.
    with pytest.raises(services.TrainingError, match="fine-tune takes no per-text weights"):
        services.run_create(project=project, user=lead, hyperparameters={"noise_handling": "weight"})
    # A teacher without confidences leaves nothing to weight by, even for the quick student.
    Example.objects.filter(project=project).update(teacher_confidence=None)
    with pytest.raises(services.TrainingError, match="carry no confidence"):
        services.run_create(
            project=project,
            user=lead,
            kind="quick",
            hyperparameters={"noise_handling": "weight"},
        )
    # Pruning applies: the text the quality run flags is left out of a quick run.
    Example.objects.filter(pk=examples[0].pk).update(quality_score=0.01, label_issue=True)
    run = run_now(
        services.run_create(
            project=project,
            user=lead,
            kind="quick",
            hyperparameters={"noise_handling": "prune", "validation_fraction": 0.0},
        )
    )
    trained = {r["id"] for r in json.loads((Path(run.artifact_path) / "manifest.json").read_text())["train"]}
    assert examples[0].pk not in trained and len(trained) == 11
    assert run.counts["noise"]["pruned"] == 1
    # Masking keeps the text and leaves its flagged words out of the fit: the manifest says
    # which, and the head saw fewer words than the same run without the mask.
    text = examples[0].text
    first_word = [0, text.index(" ")]
    Example.objects.filter(pk=examples[0].pk).update(label_flags=[first_word])
    Example.objects.filter(pk=examples[1].pk).update(label_flags=[first_word])
    Review.objects.create(
        example=examples[1],
        reviewer=reviewer,
        verdict="correct",
        value=examples[1].proposals.order_by("pk").first().value,  # the teacher's, the first
    )
    runs = {
        handling: run_now(
            services.run_create(
                project=project,
                user=lead,
                kind="quick",
                hyperparameters={"noise_handling": handling, "validation_fraction": 0.0},
            )
        )
        for handling in ("mask", "none")
    }
    manifest = json.loads((Path(runs["mask"].artifact_path) / "manifest.json").read_text())
    ignored = {r["id"]: r.get("ignored") for r in manifest["train"]}
    assert len(ignored) == 12 and ignored[examples[0].pk] == [first_word]
    assert ignored[examples[1].pk] is None  # reviewed: a person's label counts whole
    assert runs["mask"].counts["noise"] == {
        "noise_handling": "mask",
        "masked": 1,
        "masked_share": round(1 / 11, 4),
        "masked_parts": 1,
    }
    words = {
        h: json.loads((Path(r.artifact_path) / "model" / "quick_student.json").read_text())["train_words"]
        for h, r in runs.items()
    }
    from distillapp import ml

    cut = [w for w in ml.tokenizer_words([text], model_name=ml.default_base_model())[0] if w[0] < first_word[1]]
    assert cut and words["mask"] == words["none"] - len(cut)
    # The run's page says what was left out, in words.
    from django.test import Client

    client = Client()
    client.force_login(lead)
    page = client.get(reverse("training:run", args=[project.slug, runs["mask"].number])).content.decode()
    assert "1 flagged part of 1 teacher label left out of the loss (9 % of the unreviewed labels" in page


def test_masking_takes_the_flagged_parts_of_unreviewed_labels_only():
    rows = [
        {**row(1, "reviewed"), "flags": [[0, 3]]},  # a person's label counts whole
        {**row(2, "proposed"), "flags": [[4, 9], [10, 12]]},
        {**row(3, "proposed"), "flags": None},  # never scored
        {**row(4, "proposed"), "flags": None},
    ]
    kept, weights, report = handle_noise(rows, "mask")
    assert [r.get("ignore") for r in kept] == [None, [[4, 9], [10, 12]], None, None]
    assert weights is None
    assert report == {"noise_handling": "mask", "masked": 1, "masked_share": 0.3333, "masked_parts": 2}
    # Both: the flagged label goes, the others' flagged parts stay out of the loss.
    rows[3] = {**rows[3], "quality": 0.01, "issue": True, "flags": [[0, 2]]}
    kept, _, report = handle_noise(rows, "prune+mask")
    assert [(r["id"], r.get("ignore")) for r in kept] == [(1, None), (2, [[4, 9], [10, 12]]), (3, None)]
    assert report["pruned"] == 1 and report["masked"] == 1


def test_a_task_whose_labels_have_no_parts_refuses_masking_and_its_form_does_not_offer_it(
    project, reviewer, lead
):
    from annotation.projects import project_create
    from training.forms import LaunchForm

    labelled(project, reviewer)
    with pytest.raises(services.TrainingError, match="no parts to leave out of the loss"):
        services.run_create(project=project, user=lead, hyperparameters={"noise_handling": "mask"})
    offered = dict(LaunchForm(project=project).fields["noise_handling"].choices)
    assert "prune" in offered and "mask" not in offered
    spans = project_create(name="S", slug="s", user=lead, task_type="extraction", labels=FIELDS)
    assert "mask" in dict(LaunchForm(project=spans).fields["noise_handling"].choices)


def test_the_quick_student_serves_its_fitted_temperature(tiny_base, tmp_path):
    from distillapp import ml

    texts = [f"{w} number {i}" for i in range(30) for w in ("invoice refund", "crash error")]
    labels = ["Billing", "Technical support"] * 30
    result = quick_student.train(
        texts=texts[:40],
        answers=labels[:40],
        names=["Billing", "Technical support"],
        base_model=tiny_base,
        output_dir=tmp_path / "quick",
        hyperparameters=ml.Hyperparameters(max_length=16),
        validation=(texts[40:], labels[40:]),
    )
    fitted = result.validation["calibration"]
    assert fitted["examples"] == 20 and fitted["fitted"]
    config = json.loads((tmp_path / "quick" / "quick_student.json").read_text())
    assert config["temperature"] == fitted["temperature"]
    served, _ = quick_student.predict_proba(tmp_path / "quick", texts[40:])
    head, _ = quick_student.load(tmp_path / "quick")
    raw = head.predict_proba(
        embeddings.embed(texts[40:], model_name=tiny_base, max_length=16, cache_dir=None)
    )
    assert served == pytest.approx(stats.apply_temperature(np.log(raw), config["temperature"]), abs=1e-5)


def test_the_fine_tune_applies_the_temperature_beside_it(tiny_classifier, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_classifier / "model", model)
    texts = ["refund my invoice", "the app crashes"]
    before, names = finetune_student.predict_proba(model, texts)
    (model / finetune_student.CALIBRATION_FILE).write_text(json.dumps({"temperature": 0.25}))
    after, _ = finetune_student.predict_proba(model, texts)
    assert after == pytest.approx(stats.apply_temperature(np.log(before), 0.25), abs=1e-4)
    assert (after.max(axis=1) > before.max(axis=1)).all()
    # The int8 export answers with the same temperature.
    onnx_dir = finetune_student.export_onnx(model, tmp_path / "onnx", max_length=32)
    assert json.loads((Path(onnx_dir) / finetune_student.CALIBRATION_FILE).read_text())["temperature"] == 0.25


def test_the_run_page_warns_that_validation_is_measured_against_unreviewed_labels(
    project, reviewer, lead, lead_client, tiny_base, settings, tmp_path
):
    from django.urls import reverse

    settings.DATA_DIR = tmp_path
    labelled(project, reviewer)
    run = services.run_create(
        project=project,
        user=lead,
        base_model=tiny_base,
        kind="quick",
        hyperparameters={"validation_fraction": 0.2},
    )
    services.run_claim(run.pk)
    services.run_execute(run=run)
    run.refresh_from_db()
    assert run.counts["validation_reviewed"] == 0 < run.counts["validation"]
    page = lead_client.get(reverse("training:run", args=[project.slug, run.number])).content.decode()
    assert "data-validation-warning" in page and "only 0 were reviewed" in page
    assert "Quick (frozen embeddings" in page


def test_label_smoothing_spreads_each_target_over_the_labels():
    import torch

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    targets = torch.tensor([0, 2])
    log_p = torch.log_softmax(logits, dim=-1)
    # Smoothed target: 1 - 0.1 on the label plus 0.1 / 3 on every label.
    smoothed = torch.full((2, 3), 0.1 / 3)
    smoothed[torch.arange(2), targets] += 0.9
    expected = float(-(smoothed * log_p).sum(dim=1).mean())
    got = float(finetune_student.weighted_loss(logits, targets, label_smoothing=0.1))
    assert got == pytest.approx(expected, rel=1e-6)
    plain = float(finetune_student.weighted_loss(logits, targets))
    assert plain == pytest.approx(float(-log_p[torch.arange(2), targets].mean()), rel=1e-6)
    # Sample weights still weigh whole examples.
    weighted = finetune_student.weighted_loss(
        logits, targets, sample_weight=torch.tensor([1.0, 0.0]), label_smoothing=0.1
    )
    assert float(weighted) == pytest.approx(float(-(smoothed[0] * log_p[0]).sum()), rel=1e-6)


def test_a_fine_tune_trains_with_the_label_smoothing_it_is_given(
    project, reviewer, lead, tiny_base, settings, tmp_path
):
    settings.DATA_DIR = tmp_path
    labelled(project, reviewer)
    losses = {}
    for smoothing in (0.0, 0.3):
        run = run_now(
            services.run_create(
                project=project,
                user=lead,
                base_model=tiny_base,
                hyperparameters={
                    "label_smoothing": smoothing,
                    "validation_fraction": 0,
                    "epochs": 1,
                    "batch_size": 8,
                    "max_length": 16,
                },
            )
        )
        manifest = json.loads((Path(run.artifact_path) / "manifest.json").read_text())
        assert manifest["hyperparameters"]["label_smoothing"] == smoothing
        losses[smoothing] = run.loss
    # The same seed and data: only the loss function differs, and smoothing changes it.
    assert losses[0.0] != pytest.approx(losses[0.3], abs=1e-4)


def test_the_advice_smooths_teacher_labels_and_the_form_starts_from_it(project, reviewer, lead_client):
    from annotation.models import Proposal
    from training.services.advice import TEACHER_LABEL_SMOOTHING

    # Human labels only: no smoothing (the measured defaults).
    human = Example.objects.create(project=project, text="a refund, please")
    Review.objects.create(example=human, reviewer=reviewer, verdict="correct", value="Billing")
    Example.objects.filter(project=project).sync_queue_fields()
    advice = services.label_source_advice(project)
    assert advice["label_smoothing"] == 0.0 and "smooth" not in advice["reason"]
    # Unreviewed teacher labels in the training set: smooth them.
    taught = Example.objects.create(project=project, text="my login fails")
    Proposal.objects.create(example=taught, agent="teacher:m:v1", value="Technical support", confidence=0.8)
    Example.objects.filter(project=project).sync_queue_fields()
    advice = services.label_source_advice(project)
    assert advice["label_source"] == "all" and advice["label_smoothing"] == TEACHER_LABEL_SMOOTHING > 0
    assert "smooth the labels" in advice["reason"]
    from training.forms import LaunchForm

    form = LaunchForm(project=project, advice=advice)
    assert form.fields["label_smoothing"].initial == TEACHER_LABEL_SMOOTHING
    page = lead_client.get(reverse("training:runs", args=[project.slug])).content.decode()
    assert 'name="label_smoothing"' in page and f'value="{TEACHER_LABEL_SMOOTHING}"' in page


def test_the_admins_launch_uses_the_launch_forms_recommendation(
    project, reviewer, queues, django_user_model, django_capture_on_commit_callbacks
):
    """Issue #24: the admin's "Launch training run" trained with label smoothing 0 and no
    pruning where the launch form recommended 0.2 and pruning; one function decides both."""
    from django.test import Client

    from annotation.models import Proposal
    from training.forms import LaunchForm
    from training.models import TrainingRun
    from training.services.advice import TEACHER_LABEL_SMOOTHING

    labelled(project, reviewer, 3)
    for i in range(4):  # unreviewed teacher labels in the training set
        example = Example.objects.create(project=project, text=f"teacher-labelled ticket {i}")
        Proposal.objects.create(example=example, agent="teacher:m:v1", value="Billing", confidence=0.8)
    Example.objects.filter(project=project).sync_queue_fields()
    form = LaunchForm(project=project, advice=services.label_source_advice(project))
    recommended = {
        name: form.fields[name].initial
        for name in ("label_source", "teacher_min_confidence", "noise_handling", "label_smoothing")
    }
    assert recommended["noise_handling"] == "prune"
    assert recommended["label_smoothing"] == TEACHER_LABEL_SMOOTHING

    admin = django_user_model.objects.create_superuser(username="root", password="pw", email="r@example.com")
    client = Client()
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:annotation_project_changelist"),
            {"action": "launch_training_run", "_selected_action": [project.pk]},
            follow=True,
        )
    assert "run 1 queued with the launch form&#x27;s recommended settings" in response.content.decode()
    run = TrainingRun.objects.get()
    assert {
        "label_source": run.label_source,
        "teacher_min_confidence": run.teacher_min_confidence,
        "noise_handling": run.hyperparameters["noise_handling"],
        "label_smoothing": run.hyperparameters["label_smoothing"],
    } == recommended


def test_the_quality_run_keeps_each_labels_flagged_words_for_masking(lead, settings, tmp_path):
    """The stored parts are the task's (extraction: [start, end] of words), from the same run
    as the scores; a later run with nothing flagged clears them."""
    from annotation.jobs import run_quality_run
    from annotation.models import Proposal, QualityRun
    from annotation.projects import project_create
    from tests.tasks.test_extraction_quality import WRONG, bookings, spoiled

    settings.DATA_DIR = tmp_path
    project = project_create(
        name="T", slug="t", user=lead, task_type="extraction", labels=[("time", ""), ("people", ""), ("name", "")]
    )
    texts, answers = bookings()
    examples = []
    for text, answer in zip(texts, spoiled(answers, "missed"), strict=True):
        example = Example.objects.create(project=project, text=text)
        Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=answer)
        examples.append(example)
    Example.objects.filter(project=project).sync_queue_fields()

    run_quality_run(QualityRun.objects.create(project=project).pk)

    wrong = Example.objects.get(pk=examples[WRONG].pk)
    time = next(s for s in answers[WRONG]["spans"] if s["field"] == "time")
    assert [time["start"], time["end"]] in wrong.label_flags
    stored = dict(Example.objects.filter(project=project).values_list("pk", "label_flags"))
    assert len(wrong.label_flags) == max(len(flags or []) for flags in stored.values())
    # Once the time is marked, nothing of the text is flagged any more.
    Proposal.objects.filter(example=wrong).update(value=answers[WRONG])
    run_quality_run(QualityRun.objects.create(project=project).pk)
    wrong.refresh_from_db()
    assert not wrong.label_flags
