"""A verdict and the next card in a bounded number of queries (issue #25: the review page's
hot path; bench/review_bench.py measures the time)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from annotation import review
from annotation.models import Review, ReviewClaim
from tests.annotation.test_review_replay import act, proposed

pytestmark = pytest.mark.django_db

# Session (from the cache: none), user, project with my role, the example, labels, the
# teacher's proposal, the claim taken (DELETE ... RETURNING), the state moved, the review,
# the round's count, the last scored quality run (the order "auto" serves), the next card, its
# claim (one upsert), its proposals, the last quality run of any status (shown), reviewed
# today, remaining; plus the test transaction's savepoint pair. 33 before issue #25.
MAX_QUERIES = 19


def card_id(response) -> int:
    return int(re.search(r'name="example_id" value="(\d+)"', response.content.decode()).group(1))


def test_a_verdict_and_the_next_card_take_a_bounded_number_of_queries(
    project, reviewer, reviewer_client, django_assert_max_num_queries
):
    project.refresh_every = 5
    project.save()
    proposed(project, 30)
    served = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
    first = act(reviewer_client, project, example_id=served.pk, verdict="accept")
    with django_assert_max_num_queries(MAX_QUERIES):
        response = act(reviewer_client, project, example_id=card_id(first), verdict="accept")
    assert response.status_code == 200
    assert Review.objects.count() == 2
    # The next card is claimed for me and is my only claim in the project.
    assert list(ReviewClaim.objects.filter(user=reviewer).values_list("example_id", flat=True)) == [
        card_id(response)
    ]


def test_after_an_undo_the_undone_card_is_my_only_claim_and_the_next_verdict_serves_a_fresh_card(
    project, reviewer, reviewer_client
):
    proposed(project, 6)
    served = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
    shown = card_id(act(reviewer_client, project, example_id=served.pk, verdict="accept"))
    undo = reviewer_client.post(
        reverse("annotation:review-undo", args=[project.slug]), headers={"HX-Request": "true"}
    )
    assert card_id(undo) == served.pk
    # The card that was open goes back to the pool: nobody holds it.
    assert not ReviewClaim.objects.filter(example_id=shown).exists()
    assert list(ReviewClaim.objects.filter(user=reviewer).values_list("example_id", flat=True)) == [served.pk]
    after = act(reviewer_client, project, example_id=served.pk, verdict="reject")
    assert after.status_code == 200
    assert card_id(after) == shown  # the queue's order gives it back first
    assert ReviewClaim.objects.filter(user=reviewer).count() == 1


def test_the_remaining_count_does_not_order_the_queue(
    project, reviewer, reviewer_client, django_assert_max_num_queries
):
    """Ordered by id, PostgreSQL walks the primary key through every other project's rows to
    find 1,001 of this one's (20 ms beside a 100k-row import, bench/README.md, regression
    guard); the count needs no order."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    proposed(project, 5)
    with CaptureQueriesContext(connection) as captured:
        response = reviewer_client.get(reverse("annotation:review", args=[project.slug]))
    assert response.status_code == 200
    counts = [
        q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT COUNT(*) FROM (SELECT")
    ]
    assert counts, "the remaining count ran no capped COUNT"
    assert all("ORDER BY" not in sql for sql in counts)
