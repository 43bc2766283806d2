"""A dead job does not stay "running": kill tests with real rq workers, one per job type.

Each test starts a real `rqworker` process, SIGKILLs its work horse mid-job (as the
OOM killer would; the worker itself lives on) and then, without restarting anything,
waits for the row to be recovered by the same worker and finish with nothing lost or
duplicated. DISTILL_JOB_STALE_SECONDS is small here so recovery takes seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import transaction
from django.db.models import Count, Sum
from django.urls import reverse
from django.utils import timezone

from annotation import corpus, review, teacher
from annotation.models import (
    Example,
    ImportBatch,
    LabelingJob,
    LabelingJobItem,
    Proposal,
    QualityRun,
    SyntheticJob,
)
from distillapp import jobs
from tests.annotation.test_labeling import database_url, use_llm
from tests.fake_openai import FakeOpenAI, FakeReply, slow

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[1]
STALE_SECONDS = 2


@pytest.fixture(autouse=True)
def short_stale_timeout(settings):
    settings.JOB_STALE_SECONDS = STALE_SECONDS


@contextmanager
def rq_worker(*queues: str):
    """A real `manage.py rqworker` on the test database, stopped (killed) at the end."""
    env = {**os.environ, "DATABASE_URL": database_url(), "DISTILL_JOB_STALE_SECONDS": str(STALE_SECONDS)}
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", *queues],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        yield worker
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def wait_until(condition: Callable[[], object], worker: subprocess.Popen, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert worker.poll() is None, "the worker process stopped"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def kill_horse(model, pk: int) -> str:
    """SIGKILL the process that holds the row now (rq's work horse); the worker lives on."""
    row = model.objects.get(pk=pk)
    assert row.status == "running" and row.worker, (row.status, row.worker)
    os.kill(int(row.worker.rpartition(":")[2]), signal.SIGKILL)
    return row.worker


def finished(model, pk: int, worker: subprocess.Popen, *, killed: str, timeout: float = 40):
    """Wait for the row to end; it must have been finished by a new horse of the same worker."""
    row = wait_until(
        lambda: model.objects.filter(pk=pk, status__in=["succeeded", "failed", "cancelled"]).first(),
        worker,
        timeout=timeout,
        what=f"{model.__name__} {pk} to be recovered and finish",
    )
    assert worker.poll() is None, "recovery must not need a worker restart"
    assert row.worker != killed, "the killed horse cannot have finished it"
    return row


# --- labelling: the finding-5 repro ------------------------------------------------------------


@pytest.fixture
def llm(monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeOpenAI(lambda req: FakeReply(content='{"label": "Other"}')) as server:
        yield server


def test_killed_labelling_horse_is_recovered_by_the_running_worker(project, llm, queues):
    for i in range(30):
        Example.objects.create(project=project, text=f"ticket number {i}")
    use_llm(project, llm, concurrency=2)
    llm.responder = slow(
        lambda req: FakeReply(content='{"label": "Other"}', prompt_tokens=100, completion_tokens=5), 0.1
    )
    with transaction.atomic():
        job = teacher.labeling_job_create(project=project, user=None, selection="unlabelled")
        teacher.labeling_job_start(job=job)

    with rq_worker("llm", "training", "default") as worker:
        wait_until(lambda: LabelingJob.objects.get(pk=job.pk).done >= 6, worker, timeout=60, what="progress")
        killed = kill_horse(LabelingJob, job.pk)
        job = finished(LabelingJob, job.pk, worker, killed=killed)

    assert job.status == LabelingJob.Status.SUCCEEDED, job.error
    assert (job.done, job.failed, job.total) == (30, 0, 30)
    proposals = Proposal.objects.filter(labeling_job=job)
    assert proposals.count() == 30
    assert not proposals.values("example").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert job.cost_usd == proposals.aggregate(c=Sum("cost_usd"))["c"]
    assert job.input_tokens == 30 * 100
    assert not LabelingJobItem.objects.filter(job=job, status="pending").exists()


# --- imports ----------------------------------------------------------------------------------


def test_killed_import_horse_is_recovered_and_imports_each_row_once(project, tmp_path, queues):
    lines = 60_000
    path = tmp_path / "tickets.csv"
    path.write_text("text,label\n" + "".join(f"ticket {i},Billing\n" for i in range(lines)))
    with transaction.atomic():
        batch = corpus.import_batch_create(
            project=project, user=None, file_name=path.name, path=path, label_column="label"
        )
        corpus.import_batch_start(batch=batch, inline=False)

    with rq_worker("default") as worker:
        wait_until(
            lambda: ImportBatch.objects.filter(pk=batch.pk, status="running", rows_read__gt=0).exists(),
            worker,
            timeout=60,
            what="the import to be under way",
        )
        killed = kill_horse(ImportBatch, batch.pk)
        batch = finished(ImportBatch, batch.pk, worker, killed=killed)

    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    assert (batch.rows_read, batch.rows_created, batch.rows_duplicate) == (lines, lines, 0)
    assert Example.objects.filter(project=project).count() == lines
    assert Proposal.objects.filter(example__project=project).count() == lines


# --- synthetic data -----------------------------------------------------------------------------


def two_new_texts(req):
    """Two texts never seen before per call, whatever the label asked for."""
    system = req.body["messages"][0]["content"]
    label = "Billing" if "'Billing'" in system else "Other"
    n = two_new_texts.calls = getattr(two_new_texts, "calls", 0) + 1
    texts = [f"{label} question {n}-{k}: {' '.join(['word'] * (n % 7 + k))}" for k in range(2)]
    return FakeReply(content=json.dumps({"examples": texts}), prompt_tokens=400, completion_tokens=120)


def test_killed_synthetic_horse_is_recovered_without_extra_examples_or_costs(project, llm, queues):
    use_llm(project, llm)
    llm.responder = slow(two_new_texts, 0.3)
    with transaction.atomic():
        job = teacher.synthetic_job_create(
            project=project,
            user=None,
            labels=["Billing", "Other"],
            per_label=6,
            near_duplicate_threshold=1.01,
        )
        teacher.synthetic_job_start(job=job)

    with rq_worker("llm") as worker:
        wait_until(
            lambda: SyntheticJob.objects.get(pk=job.pk).created >= 2, worker, timeout=60, what="progress"
        )
        killed = kill_horse(SyntheticJob, job.pk)
        job = finished(SyntheticJob, job.pk, worker, killed=killed)

    assert job.status == SyntheticJob.Status.SUCCEEDED, job.error
    made = Example.objects.filter(project=project, source="synthetic")
    assert job.created == job.requested == made.count() == 12
    assert sorted(made.values_list("metadata__label", flat=True)) == ["Billing"] * 6 + ["Other"] * 6
    proposals = Proposal.objects.filter(example__in=made)
    assert proposals.count() == 12
    # Every call whose texts were kept is counted once on the row, and priced once.
    assert job.cost_usd == proposals.aggregate(c=Sum("cost_usd"))["c"]
    assert job.input_tokens == proposals.aggregate(t=Sum("input_tokens"))["t"]


# --- quality scoring ----------------------------------------------------------------------------


def test_killed_quality_run_is_recovered_and_scores_every_example(project, queues):
    labels = ["Billing", "Technical support", "Other"]
    for i in range(60):
        example = Example.objects.create(project=project, text=f"customer message {i} about topic {i % 3}")
        Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=labels[i % 3])
    Example.objects.filter(project=project).sync_queue_fields()
    with transaction.atomic():
        run = review.quality_run_start(project=project, user=None)

    with rq_worker("training") as worker:
        wait_until(
            lambda: QualityRun.objects.filter(pk=run.pk, status="running").exists(),
            worker,
            timeout=60,
            what="the quality run to start",
        )
        killed = kill_horse(QualityRun, run.pk)
        run = finished(QualityRun, run.pk, worker, killed=killed, timeout=60)

    assert run.status == QualityRun.Status.SUCCEEDED, run.error
    assert run.examples == 60
    assert not Example.objects.filter(project=project, quality_score__isnull=True).exists()


# --- training ------------------------------------------------------------------------------------


def test_killed_training_horse_is_recovered_and_trains_again(project, queues):
    from training import services as training
    from training.models import TrainingRun

    words = {"Billing": "invoice refund charged", "Technical support": "crash error login"}
    for label, text in words.items():
        for i in range(12):
            example = Example.objects.create(project=project, text=f"{text} number {i}")
            Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=label)
    Example.objects.filter(project=project).sync_queue_fields()
    hp = {"epochs": 2, "batch_size": 4, "max_length": 16, "validation_fraction": 0.0}
    with transaction.atomic():
        run = training.run_create(project=project, user=None, hyperparameters=hp)  # the bundled MiniLM
        training.run_start(run=run)

    with rq_worker("training") as worker:
        wait_until(
            # Its data and manifest are written and the model is being fitted.
            lambda: TrainingRun.objects.filter(pk=run.pk, status="running", phase="training").exists(),
            worker,
            timeout=60,
            what="training to start",
        )
        killed = kill_horse(TrainingRun, run.pk)
        run = finished(TrainingRun, run.pk, worker, killed=killed, timeout=90)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.step == run.total_steps
    students = Proposal.objects.filter(agent=run.agent)
    assert students.count() == 24  # one student proposal per example, none left from the killed try
    assert not students.values("example").annotate(n=Count("pk")).filter(n__gt=1).exists()


# --- without a worker: cancel, recovery as pages poll, resume ------------------------------------


def dead_worker() -> str:
    """host:pid of a process of this host that has ended."""
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return f"{jobs.this_worker().rpartition(':')[0]}:{ended.stdout.strip()}"


def training_run(project, **fields):
    from training.models import TrainingRun

    return TrainingRun.objects.create(project=project, number=TrainingRun.objects.count() + 1, **fields)


def test_cancel_finishes_a_run_whose_worker_is_dead(project, lead_client, queues):
    run = training_run(project, status="running", worker=dead_worker(), heartbeat_at=timezone.now())
    quality = QualityRun.objects.create(
        project=project, status="running", worker=dead_worker(), heartbeat_at=timezone.now()
    )
    lead_client.post(reverse("annotation:job-cancel", args=[project.slug, "trainingrun", run.pk]))
    jobs.cancel(QualityRun, quality.pk)
    for row in (run, quality):
        row.refresh_from_db()
        assert row.status == "cancelled" and row.finished_at  # at once, not "running" forever
    assert not queues["training"].count


def test_cancel_of_a_live_run_only_asks_it_to_stop(project, lead_client):
    run = training_run(project, status="running", worker=jobs.this_worker(), heartbeat_at=timezone.now())
    lead_client.post(reverse("annotation:job-cancel", args=[project.slug, "trainingrun", run.pk]))
    run.refresh_from_db()
    assert run.status == "running" and run.is_cancel_requested


def test_polling_a_run_page_queues_a_silent_run_once(project, lead_client, queues):
    silent = timezone.now() - dt.timedelta(seconds=STALE_SECONDS + 5)
    run = training_run(project, status="running", worker="other-host:12", heartbeat_at=silent, step=40)
    alive = training_run(project, status="running", worker="other-host:13", heartbeat_at=timezone.now())
    for _ in range(2):
        response = lead_client.get(
            reverse("training:run", args=[project.slug, run.number]), HTTP_HX_REQUEST="true"
        )
        assert response.status_code == 200
        lead_client.get(reverse("training:run", args=[project.slug, alive.number]), HTTP_HX_REQUEST="true")
    run.refresh_from_db()
    alive.refresh_from_db()
    assert (run.status, run.worker, run.step) == ("pending", "", 0)
    assert alive.status == "running"
    assert [(j.func_name, j.args) for j in queues["training"].jobs] == [
        ("training.jobs.run_training_run", (run.pk,))
    ]


def test_recovery_covers_every_job_type_and_counts_each_row_once(project, queues):
    from training.models import TrainingRun

    gone = {"status": "running", "worker": dead_worker(), "heartbeat_at": timezone.now()}
    batch = ImportBatch.objects.create(project=project, file_name="a.csv", format="csv", **gone)
    labelling = teacher.labeling_job_create(
        project=project, user=None, selection="unlabelled", provider="embedding"
    )
    LabelingJob.objects.filter(pk=labelling.pk).update(**gone)
    written = SyntheticJob.objects.create(project=project, labels=["Billing"], requested=5, **gone)
    quality = QualityRun.objects.create(project=project, **gone)
    run = training_run(project, **gone)
    stopping = training_run(project, is_cancel_requested=True, **gone)

    found = jobs.recover_all()
    assert found == {
        "annotation.ImportBatch": [batch.pk],
        "annotation.LabelingJob": [labelling.pk],
        "annotation.SyntheticJob": [written.pk],
        "annotation.QualityRun": [quality.pk],
        "training.TrainingRun": [run.pk],
    }
    assert jobs.recover_all() == {}  # a second sweep (another worker, a page) finds nothing left
    queued = sorted((j.func_name, j.args[0]) for q in queues.values() for j in q.jobs)
    assert queued == sorted(
        [
            ("annotation.jobs.run_import_batch", batch.pk),
            ("annotation.jobs.run_labeling_job", labelling.pk),
            ("annotation.jobs.run_synthetic_job", written.pk),
            ("annotation.jobs.run_quality_run", quality.pk),
            ("training.jobs.run_training_run", run.pk),
        ]
    )
    assert TrainingRun.objects.get(pk=stopping.pk).status == "cancelled"


def test_resume_queues_a_failed_job_again(project, lead_client, reviewer_client, outsider_client, queues):
    job = teacher.labeling_job_create(
        project=project, user=None, selection="unlabelled", provider="embedding"
    )
    LabelingJob.objects.filter(pk=job.pk).update(status="failed", error="boom", finished_at=timezone.now())
    url = reverse("annotation:job-resume", args=[project.slug, "labelingjob", job.pk])
    page = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert url in page  # the Resume button

    assert lead_client.get(url).status_code == 405
    assert reviewer_client.post(url).status_code == 403
    assert outsider_client.post(url).status_code == 404
    lead_client.post(url)
    job.refresh_from_db()
    assert (job.status, job.error, job.finished_at) == ("pending", "", None)
    assert [j.args for j in queues["llm"].jobs] == [(job.pk,)]
    lead_client.post(url)  # not failed any more: nothing to resume
    assert queues["llm"].count == 1


@pytest.mark.parametrize("kind", ["synthetic", "training"])
def test_resume_buttons_of_other_job_pages(project, lead_client, queues, kind):
    if kind == "synthetic":
        job = SyntheticJob.objects.create(project=project, labels=["Billing"], requested=5, status="failed")
        page = reverse("annotation:project-detail", args=[project.slug])
        url = reverse("annotation:job-resume", args=[project.slug, "syntheticjob", job.pk])
        queue = "llm"
    else:
        job = training_run(project, status="failed")
        page = reverse("training:run", args=[project.slug, job.number])
        url = reverse("annotation:job-resume", args=[project.slug, "trainingrun", job.pk])
        queue = "training"
    assert url in lead_client.get(page).content.decode()
    lead_client.post(url)
    job.refresh_from_db()
    assert job.status == "pending"
    assert [j.args for j in queues[queue].jobs] == [(job.pk,)]
