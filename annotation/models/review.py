"""Review support: reviewers' holds on cards and label-quality scoring runs."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from annotation.models.examples import Example
from annotation.models.projects import Project
from distillapp.models import BackgroundJob

CLAIM_SECONDS = 120


class ReviewClaim(models.Model):
    """A short hold on an example, so two reviewers never get the same card."""

    example = models.OneToOneField(Example, on_delete=models.CASCADE, related_name="claim")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    claimed_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    is_audit = models.BooleanField(default=False, help_text="Drawn at random for the audit share.")
    queue_order = models.CharField(max_length=20, blank=True, help_text="The order it was served in.")

    def __str__(self) -> str:
        return f"{self.example_id} held by {self.user_id} until {self.expires_at:%H:%M:%S}"


class QualityRun(BackgroundJob):
    """One scoring of likely label errors over a project's labelled examples."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        RUNNING = "running", "Scoring"
        SUCCEEDED = "succeeded", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="quality_runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    examples = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True)
    flagged = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Unreviewed labels the run flags as likely wrong (what pruning leaves out).",
    )
    flag_coverage = models.FloatField(
        null=True,
        blank=True,
        help_text="Flagged unreviewed labels over the wrong ones the audit estimates among them "
        "(null: no audit estimate yet, or the task type does not flag).",
    )

    def __str__(self) -> str:
        return f"Quality run {self.pk} ({self.get_status_display()})"
