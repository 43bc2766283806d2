"""Review rounds: a budget for the lead, and the queue's keys refreshed as verdicts come in.

After every ``Project.refresh_every`` verdicts, the queue's keys that depend on a student
(teacher/student disagreement, label-error scores) are stale: the labels they were computed
from have changed. ``after_verdict`` notices that a round is over and sends
``refresh_due``; the training app answers it (training.services.round_refresh) by training a
quick student on the current labels in the background, whose proposals refresh the
disagreement key, and by scoring label quality again. So each batch of cards goes where
the current labels are weakest. The annotation app only says that a refresh is due: it
never imports training (the layers go one way).
"""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum, Value
from django.db.models.functions import Least
from django.dispatch import Signal

from annotation.models import Example, ForgetDecided, Project, Review, ReviewState, decided_key
from distillapp.redis_cache import quietly

# Sent once per finished round, inside the verdict's transaction, so that what a receiver
# records (the training app's RoundRefresh row) commits with the verdict or not at all:
# project=<Project>, verdicts=<the distinct verdicts that ended the round>.
refresh_due = Signal()


# A card open longer than this was a break, not work: it counts this long.
MAX_CARD_SECONDS = 600


def verdict_count(project: Project) -> int:
    """Examples decided in the review queue: an example counts once, however many review rows it
    has (rows a replay wrote before verdicts needed a claim, an import's, a lead's bulk accept).
    After a verdict on this instance, the count ``after_verdict`` read (the review page's card
    asks again in the same request)."""
    known = project.recalled("verdicts")
    if known is not None:
        return known
    return decided_count(project)


# A change no path reports (a deleted example, a state written by hand) shows in the count
# within this long; every path of the app reports its own (`verdict_decided`, forget_decided).
DECIDED_SECONDS = 300


def decided_count(project: Project) -> int:
    """The project's decided queue cards, from the cache: counting them reads every decided
    card's row (2.5-2.9 us each until VACUUM: 4.6 ms at 1,600 cards of a 1M-example project,
    bench/README.md "Review queue", session 6). Counted from the database when the cache has
    none (or Redis is down), and kept; a verdict adds itself once it commits, and every other
    change of a card's state forgets the count (annotation.models.forget_decided). The
    verdicts of the current transaction, not committed yet, count too."""
    pending = [func for _sids, func, _robust in connection.run_on_commit if not getattr(func, "done", True)]
    if any(isinstance(f, ForgetDecided) and project.pk in f.project_ids for f in pending):
        return decided(project).count()  # this transaction changed states the cache cannot follow
    key = decided_key(project.pk)
    count = quietly(cache.get, key)
    if count is None:
        count = decided(project).count()
        quietly(cache.add, key, count, DECIDED_SECONDS)
    return count + sum(1 for f in pending if isinstance(f, _Decided) and f.project_id == project.pk)


class _Decided:
    """One verdict's card, counted in the cache when its transaction commits. Kept in the
    transaction's on-commit list, which Django empties when the transaction ends (and prunes
    when a savepoint rolls back), so what is pending is always this transaction's own."""

    def __init__(self, project_id: int) -> None:
        self.project_id = project_id
        self.done = False

    def __call__(self) -> None:
        self.done = True
        try:
            quietly(cache.incr, decided_key(self.project_id))
        except ValueError:
            pass  # not counted yet: the next read counts it from the database


def verdict_decided(project: Project) -> None:
    """A verdict took a card out of the queue: counted in the cache once its transaction
    commits (a rolled-back verdict counts nowhere), and by `decided_count` inside it."""
    transaction.on_commit(_Decided(project.pk))


def decided(project):
    """The project's decided queue examples (`project` may be an OuterRef). A non-gold example
    leaves the unreviewed state by a review verdict only, so its review state says it, read
    from the queue's index: counting distinct examples over the review rows joined every
    review of the database to its example (98 ms with 1,300 reviews over 4 projects)."""
    # `in` the two decided states, not `!= unreviewed`: a range of the index, not all its rows.
    return Example.objects.filter(
        project=project, is_gold=False, review_state__in=[ReviewState.REVIEWED, ReviewState.REJECTED]
    )


def review_time(project: Project, *, gold: bool = True) -> dict:
    """Reviewer time spent on the project's cards (bulk verdicts take none); without `gold`,
    on review cards only (not blind gold labels or adjudications).

    ``cards`` counts distinct examples. ``seconds`` is the mean of the timed verdicts' seconds
    (each capped at MAX_CARD_SECONDS) times the cards: a card with no time (an import, a
    verdict from the API) counts as that mean, and a card decided twice counts once, so the
    hours follow the cards done. Each reviewer's latest row of a card is their verdict
    (``timed`` counts those): a replay's copies neither add verdicts nor drag the mean. ``seconds_per_item`` is that mean (None before any timed card).
    """
    reviews = Review.objects.filter(example__project=project, is_bulk=False)
    if not gold:
        reviews = reviews.filter(kind=Review.Kind.REVIEW)
    reviews = reviews.latest_per_example(per_reviewer=True)
    # One query: the review page asks on every card.
    timed = Q(seconds_spent__gt=0)
    totals = reviews.aggregate(
        cards=Count("example_id", distinct=True),
        timed=Count("pk", filter=timed),
        total=Sum(Least(F("seconds_spent"), Value(float(MAX_CARD_SECONDS))), filter=timed),
    )
    cards = totals["cards"]
    per_item = totals["total"] / totals["timed"] if totals["timed"] else None
    return {
        "cards": cards,
        "timed": totals["timed"],
        "seconds": per_item * cards if per_item else 0.0,
        "seconds_per_item": per_item,
    }


def round_status(project: Project) -> dict:
    """Verdicts so far, the budget left (in items and in reviewer hours) and the verdicts
    until the next refresh. The budget is reached when either is spent."""
    done = verdict_count(project)
    budget = project.review_budget
    until = None
    if project.refresh_every:
        until = max(0, project.refreshed_at_verdicts + project.refresh_every - done)
    status = {
        "verdicts": done,
        "budget": budget,
        "budget_left": max(0, budget - done) if budget else None,
        "budget_reached": bool(budget) and done >= budget,
        "budget_percent": min(100, round(100 * done / budget)) if budget else None,
        "refresh_every": project.refresh_every,
        "until_refresh": until,
        "budget_hours": project.review_budget_hours,
        "hours_spent": None,
        "hours_left": None,
        "cards_left_in_hours": None,
        "hours_percent": None,
    }
    if project.review_budget_hours:
        time = review_time(project, gold=False)  # the budget is for the review queue, as in items
        spent = time["seconds"] / 3600
        left = max(0.0, project.review_budget_hours - spent)
        status.update(
            hours_spent=spent,
            hours_left=left,
            # At the pace measured so far: what the hours left buy.
            cards_left_in_hours=int(left * 3600 / time["seconds_per_item"])
            if time["seconds_per_item"]
            else None,
            hours_percent=min(100, round(100 * spent / project.review_budget_hours)),
        )
        status["budget_reached"] = status["budget_reached"] or left == 0
    return status


def after_verdict(project: Project, *, counted: tuple[int, int] | None = None) -> bool:
    """Start a refresh if this verdict ended a round; True if it did (exactly one caller wins).

    `counted`: the decided cards and the round's start, as the caller has just read them
    after the verdict (the review card's counts, ``verdicts.queue_counts``)."""
    if counted is None:
        project.forget("verdicts")
        if not project.refresh_every:
            return False
        counted = (
            decided_count(project),
            Project.objects.filter(pk=project.pk).values_list("refreshed_at_verdicts", flat=True).get(),
        )
    done, last = counted
    project.remember("verdicts", done)
    if not project.refresh_every:
        return False
    last = last or 0
    if done - last < project.refresh_every:
        return False
    with transaction.atomic():  # the round's end and what the receivers record, together
        # A conditional update: of two verdicts that end the same round, one starts the refresh.
        if not Project.objects.filter(pk=project.pk, refreshed_at_verdicts=last).update(
            refreshed_at_verdicts=done
        ):
            return False
        project.refreshed_at_verdicts = done
        refresh_due.send(sender=Project, project=project, verdicts=done)
    return True
