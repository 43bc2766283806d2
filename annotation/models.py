from __future__ import annotations

import hashlib
import random
import unicodedata
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Case, F, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from distillapp.models import BackgroundJob, JobRecord
from tasks import Category, Task, task_for


def normalise_text(text: str) -> str:
    """The form two texts share when they are the same example.

    Unicode compatibility forms, case and runs of whitespace do not make a
    new example; everything else (punctuation, digits) does.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_hash(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


class ProjectQuerySet(models.QuerySet):
    def for_user(self, user) -> ProjectQuerySet:
        if user.is_superuser:
            return self.all()
        return self.filter(memberships__user=user).distinct()


def user_may_create_projects(user) -> bool:
    """Creating a project makes its creator a lead, who configures a teacher that calls
    out with the server's API key; so by default only staff or holders of
    annotation.add_project may (DISTILL_PROJECT_CREATORS=anyone opens it up)."""
    from django.conf import settings

    if not user.is_authenticated or not user.is_active:
        return False
    return settings.PROJECT_CREATORS == "anyone" or user.is_staff or user.has_perm("annotation.add_project")


class Project(models.Model):
    class TaskType(models.TextChoices):
        CLASSIFICATION = "classification", "Classification"
        EXTRACTION = "extraction", "Extraction"
        SUMMARIZATION = "summarization", "Summarization"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    task_type = models.CharField(max_length=20, choices=TaskType.choices, default=TaskType.CLASSIFICATION)
    guidelines = models.TextField(blank=True, help_text="Annotation guidelines, in Markdown.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def task(self) -> Task:
        """The project's task type, bound to its labels (or fields): ask it, never the answer.

        Cached on the instance; ``forget_task()`` after changing labels.
        """
        cached = self.__dict__.get("_task")
        if cached is None:
            cached = self.__dict__["_task"] = task_for(self.task_type, self.categories())
        return cached

    def forget_task(self) -> None:
        self.__dict__.pop("_task", None)

    def categories(self) -> list[Category]:
        return [label.as_category() for label in self.labels.all()]

    def role_of(self, user) -> str | None:
        """The user's role in this project, or None for an outsider."""
        if not user.is_authenticated:
            return None
        membership = self.memberships.filter(user=user).only("role").first()
        if membership:
            return membership.role
        # Superusers administer every project as leads.
        return Membership.Role.LEAD if user.is_superuser else None


class Membership(models.Model):
    class Role(models.TextChoices):
        LEAD = "lead", "Lead"
        REVIEWER = "reviewer", "Reviewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.REVIEWER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="membership_unique_user_project")
        ]
        ordering = ["project", "user"]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.project}"


class Label(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    key = models.CharField(
        max_length=1, blank=True, help_text="Keyboard key that picks this label in review."
    )
    order = models.PositiveIntegerField(default=0)
    # Extraction fields: the highlight colour in review, and whether a text may hold
    # several values of the field (a classification label ignores both).
    color = models.CharField(
        max_length=20, blank=True, help_text="Extraction: highlight colour, e.g. #f4a261."
    )
    allows_many = models.BooleanField(
        default=True, help_text="Extraction: a text may hold several values of this field."
    )

    class Meta:
        ordering = ["order", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="label_unique_name"),
            models.UniqueConstraint(fields=["project", "key"], condition=~Q(key=""), name="label_unique_key"),
        ]

    def __str__(self) -> str:
        return self.name

    def as_category(self) -> Category:
        return Category(
            name=self.name,
            description=self.description,
            key=self.key,
            color=self.color,
            allows_many=self.allows_many,
        )


# Keys the review screen keeps for its own actions (accept, reject, skip,
# undo, help), so labels never take them.
RESERVED_KEYS = frozenset("asux?")
LABEL_KEY_SEQUENCE = "123456789" + "".join(c for c in "bcdefghijklmnopqrtvwyz" if c not in RESERVED_KEYS)


def next_free_key(used: set[str]) -> str:
    for key in LABEL_KEY_SEQUENCE:
        if key not in used:
            return key
    return ""


class ImportBatch(JobRecord):
    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        TSV = "tsv", "TSV"
        JSONL = "jsonl", "JSON Lines"
        TXT = "txt", "Plain text (one example per line)"
        CONLL = "conll", "CoNLL BIO (extraction)"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        RUNNING = "running", "Importing"
        SUCCEEDED = "succeeded", "Imported"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_batches")
    file_name = models.CharField(max_length=255)
    file_path = models.CharField(max_length=1000, blank=True, help_text="Where the job reads the file from.")
    format = models.CharField(max_length=10, choices=Format.choices)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    options = models.JSONField(
        default=dict, blank=True, help_text="Column names and flags the import was asked for."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
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
        return f"{self.file_name} ({self.get_status_display()})"

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.SUCCEEDED, self.Status.FAILED}

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
        for example in rows.iterator(chunk_size=2000):
            task = tasks[example.project_id]
            state = {
                "rejected": ReviewState.REJECTED,
                "reviewed": ReviewState.REVIEWED,
            }.get(example.label_state, ReviewState.UNREVIEWED)
            teacher, student = example.proposed_value, example.student_value
            example.review_state = state
            example.teacher_label = _summary(task, teacher, example.text)
            example.teacher_confidence = example.teacher_conf if teacher is not None else None
            example.student_label = _summary(task, student, example.text)
            example.student_confidence = example.student_conf if student is not None else None
            example.is_disagreement = (
                teacher is not None and student is not None and _differ(task, teacher, student)
            )
            changed.append(example)
        fields = [
            "review_state",
            "teacher_label",
            "teacher_confidence",
            "student_label",
            "student_confidence",
            "is_disagreement",
        ]
        Example.objects.bulk_update(changed, fields, batch_size=1000)
        return len(changed)

    def note_teacher_answers(self, answers: dict[int, tuple[Any, float | None]]) -> int:
        """The incremental form of sync_queue_fields() for new teacher proposals.

        A new valid teacher proposal is by definition the latest one, so it
        sets teacher_label/confidence and the disagreement flag; the review
        state does not change. One read of the batch (project, text, the
        student's latest answer), the keys worked out in Python by each
        project's task, then one parameterised UPDATE run for the whole
        batch: the ORM's bulk_update builds a CASE expression per row and
        field, which cost labelling jobs ~2 ms of CPU an answer
        (bench/README.md, "Teacher").
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
            params.append((label, confidence, differs, pk))
        meta = Example._meta
        column = {
            name: connections[self.db].ops.quote_name(meta.get_field(name).column)
            for name in ("teacher_label", "teacher_confidence", "is_disagreement", "id")
        }
        sql = (
            f"UPDATE {connections[self.db].ops.quote_name(meta.db_table)} SET "
            f"{column['teacher_label']} = %s, {column['teacher_confidence']} = %s, "
            f"{column['is_disagreement']} = %s WHERE {column['id']} = %s"
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


def _differ(task: Task, a: Any, b: Any) -> bool:
    try:
        return not task.same(a, b)
    except (TypeError, KeyError, AttributeError):
        return a != b


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
    quality_score = models.FloatField(
        null=True, blank=True, editable=False, help_text="Label quality (cleanlab); low = likely wrong."
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
                fields=["project", "is_gold", "review_state", "-is_disagreement", "teacher_confidence"],
                name="queue_disagreement_idx",
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
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["example", "-created_at"], name="review_example_idx"),
            models.Index(fields=["reviewer", "-created_at"], name="review_reviewer_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.reviewer}: {self.value!r}"


class FrozenGoldSetError(Exception):
    """A frozen gold set version never changes."""


class SyntheticGoldError(ValueError):
    """Synthetic examples never enter a gold set."""


class GoldSetQuerySet(models.QuerySet):
    def frozen(self) -> GoldSetQuerySet:
        return self.filter(frozen_at__isnull=False)

    def frozen_version(self, version: int | None = None) -> GoldSet | None:
        """The frozen version numbered `version`, or the latest frozen one: the one selector."""
        frozen = self.frozen()
        return frozen.filter(version=version).first() if version else frozen.order_by("-version").first()


class GoldSet(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_sets")
    version = models.PositiveIntegerField()
    note = models.TextField(blank=True)
    examples = models.ManyToManyField(Example, through="GoldSetItem", related_name="gold_sets")

    objects = GoldSetQuerySet.as_manager()
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    frozen_at = models.DateTimeField(null=True, blank=True)
    frozen_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A version imported from a file whose labels a lead attests are already
    # verified (no blind double labelling): who said so, when, and which file.
    attested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attested_at = models.DateTimeField(null=True, blank=True)
    attested_file = models.CharField(max_length=255, blank=True)
    attested_sha256 = models.CharField(max_length=64, blank=True)
    import_batch = models.ForeignKey(
        ImportBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="gold_sets"
    )

    class Meta:
        ordering = ["project", "-version"]
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="goldset_unique_version")]

    def __str__(self) -> str:
        return f"{self.project} gold v{self.version}"

    @property
    def is_frozen(self) -> bool:
        return self.frozen_at is not None

    @property
    def is_attested(self) -> bool:
        return self.attested_at is not None

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk and GoldSet.objects.filter(pk=self.pk, frozen_at__isnull=False).exists():
            raise FrozenGoldSetError(f"Gold set v{self.version} is frozen and cannot change.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any):
        if self.is_frozen:
            raise FrozenGoldSetError(f"Gold set v{self.version} is frozen and cannot be deleted.")
        return super().delete(*args, **kwargs)

    def freeze(self, *, user) -> None:
        if self.is_frozen:
            raise FrozenGoldSetError(f"Gold set v{self.version} is already frozen.")
        self.frozen_at = timezone.now()
        self.frozen_by = user
        GoldSet.objects.filter(pk=self.pk).update(frozen_at=self.frozen_at, frozen_by=user)


class GoldSetItemQuerySet(models.QuerySet):
    def _refuse_if_frozen(self) -> None:
        if self.filter(gold_set__frozen_at__isnull=False).exists():
            raise FrozenGoldSetError("Items of a frozen gold set version cannot change.")

    def update(self, **kwargs: Any) -> int:
        self._refuse_if_frozen()
        return super().update(**kwargs)

    def delete(self):
        self._refuse_if_frozen()
        return super().delete()


class GoldSetItem(models.Model):
    gold_set = models.ForeignKey(GoldSet, on_delete=models.CASCADE, related_name="items")
    example = models.ForeignKey(Example, on_delete=models.PROTECT, related_name="gold_items")
    label = models.JSONField(null=True, blank=True, help_text="The gold answer.")

    objects = GoldSetItemQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["gold_set", "example"], name="goldsetitem_unique")]

    def __str__(self) -> str:
        return f"{self.gold_set}: {self.label!r}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if GoldSet.objects.filter(pk=self.gold_set_id, frozen_at__isnull=False).exists():
            raise FrozenGoldSetError("A frozen gold set version cannot gain or change items.")
        if Example.objects.filter(pk=self.example_id, source=Example.Source.SYNTHETIC).exists():
            # A gold set measures the real task; text the LLM wrote never enters one.
            raise SyntheticGoldError("Synthetic examples can never enter a gold set.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any):
        if GoldSet.objects.filter(pk=self.gold_set_id, frozen_at__isnull=False).exists():
            raise FrozenGoldSetError("A frozen gold set version cannot lose items.")
        return super().delete(*args, **kwargs)


# --- the teacher ---------------------------------------------------------------------------


class TeacherConfig(models.Model):
    """How a project's teacher LLM is called; one per project."""

    class Provider(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible API"
        EMBEDDING = "embedding", "Offline embedding teacher (no API key)"

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
    max_tokens = models.PositiveIntegerField(default=64)
    price_input_per_mtok = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal("0.15"), help_text="USD per million input tokens."
    )
    price_output_per_mtok = models.DecimalField(
        max_digits=10, decimal_places=4, default=Decimal("0.60"), help_text="USD per million output tokens."
    )
    concurrency = models.PositiveIntegerField(default=8, help_text="Calls in flight at once.")
    requests_per_minute = models.PositiveIntegerField(default=0, help_text="0: no limit.")
    timeout_seconds = models.FloatField(default=30.0)
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
        default=0, help_text="When no logprobs come back: sample this many answers (0: off)."
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
        return task_for(self.project.task_type, categories)

    @property
    def is_used(self) -> bool:
        return self.proposals.exists()


class LabelingJob(BackgroundJob):
    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        RUNNING = "running", "Labelling"
        SUCCEEDED = "succeeded", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

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
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cached = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=0)
    estimate = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"Labelling job {self.pk} ({self.get_status_display()})"

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
    """Asks the teacher LLM for new examples per label, with diversity controls."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        RUNNING = "running", "Generating"
        SUCCEEDED = "succeeded", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

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
    labels = models.JSONField(default=list, help_text="Names of the labels to write examples for.")
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
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    requested = models.PositiveIntegerField(default=0)
    generated = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    exact_duplicates = models.PositiveIntegerField(default=0)
    near_duplicates = models.PositiveIntegerField(default=0)
    failed_calls = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=8, default=0)

    def __str__(self) -> str:
        return f"Synthetic job {self.pk} ({self.get_status_display()})"

    @property
    def percent_done(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return min(99, int(100 * self.created / self.requested)) if self.requested else 0


CLAIM_SECONDS = 120


class ReviewClaim(models.Model):
    """A short hold on an example, so two reviewers never get the same card."""

    example = models.OneToOneField(Example, on_delete=models.CASCADE, related_name="claim")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    claimed_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

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

    def __str__(self) -> str:
        return f"Quality run {self.pk} ({self.get_status_display()})"
