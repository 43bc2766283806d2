"""Job entry points: ids in, claim the row, call the service with the row's heartbeat on.

Which queue runs each of them is written once, in distillapp.jobs.JOBS.
"""

from __future__ import annotations

from distillapp import jobs


def run_import_batch(batch_id: int) -> None:
    from annotation.corpus import import_batch_claim, import_batch_run
    from annotation.models import ImportBatch

    if not import_batch_claim(batch_id):
        return  # already done, or another worker has it
    with jobs.heartbeat(ImportBatch, batch_id):
        import_batch_run(batch=ImportBatch.objects.get(pk=batch_id))


def run_labeling_job(job_id: int) -> None:
    from annotation.models import LabelingJob
    from annotation.teacher import labeling_job_claim, labeling_job_run

    if not labeling_job_claim(job_id):
        return  # finished, cancelled, or alive in another worker
    with jobs.heartbeat(LabelingJob, job_id):
        labeling_job_run(job=LabelingJob.objects.get(pk=job_id))


def run_synthetic_job(job_id: int) -> None:
    from annotation.models import SyntheticJob
    from annotation.teacher import synthetic_job_claim, synthetic_job_run

    if not synthetic_job_claim(job_id):
        return
    with jobs.heartbeat(SyntheticJob, job_id):
        synthetic_job_run(job=SyntheticJob.objects.get(pk=job_id))


def run_quality_run(run_id: int) -> None:
    from annotation.models import QualityRun
    from annotation.review import quality_run

    if not jobs.claim(QualityRun, run_id):
        return
    with jobs.heartbeat(QualityRun, run_id):
        quality_run(run=QualityRun.objects.get(pk=run_id))


def run_similarity_index(index_id: int) -> None:
    from annotation.models import SimilarityIndex
    from annotation.review import similarity_index_run

    if not jobs.claim(SimilarityIndex, index_id):
        return  # already indexed, or alive in another worker
    with jobs.heartbeat(SimilarityIndex, index_id):
        similarity_index_run(index=SimilarityIndex.objects.get(pk=index_id))
