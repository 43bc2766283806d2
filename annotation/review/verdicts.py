"""The review queue and gold sets: what experts see next, and what they decide.

Picking the next card is one indexed lookup on the examples' queue fields
(kept by ExampleQuerySet.sync_queue_fields) plus a short claim, so two
reviewers never hold the same example and an abandoned claim expires.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Case, Count, Exists, F, OuterRef, Q, Value, When
from django.utils import timezone

from annotation.models import (
    CLAIM_SECONDS,
    STUDENT_AGENT_PREFIX,
    Example,
    GoldSet,
    GoldSetItem,
    Project,
    Proposal,
    QualityRun,
    Review,
    ReviewClaim,
    ReviewState,
)
from tasks.base import Answer, AnswerError

STRATEGIES = {
    "confidence": "Lowest teacher confidence first",
    "disagreement": "Teacher and student disagree first",
    "errors": "Likely label errors first",
    "random": "Random (unbiased audit)",
    "oldest": "Oldest first",
}


class ReviewError(ValueError):
    """A review action that cannot be done, with a message for the reviewer."""


class InvalidAnswer(ReviewError):
    """A posted answer the project's task refuses (AnswerError): the request was bad, nothing is stored."""


def _validated(example: Example, answer: Answer) -> Answer:
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
        return examples

    def order(self, examples):
        if self.strategy == "disagreement":
            return examples.order_by("-is_disagreement", F("teacher_confidence").asc(nulls_last=True), "pk")
        if self.strategy == "errors":
            return examples.order_by(F("quality_score").asc(nulls_last=True), "pk")
        if self.strategy == "random":
            return examples.order_by("queue_rank", "pk")
        if self.strategy == "oldest":
            return examples.order_by("pk")
        return examples.order_by(F("teacher_confidence").asc(nulls_last=True), "pk")


def queue(project: Project, filters: QueueFilter):
    """Unreviewed, non-gold examples in the chosen filter (gold goes through blind labelling)."""
    examples = Example.objects.filter(project=project, is_gold=False, review_state=ReviewState.UNREVIEWED)
    return filters.apply(examples)


def _claim(example_id: int, user) -> bool:
    now = timezone.now()
    expires = now + dt.timedelta(seconds=CLAIM_SECONDS)
    # Renew my own claim or take over an expired one, in one conditional update.
    if (
        ReviewClaim.objects.filter(example_id=example_id)
        .filter(Q(user=user) | Q(expires_at__lt=now))
        .update(user=user, claimed_at=now, expires_at=expires)
    ):
        return True
    try:
        with transaction.atomic():
            ReviewClaim.objects.create(example_id=example_id, user=user, claimed_at=now, expires_at=expires)
        return True
    except IntegrityError:
        return False  # another reviewer holds it


def review_next(*, project: Project, user, filters: QueueFilter) -> Example | None:
    """The next card for this reviewer, claimed for them; None when the queue is empty."""
    mine = ReviewClaim.objects.filter(
        user=user, example__project=project, expires_at__gt=timezone.now()
    ).first()
    if mine is not None:
        held = queue(project, filters).filter(pk=mine.example_id).exclude(pk__in=filters.skipped).first()
        if held is not None and _claim(held.pk, user):
            return held
    held_by_others = ReviewClaim.objects.filter(
        example=OuterRef("pk"), expires_at__gt=timezone.now()
    ).exclude(user=user)
    candidates = filters.order(
        queue(project, filters).exclude(pk__in=filters.skipped).filter(~Exists(held_by_others))
    )
    for _ in range(5):  # a claim race lost is retried on the next candidate
        example = candidates.first()
        if example is None:
            return None
        if _claim(example.pk, user):
            ReviewClaim.objects.filter(user=user, example__project=project).exclude(example=example).delete()
            return example
    return None


def teacher_proposal(example: Example) -> Proposal | None:
    return (
        example.proposals.filter(value__isnull=False, error="")
        .exclude(agent__startswith=STUDENT_AGENT_PREFIX)
        .order_by("-created_at", "-pk")
        .first()
    )


def _seconds_on(example: Example, user) -> float | None:
    claim = ReviewClaim.objects.filter(example=example, user=user).first()
    return round((timezone.now() - claim.claimed_at).total_seconds(), 2) if claim else None


@transaction.atomic
def review_record(
    *, example: Example, user, verdict: str, label: str | None = None, value: Answer | None = None
) -> Review:
    """Record one verdict: accept the teacher's proposal, correct it, or reject.

    A correction is a posted answer: ``value`` (any task; extraction posts its span set)
    or, for a classification form, ``label``. An answer the task calls the same as the
    proposal is an accept, so an unchanged span set or the proposed label counts as one.
    """
    task = example.project.task
    proposal = teacher_proposal(example)
    if verdict == Review.Verdict.ACCEPT:
        if proposal is None:
            raise ReviewError("There is no proposal to accept; pick a label instead.")
        value = proposal.value
    elif verdict == Review.Verdict.CORRECT:
        value = _validated(example, value if value is not None else label)
        if proposal is not None and task.same(proposal.value, value):
            verdict = Review.Verdict.ACCEPT
    elif verdict == Review.Verdict.REJECT:
        value = None
    else:
        raise ReviewError(f"Unknown verdict {verdict!r}.")
    review = Review.objects.create(
        example=example,
        reviewer=user,
        proposal=proposal,
        verdict=verdict,
        value=value,
        seconds_spent=_seconds_on(example, user),
    )
    ReviewClaim.objects.filter(example=example).delete()
    # A review changes only the review state (queue examples are never gold,
    # so no adjudication outranks it): one update instead of a full re-sync.
    Example.objects.filter(pk=example.pk).update(
        review_state=ReviewState.REJECTED if verdict == Review.Verdict.REJECT else ReviewState.REVIEWED
    )
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
    Example.objects.filter(pk=example.pk).sync_queue_fields()
    ReviewClaim.objects.filter(example=example).delete()
    _claim(example.pk, user)
    example.refresh_from_db()
    return example


def reviewed_today(*, project: Project, user) -> int:
    start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return Review.objects.filter(example__project=project, reviewer=user, created_at__gte=start).count()


# --- bulk accept -----------------------------------------------------------------------------


def teacher_accuracy_on_gold(project: Project, *, threshold: float) -> dict:
    """How often the teacher is right on gold items at or above a confidence threshold."""
    gold = project.gold_sets.frozen_version()
    if gold is None:
        return {"gold_version": None, "items": 0, "accuracy": None}
    items = gold.items.select_related("example").filter(example__teacher_confidence__gte=threshold)
    pairs = [(i.example.teacher_label, i.label) for i in items if i.example.teacher_label and i.label]
    accuracy = sum(t == g for t, g in pairs) / len(pairs) if pairs else None
    return {"gold_version": gold.version, "items": len(pairs), "accuracy": accuracy}


def bulk_accept_preview(*, project: Project, filters: QueueFilter, threshold: float) -> dict:
    count = queue(project, filters).filter(teacher_confidence__gte=threshold).count()
    return {"count": count, "threshold": threshold, **teacher_accuracy_on_gold(project, threshold=threshold)}


@transaction.atomic
def bulk_accept(*, project: Project, user, filters: QueueFilter, threshold: float) -> int:
    examples = list(
        queue(project, filters).filter(teacher_confidence__gte=threshold).values_list("pk", flat=True)
    )
    proposals = {}
    for proposal in (
        Proposal.objects.filter(example_id__in=examples, value__isnull=False, error="")
        .exclude(agent__startswith=STUDENT_AGENT_PREFIX)
        .order_by("example_id", "created_at", "pk")
    ):
        proposals[proposal.example_id] = proposal  # the latest wins
    Review.objects.bulk_create(
        [
            Review(
                example_id=pk,
                reviewer=user,
                proposal=p,
                verdict=Review.Verdict.ACCEPT,
                value=p.value,
                is_bulk=True,
            )
            for pk, p in proposals.items()
        ],
        batch_size=1000,
    )
    Example.objects.filter(pk__in=list(proposals)).sync_queue_fields()
    return len(proposals)


# --- gold sets ---------------------------------------------------------------------------------


def gold_draft(project: Project) -> GoldSet | None:
    return project.gold_sets.filter(frozen_at__isnull=True).order_by("-version").first()


@transaction.atomic
def gold_draw(
    *,
    project: Project,
    size: int,
    stratified: bool = False,
    seed: int | None = None,
    import_batch_id: int | None = None,
    filters: QueueFilter | None = None,
) -> GoldSet:
    """Add N real examples to the draft gold set (made if needed); they leave training at once.

    The sample comes from the whole project, from one import batch (a team's
    own test file), or from the examples a review filter shows.
    """
    draft = gold_draft(project)
    if draft is None:
        latest = project.gold_sets.order_by("-version").first()
        draft = GoldSet.objects.create(project=project, version=(latest.version + 1) if latest else 1)
    candidates = (
        Example.objects.filter(project=project, is_gold=False)
        .exclude(source=Example.Source.SYNTHETIC)
        .exclude(gold_items__isnull=False)
    )
    if import_batch_id is not None:
        candidates = candidates.filter(import_batch_id=import_batch_id)
    if filters is not None:
        candidates = filters.apply(candidates)
    pool = list(candidates.values_list("pk", "teacher_label"))
    rng = random.Random(seed)
    if stratified:
        by_label: dict[str, list[int]] = {}
        for pk, label in pool:
            by_label.setdefault(label or "", []).append(pk)
        for members in by_label.values():
            rng.shuffle(members)
        chosen: list[int] = []
        # Round-robin over labels: every label gets its share before any gets more.
        while len(chosen) < size and any(by_label.values()):
            for members in by_label.values():
                if members and len(chosen) < size:
                    chosen.append(members.pop())
    else:
        chosen = [pk for pk, _ in rng.sample(pool, min(size, len(pool)))]
    GoldSetItem.objects.bulk_create([GoldSetItem(gold_set=draft, example_id=pk) for pk in chosen])
    Example.objects.filter(pk__in=chosen).update(is_gold=True)
    ReviewClaim.objects.filter(example_id__in=chosen).delete()
    return draft


# A blind label or adjudication of "no label fits" (spam, a test message, out of
# scope). For agreement it is a category of its own; a gold item whose final answer
# is a reject has no gold label (None) and is left out of every metric.
REJECT = "(reject)"


def _blind_reviews(gold_set: GoldSet):
    return Review.objects.filter(example__gold_items__gold_set=gold_set, kind=Review.Kind.BLIND)


def _answer(review: Review) -> str:
    """What a blind label or adjudication says, for agreement: a label or REJECT."""
    return REJECT if review.verdict == Review.Verdict.REJECT else review.value


def _require_item(gold_set: GoldSet, example: Example) -> None:
    if gold_set.is_frozen:
        raise ReviewError(f"Gold set v{gold_set.version} is frozen.")
    if not gold_set.items.filter(example=example).exists():
        raise ReviewError(f"Example {example.pk} is not an item of gold set v{gold_set.version}.")


def _verdict_and_value(example: Example, verdict: str, answer: Answer | None) -> tuple[str, Answer | None]:
    if verdict == Review.Verdict.REJECT:
        return Review.Verdict.REJECT, None
    if verdict != Review.Verdict.CORRECT:
        raise ReviewError(f"Unknown verdict {verdict!r}.")
    return Review.Verdict.CORRECT, _validated(example, answer)


def gold_next_blind(*, gold_set: GoldSet, user, skipped: list[int] | tuple = ()) -> Example | None:
    """A gold item this user has not labelled, with fewer than two blind labels.

    Items the user skipped come last, so they come back once nothing else is left.
    """
    # My blind labels as one uncorrelated subquery (NOT IN), read once: as a
    # correlated EXISTS, SQLite walked all my reviews for every gold item (1.9 s a
    # pick at 1,000 items for a reviewer with 2,400 reviews; 40 ms now).
    mine = Review.objects.filter(reviewer=user, kind=Review.Kind.BLIND).values("example_id")
    held_by_others = ReviewClaim.objects.filter(
        example=OuterRef("pk"), expires_at__gt=timezone.now()
    ).exclude(user=user)
    # Only ids are grouped and sorted (not every column of every gold item); the
    # chosen row is read after.
    candidates = (
        Example.objects.filter(gold_items__gold_set=gold_set)
        .exclude(pk__in=mine)
        .filter(~Exists(held_by_others))
        .annotate(blind=Count("reviews", filter=Q(reviews__kind=Review.Kind.BLIND)))
        .filter(blind__lt=2)
    )
    order = ["-blind", "pk"]  # finish half-done items first
    if skipped:
        # Only with something skipped: with none, the CASE is a constant, which PostgreSQL
        # reads in ORDER BY as a column position ("position 0 is not in select list").
        candidates = candidates.annotate(
            is_skipped=Case(When(pk__in=list(skipped), then=Value(1)), default=Value(0))
        )
        order.insert(0, "is_skipped")
    candidates = candidates.order_by(*order).values_list("pk", flat=True)
    for pk in candidates[:5]:
        if _claim(pk, user):
            return Example.objects.get(pk=pk)
    return None


@transaction.atomic
def gold_label_blind(
    *,
    gold_set: GoldSet,
    example: Example,
    user,
    label: str | None = None,
    value: Answer | None = None,
    verdict: str = "correct",
) -> Review:
    """One blind answer for a draft gold item: an answer (a label, a span set), or a reject."""
    _require_item(gold_set, example)
    verdict, value = _verdict_and_value(example, verdict, value if value is not None else label)
    reviewers = list(_blind_reviews(gold_set).filter(example=example).values_list("reviewer_id", flat=True))
    if user.pk in reviewers:
        raise ReviewError("You already labelled this gold item; a second reviewer must label it.")
    if len(reviewers) >= 2:
        raise ReviewError("This gold item already has two blind labels.")
    review = Review.objects.create(
        example=example,
        reviewer=user,
        kind=Review.Kind.BLIND,
        verdict=verdict,
        value=value,
        seconds_spent=_seconds_on(example, user),
    )
    ReviewClaim.objects.filter(example=example).delete()
    return review


def gold_status(gold_set: GoldSet) -> dict:
    """Per item: the two blind answers, the adjudication, and the final answer.

    `is_decided` says the item has a final answer; `final` is its label, or
    None when the answer is a reject (no label fits).
    """
    task = gold_set.project.task
    items = list(gold_set.items.select_related("example").order_by("pk"))
    blind: dict[int, list[Review]] = {}
    adjudicated: dict[int, Review] = {}
    for review in (
        Review.objects.filter(
            example_id__in=[i.example_id for i in items],
            kind__in=[Review.Kind.BLIND, Review.Kind.ADJUDICATION],
        )
        .order_by("created_at", "pk")
        .select_related("reviewer")
    ):
        if review.kind == Review.Kind.BLIND:
            blind.setdefault(review.example_id, []).append(review)
        else:
            adjudicated[review.example_id] = review  # the latest wins
    rows = []
    for item in items:
        labels = [_answer(r) for r in blind.get(item.example_id, [])][:2]
        adjudication = adjudicated.get(item.example_id)
        disagree = len(labels) == 2 and not (
            labels[0] == labels[1] or (REJECT not in labels and task.same(labels[0], labels[1]))
        )
        if adjudication is not None:
            answer = _answer(adjudication)
        elif len(labels) == 2 and not disagree:
            answer = labels[0]
        else:
            answer = None
        rows.append(
            {
                "item": item,
                "blind": blind.get(item.example_id, [])[:2],
                "labels": labels,
                "adjudication": adjudication,
                "is_decided": answer is not None,
                "is_rejected": answer == REJECT,
                "final": None if answer == REJECT else answer,
                "disagreed": disagree,
                "needs_adjudication": disagree and adjudication is None,
            }
        )
    return {
        "rows": rows,
        "items": len(rows),
        "double_labelled": sum(len(r["labels"]) == 2 for r in rows),
        "disagreements": sum(r["needs_adjudication"] for r in rows),
        "disagreed": sum(r["disagreed"] for r in rows),
        "final": sum(r["is_decided"] for r in rows),
        "rejected": sum(r["is_rejected"] for r in rows),
        # A reject ("nothing fits") reaches the task as None: one more category to agree on.
        "agreement": task.agreement(
            [tuple(None if a == REJECT else a for a in r["labels"]) for r in rows if len(r["labels"]) == 2],
            texts=[r["item"].example.text for r in rows if len(r["labels"]) == 2],
        ),
    }


def gold_next_disagreement(
    gold_set: GoldSet, *, skipped: list[int] | tuple = (), status: dict | None = None
) -> dict | None:
    """The next item whose blind labels disagree; skipped ones come last."""
    waiting = [r for r in (status or gold_status(gold_set))["rows"] if r["needs_adjudication"]]
    waiting.sort(key=lambda r: r["item"].example_id in skipped)
    return waiting[0] if waiting else None


@transaction.atomic
def gold_adjudicate(
    *,
    gold_set: GoldSet,
    example: Example,
    user,
    label: str | None = None,
    value: Answer | None = None,
    verdict: str = "correct",
) -> Review:
    """A lead's final answer for a draft item with two blind answers: one of them, an edit, or a reject."""
    _require_item(gold_set, example)
    verdict, value = _verdict_and_value(example, verdict, value if value is not None else label)
    # Settling needs two blind answers: a lead's word alone would skip the double labelling.
    if Review.objects.filter(example=example, kind=Review.Kind.BLIND).count() < 2:
        raise ReviewError("This gold item needs two blind labels before it can be adjudicated.")
    return Review.objects.create(
        example=example,
        reviewer=user,
        kind=Review.Kind.ADJUDICATION,
        verdict=verdict,
        value=value,
    )


@transaction.atomic
def gold_freeze(*, gold_set: GoldSet, user) -> GoldSet:
    status = gold_status(gold_set)
    missing = status["items"] - status["final"]
    if not status["items"]:
        raise ReviewError("The gold set has no items yet.")
    if missing:
        raise ReviewError(
            f"{missing} of {status['items']} items have no final label yet "
            "(two blind labels that agree, or an adjudication)."
        )
    for row in status["rows"]:
        # A rejected item keeps no label (None): no label fits, so no metric counts it.
        GoldSetItem.objects.filter(pk=row["item"].pk).update(label=row["final"])
    gold_set.freeze(user=user)
    Example.objects.filter(gold_items__gold_set=gold_set).sync_queue_fields()
    return gold_set


# --- likely label errors -----------------------------------------------------------------------


def quality_run_start(*, project: Project, user) -> QualityRun:
    from distillapp import rows

    run = QualityRun.objects.create(project=project, created_by=user)
    rows.enqueue(QualityRun, run.pk)
    return run


def quality_run(*, run: QualityRun) -> QualityRun:
    """Score every labelled, non-gold example: low scores are likely label errors.

    Out-of-sample probabilities from cross-validated logistic regression on
    MiniLM embeddings (annotation.quality), so an example's own label never
    vouches for itself.
    """
    import time

    from annotation.quality import label_quality_scores

    started = time.monotonic()  # the row was claimed by annotation.jobs.quality_run_job
    try:
        rows = [
            (pk, text, label)
            for pk, text, label in Example.objects.for_project(run.project)
            .not_gold()
            .with_current_label()
            .filter(current_label__isnull=False)
            .values_list("pk", "text", "current_label")
            if isinstance(label, str)
        ]
        scores = label_quality_scores([t for _, t, _ in rows], [lab for _, _, lab in rows]) if rows else []
        with transaction.atomic():
            Example.objects.filter(project=run.project).update(quality_score=None)
            Example.objects.bulk_update(
                [Example(pk=pk, quality_score=float(s)) for (pk, _, _), s in zip(rows, scores, strict=True)],
                ["quality_score"],
                batch_size=2000,
            )
        QualityRun.objects.filter(pk=run.pk).update(
            status=QualityRun.Status.SUCCEEDED,
            examples=len(rows),
            seconds=time.monotonic() - started,
            finished_at=timezone.now(),
        )
    except Exception as exc:
        QualityRun.objects.filter(pk=run.pk).update(
            status=QualityRun.Status.FAILED, error=str(exc)[:2000], finished_at=timezone.now()
        )
        raise
    run.refresh_from_db()
    return run
