"""Review support: reviewers' holds on cards, label-quality scoring runs and the similarity index."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from annotation.models.examples import Example
from annotation.models.projects import Project
from distillapp.models import BackgroundJob, JobRecord

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

    status_words = {BackgroundJob.Status.RUNNING: "Scoring"}
    noun = "quality run"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="quality_runs")
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
        return f"Quality run {self.pk} ({self.status_label})"

    def page_url(self) -> str:
        return reverse("annotation:review", args=[self.project.slug])


class SimilarityIndex(JobRecord):
    """The project's unreviewed pool embedded into the embedding cache, so "more like this"
    reads vectors and never embeds in a web request (annotation.review.similar).

    One row per project, run again (back to pending) whenever texts arrive: an import, API
    traffic, or a search that finds texts without a vector. The cache says which texts are
    ready; the row says whether a worker is on it and how far the current run has got."""

    status_words = {
        JobRecord.Status.PENDING: "Waiting for a worker",
        JobRecord.Status.RUNNING: "Indexing",
        JobRecord.Status.SUCCEEDED: "Indexed",
    }
    noun = "similarity index"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="similarity_index")
    texts_total = models.PositiveIntegerField(
        default=0, help_text="Texts the current run found without a vector."
    )
    texts_done = models.PositiveIntegerField(default=0, help_text="Of those, embedded so far.")

    def __str__(self) -> str:
        return f"Similarity index of {self.project_id} ({self.status_label})"

    def page_url(self) -> str:
        return reverse("annotation:review", args=[self.project.slug])
