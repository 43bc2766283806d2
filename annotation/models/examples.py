"""The examples, their import batches, and the answers proposed and reviewed for them.

ExampleQuerySet holds the review queue's rules: the current label and the queue's sort keys.
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import models, transaction
from django.db.models import Case, F, Max, OuterRef, Q, Subquery, Value, When
from django.urls import reverse
from django.utils import timezone

from annotation.models.projects import Project
from distillapp.models import JobRecord
from distillapp.redis_cache import quietly
from tasks import Task


def normalise_text(text: str) -> str:
    """The form two texts share when they are the same example.

    Unicode compatibility forms, case and runs of whitespace do not make a
    new example; everything else (punctuation, digits) does.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


class ImportBatch(JobRecord):
    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        TSV = "tsv", "TSV"
        JSONL = "jsonl", "JSON Lines"
        TXT = "txt", "Plain text (one example per line)"
        CONLL = "conll", "CoNLL BIO (extraction)"
        XLSX = "xlsx", "Excel workbook (first sheet)"

    status_words = {JobRecord.Status.RUNNING: "Importing", JobRecord.Status.SUCCEEDED: "Imported"}
    noun = "import"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_batches")
    file_name = models.CharField(max_length=255)
    file_path = models.CharField(max_length=1000, blank=True, help_text="Where the job reads the file from.")
    format = models.CharField(max_length=10, choices=Format.choices)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    options = models.JSONField(
        default=dict, blank=True, help_text="Column names and flags the import was asked for."
    )
    rows_read = models.PositiveIntegerField(default=0)
    rows_created = models.PositiveIntegerField(default=0)
    rows_duplicate = models.PositiveIntegerField(default=0)
    rows_invalid = models.PositiveIntegerField(default=0)
    labels_created = models.PositiveIntegerField(default=0)
    proposals_created = models.PositiveIntegerField(default=0)
    bytes_done = models.BigIntegerField(default=0)
    error_report = models.JSONField(
        default=list, blank=True, help_text="The first invalid rows: [{line, reason}]."
    )

    class Meta(JobRecord.Meta):
        verbose_name_plural = "import batches"

    def __str__(self) -> str:
        return f"{self.file_name} ({self.status_label})"

    @property
    def job_title(self) -> str:
        return self.file_name

    def page_url(self) -> str:
        return reverse("annotation:project-detail", args=[self.project.slug])

    @property
    def percent_done(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        if not self.size_bytes:
            return 0
        return min(99, int(100 * self.bytes_done / self.size_bytes))

    @property
    def is_saving(self) -> bool:
        """The whole file is read; its rows are being written."""
        return self.status == self.Status.RUNNING and 0 < self.size_bytes <= self.bytes_done

    @property
    def can_resume(self) -> bool:
        # A failed import's file is gone (and its rows were rejected); only an
        # interrupted or never-started one can be queued again.
        return self.status == self.Status.PENDING or self.is_stale


class ExampleQuerySet(models.QuerySet):
    def for_project(self, project: Project) -> ExampleQuerySet:
        return self.filter(project=project)

    def not_gold(self) -> ExampleQuerySet:
        # The one place that keeps gold examples out of anything that learns
        # from data; done in SQL so no caller can forget it on a big queryset.
        return self.filter(is_gold=False).exclude(gold_items__isnull=False)

    def with_current_label(self) -> ExampleQuerySet:
        """Annotate each example with its current label, in one place.

        The latest adjudication beats the latest review, which beats any
        proposal; a reject means "no usable label" (current_label NULL,
        label_state "rejected"). Proposals count only when they carry a value
        and no error, and students never label their own training data.
        Blind gold labels count only once adjudicated.
        """
        reviews = Review.objects.filter(
            example=OuterRef("pk"), kind__in=[Review.Kind.REVIEW, Review.Kind.ADJUDICATION]
        ).order_by(
            Case(When(kind=Review.Kind.ADJUDICATION, then=Value(0)), default=Value(1)),
            "-created_at",
            "-pk",
        )
        proposals = (
            Proposal.objects.filter(example=OuterRef("pk"), value__isnull=False, error="")
            .exclude(agent__startswith=STUDENT_AGENT_PREFIX)
            .order_by("-created_at", "-pk")
        )
        json = models.JSONField()
        return self.annotate(
            current_verdict=Subquery(reviews.values("verdict")[:1]),
            reviewed_value=Subquery(reviews.values("value")[:1], output_field=json),
            proposed_value=Subquery(proposals.values("value")[:1], output_field=json),
        ).annotate(
            current_label=Case(
                When(current_verdict=Review.Verdict.REJECT, then=Value(None, output_field=json)),
                When(current_verdict__isnull=False, then=F("reviewed_value")),
                default=F("proposed_value"),
                output_field=json,
            ),
            label_state=Case(
                When(current_verdict=Review.Verdict.REJECT, then=Value("rejected")),
                When(current_verdict__isnull=False, then=Value("reviewed")),
                When(proposed_value__isnull=False, then=Value("proposed")),
                default=Value("unlabelled"),
                output_field=models.CharField(),
            ),
        )

    def sync_queue_fields(self) -> int:
        """Recompute the review queue's sort keys from proposals and reviews.

        The same rules as with_current_label(): the latest valid non-student
        proposal is the teacher's, a review or adjudication sets the state.
        The label columns hold each project's task summary of the answer and
        the flag says whether the task finds the two answers different.
        """
        json = models.JSONField()
        students = Proposal.objects.filter(
            example=OuterRef("pk"), value__isnull=False, error="", agent__startswith=STUDENT_AGENT_PREFIX
        ).order_by("-created_at", "-pk")
        teachers = (
            Proposal.objects.filter(example=OuterRef("pk"), value__isnull=False, error="")
            .exclude(agent__startswith=STUDENT_AGENT_PREFIX)
            .order_by("-created_at", "-pk")
        )
        rows = self.with_current_label().annotate(
            teacher_conf=Subquery(teachers.values("confidence")[:1]),
            student_value=Subquery(students.values("value")[:1], output_field=json),
            student_conf=Subquery(students.values("confidence")[:1]),
        )
        tasks = _TasksByProject()
        changed = []
        moves: dict[tuple[str, str], list[int]] = {}  # (state read, state now) -> example ids
        moved_projects: dict[int, bool] = {}  # project -> a queue card (not gold) changed state
        for example in rows.iterator(chunk_size=2000):
            task = tasks[example.project_id]
            state = {
                "rejected": ReviewState.REJECTED,
                "reviewed": ReviewState.REVIEWED,
            }.get(example.label_state, ReviewState.UNREVIEWED)
            if state != example.review_state:
                moves.setdefault((example.review_state, state), []).append(example.pk)
                moved_projects[example.project_id] = (
                    moved_projects.get(example.project_id) or not example.is_gold
                )
            teacher, student = example.proposed_value, example.student_value
            example.teacher_label = _summary(task, teacher, example.text)
            example.teacher_confidence = example.teacher_conf if teacher is not None else None
            example.student_label = _summary(task, student, example.text)
            example.student_confidence = example.student_conf if student is not None else None
            example.is_disagreement = (
                teacher is not None and student is not None and _differ(task, teacher, student)
            )
            example.risk = _risk(task, teacher, student, example.text)
            changed.append(example)
        fields = [
            "teacher_label",
            "teacher_confidence",
            "student_label",
            "student_confidence",
            "is_disagreement",
            "risk",
        ]
        Example.objects.bulk_update(changed, fields, batch_size=1000)
        # The state only where it still is what was read: a verdict recorded meanwhile (a
        # reviewer's conditional update) is newer than this read and stays.
        forget_decided(project_id for project_id, moved in moved_projects.items() if moved)
        for (was, now), pks in moves.items():
            for start in range(0, len(pks), 1000):
                Example.objects.filter(pk__in=pks[start : start + 1000], review_state=was).update(
                    review_state=now
                )
        return len(changed)

    def note_teacher_answers(
        self, answers: dict[int, tuple[Any, float | None]], *, project: Project | None = None
    ) -> int:
        """The incremental form of sync_queue_fields() for new teacher proposals.

        A new valid teacher proposal is by definition the latest one, so it
        sets teacher_label/confidence and the disagreement flag; the review
        state does not change. One read of the batch (project, text, the
        student's latest answer), the keys worked out in Python by each
        project's task, then one parameterised UPDATE run for the whole
        batch: the ORM's bulk_update builds a CASE expression per row and
        field, which cost labelling jobs ~2 ms of CPU an answer
        (bench/README.md, "Teacher"). ``project``: the examples' project, when the
        caller holds it with its task (a job's batches read it once, not per batch).
        """
        if not answers:
            return 0
        from django.db import connections

        students = Proposal.objects.filter(
            example=OuterRef("pk"), value__isnull=False, error="", agent__startswith=STUDENT_AGENT_PREFIX
        ).order_by("-created_at", "-pk")
        batch = (
            Example.objects.using(self.db)
            .filter(pk__in=list(answers))
            .annotate(student_value=Subquery(students.values("value")[:1], output_field=models.JSONField()))
        )
        tasks = _TasksByProject()
        if project is not None:
            tasks[project.pk] = project.task
        params = []
        for pk, project_id, text, student_label, student in batch.values_list(
            "pk", "project_id", "text", "student_label", "student_value"
        ):
            task = tasks[project_id]
            value, confidence = answers[pk]
            label = _summary(task, value, text)
            if student is not None:
                differs = _differ(task, value, student)
            else:
                # No student proposal to ask the task about: the columns say what they can.
                differs = bool(student_label) and student_label != label
            risk = _risk(task, value, student, text)
            if student is None and differs:
                risk = max(risk, 1.0)
            params.append((label, confidence, differs, risk, pk))
        meta = Example._meta
        column = {
            name: connections[self.db].ops.quote_name(meta.get_field(name).column)
            for name in ("teacher_label", "teacher_confidence", "is_disagreement", "risk", "id")
        }
        sql = (
            f"UPDATE {connections[self.db].ops.quote_name(meta.db_table)} SET "
            f"{column['teacher_label']} = %s, {column['teacher_confidence']} = %s, "
            f"{column['is_disagreement']} = %s, {column['risk']} = %s WHERE {column['id']} = %s"
        )
        with connections[self.db].cursor() as cursor:
            cursor.executemany(sql, params)
        return len(params)

    def reviewed(self) -> ExampleQuerySet:
        return self.filter(reviews__kind__in=[Review.Kind.REVIEW, Review.Kind.ADJUDICATION]).distinct()


def random_rank() -> float:
    return random.random()


class _TasksByProject(dict):
    """Each project's Task, loaded once per call (the queue keys of many examples)."""

    def __missing__(self, project_id: int) -> Task:
        task = self[project_id] = Project.objects.get(pk=project_id).task
        return task


def _summary(task: Task, value: Any, text: str) -> str:
    """The queue column's short form of an answer ("" for none)."""
    if value is None:
        return ""
    try:
        return task.summary(value, text=text)[:100]
    except (TypeError, KeyError, AttributeError, IndexError):
        return str(value)[:100]  # an answer of another shape (the task type changed since)


def _risk(task: Task, teacher: Any, student: Any, text: str) -> float:
    """The task's review risk of the teacher's answer (0: none, or no teacher answer)."""
    if teacher is None:
        return 0.0
    try:
        return float(task.review_risk(teacher, student, text=text))
    except (TypeError, KeyError, AttributeError, IndexError):
        return 1.0 if student is not None and teacher != student else 0.0


def _differ(task: Task, a: Any, b: Any) -> bool:
    try:
        return task.disagree(a, b)
    except (TypeError, KeyError, AttributeError):
        return a != b


def decided_key(project_id: int) -> str:  # the project's decided review cards (rounds.decided_count)
    return f"review:decided:{project_id}"


class ForgetDecided:
    """Forgets the projects' decided-card counts as the transaction commits; until then
    rounds.decided_count, seeing it pending, counts them from the database."""

    def __init__(self, project_ids: set[int]) -> None:
        self.project_ids = project_ids
        self.done = False

    def __call__(self) -> None:
        self.done = True
        quietly(cache.delete_many, [decided_key(pk) for pk in self.project_ids])  # else it expires


def forget_decided(project_ids) -> None:
    """After a change no verdict counted (states recomputed, examples made gold, verified labels
    imported): count the projects' decided cards again once this transaction commits."""
    ids = set(project_ids)
    if ids:
        transaction.on_commit(ForgetDecided(ids))


class ReviewState(models.TextChoices):
    UNREVIEWED = "unreviewed", "Not reviewed"
    REVIEWED = "reviewed", "Reviewed"
    REJECTED = "rejected", "Rejected"


class Example(models.Model):
    class Source(models.TextChoices):
        IMPORTED = "imported", "Imported"
        SYNTHETIC = "synthetic", "Synthetic"
        TRAFFIC = "traffic", "Traffic"

    # Indexed by the composite indexes in Meta, which all start with project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="examples", db_index=False)
    text = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    hidden_metadata = models.JSONField(
        default=dict,
        blank=True,
        help_text="Columns kept out of reviewers' sight (an imported truth column): "
        "never shown in review or gold labelling, never in exports.",
    )
    external_id = models.CharField(max_length=255, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.IMPORTED)
    import_batch = models.ForeignKey(
        ImportBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="examples"
    )
    content_hash = models.CharField(max_length=64, editable=False)
    is_gold = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    # The review queue's sort keys, kept in step with proposals and reviews by
    # ExampleQuerySet.sync_queue_fields() so that picking the next card is one
    # indexed lookup instead of a scan of every example's proposals.
    review_state = models.CharField(
        max_length=10, choices=ReviewState.choices, default=ReviewState.UNREVIEWED, editable=False
    )
    teacher_label = models.CharField(max_length=100, blank=True, editable=False)
    teacher_confidence = models.FloatField(null=True, blank=True, editable=False)
    student_label = models.CharField(max_length=100, blank=True, editable=False)
    student_confidence = models.FloatField(null=True, blank=True, editable=False)
    is_disagreement = models.BooleanField(default=False, editable=False)
    # Never null: the disagreement order reads it as the first key of a descending index range
    # (PostgreSQL sorts nulls first there); no teacher answer is no risk.
    risk = models.FloatField(
        default=0.0,
        db_default=0.0,
        editable=False,
        help_text="How strongly the teacher's answer looks wrong (the task's review_risk: the student "
        "against it, an ambiguous placement); the disagreement order serves the highest first.",
    )
    quality_score = models.FloatField(
        null=True, blank=True, editable=False, help_text="Label quality (cleanlab); low = likely wrong."
    )
    label_issue = models.BooleanField(
        null=True,
        blank=True,
        editable=False,
        help_text="The last quality run's verdict: cleanlab counts this label among the likely errors "
        "(null: not decided; training then flags a quality score below 0.5).",
    )
    label_flags = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text="The parts of the label the last quality run flags, in the task's own shape (extraction: "
        'the [start, end] of each flagged word); noise handling "mask" leaves them out of the loss.',
    )
    queue_rank = models.FloatField(default=random_rank, editable=False, help_text="A fixed random order.")

    objects = ExampleQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["project", "content_hash"], name="example_unique_content")
        ]
        indexes = [
            # Review queue and training set: a project's non-gold examples by source.
            models.Index(fields=["project", "is_gold", "source"], name="example_queue_idx"),
            models.Index(fields=["project", "external_id"], name="example_external_id_idx"),
            # One per queue order, so the next card is the first row of an index range.
            models.Index(
                fields=["project", "is_gold", "review_state", "teacher_confidence"],
                name="queue_confidence_idx",
            ),
            models.Index(
                fields=["project", "is_gold", "review_state", "-risk", "teacher_confidence"],
                name="queue_risk_idx",
            ),
            models.Index(
                fields=["project", "is_gold", "review_state", "quality_score"], name="queue_quality_idx"
            ),
            models.Index(
                fields=["project", "is_gold", "review_state", "queue_rank"], name="queue_random_idx"
            ),
        ]

    def __str__(self) -> str:
        return self.text[:80]

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.content_hash = content_hash(self.text)
        super().save(*args, **kwargs)


STUDENT_AGENT_PREFIX = "student:"
IMPORT_AGENT = "import"


class Proposal(models.Model):
    # Indexed by proposal_example_idx.
    example = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="proposals", db_index=False)
    agent = models.CharField(
        max_length=200, help_text="Who proposed it: teacher:MODEL:prompt-vN, student:run-N, import."
    )
    value = models.JSONField(
        null=True, blank=True, help_text="The proposed answer (a label name for classification)."
    )
    confidence = models.FloatField(null=True, blank=True)
    raw_response = models.TextField(blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    confidence_method = models.CharField(
        max_length=20,
        blank=True,
        help_text="How the confidence was measured: logprobs, self_consistency, softmax.",
    )
    prompt_version = models.ForeignKey(
        "PromptVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="proposals"
    )
    labeling_job = models.ForeignKey(
        "LabelingJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="proposals"
    )
    cache_key = models.CharField(
        max_length=64,
        blank=True,
        help_text="Hash of the exact request; an identical request reuses this answer.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["example", "-created_at"], name="proposal_example_idx"),
            models.Index(fields=["agent"], name="proposal_agent_idx"),
            models.Index(fields=["cache_key"], name="proposal_cache_idx", condition=~Q(cache_key="")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | Q(confidence__gte=0, confidence__lte=1),
                name="proposal_confidence_0_1",
            )
        ]

    def __str__(self) -> str:
        return f"{self.agent}: {self.value!r}"

    @property
    def is_valid(self) -> bool:
        return self.value is not None and not self.error


class ReviewQuerySet(models.QuerySet):
    def verdicts(self) -> ReviewQuerySet:
        """Verdicts reviewers gave in the app: not the verified labels an import wrote."""
        return self.filter(is_import=False)

    def latest_per_example(self, *, per_reviewer: bool = False) -> ReviewQuerySet:
        """Of these rows, each example's latest per kind (and per reviewer with `per_reviewer`).

        Figures count examples decided, not rows: rows a replay wrote before a verdict needed a
        served card (issue #23) would count one card many times. The latest row is the
        example's current verdict; `per_reviewer` keeps each reviewer's own (two blind gold
        labels of one text are two people's work)."""
        keys = ["example_id", "kind", *(["reviewer_id"] if per_reviewer else [])]
        latest = self.order_by().values(*keys).annotate(latest=Max("pk")).values("latest")
        return self.filter(pk__in=latest)


class Review(models.Model):
    class Verdict(models.TextChoices):
        ACCEPT = "accept", "Accept"
        CORRECT = "correct", "Correct"
        REJECT = "reject", "Reject"

    class Kind(models.TextChoices):
        REVIEW = "review", "Review"
        BLIND = "blind", "Blind gold label"
        ADJUDICATION = "adjudication", "Adjudication"

    # Both indexed by the composite indexes in Meta.
    example = models.ForeignKey(Example, on_delete=models.CASCADE, related_name="reviews", db_index=False)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews", db_index=False
    )
    proposal = models.ForeignKey(
        Proposal, null=True, blank=True, on_delete=models.SET_NULL, related_name="reviews"
    )
    kind = models.CharField(max_length=15, choices=Kind.choices, default=Kind.REVIEW)
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    value = models.JSONField(null=True, blank=True, help_text="The final answer; empty on reject.")
    seconds_spent = models.FloatField(null=True, blank=True)
    is_bulk = models.BooleanField(default=False)
    # Database defaults too: the importer writes reviews with raw SQL (corpus/staging.py).
    is_audit = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Served from the random audit share: an unbiased sample of the teacher's answers.",
    )
    queue_order = models.CharField(
        max_length=20,
        blank=True,
        db_default="",
        help_text="The queue order the card was served in (empty: not from the queue).",
    )
    # A verified label from a file (an attested gold import included) is a review in the lead's
    # name, so training trusts it; but it is nobody's verdict today: counts of reviews leave it out.
    is_import = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Written by an import of verified labels, not a reviewer's verdict.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = ReviewQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["example", "-created_at"], name="review_example_idx"),
            models.Index(fields=["reviewer", "-created_at"], name="review_reviewer_idx"),
        ]
        constraints = [
            # A double-submitted blind gold label must not count as both of an item's two
            # labels (its kappa would be one reviewer agreeing with themselves).
            models.UniqueConstraint(
                fields=["example", "reviewer"],
                condition=models.Q(kind="blind"),
                name="review_one_blind_label_per_reviewer",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.reviewer}: {self.value!r}"
