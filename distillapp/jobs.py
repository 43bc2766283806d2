"""The row is the truth: one way to start, claim, keep alive, run, cancel, recover and resume a job.

Every background job has a row (distillapp.models) with `status` pending/running/…, `worker`
("host:pid" of the process holding it) and `heartbeat_at`. A job's body runs inside
`running`, which records how it ended. JOBS names each kind's queue and job function, so
adding a job kind is a model, a body and one line here: its pages get cancel and resume
from annotation.views.jobs.

A running row is *stale* when the process holding it is gone: on this host its pid no
longer exists; on another host its heartbeat is older than JOB_STALE_SECONDS. Workers
recover stale rows every few seconds (distillapp.worker), and so do the pages that
poll them: the row goes back to pending and is queued again, and the job continues
where its work stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = "pending", "running", "succeeded", "failed", "cancelled"


@dataclass(frozen=True)
class JobType:
    queue: str
    function: str
    restart: dict = field(default_factory=dict)  # written when a dead worker's row is taken up again


# "app_label.Model" -> how its rows are run. Labels, not classes: distillapp sits below the apps.
JOBS: dict[str, JobType] = {
    "annotation.ImportBatch": JobType(
        "default", "annotation.jobs.run_import_batch", restart={"rows_read": 0, "bytes_done": 0}
    ),
    "annotation.LabelingJob": JobType("llm", "annotation.jobs.run_labeling_job"),
    "annotation.SyntheticJob": JobType("llm", "annotation.jobs.run_synthetic_job"),
    "annotation.QualityRun": JobType("training", "annotation.jobs.run_quality_run"),
    # Embedding continues where it stopped: the cache keeps every chunk written. A reviewer
    # waits on it ("still indexing"), 512 texts a run: the short lane, never behind a fine-tune.
    "annotation.SimilarityIndex": JobType(
        "short", "annotation.jobs.run_similarity_index", restart={"texts_done": 0, "texts_total": 0}
    ),
    # Training does not resume mid-epoch: a taken-over run starts over.
    "training.TrainingRun": JobType(
        "training", "training.jobs.run_training_run", restart={"step": 0, "loss_history": []}
    ),
    # Evaluation and int8 export run again from the start; each saves its result only at the end.
    # Both are short and someone waits on them: their own lane, never behind a fine-tune.
    "training.EvaluationJob": JobType("short", "training.jobs.run_evaluation_job"),
    "training.ExportJob": JobType("short", "training.jobs.run_export_job"),
    # Starts a review round's quick run and quality run in one transaction: all or nothing.
    "training.RoundRefresh": JobType("training", "training.jobs.run_round_refresh"),
}


def job_type(model) -> JobType:
    return JOBS[model._meta.label]


def job_models() -> list:
    from django.apps import apps

    return [apps.get_model(label) for label in JOBS]


def stale_after() -> dt.timedelta:
    return dt.timedelta(seconds=settings.JOB_STALE_SECONDS)


def heartbeat_seconds() -> float:
    # Several beats fit in the stale timeout, so one slow write is never taken for a death.
    return settings.JOB_STALE_SECONDS / 6


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_here(worker: str) -> int | None:
    host, _, pid = worker.rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def worker_is_dead(worker: str) -> bool:
    """True when the process named host:pid ran on this host and is gone."""
    pid = _pid_here(worker)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed process nobody has reaped yet is a zombie: dead too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


def is_stale(row) -> bool:
    """Running, but the process holding it is gone.

    On this host the process table is asked: a live process is never taken for
    dead, even when its heartbeat is late (SQLite holds heartbeats back while a
    long transaction writes). Elsewhere a heartbeat older than the timeout says so.
    """
    if row.status != RUNNING:
        return False
    if row.worker and _pid_here(row.worker) is not None:
        return worker_is_dead(row.worker)
    return row.heartbeat_at is not None and timezone.now() - row.heartbeat_at > stale_after()


def _held_as_seen(model, row):
    """The row, only while it is still held exactly as `row` saw it (for conditional updates)."""
    return model.objects.filter(pk=row.pk, status=RUNNING, worker=row.worker, heartbeat_at=row.heartbeat_at)


def _can_cancel(model) -> bool:
    return any(f.name == "is_cancel_requested" for f in model._meta.fields)


def claim(model, pk: int, *, restart: dict | None = None) -> bool:
    """Take a job row for this process: a pending one, or a running one whose worker is gone.

    Each step is a conditional update, so two workers never both take the same
    row. `restart` (default: the job type's) is written when taking over a dead
    worker's row, e.g. to reset progress that cannot resume.
    """
    now = timezone.now()
    fields = {"status": RUNNING, "worker": this_worker(), "heartbeat_at": now}
    restart = job_type(model).restart if restart is None else restart
    if model.objects.filter(pk=pk, status=PENDING).update(**fields, **restart):
        model.objects.filter(pk=pk, started_at__isnull=True).update(started_at=now)
        return True
    running = model.objects.filter(pk=pk, status=RUNNING).first()
    if running is None or not is_stale(running):
        return False
    if _can_cancel(model) and running.is_cancel_requested:
        _held_as_seen(model, running).update(status=CANCELLED, finished_at=now)
        return False
    return bool(_held_as_seen(model, running).update(**fields, **restart))


@contextmanager
def heartbeat(model, pk: int, *, every: float | None = None) -> Iterator[None]:
    """Keep the row's heartbeat fresh from a side thread while the body runs.

    The one heartbeat every job uses: it beats while this process holds the row,
    whatever the job is doing (an LLM call, a long transaction, a training step).
    """
    worker = this_worker()
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every or heartbeat_seconds()):
                try:
                    model.objects.filter(pk=pk, status=RUNNING, worker=worker).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError:
                    # SQLite: a long transaction of the job holds the write lock.
                    logger.debug("Heartbeat of %s %s skipped", model.__name__, pk)
        finally:
            connections.close_all()  # this thread's own connections

    thread = threading.Thread(target=beat, name=f"{model.__name__}-{pk}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Cancelled(Exception):
    """The job was asked to stop: it stops here and its row says cancelled."""


class Lost(Exception):
    """The row is no longer this process's (taken over as dead): its new holder records the outcome."""


def described(exc: Exception) -> str:
    """An unexpected error as a job's row shows it: its type, then its message."""
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Held:
    """The row a job body runs for, as `running` yields it."""

    model: type
    pk: int
    rows: QuerySet  # where the outcome is written
    clear: dict  # written with every outcome (e.g. the phase shown while it runs)

    def check(self, **progress) -> None:
        """Stop here if the job was asked to (Cancelled); else write `progress` and beat."""
        if self.model.objects.filter(pk=self.pk, is_cancel_requested=True).exists():
            raise Cancelled
        self.rows.update(heartbeat_at=timezone.now(), **progress)

    def succeed(self, *, unless_cancelled: bool = False, **fields) -> None:
        """Record success with what the job made (`fields`); Lost when the row is no longer held.

        With `unless_cancelled`, a stop asked for meanwhile wins (Cancelled): call it in the
        transaction that saves the job's work, so the work is saved only with its success.
        """
        rows = self.rows.filter(is_cancel_requested=False) if unless_cancelled else self.rows
        if not rows.update(status=SUCCEEDED, finished_at=timezone.now(), **self.clear, **fields):
            raise Cancelled if self.rows.exists() else Lost


@contextmanager
def running(
    model,
    pk: int,
    *,
    held: bool = False,
    expected: tuple[type[Exception], ...] = (),
    reason: Callable[[Exception], str] = str,
    clear: dict | None = None,
) -> Iterator[Held]:
    """Run a job's body and record on its row how it ended.

    The body records success itself (`Held.succeed`, with what it made). Cancelled: the
    row is cancelled. Lost: nothing is written. An `expected` error fails the row with its
    message; any other fails it with `reason(exc)` and is logged and raised again, so rq
    records it too. With `held`, outcomes are written only while this process holds the row.
    """
    rows = model.objects.filter(pk=pk)
    if held:
        rows = rows.filter(status=RUNNING, worker=this_worker())
    clear = clear or {}
    try:
        yield Held(model, pk, rows, clear)
    except Cancelled:
        rows.update(status=CANCELLED, finished_at=timezone.now(), **clear)
    except Lost:
        logger.warning("%s %s was taken over by another worker; its outcome is theirs", model.__name__, pk)
    except expected as exc:
        rows.update(status=FAILED, error=str(exc), finished_at=timezone.now(), **clear)
    except Exception as exc:
        logger.exception("%s %s failed", model.__name__, pk)
        failed = {"status": FAILED, "error": reason(exc)[:2000], "finished_at": timezone.now(), **clear}
        if any(f.name == "traceback" for f in model._meta.concrete_fields):  # a row that keeps one
            failed["traceback"] = traceback.format_exc()[-8000:]
        rows.update(**failed)
        raise


def enqueue(
    model,
    pk: int,
    queue_name: str | None = None,
    func_path: str | None = None,
    *,
    note: str = "",
    on_failed: Callable[[], object] | None = None,
) -> None:
    """Queue the row's job once the transaction commits (its JOBS entry, unless named).

    If Redis cannot be reached, the still-pending row fails with that reason (plus `note`)
    instead of waiting for a worker that will never hear of it, and `on_failed()` cleans up
    what the job would have used (an uploaded file).
    """
    from distillapp.queues import enqueue_on_commit

    def failed(exc: Exception) -> None:
        model.objects.filter(pk=pk, status=PENDING).update(
            status=FAILED, error=f"The job queue could not be reached ({exc}){note}."
        )
        if on_failed is not None:
            on_failed()

    kind = job_type(model)
    enqueue_on_commit(queue_name or kind.queue, func_path or kind.function, pk, on_error=failed)


def cancel(model, pk: int) -> None:
    """A pending job, or one whose worker is dead, is cancelled at once; a live one stops
    at its next check."""
    model.objects.filter(pk=pk, status=PENDING).update(status=CANCELLED, finished_at=timezone.now())
    model.objects.filter(pk=pk).update(is_cancel_requested=True)
    running = model.objects.filter(pk=pk, status=RUNNING).first()
    if running is not None and is_stale(running):
        _held_as_seen(model, running).update(status=CANCELLED, finished_at=timezone.now())


def recover(model, pks: list[int] | None = None) -> list[int]:
    """Queue again the model's stale rows (those in `pks`, or all); returns their ids.

    Each row goes back to pending in a conditional update on what was seen, so
    of several workers and pages that find the same dead row, one queues it.
    A row that was asked to stop is cancelled instead.
    """
    running = model.objects.filter(status=RUNNING)
    if pks is not None:
        running = running.filter(pk__in=pks)
    queued = []
    for row in running:
        if not is_stale(row):
            continue
        if _can_cancel(model) and row.is_cancel_requested:
            _held_as_seen(model, row).update(status=CANCELLED, finished_at=timezone.now())
        elif _held_as_seen(model, row).update(status=PENDING, worker="", **job_type(model).restart):
            enqueue(model, row.pk, note="; resume it from its page")
            queued.append(row.pk)
            logger.warning(
                "Re-queued %s %s: its process (%s) is gone", model.__name__, row.pk, row.worker or "silent"
            )
    return queued


def recover_shown(shown: list) -> None:
    """Recover the stale rows among those a page is about to show, and refresh them.

    Pages that poll a job call this, so a dead job is taken up again even while
    the workers' own sweep has not come round yet.
    """
    for row in shown:
        if row.is_stale:
            recover(type(row), [row.pk])
            row.refresh_from_db()


def recover_all() -> dict[str, list[int]]:
    """Recover every job type's stale rows (what workers run every few seconds)."""
    found = {}
    for model in job_models():
        if queued := recover(model):
            found[model._meta.label] = queued
    return found


def resume(model, pk: int) -> bool:
    """Queue a failed, interrupted or pending row again; False when there is nothing to resume.

    The job continues where its work stopped: labelling by items, synthetic data by
    the counts per label, training from the start. A pending row is queued once more (its
    queue entry may be lost); the claim makes sure it runs once.
    """
    if model.objects.filter(pk=pk, status=PENDING).exists():
        enqueue(model, pk)
        return True
    now = timezone.now()
    resumed = model.objects.filter(pk=pk, status=FAILED).update(
        status=PENDING, worker="", error="", finished_at=None, heartbeat_at=now
    )
    if resumed:
        if _can_cancel(model):
            model.objects.filter(pk=pk).update(is_cancel_requested=False)
        enqueue(model, pk, note="; resume it again later")
        return True
    return bool(recover(model, [pk]))
