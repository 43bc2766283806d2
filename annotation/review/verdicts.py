"""The verdicts on the review queue's cards: one by one (the card's verdict, taken back by an
undo) on the card served to the reviewer (``next_card``), with its counts (``counts``)."""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction
from django.db.models import IntegerField, JSONField, OuterRef, Q, Subquery
from django.utils import timezone

from annotation.models import (
    STUDENT_AGENT_PREFIX,
    Example,
    Project,
    Proposal,
    Review,
    ReviewClaim,
    ReviewState,
)
from annotation.review import rounds
from annotation.review.counts import forget_today, queue_counts
from annotation.review.next_card import QueueFilter, card_claim
from distillapp.sql import CompiledOnce, Prepared
from tasks.base import Answer, AnswerError


class ReviewError(ValueError):
    """A review action that cannot be done, with a message for the reviewer."""


class NotServed(ReviewError):
    """A verdict on a card the queue did not serve this reviewer (or already decided): refused."""


class InvalidAnswer(ReviewError):
    """A posted answer the project's task refuses (AnswerError): the request was bad, nothing is stored."""


def validated_answer(example: Example, answer: Answer) -> Answer:
    """The answer in the task's normal form; the task, not the page, decides what is valid."""
    try:
        return example.project.task.validate(answer, text=example.text)
    except AnswerError as exc:
        raise InvalidAnswer(str(exc)) from exc


def _take_claim(example: Example, user) -> dict | None:
    """Delete my claim on this card and say how it was served (seconds on it, audit draw or
    not, the queue order); None when I hold none. Deleting is the conditional write one of two
    double-submits wins (the other waits on the row and deletes nothing)."""
    table = connection.ops.quote_name(ReviewClaim._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE example_id = %s AND user_id = %s"
            " RETURNING claimed_at, is_audit, queue_order",
            [example.pk, user.pk],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    claimed_at = row[0]
    if isinstance(claimed_at, str):  # SQLite hands back its text column
        claimed_at = dt.datetime.fromisoformat(claimed_at)
    if timezone.is_naive(claimed_at):
        claimed_at = timezone.make_aware(claimed_at, dt.UTC)
    return {
        "seconds": round((timezone.now() - claimed_at).total_seconds(), 2),
        "is_audit": bool(row[1]),
        "order": row[2],
    }


def _teacher_proposals(example):
    """The example's valid teacher proposals, newest first (`example` may be an OuterRef)."""
    return (
        Proposal.objects.filter(example=example, value__isnull=False, error="")
        .exclude(agent__startswith=STUDENT_AGENT_PREFIX)
        .order_by("-created_at", "-pk")
    )


def with_teacher_proposal(examples):
    """`examples` with their teacher proposal's id and answer read in the same query (what a
    verdict needs of it), so ``teacher_proposal`` asks nothing more."""

    def latest(column: str):
        return lambda: Subquery(_teacher_proposals(OuterRef("pk")).values(column)[:1])

    return examples.annotate(
        teacher_proposal_pk=CompiledOnce("teacher proposal pk", Example, latest("pk"), IntegerField()),
        teacher_proposal_value=CompiledOnce("teacher proposal value", Example, latest("value"), JSONField()),
    )


def teacher_proposal(example: Example) -> Proposal | None:
    """The teacher's newest valid proposal (its id and answer only where ``with_teacher_proposal``
    read them with the example)."""
    if "teacher_proposal_pk" in example.__dict__:
        pk = example.teacher_proposal_pk
        return None if pk is None else Proposal(pk=pk, example=example, value=example.teacher_proposal_value)
    return _teacher_proposals(example).first()


# Compiled once: the verdict's first read of every action (bench/README.md, review queue).
_QUEUE_CARD = Prepared(
    lambda project, pk: with_teacher_proposal(
        Example.objects.filter(project=project, is_gold=False, pk=pk)
    ).order_by(),
    project=int,
    pk=int,
)


def queue_card(project: Project, example_id: int) -> Example | None:
    """The project's queue card `example_id` (never a gold item) with its teacher proposal
    (``with_teacher_proposal``), or None; its ``project`` is `project`."""
    example = next(iter(_QUEUE_CARD.objects(project=project.pk, pk=example_id)), None)
    if example is not None:
        example.project = project  # the task is read once per request
    return example


def seconds_on_card(example: Example, user) -> float | None:
    return _served(example, user)["seconds"]


def _served(example: Example, user) -> dict:
    """How my claim on this card was served: seconds on it, audit draw or not, the queue order."""
    claim = ReviewClaim.objects.filter(example=example, user=user).first()
    if claim is None:
        return {"seconds": None, "is_audit": False, "order": "", "is_mine": False}
    return {
        "is_mine": True,
        "seconds": round((timezone.now() - claim.claimed_at).total_seconds(), 2),
        "is_audit": claim.is_audit,
        "order": claim.queue_order,
    }


@transaction.atomic
def review_record(
    *,
    example: Example,
    user,
    verdict: str,
    label: str | None = None,
    value: Answer | None = None,
    filters: QueueFilter | None = None,
) -> Review:
    """Record one verdict: accept the teacher's proposal, correct it, or reject.

    A correction is a posted answer: ``value`` (any task; extraction posts its span set)
    or, for a classification form, ``label``. An answer the task calls the same as the
    proposal is an accept, so an unchanged span set or the proposed label counts as one.
    With the reviewer's queue `filters`, the round's count is the card's ``queue_counts``
    (one query for both).
    """
    task = example.project.task
    proposal = teacher_proposal(example)
    if verdict == Review.Verdict.ACCEPT:
        if proposal is None:
            raise ReviewError("There is no proposal to accept; pick a label instead.")
        value = proposal.value
    elif verdict == Review.Verdict.CORRECT:
        value = validated_answer(example, value if value is not None else label)
        if proposal is not None and task.same(proposal.value, value):
            verdict = Review.Verdict.ACCEPT
    elif verdict == Review.Verdict.REJECT:
        value = None
    else:
        raise ReviewError(f"Unknown verdict {verdict!r}.")
    # Only a card served to this reviewer (their claim, renewed by undo) gets a verdict, once,
    # so a replay adds no row, no budget and no round.
    served = _take_claim(example, user)
    if served is None:
        raise NotServed("This card was not served to you, or it is already decided; here is your next one.")
    # A review changes only the review state (queue examples are never gold, so no
    # adjudication outranks it): one conditional update instead of a check and a re-sync.
    if not Example.objects.filter(pk=example.pk, is_gold=False, review_state=ReviewState.UNREVIEWED).update(
        review_state=ReviewState.REJECTED if verdict == Review.Verdict.REJECT else ReviewState.REVIEWED
    ):
        raise NotServed("This card is already decided; here is your next one.")
    rounds.verdict_decided(example.project)
    review = Review.objects.create(
        example=example,
        reviewer=user,
        proposal=proposal,
        verdict=verdict,
        value=value,
        seconds_spent=served["seconds"],
        is_audit=served["is_audit"],
        queue_order=served["order"],
    )
    project = example.project
    project.forget("queue_counts", "verdicts")
    if filters is not None:
        counts = queue_counts(project, user, filters)
        rounds.after_verdict(project, counted=(counts.decided, counts.refreshed_at))
    else:
        rounds.after_verdict(project)
    return review


@transaction.atomic
def review_undo(*, project: Project, user) -> Example | None:
    """Take back my last verdict in this project; its example comes back to me."""
    last = (
        Review.objects.filter(example__project=project, reviewer=user, kind=Review.Kind.REVIEW, is_bulk=False)
        .order_by("-created_at", "-pk")
        .select_related("example")
        .first()
    )
    if last is None:
        return None
    example = last.example
    last.delete()
    forget_today(project, user)
    Example.objects.filter(pk=example.pk).sync_queue_fields()
    # The undone card becomes my one claim in the project (the card I had open goes back to
    # the pool), as review_next leaves it: review_next(after_verdict=True) counts on it.
    ReviewClaim.objects.filter(Q(example=example) | Q(user=user, example__project=project)).delete()
    card_claim(
        example.pk, user, is_audit=last.is_audit, order=last.queue_order
    )  # an undone audit card stays one
    example.refresh_from_db()
    return example
