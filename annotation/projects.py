"""Projects and who works on them: creating a project, its labels (fields) and members,
and the counts and dashboard its page shows.

`ServiceError` is the error every annotation workflow raises for a request it cannot
carry out (the corpus's imports and exports too); views show its message to the user.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections import Counter

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, OuterRef
from django.utils import timezone

from annotation.models import (
    Example,
    GoldSetItem,
    Invitation,
    Label,
    Membership,
    Project,
    Proposal,
    Review,
    next_free_key,
)
from annotation.review.audit import WEAK_TEACHER, teacher_estimate


class ServiceError(ValueError):
    """A request that cannot be carried out, with a message for the user."""


# --- projects, labels, members -----------------------------------------------------


@transaction.atomic
def project_create(
    *,
    name: str,
    slug: str,
    user,
    task_type: str = "classification",
    guidelines: str = "",
    labels: list[tuple[str, str]] | None = None,
    task_options: dict | None = None,
) -> Project:
    project = Project.objects.create(
        name=name,
        slug=slug,
        task_type=task_type,
        task_options=task_options or {},
        guidelines=guidelines,
        created_by=user,
    )
    Membership.objects.create(project=project, user=user, role=Membership.Role.LEAD)
    for name_, description in labels or []:
        label_create(project=project, name=name_, description=description)
    return project


def label_create(*, project: Project, name: str, description: str = "", key: str = "") -> Label:
    name = name.strip()
    if project.labels.filter(name=name).exists():
        raise ServiceError(f"The label {name!r} already exists.")
    existing = list(project.labels.values_list("key", "order"))
    used = {k for k, _ in existing if k}
    if key and key in used:
        raise ServiceError(f"The key {key!r} is already taken by another label.")
    return Label.objects.create(
        project=project,
        name=name,
        description=description.strip(),
        key=key or next_free_key(used),
        order=max((o for _, o in existing), default=0) + 1,
    )


@transaction.atomic
def label_update(*, label: Label, name: str, description: str, key: str, order: int) -> Label:
    """Change a label; a rename carries over to every answer that used the old name."""
    name = name.strip()
    project = label.project
    if name != label.name and project.labels.filter(name=name).exists():
        raise ServiceError(f"The label {name!r} already exists.")
    if key and project.labels.filter(key=key).exclude(pk=label.pk).exists():
        raise ServiceError(f"The key {key!r} is already taken by another label.")
    old_name = label.name
    label.name, label.description, label.key, label.order = name, description.strip(), key, order
    label.save()
    if old_name != name:
        # Answers name their labels (fields), so a rename rewrites them in the same
        # transaction; otherwise they would point at a missing label. The task says which
        # answers use a name and how the renamed answer reads.
        task = project.task
        for queryset, field in _answers_of(project, frozen_gold=False):
            changed = []
            for row in queryset.filter(**task.answers_naming(field, old_name)).iterator(chunk_size=2000):
                value = getattr(row, field)
                if value is not None and old_name in task.answer_categories(value):
                    setattr(row, field, task.rename_category(value, old_name, name))
                    changed.append(row)
            queryset.model.objects.bulk_update(changed, [field], batch_size=2000)
        project.forget_task()
    return label


def _answers_of(project: Project, *, frozen_gold: bool = True):
    """(queryset, answer field) of everything that holds an answer in the project: proposals,
    reviews and gold items (frozen versions only where `frozen_gold`: they never change)."""
    gold = GoldSetItem.objects.filter(gold_set__project=project)
    if not frozen_gold:
        gold = gold.filter(gold_set__frozen_at__isnull=True)
    return [
        (Proposal.objects.filter(example__project=project), "value"),
        (Review.objects.filter(example__project=project), "value"),
        (gold, "answer"),
    ]


def label_is_used(label: Label) -> bool:
    project = label.project
    task = project.task
    for queryset, field in _answers_of(project):
        for value in queryset.filter(**task.answers_naming(field, label.name)).values_list(field, flat=True):
            if value is not None and label.name in task.answer_categories(value):
                return True
    return False


def label_delete(*, label: Label) -> None:
    if label_is_used(label):
        raise ServiceError(
            f"The label {label.name!r} is used by proposals, reviews or gold items; "
            "rename it instead of deleting it."
        )
    label.delete()


def _lock_members(project: Project) -> None:
    """Hold the project's row until the transaction ends, so membership changes of one project
    run one after another: two leads demoting each other at the same moment would each read
    two leads, and each write leave one, leaving none. The second now reads the first's write."""
    Project.objects.select_for_update().filter(pk=project.pk).first()


@transaction.atomic
def membership_set(*, project: Project, username: str, role: str) -> Membership:
    user = get_user_model().objects.filter(username=username.strip()).first()
    if user is None:
        raise ServiceError(f"There is no user called {username!r}.")
    _lock_members(project)
    leads = project.memberships.filter(role=Membership.Role.LEAD)
    if role != Membership.Role.LEAD and list(leads.values_list("user_id", flat=True)) == [user.pk]:
        raise ServiceError("A project needs at least one lead; make someone else lead first.")
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    project = membership.project
    _lock_members(project)
    membership = Membership.objects.filter(pk=membership.pk).first()  # as it is now, under the lock
    if membership is None:
        return  # removed meanwhile
    if (
        membership.role == Membership.Role.LEAD
        and project.memberships.filter(role=Membership.Role.LEAD).count() == 1
    ):
        raise ServiceError("A project needs at least one lead; add another lead first.")
    membership.delete()


# --- invitations: a lead adds someone new without the Django admin ---------------------


def invitation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def invitation_create(*, project: Project, username: str, role: str, user) -> tuple[Invitation, str]:
    """An invitation for a new account `username`, and its token (returned only here: the
    row keeps its hash). A pending invitation of the same name to the project is replaced."""
    username = username.strip()
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError as exc:
        raise ServiceError(f"{username!r} cannot be a user name: {' '.join(exc.messages)}") from exc
    if get_user_model().objects.filter(username__iexact=username).exists():
        raise ServiceError(
            f"There is already a user called {username!r}: add them with “Add a member” instead."
        )
    if role not in Membership.Role.values:
        raise ServiceError(f"Unknown role {role!r}.")
    project.invitations.filter(username__iexact=username, used_at__isnull=True).delete()
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        project=project,
        username=username,
        role=role,
        token_hash=invitation_token_hash(token),
        created_by=user,
        expires_at=timezone.now() + dt.timedelta(hours=settings.INVITATION_HOURS),
    )
    return invitation, token


def invitation_for_token(token: str) -> Invitation | None:
    """The invitation a link names, used or not; None for a link that names none."""
    return (
        Invitation.objects.select_related("project").filter(token_hash=invitation_token_hash(token)).first()
    )


@transaction.atomic
def invitation_accept(*, token: str, password: str):
    """Create the invited account with `password` (already validated) and its membership;
    the new user. A used, withdrawn or expired link creates nothing."""
    invitation = invitation_for_token(token)
    now = timezone.now()
    # A conditional update: of two tabs sending the same link at once, one takes it.
    if invitation is None or not Invitation.objects.filter(
        pk=invitation.pk, used_at__isnull=True, expires_at__gt=now
    ).update(used_at=now):
        raise ServiceError(
            "This invitation link was used already, withdrawn or has expired; ask the project's lead "
            "for a new one."
        )
    User = get_user_model()
    if User.objects.filter(username__iexact=invitation.username).exists():
        raise ServiceError(
            f"The user name {invitation.username!r} was taken after the invitation was sent; ask the "
            "project's lead to invite you under another name."
        )
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=invitation.username, password=password)
    except IntegrityError as exc:  # taken at this very moment
        raise ServiceError(
            f"The user name {invitation.username!r} is taken; ask for a new invitation."
        ) from exc
    Membership.objects.create(project=invitation.project, user=user, role=invitation.role)
    Invitation.objects.filter(pk=invitation.pk).update(user=user)
    return user


def project_counts(project: Project) -> dict[str, int]:
    """Examples by label state, in one grouped query, plus the gold count.

    "reviewed" counts examples a reviewer gave a verdict on; labels a lead imported as verified
    (an attested gold file included) are "imported_verified": nobody reviewed them here.
    """
    examples = Example.objects.for_project(project)
    states = dict.fromkeys(["unlabelled", "proposed", "reviewed", "rejected"], 0)
    grouped = examples.with_current_label().values("label_state").order_by()
    for row in grouped.annotate(n=Count("pk")):
        states[row["label_state"]] = row["n"]
    by_people = Review.objects.verdicts().filter(
        example=OuterRef("pk"), kind__in=[Review.Kind.REVIEW, Review.Kind.ADJUDICATION]
    )
    imported = (
        examples.filter(reviews__is_import=True).exclude(Exists(by_people)).distinct().count()
        if states["reviewed"]
        else 0
    )
    return {
        "examples": sum(states.values()),
        **states,
        "reviewed": states["reviewed"] - imported,
        "imported_verified": imported,
        "gold": examples.filter(is_gold=True).count(),
    }


def project_dashboard(project: Project) -> dict:
    """Review throughput, agreement, label distributions and how often the teacher is right."""
    import statistics

    from annotation import review
    from annotation.review.rounds import MAX_CARD_SECONDS

    reviews = Review.objects.filter(
        example__project=project, kind=Review.Kind.REVIEW, is_bulk=False
    ).latest_per_example(per_reviewer=True)
    throughput = []
    per_reviewer: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for name, seconds in reviews.values_list("reviewer__username", "seconds_spent"):
        counts[name] = counts.get(name, 0) + 1
        if seconds is not None and 0 < seconds < MAX_CARD_SECONDS:  # longer is a break: not the pace
            per_reviewer.setdefault(name, []).append(seconds)
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        times = per_reviewer.get(name, [])
        median = statistics.median(times) if times else None
        throughput.append(
            {
                "reviewer": name,
                "items": count,
                "median_seconds": median,
                "items_per_hour": 3600 / statistics.mean(times) if times else None,
            }
        )
    verdicts = dict(
        reviews.filter(proposal__isnull=False).values_list("verdict").order_by().annotate(n=Count("pk"))
    )
    judged = verdicts.get(Review.Verdict.ACCEPT, 0) + verdicts.get(Review.Verdict.CORRECT, 0)
    examples = Example.objects.for_project(project).with_current_label()
    task = project.task

    def per_category(column: str) -> Counter:
        # Grouped in SQL by the whole answer, then counted per label (field) by the task:
        # a label answer is one category, a span answer counts each field it marks.
        found: Counter = Counter()
        for row in examples.values(column).order_by().annotate(n=Count("pk")):
            if row[column] is not None:
                for name, count in task.category_counts([row[column]]).items():
                    found[name] += count * row["n"]
        return found

    current, teacher = per_category("current_label"), per_category("proposed_value")
    labels = list(project.labels.values_list("name", flat=True))
    distribution = [
        {"label": name, "current": current.get(name, 0), "teacher": teacher.get(name, 0)} for name in labels
    ]
    peak = max([1] + [max(d["current"], d["teacher"]) for d in distribution])
    gold = review.gold_draft(project) or project.gold_sets.frozen_version()
    estimate = teacher_estimate(project)
    return {
        "throughput": throughput,
        "teacher_accepted": verdicts.get(Review.Verdict.ACCEPT, 0),
        "teacher_corrected": verdicts.get(Review.Verdict.CORRECT, 0),
        "teacher_accuracy": verdicts.get(Review.Verdict.ACCEPT, 0) / judged if judged else None,
        "teacher_estimate": estimate,
        "weak_teacher": bool(estimate["estimate"] and estimate["estimate"]["high"] < WEAK_TEACHER),
        "distribution": distribution,
        "distribution_peak": peak,
        "gold": gold,
        "agreement": review.gold_status(gold)["agreement"] if gold else None,
    }
