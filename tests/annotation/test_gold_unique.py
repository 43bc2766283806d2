"""One blind gold label per reviewer and item, in the database too (issue #23)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from annotation import review
from annotation.models import Example, Review, content_hash
from tests.annotation.test_gold import corpus  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db


def test_the_database_refuses_a_second_blind_label_by_the_same_reviewer(project, reviewer):
    example = Example.objects.create(project=project, text="charged twice")
    Review.objects.create(
        example=example, reviewer=reviewer, kind="blind", verdict="correct", value="Billing"
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Review.objects.create(
            example=example, reviewer=reviewer, kind="blind", verdict="correct", value="Other"
        )
    # Reviews and adjudications are not blind labels: a lead may adjudicate again (the latest wins).
    Review.objects.create(
        example=example, reviewer=reviewer, kind="adjudication", verdict="correct", value="A"
    )
    Review.objects.create(
        example=example, reviewer=reviewer, kind="adjudication", verdict="correct", value="B"
    )


def test_a_double_submit_that_passed_the_check_is_a_review_error(project, corpus, reviewer, monkeypatch):  # noqa: F811
    draft = review.gold_draw(project=project, size=2)
    example = draft.items.first().example
    review.gold_label_blind(gold_set=draft, example=example, user=reviewer, label="Billing")
    # The twin request read the blind labels before the first one was written.
    monkeypatch.setattr("annotation.review.gold._blind_reviews", lambda gold_set: Review.objects.none())
    with pytest.raises(review.ReviewError, match="already labelled"):
        review.gold_label_blind(gold_set=draft, example=example, user=reviewer, label="Other")
    assert Review.objects.filter(kind="blind").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_each_reviewers_first_blind_label(project, reviewer, lead):
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate([("annotation", "0019_task_options")])
    try:
        apps = executor.loader.project_state([("annotation", "0019_task_options")]).apps
        OldExample = apps.get_model("annotation", "Example")
        OldReview = apps.get_model("annotation", "Review")
        example = OldExample.objects.create(
            project_id=project.pk, text="charged twice", content_hash=content_hash("charged twice")
        )
        first = OldReview.objects.create(
            example_id=example.pk, reviewer_id=reviewer.pk, kind="blind", verdict="correct", value="Billing"
        )
        OldReview.objects.create(
            example_id=example.pk, reviewer_id=reviewer.pk, kind="blind", verdict="correct", value="Other"
        )
        other = OldReview.objects.create(
            example_id=example.pk, reviewer_id=lead.pk, kind="blind", verdict="correct", value="Other"
        )
        executor = MigrationExecutor(connection)
        executor.migrate([("annotation", "0020_gold_blind_unique_teacher_bounds")])
        assert set(Review.objects.values_list("pk", flat=True)) == {first.pk, other.pk}
    finally:
        # Back to the latest schema: the tests after this one run on it.
        MigrationExecutor(connection).migrate(latest)
