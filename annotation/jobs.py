"""Job entry points: ids in, claim the row, call the service."""

from __future__ import annotations


def import_batch_job(batch_id: int) -> None:
    from annotation.importing import import_batch_claim, import_batch_run
    from annotation.models import ImportBatch

    if not import_batch_claim(batch_id):
        return  # already done, or another worker has it
    import_batch_run(batch=ImportBatch.objects.get(pk=batch_id))
