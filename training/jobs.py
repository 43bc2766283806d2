"""Job entry points of the training and short queues: ids in, claim the row, call the service."""

from __future__ import annotations

from distillapp import jobs


def run_training_run(run_id: int) -> None:
    from training.models import TrainingRun
    from training.services import run_claim, run_execute

    if not run_claim(run_id):
        return
    with jobs.heartbeat(TrainingRun, run_id):
        run_execute(run=TrainingRun.objects.get(pk=run_id))


def run_evaluation_job(job_id: int) -> None:
    from training.models import EvaluationJob
    from training.services import evaluation_job_run

    if not jobs.claim(EvaluationJob, job_id):
        return  # finished, cancelled, or alive in another worker
    with jobs.heartbeat(EvaluationJob, job_id):
        evaluation_job_run(job=EvaluationJob.objects.get(pk=job_id))


def run_export_job(job_id: int) -> None:
    from training.models import ExportJob
    from training.serving import export_job_run

    if not jobs.claim(ExportJob, job_id):
        return
    with jobs.heartbeat(ExportJob, job_id):
        export_job_run(job=ExportJob.objects.get(pk=job_id))


def run_round_refresh(refresh_id: int) -> None:
    from training.models import RoundRefresh
    from training.services.round_refresh import round_refresh_run

    if not jobs.claim(RoundRefresh, refresh_id):
        return  # done, or alive in another worker
    with jobs.heartbeat(RoundRefresh, refresh_id):
        round_refresh_run(refresh=RoundRefresh.objects.select_related("project").get(pk=refresh_id))
