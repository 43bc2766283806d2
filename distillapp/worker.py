"""The rq worker class: it recovers jobs whose process died, at start and every few seconds."""

from __future__ import annotations

import logging
import math
import time

import rq
from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)


def recovery_seconds() -> float:
    # Three sweeps per stale timeout: a row silent past the timeout waits at most a third more.
    return settings.JOB_STALE_SECONDS / 3


def requeue_interrupted() -> list[str]:
    """Queue again every job whose row says running but whose worker is gone.

    The database row is the truth: RQ learns of a dead work horse only as a
    failed job and never runs it again, but distillapp.jobs can tell the row's
    process is gone (its pid vanished from this host, or its heartbeat stopped)
    and put the row back on its queue; job functions claim rows conditionally,
    so a row queued twice still runs once.
    """
    from distillapp import jobs

    try:
        found = jobs.recover_all()
    finally:
        # The worker forks a work horse per job: it must not inherit an open connection.
        connections.close_all()
    return [f"{label} {pk}" for label, pks in found.items() for pk in pks]


def preload() -> None:
    """Import what LLM jobs need once, in the worker, before it forks a work horse per job.

    `import openai` takes ~0.3 s; paid in every horse it delayed each labelling job's
    first call by that much. (torch is not preloaded: its thread pools are not fork-safe.)
    """
    import httpx  # noqa: F401
    import openai  # noqa: F401

    # The whole teacher package: its client, labelling and synthetic jobs.
    import annotation.teacher  # noqa: F401


class Worker(rq.Worker):
    """rq's forking worker, plus job recovery as part of its maintenance.

    Idle, it wakes every `recovery_seconds()` (a short dequeue timeout) to sweep;
    busy, it sweeps from its work-horse monitoring loop; and it sweeps at once
    after a work horse was killed, so the job of a horse the OOM killer took is
    running again within seconds, by this same worker.
    """

    _next_recovery = 0.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # rq checks on a busy horse every job_monitoring_interval (30 s by default).
        self.job_monitoring_interval = max(
            1, min(self.job_monitoring_interval, math.ceil(recovery_seconds()))
        )

    def _recover(self) -> None:
        self._next_recovery = time.monotonic() + recovery_seconds()
        try:
            requeue_interrupted()
        except Exception:  # a database hiccup must not stop the worker
            logger.exception("Could not re-queue interrupted jobs")

    @property
    def dequeue_timeout(self) -> int:
        return max(1, min(super().dequeue_timeout, math.ceil(recovery_seconds())))

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return time.monotonic() >= self._next_recovery or super().should_run_maintenance_tasks

    def run_maintenance_tasks(self) -> None:
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()
        if time.monotonic() >= self._next_recovery:
            self._recover()

    def maintain_heartbeats(self, job, execution) -> None:
        super().maintain_heartbeats(job, execution)
        if time.monotonic() >= self._next_recovery:
            self._recover()

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage) -> None:
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        self._next_recovery = 0.0  # sweep before taking the next job

    def work(self, *args, **kwargs):
        self._recover()
        try:
            preload()
        except Exception:
            logger.exception("Could not preload the LLM client")
        return super().work(*args, **kwargs)
