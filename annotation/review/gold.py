"""Gold sets: drawing real examples, labelling them blind twice, adjudicating, freezing.

A draft gold set's items leave training at once; two reviewers label each one without
seeing the other's answer (or the teacher's), a lead settles disagreements, and a frozen
version is what every evaluation is measured against.
"""

from __future__ import annotations

import random

from django.db import IntegrityError, transaction
from django.db.models import Case, Count, Exists, OuterRef, Q, Value, When
from django.utils import timezone

from annotation.models import Example, GoldSet, GoldSetItem, Project, Review, ReviewClaim, forget_decided
from annotation.review.next_card import QueueFilter, card_claim
from annotation.review.verdicts import ReviewError, seconds_on_card, validated_answer
from tasks.base import Answer


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
    rng = random.Random(seed)
    if stratified:
        # Strata are the task's (a label; for spans, the set of fields the teacher marked).
        task = project.task
        by_label: dict[str, list[int]] = {}
        for pk, proposed in (
            candidates.with_current_label().order_by("pk").values_list("pk", "proposed_value")
        ):
            by_label.setdefault(task.stratum(proposed) if proposed is not None else "", []).append(pk)
        for members in by_label.values():
            rng.shuffle(members)
        chosen: list[int] = []
        # Round-robin over labels: every label gets its share before any gets more.
        while len(chosen) < size and any(by_label.values()):
            for members in by_label.values():
                if members and len(chosen) < size:
                    chosen.append(members.pop())
    else:
        pool = list(candidates.order_by("pk").values_list("pk", flat=True))
        chosen = rng.sample(pool, min(size, len(pool)))
    GoldSetItem.objects.bulk_create([GoldSetItem(gold_set=draft, example_id=pk) for pk in chosen])
    Example.objects.filter(pk__in=chosen).update(is_gold=True)
    forget_decided([draft.project_id])  # a decided card drawn into gold leaves the queue's count
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
    return Review.Verdict.CORRECT, validated_answer(example, answer)


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
        if card_claim(pk, user):
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
    # Two reviewers submitting at once both count one label, and a third would slip past the
    # "two labels" check: the example's row lock makes the check and the write one step.
    Example.objects.select_for_update().filter(pk=example.pk).first()
    reviewers = list(_blind_reviews(gold_set).filter(example=example).values_list("reviewer_id", flat=True))
    if user.pk in reviewers:
        raise ReviewError("You already labelled this gold item; a second reviewer must label it.")
    if len(reviewers) >= 2:
        raise ReviewError("This gold item already has two blind labels.")
    try:
        with transaction.atomic():
            review = Review.objects.create(
                example=example,
                reviewer=user,
                kind=Review.Kind.BLIND,
                verdict=verdict,
                value=value,
                seconds_spent=seconds_on_card(example, user),
            )
    except IntegrityError:  # review_one_blind_label_per_reviewer: my double-submit's twin won
        raise ReviewError("You already labelled this gold item; a second reviewer must label it.") from None
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
    task = gold_set.project.task
    for row in status["rows"]:
        # A rejected item keeps no label (None): no label fits, so no metric counts it. The
        # task keeps what it needs of the blind answers (summarisation: each as a reference).
        final = row["final"]
        if final is not None:
            final = task.gold_answer(final, [a for a in row["labels"] if a != REJECT])
        GoldSetItem.objects.filter(pk=row["item"].pk).update(answer=final)
    gold_set.freeze(user=user)
    Example.objects.filter(gold_items__gold_set=gold_set).sync_queue_fields()
    return gold_set
