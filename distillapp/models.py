"""What the app's cancellable background job rows share (no tables of its own)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class JobRecord(models.Model):
    """When a job row was made, by whom, and how its run went (imports use this part alone)."""

    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]


class BackgroundJob(JobRecord):
    """A job row that a worker claims, reports on and may be asked to stop.

    Subclasses define `Status` with PENDING, RUNNING, SUCCEEDED, FAILED and CANCELLED and
    a `status` field; distillapp.rows claims and watches rows through these fields.
    """

    is_cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process running it.")

    class Meta(JobRecord.Meta):
        abstract = True

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.FAILED, self.Status.CANCELLED}


def own_fields_first(model: type[models.Model]) -> list[str]:
    """The model's field names, its own before the shared job fields (for admin pages)."""
    shared = {field.name for field in BackgroundJob._meta.fields}
    names = [field.name for field in model._meta.fields]
    return [n for n in names if n not in shared] + [n for n in names if n in shared]
