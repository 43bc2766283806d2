"""Import jobs through a real rq worker against real Redis."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone
from rq import SimpleWorker

from annotation import corpus
from annotation.models import Example, ImportBatch

pytestmark = pytest.mark.django_db(transaction=True)


def queued_batch(project, tmp_path, lines: int = 120) -> ImportBatch:
    path = tmp_path / "tickets.csv"
    path.write_text("text,label\n" + "".join(f"ticket {i},Billing\n" for i in range(lines)))
    with transaction.atomic():
        batch = corpus.import_batch_create(
            project=project, user=None, file_name=path.name, path=path, label_column="label"
        )
        corpus.import_batch_start(batch=batch, inline=False)
    return batch


def work(queue) -> None:
    # SimpleWorker runs jobs in this process (no fork), so it shares the
    # test database; it is otherwise the same rq worker `rqworker` runs.
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def test_worker_imports_a_queued_batch(project, tmp_path, queues):
    batch = queued_batch(project, tmp_path)
    assert queues["default"].count == 1
    work(queues["default"])
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    assert (batch.rows_created, batch.proposals_created) == (120, 120)
    assert batch.started_at and batch.finished_at


def test_killed_import_is_taken_again_and_imports_each_row_once(project, tmp_path, queues):
    batch = queued_batch(project, tmp_path)
    # What a worker killed mid-import leaves: the row says running, its
    # heartbeat stopped, its staging table died with its connection.
    ImportBatch.objects.filter(pk=batch.pk).update(
        status=ImportBatch.Status.RUNNING,
        rows_read=60,
        heartbeat_at=timezone.now() - dt.timedelta(minutes=10),
    )
    work(queues["default"])
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.SUCCEEDED
    assert (batch.rows_read, batch.rows_created, batch.rows_duplicate) == (120, 120, 0)
    assert Example.objects.filter(project=project).count() == 120
    # Running the job again (RQ retried it, say) changes nothing.
    queues["default"].enqueue("annotation.jobs.run_import_batch", batch.pk)
    work(queues["default"])
    assert Example.objects.filter(project=project).count() == 120


def test_a_live_import_is_not_taken_twice(project, tmp_path, queues):
    batch = queued_batch(project, tmp_path)
    ImportBatch.objects.filter(pk=batch.pk).update(
        status=ImportBatch.Status.RUNNING, heartbeat_at=timezone.now()
    )
    work(queues["default"])
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.RUNNING
    assert not Example.objects.filter(project=project).exists()


def test_unreachable_queue_marks_the_batch_failed(project, tmp_path, monkeypatch):
    import django_rq
    import redis
    from rq import Queue

    # A real client for a Redis that is not there (nothing listens on port 1).
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    monkeypatch.setattr(django_rq, "get_queue", lambda name: Queue(name, connection=down))
    batch = queued_batch(project, tmp_path)
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.FAILED
    assert "job queue could not be reached" in batch.error


def test_heartbeat_goes_on_while_the_rows_are_written(project, tmp_path):
    import time

    from distillapp import jobs

    batch = queued_batch(project, tmp_path)
    old = timezone.now() - dt.timedelta(minutes=10)
    ImportBatch.objects.filter(pk=batch.pk).update(
        status=ImportBatch.Status.RUNNING, heartbeat_at=old, worker=jobs.this_worker()
    )
    with jobs.heartbeat(ImportBatch, batch.pk, every=0.05):
        time.sleep(0.3)
    batch.refresh_from_db()
    assert batch.heartbeat_at > old + dt.timedelta(minutes=9)
    assert not batch.is_stale


def test_unreachable_queue_fails_any_pending_job_row(
    project, monkeypatch, django_capture_on_commit_callbacks
):
    """jobs.enqueue, which every job's start goes through, fails the row rather than lose it."""
    import django_rq
    import redis
    from rq import Queue

    from annotation import review
    from training import services as training_services
    from training.models import TrainingRun

    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    monkeypatch.setattr(django_rq, "get_queue", lambda name: Queue(name, connection=down))
    run = TrainingRun.objects.create(project=project, number=1)
    with django_capture_on_commit_callbacks(execute=True):
        training_services.run_start(run=run)
        quality = review.quality_run_start(project=project, user=None)
    for row in (run, quality):
        row.refresh_from_db()
        assert row.status == "failed"
        assert row.error.startswith("The job queue could not be reached (")


def test_an_upload_that_cannot_be_queued_says_so_and_leaves_no_file(
    project, lead_client, settings, tmp_path, monkeypatch
):
    """Repro (#12.6): the page said "importing" and the uploaded copy stayed on disk."""
    import django_rq
    import redis
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse
    from rq import Queue

    settings.IMPORT_INLINE_MAX_BYTES = 10  # any real file goes to the queue
    settings.UPLOAD_DIR = tmp_path / "uploads"
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    monkeypatch.setattr(django_rq, "get_queue", lambda name: Queue(name, connection=down))
    upload = SimpleUploadedFile(
        "tickets.csv", b"text\nrefund please\nlogin broken\n", content_type="text/csv"
    )
    response = lead_client.post(
        reverse("annotation:import-upload", args=[project.slug]),
        {"file": upload, "text_column": "text", "id_column": "id"},
        follow=True,
    )
    page = response.content.decode()
    batch = ImportBatch.objects.get(project=project)
    assert batch.status == ImportBatch.Status.FAILED
    assert "was not imported" in page and "job queue could not be reached" in page
    assert "importing" not in page.lower().split("was not imported")[0][-200:]
    assert not list((tmp_path / "uploads").rglob("*.csv"))
    assert not Example.objects.filter(project=project).exists()
