"""A verdict and the next card in a bounded number of queries (issue #25: the review page's
hot path; bench/review_bench.py measures the time)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from annotation import review
from annotation.models import Example, Label, Project, Proposal, QualityRun, Review, ReviewClaim
from tests.annotation.test_review_extraction import extraction  # noqa: F401  (a fixture)
from tests.annotation.test_review_replay import act, proposed

pytestmark = pytest.mark.django_db

# Issue #25: at most 10. Session (from the cache: none), user, project with my role and its
# labels, the example with its teacher proposal, the claim taken (DELETE ... RETURNING), the
# state moved, the review, the card's counts (the round's, reviewed today, remaining, the last
# scoring's flag coverage "auto" reads), the next card, its claim (one upsert), its proposals;
# plus the test transaction's savepoint pair. 33 before issue #25, 17 in session 3.
MAX_QUERIES = 10 + 2


def limited_selects(sql: str, limit: str) -> list[str]:
    """Each parenthesised SELECT of `sql` that ends with `limit`, from its opening bracket."""
    found = []
    for match in re.finditer(re.escape(limit) + r"\)", sql):
        depth, i = 0, match.start()
        while i > 0:
            i -= 1
            depth += {")": 1, "(": -1}.get(sql[i], 0)
            if depth < 0:
                break
        found.append(sql[i : match.end()])
    return found


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
    capped = [sub for q in captured.captured_queries for sub in limited_selects(q["sql"], "LIMIT 1001")]
    assert capped, "the remaining count ran no capped COUNT"
    assert all("ORDER BY" not in sql for sql in capped)


ORDERS = ["auto", "confidence", "errors", "kept", "disagreement"]


def pool(project, n: int) -> None:
    """`n` cards with a teacher's answer, a student's on every other one, label-quality scores
    and a finished scoring: every order has its keys."""
    spans = project.task_type == "extraction"
    for i in range(n):
        text = f"Table for {i % 9 + 1} on {i % 28 + 1} May, ticket {i}"
        example = Example.objects.create(
            project=project, text=text, quality_score=(i % 7) / 7, label_issue=i % 5 == 0
        )
        teacher = {"spans": [{"start": 10, "end": 11, "field": "people"}]} if spans else "Billing"
        Proposal.objects.create(example=example, agent="teacher:m:v1", value=teacher, confidence=i / (n + 1))
        if i % 2:
            student = {"spans": [{"start": 15, "end": 21, "field": "date"}]} if spans else "Other"
            Proposal.objects.create(example=example, agent="student:run-1", value=student, confidence=0.9)
    Example.objects.filter(project=project).sync_queue_fields()
    QualityRun.objects.create(project=project, status=QualityRun.Status.SUCCEEDED, flag_coverage=0.8)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("task_type", ["classification", "extraction"])
def test_every_order_of_both_task_types_takes_at_most_ten_queries_a_verdict(
    request, task_type, order, reviewer, reviewer_client, django_assert_max_num_queries
):
    project = request.getfixturevalue("project" if task_type == "classification" else "extraction")
    project.refresh_every = 5
    project.save()
    pool(project, 12)
    first = reviewer_client.get(reverse("annotation:review", args=[project.slug]), {"strategy": order})
    shown = card_id(first)
    correction = (
        {"verdict": "correct", "value": '{"spans": [{"start": 0, "end": 5, "field": "name"}]}'}
        if task_type == "extraction"
        else {"verdict": "correct", "label": "Other"}
    )
    for data in ({"verdict": "accept"}, correction, {"verdict": "reject"}):
        with django_assert_max_num_queries(MAX_QUERIES):
            response = act(reviewer_client, project, example_id=shown, **data)
        assert response.status_code == 200, response.content.decode()[:300]
        assert 'class="msg msg-error"' not in response.content.decode()
        shown, decided = card_id(response), shown
        assert shown != decided
    assert Review.objects.filter(example__project=project).count() == 3
    corrected = Review.objects.get(example__project=project, verdict="correct")
    assert corrected.value == (
        {"spans": [{"start": 0, "end": 5, "field": "name"}]} if task_type == "extraction" else "Other"
    )
    accepted = Review.objects.get(example__project=project, verdict="accept")
    assert accepted.proposal.agent == "teacher:m:v1" and accepted.value == accepted.proposal.value


def test_the_card_counts_read_in_one_query_are_those_the_queue_holds(project, reviewer, reviewer_client):
    pool(project, 8)
    served = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
    response = act(reviewer_client, project, example_id=served.pk, verdict="accept")
    html = response.content.decode()
    assert re.search(r'data-count="reviewed-today">1<', html)
    assert re.search(r'data-count="remaining">7<', html)
    counts = review.queue_counts(Project.objects.get(pk=project.pk), reviewer, review.QueueFilter())
    assert (counts.decided, counts.reviewed_today, counts.remaining, counts.flag_coverage) == (1, 1, 7, 0.8)
    # Capped: one past the cap says "more than the cap".
    assert (
        review.queue_counts(
            Project.objects.get(pk=project.pk), reviewer, review.QueueFilter(label="none such")
        ).remaining
        == 0
    )


def test_labels_read_with_the_project_are_the_labels_read_alone(request):
    bookings = request.getfixturevalue("extraction")
    Label.objects.create(
        project=bookings, name="aardvark", order=0, key="z", color="#123456", allows_many=False
    )
    alone = [
        (label.pk, label.name, label.description, label.key, label.order, label.color, label.allows_many)
        for label in bookings.labels.all()
    ]
    together = Project.objects.with_labels().get(pk=bookings.pk).label_list()
    assert [
        (label.pk, label.name, label.description, label.key, label.order, label.color, label.allows_many)
        for label in together
    ] == alone
    assert any(not label.allows_many for label in together) and any(label.allows_many for label in together)
    empty = Project.objects.create(name="No labels", slug="no-labels")
    assert Project.objects.with_labels().get(pk=empty.pk).label_list() == []


def test_a_compiled_once_subquery_inside_another_query_is_compiled_for_its_place(project):
    """Where the outer table is renamed (the projects read as a subquery of the labels), the
    kept SQL would name the wrong table: the expression is compiled for its place."""
    from django.db.models import JSONField, OuterRef, Subquery

    inner = Project.objects.with_labels().filter(pk=OuterRef("project_id")).values("_label_rows")
    rows = Label.objects.filter(project=project).annotate(rows=Subquery(inner, output_field=JSONField()))
    names = sorted(label.name for label in project.labels.all())
    assert names and all(sorted(r["name"] for r in label.rows) == names for label in rows)
    # And the kept SQL where the projects are the query itself.
    assert (
        sorted(label.name for label in Project.objects.with_labels().get(pk=project.pk).label_list()) == names
    )


def test_reviewed_today_is_kept_as_the_day_goes_and_counted_again_after_an_undo(
    project, reviewer, reviewer_client, lead, monkeypatch
):
    """Today's count keeps what it counted (with the newest verdict's id) and counts only the
    verdicts since: counting the whole day joined every verdict to its example."""
    import redis

    from tests.conftest import make_project

    pool(project, 10)
    other = make_project(lead=lead, reviewer=reviewer, slug="other")
    pool(other, 3)

    def today(response) -> int:
        return int(re.search(r'data-count="reviewed-today">(\d+)<', response.content.decode()).group(1))

    shown = card_id(reviewer_client.get(reverse("annotation:review", args=[project.slug])))
    for expected in (1, 2, 3):
        response = act(reviewer_client, project, example_id=shown, verdict="accept")
        assert today(response) == expected
        shown = card_id(response)
    # Verdicts in another project are not this project's.
    elsewhere = card_id(reviewer_client.get(reverse("annotation:review", args=[other.slug])))
    assert today(act(reviewer_client, other, example_id=elsewhere, verdict="accept")) == 1
    # An undo takes one back.
    undo = reviewer_client.post(
        reverse("annotation:review-undo", args=[project.slug]), headers={"HX-Request": "true"}
    )
    assert today(undo) == 2

    # With Redis down (every cache call refused) the day is counted from scratch.
    class Down:
        def __getattr__(self, name):
            def refused(*args, **kwargs):
                raise redis.ConnectionError("Redis is down")

            return refused

    monkeypatch.setattr("annotation.review.counts.cache", Down())
    assert today(act(reviewer_client, project, example_id=card_id(undo), verdict="reject")) == 3
