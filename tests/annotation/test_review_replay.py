"""A verdict is on a card served to its reviewer: replays, stale and foreign cards are refused,
and the budget, hours and rounds count distinct examples (issue #23)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.urls import reverse

from annotation import review
from annotation.models import Example, Proposal, Review, ReviewClaim
from annotation.review import verdicts
from annotation.review.rounds import after_verdict, refresh_due, review_time, round_status, verdict_count
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def proposed(project, n: int) -> list[Example]:
    made = []
    for i in range(n):
        example = Example.objects.create(project=project, text=f"ticket number {i}")
        Proposal.objects.create(
            example=example, agent="teacher:m:v1", value="Billing", confidence=i / (n + 1)
        )
        made.append(example)
    Example.objects.filter(project=project).sync_queue_fields()
    return made


def act(client, project, **data):
    return client.post(
        reverse("annotation:review-act", args=[project.slug]), data, headers={"HX-Request": "true"}
    )


@pytest.fixture
def signals():
    sent = []

    def receiver(sender, project, **kwargs):
        sent.append(project.pk)

    refresh_due.connect(receiver, dispatch_uid="test-replay")
    yield sent
    refresh_due.disconnect(dispatch_uid="test-replay")


def test_a_replayed_verdict_adds_no_review_and_no_round(
    project, reviewer, reviewer_client, signals, django_capture_on_commit_callbacks
):
    project.refresh_every = 3
    project.review_budget = 10
    project.save()
    examples = proposed(project, 6)
    served = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
    with django_capture_on_commit_callbacks(execute=True):
        first = act(reviewer_client, project, example_id=served.pk, verdict="accept")
        assert first.status_code == 200
        # The attack of the issue: many posts cycling ids, served or not.
        for i in range(40):
            response = act(reviewer_client, project, example_id=examples[i % 4].pk, verdict="accept")
            assert response.status_code in (200, 409)
    # Only cards served to this reviewer were decided, each once; everything else was refused.
    counts = list(Review.objects.values_list("example_id", flat=True))
    assert len(counts) == len(set(counts))
    assert verdict_count(project) == Review.objects.count()
    assert len(signals) <= Review.objects.count() // 3
    assert round_status(project)["verdicts"] == Review.objects.count()


def test_a_verdict_on_a_card_not_served_to_me_is_refused(project, reviewer, lead, reviewer_client):
    examples = proposed(project, 3)
    theirs = review.review_next(project=project, user=lead, filters=review.QueueFilter())
    response = act(reviewer_client, project, example_id=theirs.pk, verdict="accept")
    assert response.status_code == 409
    assert "not served to you" in response.content.decode()
    # The refusal served me my own next card; a card nobody was served is refused too.
    never_served = next(e for e in examples if not ReviewClaim.objects.filter(example=e).exists())
    assert act(reviewer_client, project, example_id=never_served.pk, verdict="reject").status_code == 409
    assert not Review.objects.exists()
    with pytest.raises(review.NotServed):
        review.review_record(example=theirs, user=reviewer, verdict="accept")


def test_undo_gives_the_card_back_so_it_can_be_decided_again(project, reviewer, reviewer_client):
    proposed(project, 2)
    served = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
    review.review_record(example=served, user=reviewer, verdict="reject")
    with pytest.raises(review.NotServed):
        review.review_record(example=served, user=reviewer, verdict="accept")
    assert review.review_undo(project=project, user=reviewer).pk == served.pk
    assert act(reviewer_client, project, example_id=served.pk, verdict="accept").status_code == 200
    assert Review.objects.get().verdict == "accept"


def test_undo_and_redo_cycles_queue_one_refresh_per_round(
    project, reviewer, signals, django_capture_on_commit_callbacks
):
    project.refresh_every = 2
    project.save()
    proposed(project, 4)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            example = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
            review.review_record(example=example, user=reviewer, verdict="accept")
    assert signals == [project.pk]
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(10):
            back = review.review_undo(project=project, user=reviewer)
            review.review_record(example=back, user=reviewer, verdict="accept")
    assert signals == [project.pk]


def test_budget_rounds_and_hours_count_distinct_examples(project, reviewer, lead, signals):
    """Rows written before the claim check (or by an import) never count an example twice."""
    project.refresh_every = 2
    project.review_budget = 4
    project.review_budget_hours = 1
    project.save()
    examples = proposed(project, 3)
    for seconds in (30, 30, 30, 30):
        Review.objects.create(example=examples[0], reviewer=reviewer, verdict="accept", seconds_spent=seconds)
    Review.objects.create(example=examples[1], reviewer=reviewer, verdict="accept", seconds_spent=30)
    Example.objects.filter(project=project).sync_queue_fields()  # as every path that writes reviews does
    assert verdict_count(project) == 2
    status = round_status(project)
    assert status["verdicts"] == 2 and status["budget_left"] == 2
    assert review_time(project)["cards"] == 2 and review_time(project)["seconds"] == 60
    assert after_verdict(project) is True
    for _ in range(5):
        Review.objects.create(example=examples[1], reviewer=reviewer, verdict="accept")
        assert after_verdict(project) is False


def test_a_claim_taken_over_by_another_reviewer_is_not_mine(project, reviewer, lead):
    proposed(project, 1)
    served = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
    ReviewClaim.objects.filter(example=served).update(user=lead)
    with pytest.raises(review.NotServed):
        review.review_record(example=served, user=reviewer, verdict="accept")
    assert review.review_record(example=served, user=lead, verdict="accept").reviewer == lead


@pytest.mark.django_db(transaction=True)
def test_a_double_submit_at_the_same_moment_stores_one_verdict(project, reviewer, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one writer at a time: the race needs PostgreSQL's concurrent transactions")
    proposed(project, 3)
    served = review.review_next(project=project, user=reviewer, filters=review.QueueFilter())
    # Both requests are inside their transaction, just before deleting the claim, before
    # either deletes it (each waits up to a second).
    barrier = threading.Barrier(2)
    take_claim = verdicts._take_claim

    def wait_then_take(example, user):
        try:
            barrier.wait(timeout=1)
        except threading.BrokenBarrierError:
            pass
        return take_claim(example, user)

    monkeypatch.setattr(verdicts, "_take_claim", wait_then_take)
    statuses = []

    def press():
        try:
            statuses.append(
                act(client_for(reviewer), project, example_id=served.pk, verdict="accept").status_code
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=press) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200, 409]
    assert Review.objects.filter(example=served).count() == 1


def test_a_verdict_landing_while_the_queue_keys_are_recomputed_is_kept(project, reviewer, monkeypatch):
    """A quick run's key refresh reads the examples, computes, then writes: a verdict recorded
    in between stays recorded, so its card is not served again (bench/README.md "Load": 41
    examples reviewed twice in 10 minutes before)."""
    from annotation.models import examples as example_models

    served = proposed(project, 3)[0]
    original = example_models._TasksByProject.__missing__

    def verdict_meanwhile(self, project_id):
        # After the refresh's read, before its write: the reviewer's verdict lands.
        ReviewClaim.objects.create(
            example=served, user=reviewer, expires_at=served.created_at.replace(year=2100)
        )
        review.review_record(example=served, user=reviewer, verdict="accept")
        return original(self, project_id)

    monkeypatch.setattr(example_models._TasksByProject, "__missing__", verdict_meanwhile)
    Example.objects.filter(project=project).sync_queue_fields()
    served.refresh_from_db()
    assert served.review_state == "reviewed"
    assert not review.queue(project, review.QueueFilter()).filter(pk=served.pk).exists()
