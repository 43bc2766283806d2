"""The rq worker class: on start it re-queues work that a killed worker left behind."""

from __future__ import annotations

import logging

import rq

logger = logging.getLogger(__name__)


def requeue_interrupted() -> list[str]:
    """Queue again the jobs whose rows say running but whose worker is gone.

    The database row is the truth: RQ only learns of a dead worker minutes
    later, but a row whose worker process has vanished from this host (or
    whose heartbeat stopped) can be taken up at once; the job functions
    claim rows conditionally, so queueing one twice is harmless.
    """
    import django_rq

    from annotation.models import ImportBatch, LabelingJob, SyntheticJob
    from distillapp.rows import worker_is_dead

    queued = []
    for job in LabelingJob.objects.filter(status=LabelingJob.Status.RUNNING):
        if job.is_stale or worker_is_dead(job.worker):
            django_rq.get_queue("llm").enqueue("annotation.jobs.labeling_job_job", job.pk)
            queued.append(f"labelling job {job.pk}")
    for synthetic in SyntheticJob.objects.filter(status=SyntheticJob.Status.RUNNING):
        if worker_is_dead(synthetic.worker):
            django_rq.get_queue("llm").enqueue("annotation.jobs.synthetic_job_job", synthetic.pk)
            queued.append(f"synthetic job {synthetic.pk}")
    for batch in ImportBatch.objects.filter(status=ImportBatch.Status.RUNNING):
        if batch.is_stale:
            django_rq.get_queue("default").enqueue("annotation.jobs.import_batch_job", batch.pk)
            queued.append(f"import batch {batch.pk}")
    for name in queued:
        logger.warning("Re-queued interrupted %s", name)
    return queued


def preload() -> None:
    """Import what LLM jobs need once, in the worker, before it forks a work horse per job.

    `import openai` takes ~0.3 s; paid in every horse it delayed each labelling job's
    first call by that much. (torch is not preloaded: its thread pools are not fork-safe.)
    """
    import httpx  # noqa: F401
    import openai  # noqa: F401

    import annotation.labeling  # noqa: F401
    import annotation.teacher  # noqa: F401


class Worker(rq.Worker):
    def work(self, *args, **kwargs):
        try:
            requeue_interrupted()
        except Exception:  # never keep a worker from starting
            logger.exception("Could not re-queue interrupted jobs")
        try:
            preload()
        except Exception:
            logger.exception("Could not preload the LLM client")
        return super().work(*args, **kwargs)
