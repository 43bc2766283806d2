"""What the app's background job rows share (no tables of its own).

Every job row (imports, labelling, synthetic data, quality scoring, training) is
claimed, kept alive, cancelled, recovered and resumed by distillapp.jobs through
these fields; distillapp.jobs.JOBS says which queue and function run each kind.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class JobRecord(models.Model):
    """When a job row was made, by whom, which process holds it and how its run went.

    Subclasses define `Status` with at least PENDING, RUNNING, SUCCEEDED and FAILED and
    a `status` field. Imports use this part alone: they cannot be cancelled.
    """

    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process running it.")

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.FAILED, *self._cancelled()}

    def _cancelled(self) -> set:
        cancelled = getattr(self.Status, "CANCELLED", None)
        return {cancelled} if cancelled else set()

    @property
    def is_stale(self) -> bool:
        """Running, but the process that held it is gone (dead here, or silent too long)."""
        from distillapp import jobs

        return jobs.is_stale(self)

    @property
    def can_resume(self) -> bool:
        """Failed or interrupted: queueing it again continues the work that remains."""
        return self.status == self.Status.FAILED or self.is_stale


class BackgroundJob(JobRecord):
    """A job row that may also be asked to stop (`Status` has CANCELLED too)."""

    is_cancel_requested = models.BooleanField(default=False)

    class Meta(JobRecord.Meta):
        abstract = True


def own_fields_first(model: type[models.Model]) -> list[str]:
    """The model's field names, its own before the shared job fields (for admin pages)."""
    shared = {field.name for field in BackgroundJob._meta.fields}
    names = [field.name for field in model._meta.fields]
    return [n for n in names if n not in shared] + [n for n in names if n in shared]
