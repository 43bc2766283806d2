"""Job entry points of the training and short queues: ids in, claim the row, call the service."""

from __future__ import annotations

from distillapp import rows


def training_run_job(run_id: int) -> None:
    from training.models import TrainingRun
    from training.services import run_claim, run_execute

    if not run_claim(run_id):
        return
    with rows.heartbeat(TrainingRun, run_id):
        run_execute(run=TrainingRun.objects.get(pk=run_id))


def evaluation_job_job(job_id: int) -> None:
    from training.models import EvaluationJob
    from training.services import evaluation_job_run

    if not rows.claim(EvaluationJob, job_id):
        return  # finished, cancelled, or alive in another worker
    with rows.heartbeat(EvaluationJob, job_id):
        evaluation_job_run(job=EvaluationJob.objects.get(pk=job_id))


def export_job_job(job_id: int) -> None:
    from training.models import ExportJob
    from training.serving import export_job_run

    if not rows.claim(ExportJob, job_id):
        return
    with rows.heartbeat(ExportJob, job_id):
        export_job_run(job=ExportJob.objects.get(pk=job_id))


def queue_refresh_job(project_id: int) -> None:
    """A finished review round's refresh (training.services.rounds.refresh_queue), run here
    rather than in the reviewer's request: choosing the label source and counting the
    training set read every label (2.2 s at 100,000 examples, bench/README.md "Review queue").
    It has no row of its own: what it starts (a quick run, a quality run) has, and a refresh
    lost with its worker is the next round's."""
    from annotation.models import Project
    from training.services.rounds import refresh_queue

    project = Project.objects.filter(pk=project_id).first()
    if project is not None:
        refresh_queue(project=project)
