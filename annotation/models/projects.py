"""Projects, who works on them, and their labels (or extraction fields)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import JSONObject
from django.utils import timezone

from distillapp.sql import CompiledOnce, JSONRows
from tasks import Category, Task, task_choices, task_for

LABEL_COLUMNS = ("name", "description", "key", "order", "color", "allows_many")


class ProjectQuerySet(models.QuerySet):
    def for_user(self, user) -> ProjectQuerySet:
        if user.is_superuser:
            return self.all()
        return self.filter(memberships__user=user).distinct()

    def with_role_of(self, user: int) -> ProjectQuerySet:
        """Each project with the role of the user with id `user` in it read in the same query
        (``role_of`` uses it)."""
        role = Membership.objects.filter(project=models.OuterRef("pk"), user=user).values("role")[:1]
        return self.annotate(_role=models.Subquery(role), _role_user=models.Value(user))

    def with_labels(self) -> ProjectQuerySet:
        """Each project with its labels (fields) read in the same query (``label_list`` uses them)."""
        return self.annotate(
            _label_rows=CompiledOnce("project labels", Project, _label_rows, output_field=models.JSONField())
        )


def _label_rows() -> models.Subquery:
    rows = (
        Label.objects.filter(project=models.OuterRef("pk"))
        .order_by()
        .values("project")
        .annotate(rows=JSONRows(JSONObject(pk="pk", **{c: c for c in LABEL_COLUMNS})))
        .values("rows")
    )
    return models.Subquery(rows, output_field=models.JSONField())


def user_may_create_projects(user) -> bool:
    """Creating a project makes its creator a lead, who configures a teacher that calls
    out with the server's API key; so by default only staff or holders of
    annotation.add_project may (DISTILL_PROJECT_CREATORS=anyone opens it up)."""
    from django.conf import settings

    if not user.is_authenticated or not user.is_active:
        return False
    return settings.PROJECT_CREATORS == "anyone" or user.is_staff or user.has_perm("annotation.add_project")


# The newest examples with a verdict whose reviewed answers a task is primed with (Project.primed).
PRIMING_ANSWERS = 2000


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    # The registered task types (tasks.TASK_TYPES): a new type needs no migration here.
    task_type = models.CharField(max_length=20, choices=task_choices, default="classification")
    task_options = models.JSONField(
        default=dict,
        blank=True,
        help_text="The task type's own project settings (tasks.base.Task.option_fields), e.g. a summary's target length.",
    )
    guidelines = models.TextField(blank=True, help_text="Annotation guidelines, in Markdown.")
    # Review rounds: where the review budget goes (annotation.review.rounds).
    audit_share = models.FloatField(
        default=0.1,
        help_text="Share of review cards drawn at random whatever the order: they measure the teacher without bias.",
    )
    review_budget = models.PositiveIntegerField(
        null=True, blank=True, help_text="Items the lead plans to have reviewed (empty: no budget)."
    )
    review_budget_hours = models.FloatField(
        null=True,
        blank=True,
        help_text="Reviewer hours the lead plans to spend (empty: no hour budget); measured from the time on each card.",
    )
    review_order = models.CharField(
        max_length=20,
        # "auto": lowest teacher confidence first until the label-quality flags are measured to
        # cover most of the teacher's errors, then the labels training keeps, least certain
        # first (annotation.review.next_card.resolved_strategy; bench/README.md, "Review budget").
        default="auto",
        help_text="The review queue's order when a reviewer has not chosen one (annotation.review STRATEGIES).",
    )
    refresh_every = models.PositiveIntegerField(
        default=100,
        help_text="Verdicts between quick-student refreshes of the queue's student keys (0: never).",
    )
    refreshed_at_verdicts = models.PositiveIntegerField(
        default=0, editable=False, help_text="The project's verdict count when the last refresh started."
    )
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
        return self.remembered("task", lambda: task_for(self.task_type, self.categories(), self.task_options))

    def primed(self, task: Task | None = None) -> Task:
        """The task (the project's, or a prompt version's) primed with the project's newest
        reviewed, non-gold answers, for the choices reading an answer leaves open (``Task.with_reviewed``:
        extraction learns which words precede each field's values). Itself where it learns
        nothing."""
        task = task if task is not None else self.task
        if not task.learns_from_reviewed:
            return task
        from annotation.models.examples import Example, Review

        # The newest examples with a verdict first: the current label is then worked out for
        # those alone, not for every example of the project (bench/README.md, "Teacher placement").
        newest = (
            Review.objects.filter(
                example__project=self,
                example__is_gold=False,
                kind__in=[Review.Kind.REVIEW, Review.Kind.ADJUDICATION],
            )
            .order_by("-example_id")
            .values_list("example_id", flat=True)
            .distinct()[:PRIMING_ANSWERS]
        )
        # Never gold: the teacher's placements on the gold set must not learn from its answers.
        reviewed = (
            Example.objects.filter(pk__in=list(newest))
            .not_gold()
            .with_current_label()
            .filter(label_state="reviewed", current_label__isnull=False)
            .order_by("-pk")
            .values_list("text", "current_label")
        )
        return task.with_reviewed(list(reviewed))

    def forget_task(self) -> None:
        self.forget("task", "labels")

    def remembered(self, key: str, read):
        """`read()` once per instance: a view's project lives one request, so a page asks the
        database once for what several parts of it need. ``forget(key)`` after changing it."""
        memo = self.__dict__.setdefault("_memo", {})
        if key not in memo:
            memo[key] = read()
        return memo[key]

    def remember(self, key: str, value) -> None:
        self.__dict__.setdefault("_memo", {})[key] = value

    def recalled(self, key: str, default=None):
        """What was remembered under `key` on this instance, else `default` (nothing is read)."""
        return self.__dict__.get("_memo", {}).get(key, default)

    def forget(self, *keys: str) -> None:
        memo = self.__dict__.get("_memo", {})
        for key in keys:
            memo.pop(key, None)

    def categories(self) -> list[Category]:
        return [label.as_category() for label in self.label_list()]

    def label_list(self) -> list[Label]:
        """The labels (fields) in order (remembered: ``forget_task()`` after changing them)."""
        return self.remembered("labels", self._read_labels)

    def _read_labels(self) -> list[Label]:
        if "_label_rows" not in self.__dict__:
            return list(self.labels.all())
        labels = [
            Label(
                project=self,
                pk=row["pk"],
                **{c: row[c] for c in LABEL_COLUMNS if c != "allows_many"},
                allows_many=bool(row["allows_many"]),  # SQLite's JSON has 0 and 1
            )
            for row in self.__dict__.pop("_label_rows") or []
        ]
        return sorted(labels, key=lambda label: (label.order, label.name))  # Label's ordering

    def role_of(self, user) -> str | None:
        """The user's role in this project, or None for an outsider."""
        if not user.is_authenticated:
            return None
        if self.__dict__.get("_role_user") == user.pk:  # read with the project (with_role_of)
            role = self.__dict__["_role"]
        else:
            role = self.memberships.filter(user=user).values_list("role", flat=True).first()
        if role:
            return role
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


class InvitationQuerySet(models.QuerySet):
    def pending(self) -> InvitationQuerySet:
        return self.filter(used_at__isnull=True, expires_at__gt=timezone.now())


class Invitation(models.Model):
    """A link a lead sends to someone new: it creates their account with the password they
    choose and makes them a member, once, until it expires. Only the token's SHA-256 is
    stored, so the database (or an admin page) never holds a usable link."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invitations")
    username = models.CharField(max_length=150, help_text="The account the link creates.")
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.REVIEWER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The account the link created.",
    )

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation of {self.username} ({self.role}) to {self.project}"

    @property
    def is_expired(self) -> bool:
        return self.used_at is None and self.expires_at <= timezone.now()


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
