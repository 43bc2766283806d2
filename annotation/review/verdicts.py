"""The review queue: what experts see next, and what they decide (one by one or in bulk).

Picking the next card is one indexed lookup on the examples' queue fields
(kept by ExampleQuerySet.sync_queue_fields) plus a short claim, so two
reviewers never hold the same example and an abandoned claim expires.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import (
    Case,
    Exists,
    F,
    FloatField,
    IntegerField,
    JSONField,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.utils import timezone

from annotation.models import (
    CLAIM_SECONDS,
    STUDENT_AGENT_PREFIX,
    Example,
    Project,
    Proposal,
    QualityRun,
    Review,
    ReviewClaim,
    ReviewState,
)
from annotation.review import rounds
from annotation.review.quality import latest_quality_run
from distillapp.embedded_redis import REDIS_DOWN
from distillapp.sql import CompiledOnce, CountOf
from tasks.base import Answer, AnswerError

STRATEGIES = {
    "auto": "Where review pays most (chosen from the audit)",
    "confidence": "Lowest teacher confidence first",
    "disagreement": "Teacher and student disagree first",
    "errors": "Likely label errors first (then lowest teacher confidence)",
    "kept": "Labels training would keep, least certain first",
    "random": "Random (unbiased audit)",
    "oldest": "Oldest first",
}


# "auto" (the project default) chooses between two orders each time the label-quality run
# scores the pool again. Pruning leaves out the unreviewed labels that run flags, so a review
# of a flagged wrong label only wins back one training row, and a review of an unflagged wrong
# label removes an error training would keep. Where the flags cover most of the teacher's
# errors (flagged / the wrong labels the audit estimates among the unreviewed, at least
# ``KEPT_FROM_COVERAGE``), the queue serves the labels training keeps, least certain first
# ("kept"); where they cover few (a teacher whose errors the label-quality model shares, as a
# real LLM's), the wrong labels are everywhere and the teacher's lowest confidence finds them
# best ("confidence"). Measured on Banking77 (bench/README.md, "Review budget", session 8):
# the simulated 81.6 % teacher's flags cover 0.95-1.45 of its errors, and "auto" (so "kept")
# trained better students than lowest confidence first at every budget (fine-tune at 10 %:
# 0.9162 on average over five models against 0.9128 over six; quick: 0.9172 against 0.9133);
# the offline embedding teacher's cover 0.09-0.12, where "kept" had been 0.6 points worse
# (session 6), so "auto" stays with lowest confidence first there.
KEPT_FROM_COVERAGE = 0.5


def auto_strategy(coverage: float | None, otherwise: str = "confidence") -> str:
    """The order "auto" serves for a quality run's flag coverage (None: not measured); below
    the cover, the task's own risk order (``Task.auto_order``: extraction's student against
    the teacher's spans finds missed spans sooner than any confidence, bench/README.md,
    "Review budget, extraction")."""
    return "kept" if coverage is not None and coverage >= KEPT_FROM_COVERAGE else otherwise


def resolved_strategy(project: Project, strategy: str) -> str:
    """The order a queue setting serves now: "auto" becomes "kept" or "confidence"."""
    if strategy != "auto":
        return strategy
    # As the card's counts read it in this request (queue_counts), else from the last scoring.
    coverage = project.recalled("flag_coverage", default=NOT_READ)
    if coverage is NOT_READ:
        coverage = getattr(latest_quality_run(project), "flag_coverage", None)
    return auto_strategy(coverage, project.task.auto_order)


NOT_READ = object()


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


@dataclass
class QueueFilter:
    strategy: str = "confidence"
    label: str = ""
    source: str = ""
    min_confidence: float | None = None
    max_confidence: float | None = None
    search: str = ""
    skipped: list[int] = field(default_factory=list)
    # "More like this": the examples most similar to `similar_to`, closest first (similar.py).
    similar: list[int] = field(default_factory=list)
    similar_to: int | None = None

    def apply(self, examples):
        if self.label:
            examples = examples.filter(teacher_label=self.label)
        if self.source:
            examples = examples.filter(source=self.source)
        if self.min_confidence is not None:
            examples = examples.filter(teacher_confidence__gte=self.min_confidence)
        if self.max_confidence is not None:
            examples = examples.filter(teacher_confidence__lte=self.max_confidence)
        if self.search:
            examples = examples.filter(text__icontains=self.search)
        if self.similar_to is not None:
            examples = examples.filter(pk__in=self.similar)
        return examples

    @property
    def is_unfiltered(self) -> bool:
        """No filter narrows the pool (audit draws only then: a filtered pool is not the teacher's)."""
        return not (
            self.similar_to is not None
            or self.label
            or self.source
            or self.search
            or self.min_confidence is not None
            or self.max_confidence is not None
        )

    def order(self, examples):
        if self.similar_to is not None and self.strategy != "random":
            closest_first = Case(
                *[When(pk=pk, then=Value(i)) for i, pk in enumerate(self.similar)], default=Value(0)
            )
            return examples.order_by(closest_first, "pk")
        if self.strategy == "disagreement":
            # The task's review risk (1 where teacher and student disagree, for classification).
            return examples.order_by(*RISK_ORDER)
        if self.strategy == "errors":
            # Examples not scored yet (no quality run, or labelled since) by the teacher's doubt.
            return examples.order_by(
                F("quality_score").asc(nulls_last=True), F("teacher_confidence").asc(nulls_last=True), "pk"
            )
        if self.strategy == "kept":
            # What pruning would leave out goes last; the rest by the lowest label-quality score.
            flagged_last = Case(When(label_issue=True, then=Value(1)), default=Value(0))
            return examples.order_by(flagged_last, *KEPT_ORDER)
        if self.strategy == "random":
            return examples.order_by("queue_rank", "pk")
        if self.strategy == "oldest":
            return examples.order_by("pk")
        return examples.order_by(F("teacher_confidence").asc(nulls_last=True), "pk")


KEPT_ORDER = (F("quality_score").asc(nulls_last=True), F("teacher_confidence").asc(nulls_last=True), "pk")
RISK_ORDER = ("-risk", F("teacher_confidence").asc(nulls_last=True), "pk")


def _ordered(filters: QueueFilter, examples, *, turn: int = 0) -> list:
    """The queue in its order, as querysets to try in turn (each one an index range).

    `turn`: the project's verdicts so far. The disagreement order takes its cards in turn from
    the labels training would keep and from those the label-quality run flags (pruning leaves
    the flagged out): a review of a kept wrong label takes an error out of training, one of a
    flagged label wins a hard text back; serving only the flagged ones first (the riskiest)
    lost to random at 2.5 % reviewed on Restaurant-8k (bench/README.md, "Review budget,
    extraction")."""
    if filters.similar_to is None and filters.strategy in ("kept", "disagreement"):
        key = KEPT_ORDER if filters.strategy == "kept" else RISK_ORDER
        # Two ranges of the index instead of a sort of the whole pool per card.
        ranges = [
            examples.exclude(label_issue=True).order_by(*key),
            examples.filter(label_issue=True).order_by(*key),
        ]
        return ranges[::-1] if filters.strategy == "disagreement" and turn % 2 else ranges
    return [filters.order(examples)]


def first_served(project: Project, filters: QueueFilter, n: int) -> list[int]:
    """The ids of the first `n` cards the queue would serve from now, in order, with no claim
    held and no card skipped (what a bench reads to measure an order)."""
    examples = queue(project, filters)
    if filters.strategy != "disagreement" or filters.similar_to is not None:
        return [pk for qs in _ordered(filters, examples) for pk in qs.values_list("pk", flat=True)[:n]][:n]
    kept, flagged = (list(qs.values_list("pk", flat=True)[:n]) for qs in _ordered(filters, examples))
    served, turn = [], rounds.verdict_count(project)
    while len(served) < n and (kept or flagged):
        first, second = (kept, flagged) if turn % 2 == 0 else (flagged, kept)
        served.append((first or second).pop(0))
        turn += 1
    return served


def queue(project: Project, filters: QueueFilter):
    """Unreviewed, non-gold examples in the chosen filter (gold goes through blind labelling)."""
    examples = Example.objects.filter(project=project, is_gold=False, review_state=ReviewState.UNREVIEWED)
    return filters.apply(examples)


# Counting a big queue visits every row (12-22 ms at 100k); past the cap the page says
# "1,000+" (bench/README.md, review queue).
REMAINING_CAP = 1000


@dataclass(frozen=True)
class QueueCounts:
    """What the review card counts, read in one query: the project's decided cards (its
    rounds), the round's start, this reviewer's verdicts today, the queue left (capped at
    ``REMAINING_CAP + 1``) and the flag coverage of the last scoring ("auto" reads it)."""

    decided: int
    refreshed_at: int
    reviewed_today: int
    remaining: int
    flag_coverage: float | None


def _decided_count():
    return CountOf(rounds.decided(OuterRef("pk")).order_by().values("pk"))


def _remaining_count():
    """The unfiltered queue's size, capped (``queue`` with no filter)."""
    unreviewed = Example.objects.filter(
        project=OuterRef("pk"), is_gold=False, review_state=ReviewState.UNREVIEWED
    )
    return CountOf(unreviewed.order_by().values("pk")[: REMAINING_CAP + 1])


def _flag_coverage():
    """The flag coverage of the project's last finished scoring (None: none, or not measured)."""
    last = QualityRun.objects.filter(project=OuterRef("pk"), status=QualityRun.Status.SUCCEEDED)
    return Subquery(last.order_by("-finished_at", "-pk").values("flag_coverage")[:1])


def queue_counts(project: Project, user, filters: QueueFilter) -> QueueCounts:
    """The card's counts in one query (remembered on `project` for this reviewer and filter,
    so a verdict that counted inside its transaction serves the next card's page with them).
    The remaining count has no ORDER BY: ordered by id, PostgreSQL walks the primary key
    through every other project's rows."""
    memo = project.recalled("queue_counts")
    if memo is not None and memo[:2] == (user.pk, filters):
        return memo[2]
    # Today's verdicts: those counted before (kept in the cache with the newest one's id) and
    # the ones since. Counting them all joined every verdict of the day to its example: 1.5 ms
    # after 80 verdicts, growing all day (bench/README.md, review queue).
    today = _today_key(project, user)
    known, last_id = _cache("get", today) or (0, 0)
    since = _verdicts_today(project, user).filter(pk__gt=last_id).order_by()
    row = (
        Project.objects.filter(pk=project.pk)
        .values_list(
            CompiledOnce("decided", Project, _decided_count, IntegerField()),
            "refreshed_at_verdicts",
            CountOf(since.values("pk")),
            CompiledOnce("remaining", Project, _remaining_count, IntegerField())
            if filters.is_unfiltered
            else CountOf(queue(project, filters).order_by().values("pk")[: REMAINING_CAP + 1]),
            CompiledOnce("flag coverage", Project, _flag_coverage, FloatField()),
            Subquery(since.order_by("-pk").values("pk")[:1]),
        )
        .get()
    )
    decided, refreshed_at, new, remaining, coverage, newest = row
    counts = QueueCounts(decided, refreshed_at, known + new, remaining, coverage)
    if newest is not None:
        _cache("set", today, (counts.reviewed_today, newest), TODAY_SECONDS)
    project.remember("queue_counts", (user.pk, filters, counts))
    project.remember("verdicts", counts.decided)
    project.remember("flag_coverage", counts.flag_coverage)
    return counts


def card_claim(example_id: int, user, *, is_audit: bool = False, order: str = "") -> bool:
    """Take the card for `user`: a new claim, my own renewed, or an expired one taken over, in
    one statement; False when someone else holds it (their live claim is left as it is)."""
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    table = connection.ops.quote_name(ReviewClaim._meta.db_table)
    # The ORM's upsert (bulk_create update_conflicts) has no WHERE on the conflict branch,
    # which is what makes the take-over conditional; PostgreSQL and SQLite share this syntax.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (example_id, user_id, claimed_at, expires_at, is_audit, queue_order)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (example_id) DO UPDATE SET user_id = excluded.user_id,"
            " claimed_at = excluded.claimed_at, expires_at = excluded.expires_at,"
            " is_audit = excluded.is_audit, queue_order = excluded.queue_order"
            f" WHERE {table}.user_id = excluded.user_id OR {table}.expires_at < excluded.claimed_at",
            [
                example_id,
                user.pk,
                adapt(now),
                adapt(now + dt.timedelta(seconds=CLAIM_SECONDS)),
                is_audit,
                order,
            ],
        )
        return cursor.rowcount == 1


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


def review_next(
    *, project: Project, user, filters: QueueFilter, after_verdict: bool = False
) -> Example | None:
    """The next card for this reviewer, claimed for them; None when the queue is empty.

    `after_verdict`: the reviewer's verdict just took their one claim in the project (a claim
    deletes the reviewer's others), so there is no held card to look up or claim to clear."""
    if not after_verdict:
        mine = ReviewClaim.objects.filter(
            user=user, example__project=project, expires_at__gt=timezone.now()
        ).first()
        if mine is not None:
            held = queue(project, filters).filter(pk=mine.example_id).exclude(pk__in=filters.skipped).first()
            if held is not None and card_claim(held.pk, user, is_audit=mine.is_audit, order=mine.queue_order):
                return held
    held_by_others = ReviewClaim.objects.filter(
        example=OuterRef("pk"), expires_at__gt=timezone.now()
    ).exclude(user=user)
    # Every k-th card of the project (k = 1 / audit share) is drawn at random from the whole
    # pool, whatever the order: those verdicts measure the teacher without bias. In the
    # random order every card is such a draw.
    audit = filters.is_unfiltered and (filters.strategy == "random" or _audit_turn(project))
    strategy = "random" if audit else resolved_strategy(project, filters.strategy)
    order = (
        QueueFilter(strategy=strategy, skipped=filters.skipped)
        if audit
        else dataclasses.replace(filters, strategy=strategy)
    )
    candidates = _ordered(
        order,
        queue(project, filters).exclude(pk__in=filters.skipped).filter(~Exists(held_by_others)),
        turn=rounds.verdict_count(project) if strategy == "disagreement" else 0,
    )
    for _ in range(5):  # a claim race lost is retried on the next candidate
        example = next((e for e in (c.first() for c in candidates) if e is not None), None)
        if example is None:
            return None
        served_as = "similar" if filters.similar_to is not None else strategy  # "random" on audit draws
        if card_claim(example.pk, user, is_audit=audit, order=served_as):
            if not after_verdict:
                ReviewClaim.objects.filter(user=user, example__project=project).exclude(
                    example=example
                ).delete()
            return example
    return None


def _audit_turn(project: Project) -> bool:
    """Is the project's next card an audit draw? Every round(1 / audit_share)-th verdict's card is."""
    if project.audit_share <= 0:
        return False
    every = max(1, round(1 / min(1.0, project.audit_share)))
    return (rounds.verdict_count(project) + 1) % every == 0


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


def _start_of_day() -> dt.datetime:
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def _verdicts_today(project: Project, user):
    # A lead's import of verified labels (an attested gold set) is no review done today.
    return Review.objects.verdicts().filter(
        example__project=project, reviewer=user, created_at__gte=_start_of_day()
    )


def _today_key(project: Project, user) -> str:
    return f"review:today:{project.pk}:{user.pk}:{_start_of_day().date().isoformat()}"


def forget_today(project: Project, user) -> None:
    """Count this reviewer's verdicts today from scratch next time (after a verdict is taken
    back: the kept count has it)."""
    _cache("delete", _today_key(project, user))


def _cache(method: str, *args):
    """A call on the cache, None while Redis is down: today's verdicts are then counted from
    scratch (the review page works without Redis), and the kept count expires with the day."""
    try:
        return getattr(cache, method)(*args)
    except REDIS_DOWN:
        return None


TODAY_SECONDS = 26 * 3600  # the day's key outlives the day (a new day has a new key)
