"""The teacher: how it is called, the prompts it answered, and the jobs that call it."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from annotation.models.examples import Example, Proposal
from annotation.models.projects import Project
from distillapp.models import BackgroundJob
from tasks import Category, Task, task_for


class TeacherConfig(models.Model):
    """How a project's teacher LLM is called; one per project."""

    class Provider(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible API"
        EMBEDDING = "embedding", "Offline embedding teacher (no API key)"

    # Each multiplies what one labelling call may spend or hold (samples the output tokens
    # billed per call, max_tokens each answer, the timeout a worker slot); a lead's typo
    # must not buy a thousand answers per text. teacher_settings() clamps older rows too.
    MAX_TOKENS = 4096
    MAX_SAMPLES = 10
    MAX_TIMEOUT_SECONDS = 300

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="teacher_config")
    provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.EMBEDDING)
    model = models.CharField(max_length=200, default="gpt-4o-mini")
    base_url = models.CharField(
        max_length=500,
        blank=True,
        help_text="Empty: OPENAI_BASE_URL, else OpenAI. Any OpenAI-compatible server works.",
    )
    api_key_env = models.CharField(
        max_length=100,
        default="OPENAI_API_KEY",
        help_text="Name of the environment variable holding the key; the key itself is never stored.",
    )
    temperature = models.FloatField(default=0.0)
    max_tokens = models.PositiveIntegerField(
        default=64, validators=[MinValueValidator(1), MaxValueValidator(MAX_TOKENS)]
    )
    price_input_per_mtok = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal("0.15"), help_text="USD per million input tokens."
    )
    price_output_per_mtok = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal("0.60"), help_text="USD per million output tokens."
    )
    concurrency = models.PositiveIntegerField(default=8, help_text="Calls in flight at once.")
    requests_per_minute = models.PositiveIntegerField(default=0, help_text="0: no limit.")
    timeout_seconds = models.FloatField(
        default=30.0, validators=[MinValueValidator(1), MaxValueValidator(MAX_TIMEOUT_SECONDS)]
    )
    max_attempts = models.PositiveIntegerField(
        default=5, help_text="Tries per call on 429, 5xx and timeouts."
    )
    structured_output = models.BooleanField(
        default=True, help_text="Ask for a JSON schema answer; off for servers that do not support it."
    )
    use_logprobs = models.BooleanField(
        default=True, help_text="Ask for token log-probabilities (confidence)."
    )
    self_consistency_samples = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(MAX_SAMPLES)],
        help_text="When no logprobs come back: sample this many answers (0: off; each is billed).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.project}: {self.get_provider_display()} {self.model}"

    @property
    def agent_model(self) -> str:
        return "embedding-minilm" if self.provider == self.Provider.EMBEDDING else self.model


class PromptVersion(models.Model):
    """The exact prompt a teacher answered; immutable once a proposal used it."""

    class FewShot(models.TextChoices):
        NONE = "none", "None"
        FIXED = "fixed", "Fixed examples chosen by the lead"
        SIMILAR = "similar", "Most similar reviewed examples"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompt_versions")
    version = models.PositiveIntegerField()
    instructions = models.TextField()
    guidelines = models.TextField(blank=True)
    labels = models.JSONField(default=list, help_text="[{name, description}] as sent to the teacher.")
    few_shot = models.CharField(max_length=10, choices=FewShot.choices, default=FewShot.NONE)
    few_shot_k = models.PositiveIntegerField(default=8)
    few_shot_per_label = models.PositiveIntegerField(
        default=2, help_text="Cap per label for similar examples."
    )
    fixed_examples = models.JSONField(
        default=list, blank=True, help_text="[{text, label}] for the fixed strategy."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["project", "-version"]
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="prompt_unique_version")]

    def __str__(self) -> str:
        return f"{self.project} prompt v{self.version}"

    @property
    def label_names(self) -> list[str]:
        return [label["name"] for label in self.labels]

    @property
    def task(self) -> Task:
        """The project's task type bound to the labels (fields) this version was written for."""
        categories = [
            Category(
                name=d["name"], description=d.get("description", ""), allows_many=d.get("allows_many", True)
            )
            for d in self.labels
        ]
        return task_for(self.project.task_type, categories, self.project.task_options)

    @property
    def is_used(self) -> bool:
        return self.proposals.exists()


class LabelingJob(BackgroundJob):
    status_words = {BackgroundJob.Status.RUNNING: "Labelling"}
    noun = "labelling job"
    cancel_note = "Cancelling: answers already received are kept."
    resume_note = "; it continues where it stopped"

    class Selection(models.TextChoices):
        UNLABELLED = "unlabelled", "All unlabelled examples"
        SAMPLE = "sample", "A random sample of unlabelled examples"
        SEARCH = "search", "Examples whose text contains…"
        GOLD = "gold", "Gold examples (teacher vs gold)"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labeling_jobs")
    prompt_version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="jobs")
    teacher = models.JSONField(default=dict, help_text="The teacher settings at launch.")
    selection = models.CharField(max_length=12, choices=Selection.choices, default=Selection.UNLABELLED)
    sample_size = models.PositiveIntegerField(null=True, blank=True)
    search = models.CharField(max_length=200, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cached = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    estimate = models.JSONField(default=dict, blank=True)
    answer_notes = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the task noted reading the answers (Task.answer_note_names), summed.",
    )

    def __str__(self) -> str:
        return f"Labelling job {self.pk} ({self.status_label})"

    def page_url(self) -> str:
        return reverse("annotation:project-detail", args=[self.project.slug])

    @property
    def processed(self) -> int:
        return self.done + self.failed + self.cached

    @property
    def percent_done(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return min(99, int(100 * self.processed / self.total)) if self.total else 0

    @property
    def eta_seconds(self) -> float | None:
        if self.status != self.Status.RUNNING or not self.started_at or not self.processed:
            return None
        elapsed = (timezone.now() - self.started_at).total_seconds()
        return elapsed / self.processed * max(0, self.total - self.processed)


class LabelingJobItem(models.Model):
    """One example a job must label; the job is done when none is pending."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Labelled"
        CACHED = "cached", "From cache"
        FAILED = "failed", "Failed"

    job = models.ForeignKey(LabelingJob, on_delete=models.CASCADE, related_name="items")
    example = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    proposal = models.ForeignKey(Proposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "example"], name="jobitem_unique_example")]
        indexes = [models.Index(fields=["job", "status"], name="jobitem_status_idx")]

    def __str__(self) -> str:
        return f"job {self.job_id} / example {self.example_id}: {self.status}"


class SyntheticJob(BackgroundJob):
    """Asks the teacher LLM for new examples per label (per field, for extraction), with
    diversity controls."""

    status_words = {BackgroundJob.Status.RUNNING: "Generating"}
    noun = "synthetic job"
    cancel_note = "Cancelling: examples already written are kept."
    resume_note = "; it continues where it stopped"

    class Noise(models.TextChoices):
        NONE = "none", "Clean text"
        LIGHT = "light", "A few typos"
        HEAVY = "heavy", "Messy, hurried typing"

    class Difficulty(models.TextChoices):
        EASY = "easy", "Typical examples"
        MIXED = "mixed", "Mixed"
        HARD = "hard", "Near-misses between confusable labels"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="synthetic_jobs")
    teacher = models.JSONField(default=dict, help_text="The teacher settings at launch.")
    labels = models.JSONField(
        default=list, help_text="Names of the labels (extraction: fields) to write examples for."
    )
    per_label = models.PositiveIntegerField(default=20)
    personas = models.JSONField(default=list)
    tones = models.JSONField(default=list)
    min_words = models.PositiveIntegerField(default=5)
    max_words = models.PositiveIntegerField(default=60)
    noise = models.CharField(max_length=10, choices=Noise.choices, default=Noise.LIGHT)
    difficulty = models.CharField(max_length=10, choices=Difficulty.choices, default=Difficulty.MIXED)
    seed_with_real = models.BooleanField(default=True, help_text="Show the LLM a few real texts for style.")
    near_duplicate_threshold = models.FloatField(
        default=0.92, help_text="Cosine similarity above which a text is a near duplicate."
    )
    requested = models.PositiveIntegerField(default=0)
    generated = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    exact_duplicates = models.PositiveIntegerField(default=0)
    near_duplicates = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(
        default=0, help_text="Examples refused by the task's checks (e.g. a value that is not in its text)."
    )
    invalid_examples = models.JSONField(
        default=list, blank=True, help_text="The first refused examples: {label, example, reason} each."
    )
    failed_calls = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    answer_notes = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the task noted reading the kept examples' answers (Task.answer_note_names), summed.",
    )

    def __str__(self) -> str:
        return f"Synthetic job {self.pk} ({self.status_label})"

    def page_url(self) -> str:
        return reverse("annotation:project-detail", args=[self.project.slug])

    @property
    def percent_done(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return min(99, int(100 * self.created / self.requested)) if self.requested else 0
