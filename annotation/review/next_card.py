"""The review queue: which card a reviewer sees next, in the order chosen, claimed for them.

Picking the next card is one indexed lookup on the examples' queue fields
(kept by ExampleQuerySet.sync_queue_fields) plus a short claim, so two
reviewers never hold the same example and an abandoned claim expires.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Case, Exists, F, OuterRef, Value, When
from django.utils import timezone

from annotation.models import CLAIM_SECONDS, Example, Project, ReviewClaim, ReviewState
from annotation.review import rounds
from annotation.review.quality import latest_quality_run
from distillapp.sql import Prepared

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


def _ranges(filters: QueueFilter, examples) -> list:
    """The queue in its order, as querysets to try in turn (each one an index range).

    The disagreement order takes its cards in turn from the labels training would keep and
    from those the label-quality run flags (pruning leaves the flagged out; ``_in_turn``): a
    review of a kept wrong label takes an error out of training, one of a flagged label wins a
    hard text back; serving only the flagged ones first (the riskiest) lost to random at 2.5 %
    reviewed on Restaurant-8k (bench/README.md, "Review budget, extraction")."""
    if filters.similar_to is None and filters.strategy in ("kept", "disagreement"):
        key = KEPT_ORDER if filters.strategy == "kept" else RISK_ORDER
        # Two ranges of the index instead of a sort of the whole pool per card.
        return [
            examples.exclude(label_issue=True).order_by(*key),
            examples.filter(label_issue=True).order_by(*key),
        ]
    return [filters.order(examples)]


def _in_turn(strategy: str, ranges: list, turn: int) -> list:
    """The ranges in the order to try them after `turn` verdicts in the project (the
    disagreement order starts every other card with the flagged labels)."""
    return ranges[::-1] if strategy == "disagreement" and turn % 2 else ranges


def first_served(project: Project, filters: QueueFilter, n: int) -> list[int]:
    """The ids of the first `n` cards the queue would serve from now, in order, with no claim
    held and no card skipped (what a bench reads to measure an order)."""
    examples = queue(project, filters)
    if filters.strategy != "disagreement" or filters.similar_to is not None:
        return [pk for qs in _ranges(filters, examples) for pk in qs.values_list("pk", flat=True)[:n]][:n]
    kept, flagged = (list(qs.values_list("pk", flat=True)[:n]) for qs in _ranges(filters, examples))
    served, turn = [], rounds.verdict_count(project)
    while len(served) < n and (kept or flagged):
        first, second = (kept, flagged) if turn % 2 == 0 else (flagged, kept)
        served.append((first or second).pop(0))
        turn += 1
    return served


def queue(project: Project | int, filters: QueueFilter):
    """Unreviewed, non-gold examples in the chosen filter (gold goes through blind labelling)."""
    examples = Example.objects.filter(project=project, is_gold=False, review_state=ReviewState.UNREVIEWED)
    return filters.apply(examples)


def card_claim(example_id: int, user, *, is_audit: bool = False, order: str = "") -> bool:
    """Take the card for `user`: a new claim, my own renewed, or an expired one taken over, in
    one statement; False when someone else holds it (their live claim is left as it is)."""
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    table = connection.ops.quote_name(ReviewClaim._meta.db_table)
    # A claim committed on its own does not wait for the disk (PostgreSQL's per-transaction
    # synchronous_commit, set in the same statement): one lost in a crash only serves its card
    # again. The wait was 1-4 ms of each review action (bench/README.md, review queue).
    no_wait = connection.vendor == "postgresql" and not connection.in_atomic_block
    # The ORM's upsert (bulk_create update_conflicts) has no WHERE on the conflict branch,
    # which is what makes the take-over conditional; PostgreSQL and SQLite share this syntax.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (example_id, user_id, claimed_at, expires_at, is_audit, queue_order)"
            " SELECT %s, %s, %s, %s, %s, %s"
            + (" WHERE set_config('synchronous_commit', 'off', true) = 'off'" if no_wait else " WHERE true")
            + " ON CONFLICT (example_id) DO UPDATE SET user_id = excluded.user_id,"
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
    # Every k-th card of the project (k = 1 / audit share) is drawn at random from the whole
    # pool, whatever the order: those verdicts measure the teacher without bias. In the
    # random order every card is such a draw.
    audit = filters.is_unfiltered and (filters.strategy == "random" or _audit_turn(project))
    strategy = "random" if audit else resolved_strategy(project, filters.strategy)
    turn = rounds.verdict_count(project) if strategy == "disagreement" else 0
    now = timezone.now()
    if filters.is_unfiltered:
        values = {"project": project.pk, "user": user.pk, "now": now, "skipped": filters.skipped}
        candidates = [
            lambda prepared=prepared: next(iter(prepared.objects(**values)), None)
            for prepared in _in_turn(strategy, _next_unfiltered(strategy), turn)
        ]
    else:
        order = dataclasses.replace(filters, strategy=strategy)
        examples = _servable(project.pk, user.pk, now, filters.skipped, filters)
        candidates = [qs.first for qs in _in_turn(strategy, _ranges(order, examples), turn)]
    for _ in range(5):  # a claim race lost is retried on the next candidate
        example = next((e for e in (first() for first in candidates) if e is not None), None)
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


def _servable(project: Project | int, user: int, now: dt.datetime, skipped: list[int], filters: QueueFilter):
    """The queue's cards `user` may be served: not skipped, and held by nobody else."""
    held_by_others = ReviewClaim.objects.filter(example=OuterRef("pk"), expires_at__gt=now).exclude(user=user)
    return queue(project, filters).exclude(pk__in=skipped).filter(~Exists(held_by_others))


# The next card of each range of an unfiltered queue, in each order, compiled once: building
# and compiling it with the ORM cost ~1.5 ms of Python a card (bench/README.md, review queue).
_NEXT_CARD: dict[str, list[Prepared]] = {}


def _next_unfiltered(strategy: str) -> list[Prepared]:
    if strategy not in _NEXT_CARD:
        order = QueueFilter(strategy=strategy)
        count = len(_ranges(order, Example.objects.none()))
        _NEXT_CARD[strategy] = [
            Prepared(
                functools.partial(_next_in_range, order, index),
                project=int,
                user=int,
                now=dt.datetime,
                skipped=list,
            )
            for index in range(count)
        ]
    return _NEXT_CARD[strategy]


def _next_in_range(order: QueueFilter, index: int, **values):
    return _ranges(order, _servable(**values, filters=order))[index][:1]
