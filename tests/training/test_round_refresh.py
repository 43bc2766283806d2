"""A review round's refresh has a row: one per round, recovered when its worker dies, and
when it fails it says why and can be resumed (issue #23)."""

from __future__ import annotations

import subprocess
import threading

import pytest
from django.db import connection, connections
from django.urls import reverse

import distillapp.jobs
from annotation.review.rounds import after_verdict
from training import jobs
from training.models import RoundRefresh, TrainingRun

from .test_review_rounds import verdicts
from .test_training import labelled

pytestmark = pytest.mark.django_db


@pytest.fixture
def round_of_four(project, reviewer):
    project.refresh_every = 4
    project.save()
    labelled(project, reviewer)
    return project


def test_a_finished_round_writes_one_refresh_row_with_the_verdict_and_queues_it_once(
    round_of_four, reviewer, queues, django_capture_on_commit_callbacks
):
    project = round_of_four
    with django_capture_on_commit_callbacks(execute=True):
        verdicts(project, reviewer, 4)
    refresh = RoundRefresh.objects.get()
    assert (refresh.project, refresh.verdicts, refresh.status) == (project, 4, "pending")
    assert [job.func_name for job in queues["training"].jobs] == ["training.jobs.run_round_refresh"]
    assert queues["training"].jobs[0].args == (refresh.pk,)
    # The same round again (a second process that saw the same count) records and queues nothing.
    from training.services.round_refresh import round_refresh_start

    with django_capture_on_commit_callbacks(execute=True):
        assert round_refresh_start(project=project, verdicts=4) is None
        assert after_verdict(project) is False
    assert RoundRefresh.objects.count() == 1 and queues["training"].count == 1

    jobs.run_round_refresh(refresh.pk)
    jobs.run_round_refresh(refresh.pk)  # delivered twice: runs once
    refresh.refresh_from_db()
    run = TrainingRun.objects.get()
    assert refresh.status == "succeeded" and refresh.run == run and run.kind == "quick"
    assert refresh.outcome == f"Quick run {run.number} started with a label-error scoring run."
    assert project.quality_runs.count() == 1


def test_a_refresh_whose_worker_died_is_queued_again_and_starts_its_run_once(
    round_of_four, reviewer, queues, django_capture_on_commit_callbacks
):
    project = round_of_four
    with django_capture_on_commit_callbacks(execute=True):
        verdicts(project, reviewer, 4)
    refresh = RoundRefresh.objects.get()
    # Its worker took it and was killed: a process of this host that is gone.
    gone = subprocess.Popen(["true"])
    gone.wait()
    RoundRefresh.objects.filter(pk=refresh.pk).update(
        status="running", worker=f"{distillapp.jobs.this_worker().rpartition(':')[0]}:{gone.pid}"
    )
    queues["training"].empty()
    with django_capture_on_commit_callbacks(execute=True):
        assert distillapp.jobs.recover_all() == {"training.RoundRefresh": [refresh.pk]}
    assert [job.args for job in queues["training"].jobs] == [(refresh.pk,)]
    jobs.run_round_refresh(refresh.pk)
    refresh.refresh_from_db()
    assert refresh.status == "succeeded" and TrainingRun.objects.count() == 1


def test_a_failed_refresh_says_why_on_the_runs_page_and_a_lead_resumes_it(
    round_of_four,
    reviewer,
    lead_client,
    reviewer_client,
    queues,
    monkeypatch,
    django_capture_on_commit_callbacks,
):
    project = round_of_four
    with django_capture_on_commit_callbacks(execute=True):
        verdicts(project, reviewer, 4)
    refresh = RoundRefresh.objects.get()

    def broken(project, **kwargs):
        raise RuntimeError("the labels could not be read")

    monkeypatch.setattr("training.services.round_refresh.recommended_run", broken)
    with pytest.raises(RuntimeError):
        jobs.run_round_refresh(refresh.pk)
    refresh.refresh_from_db()
    assert refresh.status == "failed" and refresh.error == "the labels could not be read"
    assert not TrainingRun.objects.exists()  # nothing half-started

    url = reverse("training:runs", args=[project.slug])
    resume = reverse("annotation:job-resume", args=[project.slug, "roundrefresh", refresh.pk])
    page = lead_client.get(url).content.decode()
    assert 'data-round-refresh="failed"' in page and "the labels could not be read" in page and resume in page
    assert resume not in reviewer_client.get(url).content.decode()
    monkeypatch.undo()
    queues["training"].empty()
    with django_capture_on_commit_callbacks(execute=True):
        assert lead_client.post(resume).status_code == 302
    assert RoundRefresh.objects.get().status == "pending" and queues["training"].count == 1
    jobs.run_round_refresh(refresh.pk)
    assert RoundRefresh.objects.get().status == "succeeded" and TrainingRun.objects.count() == 1
    page = lead_client.get(url).content.decode()
    assert 'data-round-refresh="succeeded"' in page and "Quick run 1 started" in page


@pytest.mark.django_db(transaction=True)
def test_two_verdicts_ending_the_same_round_at_once_record_one_refresh(project, reviewer, lead, queues):
    """Two processes' verdicts end round one at the same moment (PostgreSQL): one row, one job."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL")
    project.refresh_every = 4
    project.save()
    labelled(project, reviewer)
    verdicts(project, reviewer, 3)
    verdicts(project, lead, 1)  # the count reaches 4 here; undo it by hand so both race
    from annotation.models import Project

    Project.objects.filter(pk=project.pk).update(refreshed_at_verdicts=0)
    RoundRefresh.objects.all().delete()
    queues["training"].empty()
    barrier = threading.Barrier(2)
    results = []

    def end_round():
        try:
            barrier.wait()
            results.append(after_verdict(Project.objects.get(pk=project.pk)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=end_round) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True]
    assert RoundRefresh.objects.count() == 1 and queues["training"].count == 1
