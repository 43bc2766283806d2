"""The project's decided review cards, kept in the cache (annotation.review.rounds.decided_count):
counted from the database once, then followed by verdicts as they commit; any other change of a
card's state makes it count again."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test.utils import CaptureQueriesContext

from annotation import review
from annotation.models import Example, ReviewState, decided_key
from annotation.review.rounds import decided_count
from tests.annotation.test_review_replay import proposed

pytestmark = pytest.mark.django_db(transaction=True)


def decide(project, reviewer, verdict="accept"):
    example = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
    review.review_record(example=example, user=reviewer, verdict=verdict)
    return example


def test_verdicts_count_themselves_once_committed_and_the_database_is_not_counted_again(project, reviewer):
    from django.db import connection

    proposed(project, 6)
    assert decided_count(project) == 0
    assert cache.get(decided_key(project.pk)) == 0
    for _ in range(3):
        with transaction.atomic():
            decide(project, reviewer)
            # Inside its transaction the verdict counts; the cache has it only once committed.
            assert cache.get(decided_key(project.pk)) + 1 == decided_count(project)
    with CaptureQueriesContext(connection) as queries:
        assert decided_count(project) == 3
    assert not queries.captured_queries  # from the cache alone
    # A state written past the app (by hand) shows once something forgets the count.
    Example.objects.filter(project=project, review_state=ReviewState.UNREVIEWED).update(
        review_state=ReviewState.REJECTED
    )
    assert decided_count(project) == 3
    Example.objects.filter(project=project).sync_queue_fields()  # recomputes the states: forgets
    assert decided_count(project) == 3  # the proposals' examples are unreviewed again by their rows


def test_a_rolled_back_verdict_counts_nowhere_and_an_undo_counts_again(project, reviewer):
    proposed(project, 4)
    decide(project, reviewer)
    assert decided_count(project) == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        decide(project, reviewer)
        assert decided_count(project) == 2
        raise RuntimeError("the request failed after the verdict")
    assert decided_count(project) == 1 == cache.get(decided_key(project.pk))
    with transaction.atomic():
        review.review_undo(project=project, user=reviewer)
        assert decided_count(project) == 0  # the undo's own transaction counts from the database
    assert cache.get(decided_key(project.pk)) is None
    assert decided_count(project) == 0


def test_made_gold_leaves_the_count(project, reviewer):
    proposed(project, 5)
    decide(project, reviewer)
    assert decided_count(project) == 1
    decided = Example.objects.get(project=project, review_state=ReviewState.REVIEWED)
    review.gold_draw(project=project, size=5)  # draws every example, the decided one too
    assert Example.objects.get(pk=decided.pk).is_gold
    assert decided_count(project) == 0
