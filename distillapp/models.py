"""What the app's background job rows share (no tables of its own).

Every job row (imports, labelling, synthetic data, quality scoring, training) is
claimed, kept alive, cancelled, recovered and resumed by distillapp.jobs through
these fields; distillapp.jobs.JOBS says which queue and function run each kind.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class JobStatus(models.TextChoices):
    PENDING = "pending", "Waiting"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class JobQuerySet(models.QuerySet):
    def unfinished(self) -> JobQuerySet:
        return self.filter(status__in=[JobStatus.PENDING, JobStatus.RUNNING])


class JobRecord(models.Model):
    """A job row: its status, when it was made and by whom, which process holds it, how it went.

    Imports use this part alone: they cannot be cancelled. `status_words` are the kind's
    own words for a status on its pages ("Labelling" for running).
    """

    Status = JobStatus
    status_words: dict[str, str] = {}
    # In the pages' messages: "This {noun} has already ended."
    noun = "job"
    resume_note = ""  # after "… is queued again"

    status = models.CharField(
        max_length=10, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True
    )
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process running it.")

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]

    @property
    def status_label(self) -> str:
        return self.status_words.get(self.status) or self.get_status_display()

    @property
    def is_finished(self) -> bool:
        return self.status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}

    @property
    def percent_done(self) -> int | None:
        """How far the work is, 0-100; None where a kind cannot tell (its bar then just moves:
        templates/annotation/_job_progress.html)."""
        return None

    @property
    def is_stale(self) -> bool:
        """Running, but the process that held it is gone (dead here, or silent too long)."""
        from distillapp import jobs

        return jobs.is_stale(self)

    @property
    def can_resume(self) -> bool:
        """Failed or interrupted: queueing it again continues the work that remains."""
        return self.status == JobStatus.FAILED or self.is_stale

    @property
    def can_cancel(self) -> bool:
        return False

    @property
    def job_kind(self) -> str:
        """The kind's name in the cancel and resume URLs."""
        return self._meta.model_name

    @property
    def job_title(self) -> str:
        """What the pages' messages call this row ("Labelling job #4 is queued again.")."""
        return f"{self.noun[:1].upper()}{self.noun[1:]} #{self.pk}"

    def page_url(self) -> str:
        """The page that shows this row, where its cancel and resume views lead back to."""
        raise NotImplementedError


class BackgroundJob(JobRecord):
    """A job row that may also be asked to stop."""

    # What the cancel view tells the lead, who waits for the job to stop.
    cancel_note = "Cancelling."

    is_cancel_requested = models.BooleanField(default=False)

    class Meta(JobRecord.Meta):
        abstract = True

    @property
    def can_cancel(self) -> bool:
        return not self.is_finished


def own_fields_first(model: type[models.Model]) -> list[str]:
    """The model's field names, its own before the shared job fields (for admin pages)."""
    shared = {field.name for field in BackgroundJob._meta.fields}
    names = [field.name for field in model._meta.fields]
    return [n for n in names if n not in shared] + [n for n in names if n in shared]
