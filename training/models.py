from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from annotation.models import STUDENT_AGENT_PREFIX, Example, GoldSet, Project
from distillapp.models import BackgroundJob, JobRecord


def default_hyperparameters() -> dict:
    # The defaults a lead gets in the launch form; bench/banking77_distill.py
    # measures them (MiniLM-L6 on Banking77: see bench/README.md).
    return {
        "epochs": 4,
        "learning_rate": 3e-4,
        "batch_size": 32,
        "max_length": 64,
        "seed": 13,
        "class_weighting": False,
        "warmup_ratio": 0.06,
        "validation_fraction": 0.05,
    }


class TrainingRun(BackgroundJob):
    class Kind(models.TextChoices):
        # The task type says which kinds it has a student for (tasks.base.Task.student_kinds).
        FINETUNE = "finetune", "Fine-tune"
        QUICK = "quick", "Quick (frozen embeddings + logistic regression)"
        ENSEMBLE = "ensemble", "Average of two runs"

    status_words = {BackgroundJob.Status.RUNNING: "Training"}
    noun = "run"
    cancel_note = "Cancelling after the current step."

    class LabelSource(models.TextChoices):
        REVIEWED = "reviewed", "Reviewed labels only"
        REVIEWED_PLUS_TEACHER = "reviewed+teacher", "Reviewed, plus teacher labels at confidence ≥ c"
        ALL_CURRENT = "all", "All current labels"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    number = models.PositiveIntegerField(
        help_text="Run N of this project: the student's agent is student:run-N."
    )
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.FINETUNE)
    members = models.ManyToManyField(
        "self",
        symmetrical=False,
        blank=True,
        related_name="ensembles",
        help_text="An ensemble's runs, whose probabilities it averages.",
    )
    base_model = models.CharField(max_length=500, blank=True, help_text="Empty: the bundled MiniLM-L6.")
    hyperparameters = models.JSONField(default=default_hyperparameters)
    label_source = models.CharField(
        max_length=20, choices=LabelSource.choices, default=LabelSource.ALL_CURRENT
    )
    teacher_min_confidence = models.FloatField(default=0.0)
    include_synthetic = models.BooleanField(default=False)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(default=0)
    loss = models.FloatField(null=True, blank=True)
    loss_history = models.JSONField(default=list, blank=True, help_text="[[step, loss], ...]")
    phase = models.CharField(max_length=40, blank=True, help_text="What the run is doing now.")
    device = models.CharField(max_length=20, blank=True)
    train_seconds = models.FloatField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True, help_text="Training data: totals and per label.")
    metrics = models.JSONField(default=dict, blank=True, help_text="Validation metrics.")
    artifact_path = models.CharField(max_length=1000, blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        ordering = ["project", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="trainingrun_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.project} run {self.number} ({self.status_label})"

    @property
    def job_title(self) -> str:
        return f"Run {self.number}"

    def page_url(self) -> str:
        return reverse("training:run", args=[self.project.slug, self.number])

    @property
    def train_count(self) -> int:
        """Examples trained on, or before the run counted them, the launch estimate."""
        return self.counts.get("train") or (self.counts.get("estimate") or {}).get("examples") or 0

    @property
    def agent(self) -> str:
        return f"{STUDENT_AGENT_PREFIX}run-{self.number}"

    @property
    def percent_done(self) -> int | None:
        if self.status == self.Status.SUCCEEDED:
            return 100
        # Before its first step a run does not know its steps: loading, tokenising.
        return min(99, int(100 * self.step / self.total_steps)) if self.total_steps else None

    @property
    def eta_seconds(self) -> float | None:
        if self.status != self.Status.RUNNING or not self.step or not self.started_at or not self.total_steps:
            return None
        elapsed = (timezone.now() - self.started_at).total_seconds()
        return elapsed / self.step * (self.total_steps - self.step)


class Evaluation(models.Model):
    """Metrics of the student (a run) or of the teacher on one frozen gold version."""

    class Subject(models.TextChoices):
        STUDENT = "student", "Student"
        TEACHER = "teacher", "Teacher"
        # Another system whose predictions were imported (agent import:NAME), measured as itself.
        SYSTEM = "system", "Imported system"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="evaluations")
    run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.CASCADE, related_name="evaluations"
    )
    gold_set = models.ForeignKey(GoldSet, on_delete=models.PROTECT, related_name="evaluations")
    subject = models.CharField(max_length=10, choices=Subject.choices)
    agent = models.CharField(max_length=200, help_text="student:run-N, or the teacher agent evaluated.")
    target_accuracy = models.FloatField(default=0.95)
    metrics = models.JSONField(default=dict)
    predictions = models.JSONField(default=list, help_text="[{example, gold, predicted, confidence}]")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.agent} on gold v{self.gold_set.version}"

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")


class EvaluationJob(BackgroundJob):
    """A lead's "Evaluate" in the background: the run on one frozen gold version, then the
    teacher and the imported systems on the same version (their Evaluations are saved
    together at the end, so a killed and re-run job never leaves half a set)."""

    status_words = {BackgroundJob.Status.RUNNING: "Evaluating"}
    noun = "evaluation"
    cancel_note = "Cancelling the evaluation: nothing it measured is kept."

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="evaluation_jobs")
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="evaluation_jobs")
    gold_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the latest frozen one when the job runs."
    )
    target_accuracy = models.FloatField(default=0.95)
    phase = models.CharField(max_length=40, blank=True, help_text="What the job is doing now.")
    result = models.ForeignKey(
        "Evaluation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The run's (student) evaluation it made.",
    )

    def __str__(self) -> str:
        return f"Evaluation of run {self.run.number} ({self.status_label})"

    @property
    def job_title(self) -> str:
        return f"The evaluation of run {self.run.number}"

    def page_url(self) -> str:
        return reverse("training:run", args=[self.project.slug, self.run.number])


class ExportJob(BackgroundJob):
    """A lead's "Quantize (int8)" in the background: the run's ONNX int8 export, measured
    against fp32 on frozen gold (serving.onnx_prepare; promotion reads quantization.json)."""

    status_words = {BackgroundJob.Status.RUNNING: "Quantizing"}
    noun = "int8 export"
    cancel_note = "Cancelling the int8 export after its current stage."

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="export_jobs")
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="export_jobs")
    gold_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the gold version of the run's latest evaluation."
    )
    phase = models.CharField(max_length=40, blank=True, help_text="What the job is doing now.")
    result = models.JSONField(default=dict, blank=True, help_text="The measurement (quantization.json).")

    def __str__(self) -> str:
        return f"int8 export of run {self.run.number} ({self.status_label})"

    @property
    def job_title(self) -> str:
        return f"The int8 export of run {self.run.number}"

    def page_url(self) -> str:
        return reverse("training:deploy", args=[self.project.slug])


class RoundRefresh(JobRecord):
    """A finished review round's refresh of the queue's keys: a quick run and a quality run
    (training.services.round_refresh). Written in the transaction of the verdict that ended
    the round, one per round, so a refresh whose worker dies is recovered like every job
    and one that fails says why and can be resumed."""

    status_words = {JobRecord.Status.RUNNING: "Starting the refresh"}
    noun = "refresh"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="round_refreshes")
    verdicts = models.PositiveIntegerField(help_text="The distinct verdicts that ended the round.")
    run = models.ForeignKey(
        TrainingRun,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The quick run it started.",
    )
    outcome = models.CharField(max_length=300, blank=True, help_text="What the refresh did, in words.")

    class Meta(JobRecord.Meta):
        constraints = [
            models.UniqueConstraint(fields=["project", "verdicts"], name="round_refresh_once_per_round"),
        ]

    def __str__(self) -> str:
        return f"Refresh after {self.verdicts} verdicts ({self.status_label})"

    @property
    def job_title(self) -> str:
        return f"The refresh after {self.verdicts} verdicts"

    def page_url(self) -> str:
        return reverse("training:runs", args=[self.project.slug])


__all__ = [
    "Evaluation",
    "EvaluationJob",
    "Example",
    "ExportJob",
    "RoundRefresh",
    "TrainingRun",
    "default_hyperparameters",
]


# --- deployment -------------------------------------------------------------------------------------


class ModelVersion(models.Model):
    """A trained run put in front of traffic behind a confidence threshold."""

    class Runtime(models.TextChoices):
        TORCH = "torch", "PyTorch (fp32)"
        ONNX_INT8 = "onnx-int8", "ONNX Runtime (int8)"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    run = models.ForeignKey(TrainingRun, on_delete=models.PROTECT, related_name="versions")
    threshold = models.FloatField(help_text="Answers at or above this confidence come from the student.")
    is_active = models.BooleanField(default=False)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    promoted_at = models.DateTimeField(default=timezone.now)
    note = models.CharField(max_length=300, blank=True)
    runtime = models.CharField(max_length=10, choices=Runtime.choices, default=Runtime.TORCH)
    onnx_path = models.CharField(max_length=1000, blank=True, help_text="The int8 export's directory.")
    onnx_gold_accuracy = models.FloatField(
        null=True, blank=True, help_text="The int8 model's gold accuracy, measured before promotion."
    )
    fp32_gold_accuracy = models.FloatField(
        null=True, blank=True, help_text="The run's own (fp32) accuracy on the same gold set."
    )

    class Meta:
        ordering = ["-promoted_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["project"], condition=models.Q(is_active=True), name="one_active_model_per_project"
            )
        ]

    def __str__(self) -> str:
        return f"{self.project} v{self.pk} (run {self.run.number}, threshold {self.threshold_text})"

    @property
    def name(self) -> str:
        suffix = "+int8" if self.runtime == self.Runtime.ONNX_INT8 else ""
        return f"run-{self.run.number}@{self.threshold_text}{suffix}"

    @property
    def threshold_text(self) -> str:
        """Two decimals, three where the sweep is finer (0.005 steps above 0.95): 0.995 is not 1.00."""
        t = self.threshold
        return f"{t:.3f}" if t > 0.95 and round(t, 2) != round(t, 3) else f"{t:.2f}"


class DeploymentEvent(models.Model):
    class Action(models.TextChoices):
        PROMOTE = "promote", "Promoted"
        ROLLBACK = "rollback", "Rolled back"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="deployment_events")
    action = models.CharField(max_length=10, choices=Action.choices)
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="events")
    previous = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.version} by {self.user}"


class ApiToken(models.Model):
    """A per-project bearer token; only its hash is stored, the token is shown once."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise a token.")
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# Texts in one API request, at most, whatever a project's settings say: one request runs the
# student on all of them in the request (and the teacher on the unsure ones).
MAX_BATCH_LIMIT = 256


class ServingConfig(models.Model):
    class Fallback(models.TextChoices):
        TEACHER = "teacher", "Ask the teacher LLM (synchronously)"
        REVIEW = "review", "Answer null and send the text to review"

    class DropInUnsure(models.TextChoices):
        # 422, which an OpenAI client does not retry: its own fallback (another model, a
        # LiteLLM/LangChain fallback chain, a person) catches it. README "Serving the student".
        ERROR = "error", "An error (HTTP 422, code student_unsure) the client's fallback can catch"
        ABSTAIN = "abstain", "A normal answer whose content is the abstain text below"
        GUESS = "guess", "The student's low-confidence guess (marked only by X-Distill-Unsure)"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="serving_config")
    fallback = models.CharField(max_length=10, choices=Fallback.choices, default=Fallback.REVIEW)
    max_batch = models.PositiveIntegerField(
        default=64, validators=[MinValueValidator(1), MaxValueValidator(MAX_BATCH_LIMIT)]
    )
    max_text_chars = models.PositiveIntegerField(default=5000)
    traffic_sample_rate = models.FloatField(
        default=0.1,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of low-confidence texts kept for review.",
    )
    requests_per_minute = models.PositiveIntegerField(
        default=1200,
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text="Per API token, on both APIs; past it a token gets 429 until the minute ends.",
    )
    monthly_fallback_budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        default=Decimal("100"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="The teacher fallback's spend per calendar month (UTC); past it unsure texts go "
        "to review. Empty: no cap.",
    )
    drop_in_unsure = models.CharField(max_length=10, choices=DropInUnsure.choices, default=DropInUnsure.ERROR)
    drop_in_abstain_content = models.CharField(
        max_length=1000,
        blank=True,
        help_text="The drop-in's whole answer content when unsure, as written (for an extraction "
        'project a client parsing JSON may want "{}").',
    )
    target_accuracy = models.FloatField(
        default=0.95, help_text="Promotion picks the threshold that reaches it on gold."
    )
    drop_in_message = models.CharField(
        max_length=20,
        default="last_user",
        choices=[("last_user", "The last user message"), ("first_user", "The first user message")],
        help_text="Where the text to classify sits in a chat completion request.",
    )
    # Inputs of the break-even that cannot be measured here.
    hosting_usd_per_month = models.DecimalField(max_digits=12, decimal_places=2, default=50)
    review_usd_per_hour = models.DecimalField(
        max_digits=10, decimal_places=2, default=30, help_text="What an hour of an expert's review costs."
    )
    compute_usd_per_hour = models.DecimalField(max_digits=10, decimal_places=4, default=1)
    monthly_volume = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: measured from traffic."
    )
    api_price_per_call = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Empty: measured teacher cost per call.",
    )

    def __str__(self) -> str:
        return f"Serving of {self.project}"


class PredictionLog(models.Model):
    class Route(models.TextChoices):
        STUDENT = "student", "Student"
        TEACHER = "teacher", "Teacher"
        # Another system whose predictions were imported (agent import:NAME), measured as itself.
        SYSTEM = "system", "Imported system"
        REVIEW = "review", "Review"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="predictions", db_index=False)
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    route = models.CharField(max_length=10, choices=Route.choices)
    # Short forms of the answer served and of the student's own (`Task.summary`: a label, an
    # extraction's "date ×1 · time ×2"), for Monitor's counts; never the answer itself.
    answer_summary = models.CharField(max_length=100, blank=True)
    student_answer_summary = models.CharField(max_length=100, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    latency_ms = models.FloatField()
    teacher_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    endpoint = models.CharField(max_length=20, default="predict")
    # The request loaded the model first (the process's first on this version, or one that
    # waited for the warm-up): its latency is the load's, left out of Monitor's figures.
    is_cold_start = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["project", "created_at"], name="prediction_time_idx")]

    def __str__(self) -> str:
        return f"{self.route}: {self.answer_summary or '-'} ({self.confidence})"


class PreferenceVote(models.Model):
    """One blind A/B judgement on a gold text: which of two systems' answers is better.

    The student of an evaluation against the teacher on the same gold version. The reviewer
    sees the two in an order drawn per reviewer and text (``student_first``), never which is
    which; the vote is stored decoded (student, teacher or same).
    """

    class Choice(models.TextChoices):
        STUDENT = "student", "The student's"
        TEACHER = "teacher", "The teacher's"
        SAME = "same", "Equally good"

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="preference_votes")
    example = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="+")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    student_first = models.BooleanField(help_text="Was the student's answer shown as A?")
    choice = models.CharField(max_length=10, choices=Choice.choices)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["evaluation", "example", "reviewer"], name="preference_vote_once_per_reviewer"
            )
        ]

    def __str__(self) -> str:
        return f"{self.reviewer} prefers {self.choice} on #{self.example_id}"
