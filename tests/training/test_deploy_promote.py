"""Promote from the list of runs: scores beside the teacher's and the live version's, the
recommended threshold filled in, and a confirmation for a run that is worse or not measured
on the latest gold."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.models import GoldSet
from training.models import Evaluation, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

# make_run's sweep: 0.5 is the lowest threshold whose interval clears the 0.95 target.
SWEEP = {
    "examples": 5000,
    "with_confidence": 5000,
    "coverage": [
        {"threshold": 0.3, "coverage": 1.0, "accuracy": 0.9},
        {"threshold": 0.5, "coverage": 0.6, "accuracy": 0.96},
        {"threshold": 0.7, "coverage": 0.2, "accuracy": 1.0},
    ],
}


def frozen_gold(project, version: int) -> GoldSet:
    return GoldSet.objects.create(project=project, version=version, frozen_at=timezone.now())


def make_run(
    project, tmp_path, number: int, *, gold: GoldSet | None, score: float | None = None
) -> TrainingRun:
    (tmp_path / f"run-{number}").mkdir()
    run = TrainingRun.objects.create(
        project=project, number=number, status="succeeded", artifact_path=str(tmp_path / f"run-{number}")
    )
    if gold is not None:
        Evaluation.objects.create(
            project=project,
            run=run,
            gold_set=gold,
            subject="student",
            agent=run.agent,
            metrics={"score": score, "accuracy": score, **SWEEP},
        )
    return run


def teacher_scores(project, gold: GoldSet, score: float) -> None:
    Evaluation.objects.create(
        project=project,
        gold_set=gold,
        subject="teacher",
        agent="teacher:m:prompt-v1",
        metrics={"score": score},
    )


def promote(client, project, run: int, *, threshold="0.5", **extra):
    data = {"run": run, f"threshold-{run}": threshold, "runtime": "torch", **extra}
    return client.post(reverse("training:promote", args=[project.slug]), data)


def deploy_page(client, project) -> str:
    return client.get(reverse("training:deploy", args=[project.slug])).content.decode()


def test_the_runs_are_listed_with_the_teacher_and_the_live_score_and_their_threshold(
    project, lead, lead_client, tmp_path
):
    gold = frozen_gold(project, 1)
    teacher_scores(project, gold, 0.7)
    live = make_run(project, tmp_path, 1, gold=gold, score=0.8)
    ModelVersion.objects.create(project=project, run=live, threshold=0.5, is_active=True, promoted_by=lead)
    make_run(project, tmp_path, 2, gold=gold, score=0.85)
    make_run(project, tmp_path, 3, gold=None)
    html = deploy_page(lead_client, project)
    assert 'type="radio" name="run" value="2"' in html and 'type="radio" name="run" value="1"' in html
    # A run with no evaluation cannot be chosen.
    assert 'name="run" value="3"' not in html or 'value="3" disabled' in html
    assert 'data-teacher-score="2">0.700' in html
    assert 'data-live-score="2">0.800' in html
    # The threshold starts at the recommended one, not empty.
    assert 'name="threshold-2" value="0.5"' in html
    # Any threshold the sweep recommends can be sent as it is (0.995 is off a 0.01 step).
    assert 'name="threshold-2" value="0.5" step="any"' in html
    assert "below the teacher" in html or "above the teacher" in html  # the delta in words


def test_a_run_above_the_teacher_and_the_live_version_is_promoted_at_once(
    project, lead, lead_client, tmp_path
):
    gold = frozen_gold(project, 1)
    teacher_scores(project, gold, 0.7)
    live = make_run(project, tmp_path, 1, gold=gold, score=0.8)
    ModelVersion.objects.create(project=project, run=live, threshold=0.5, is_active=True, promoted_by=lead)
    make_run(project, tmp_path, 2, gold=gold, score=0.85)
    response = promote(lead_client, project, 2, threshold="0.6")
    assert response.status_code == 302
    version = ModelVersion.objects.get(is_active=True)
    assert (version.run.number, version.threshold, version.note) == (2, 0.6, "")


def test_a_run_below_the_teacher_asks_and_says_by_how_much(project, lead_client, tmp_path):
    gold = frozen_gold(project, 1)
    teacher_scores(project, gold, 0.308)
    make_run(project, tmp_path, 1, gold=gold, score=0.0)
    response = promote(lead_client, project, 1)
    assert response.status_code == 200
    html = response.content.decode()
    assert "0.308 below the teacher" in html
    assert not ModelVersion.objects.exists()
    confirmed = promote(lead_client, project, 1, confirm="1")
    assert confirmed.status_code == 302
    version = ModelVersion.objects.get(is_active=True)
    assert "0.308 below the teacher" in version.note


def test_a_run_below_the_live_version_asks_and_says_by_how_much(project, lead, lead_client, tmp_path):
    gold = frozen_gold(project, 1)
    live = make_run(project, tmp_path, 1, gold=gold, score=0.9)
    ModelVersion.objects.create(project=project, run=live, threshold=0.5, is_active=True, promoted_by=lead)
    make_run(project, tmp_path, 2, gold=gold, score=0.75)
    html = promote(lead_client, project, 2).content.decode()
    assert "0.150 below the live version (run 1, 0.900)" in html
    assert ModelVersion.objects.get(is_active=True).run == live


def test_a_run_not_evaluated_on_the_latest_gold_asks(project, lead_client, tmp_path):
    old = frozen_gold(project, 1)
    frozen_gold(project, 2)
    make_run(project, tmp_path, 1, gold=old, score=0.9)
    html = promote(lead_client, project, 1).content.decode()
    assert "never evaluated on the latest gold set (v2)" in html
    assert not ModelVersion.objects.exists()
    assert "never evaluated on the latest gold set (v2)" in deploy_page(lead_client, project)


def test_a_mistyped_run_is_a_message_not_a_bare_404(project, lead_client, tmp_path):
    make_run(project, tmp_path, 1, gold=frozen_gold(project, 1), score=0.9)
    response = promote(lead_client, project, 99)
    assert response.status_code == 302
    page = lead_client.get(response["Location"]).content.decode()
    assert "There is no finished run 99" in page


def test_the_confirmation_keeps_the_threshold_and_runtime(project, lead_client, tmp_path):
    gold = frozen_gold(project, 1)
    teacher_scores(project, gold, 0.95)
    make_run(project, tmp_path, 1, gold=gold, score=0.9)
    html = promote(lead_client, project, 1, threshold="0.65").content.decode()
    assert 'name="threshold-1" value="0.65"' in html and 'name="runtime" value="torch"' in html
    assert 'name="confirm" value="1"' in html
