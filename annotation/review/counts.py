"""What the review card counts: the project's decided cards (kept in the cache,
rounds.decided_count) and round, this reviewer's verdicts today, the queue left, and the last
scoring's flag coverage, read in one query."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import F, FloatField, IntegerField, OuterRef, Subquery
from django.utils import timezone

from annotation.models import Example, Project, QualityRun, Review, ReviewState
from annotation.review import rounds
from annotation.review.next_card import QueueFilter, queue
from distillapp.redis_cache import quietly
from distillapp.sql import CompiledOnce, CountOf, Prepared

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


def _counts(project: int, user: int, day: dt.datetime, since: int, remaining):
    """The counts' query: `since`, the newest of today's verdicts counted before."""
    new = _verdicts_today(project, user, day).filter(pk__gt=since).order_by()
    return (
        Project.objects.filter(pk=project)
        .order_by()
        .values(
            refreshed_at=F("refreshed_at_verdicts"),
            new=CountOf(new.values("pk")),
            remaining=remaining,
            coverage=CompiledOnce("flag coverage", Project, _flag_coverage, FloatField()),
            newest=Subquery(new.order_by("-pk").values("pk")[:1]),
        )
    )


# The unfiltered queue's counts, compiled once: building and compiling them with the ORM cost
# ~3 ms of Python a card (bench/README.md, review queue).
_UNFILTERED_COUNTS = Prepared(
    lambda **values: _counts(
        **values, remaining=CompiledOnce("remaining", Project, _remaining_count, IntegerField())
    ),
    project=int,
    user=int,
    day=dt.datetime,
    since=int,
)


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
    known, last_id = quietly(cache.get, today) or (0, 0)
    values = {"project": project.pk, "user": user.pk, "day": _start_of_day(), "since": last_id}
    if filters.is_unfiltered:
        row = _UNFILTERED_COUNTS.rows(**values)[0]
    else:
        remaining = CountOf(queue(project, filters).order_by().values("pk")[: REMAINING_CAP + 1])
        row = _counts(**values, remaining=remaining).get()
    counts = QueueCounts(
        rounds.decided_count(project),
        row["refreshed_at"],
        known + row["new"],
        row["remaining"],
        row["coverage"],
    )
    if row["newest"] is not None:
        quietly(cache.set, today, (counts.reviewed_today, row["newest"]), TODAY_SECONDS)
    project.remember("queue_counts", (user.pk, filters, counts))
    project.remember("verdicts", counts.decided)
    project.remember("flag_coverage", counts.flag_coverage)
    return counts


def _start_of_day() -> dt.datetime:
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def _verdicts_today(project: Project | int, user: int, day: dt.datetime):
    # A lead's import of verified labels (an attested gold set) is no review done today.
    return Review.objects.verdicts().filter(example__project=project, reviewer=user, created_at__gte=day)


def _today_key(project: Project, user) -> str:
    return f"review:today:{project.pk}:{user.pk}:{_start_of_day().date().isoformat()}"


def forget_today(project: Project, user) -> None:
    """Count this reviewer's verdicts today from scratch next time (after a verdict is taken
    back: the kept count has it)."""
    quietly(cache.delete, _today_key(project, user))


TODAY_SECONDS = 26 * 3600  # the day's key outlives the day (a new day has a new key)
