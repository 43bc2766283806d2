"""Job entry points of the training queue: ids in, claim the row, call the service."""

from __future__ import annotations

from distillapp import rows


def training_run_job(run_id: int) -> None:
    from training.models import TrainingRun
    from training.services import run_claim, run_execute

    if not run_claim(run_id):
        return
    with rows.heartbeat(TrainingRun, run_id):
        run_execute(run=TrainingRun.objects.get(pk=run_id))
