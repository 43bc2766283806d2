"""The job row is the truth: one way to claim it, cancel it and tell a dead worker.

Every background job (labelling, synthetic data, training) has a row with
`status` pending/running/…, `worker` ("host:pid") and `heartbeat_at`.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

from django.db.models import Q
from django.utils import timezone

PENDING, RUNNING, FAILED, CANCELLED = "pending", "running", "failed", "cancelled"


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_is_dead(worker: str) -> bool:
    """True when the process named host:pid ran on this host and is gone."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed process nobody has reaped yet is a zombie: dead too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


def claim(model, pk: int, *, stale_after: dt.timedelta | None = None, restart: dict | None = None) -> bool:
    """Take a job row for this process: a pending one, or a running one whose worker is gone.

    Each step is a conditional update, so two workers can never both take the
    same row. `stale_after` also takes rows whose heartbeat went silent (a
    worker on another host); `restart` is written when taking over a dead
    worker's row (e.g. to reset progress that cannot resume).
    """
    now = timezone.now()
    fields = {"status": RUNNING, "worker": this_worker(), "heartbeat_at": now}
    takeable = Q(status=PENDING)
    if stale_after is not None:
        takeable |= Q(status=RUNNING, heartbeat_at__lt=now - stale_after)
    if model.objects.filter(takeable, pk=pk).update(**fields, **(restart or {})):
        model.objects.filter(pk=pk, started_at__isnull=True).update(started_at=now)
        return True
    running = model.objects.filter(pk=pk, status=RUNNING).only("worker").first()
    if running and worker_is_dead(running.worker):
        # Conditional on the dead worker's name: only one new worker wins.
        return bool(
            model.objects.filter(pk=pk, status=RUNNING, worker=running.worker).update(
                **fields, **(restart or {})
            )
        )
    return False


def cancel(model, pk: int) -> None:
    """A pending job is cancelled at once; a running one stops at its next check."""
    model.objects.filter(pk=pk, status=PENDING).update(status=CANCELLED, finished_at=timezone.now())
    model.objects.filter(pk=pk).update(is_cancel_requested=True)


def enqueue(model, pk: int, queue_name: str, func_path: str, *, note: str = "") -> None:
    """Queue the row's job once the transaction commits (`func_path(pk)` on `queue_name`).

    If Redis cannot be reached, the still-pending row fails with that reason (plus `note`)
    instead of waiting for a worker that will never hear of it.
    """
    from distillapp.queues import enqueue_on_commit

    enqueue_on_commit(
        queue_name,
        func_path,
        pk,
        on_error=lambda exc: model.objects.filter(pk=pk, status=PENDING).update(
            status=FAILED, error=f"The job queue could not be reached ({exc}){note}."
        ),
    )
