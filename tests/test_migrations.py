"""Every model change comes with its migration (one was missing: prediction-log routes)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit as exc:  # --check exits non-zero when a migration is missing
        pytest.fail(f"missing migrations (exit {exc.code}):\n{out.getvalue()}")


@pytest.mark.django_db(transaction=True)
def test_renaming_the_answer_fields_keeps_their_data_both_ways(project):
    """annotation 0026 and training 0014 rename columns (#27): nothing is lost forwards or back."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("annotation", "0025_job_status"), ("training", "0013_job_status")]
    after = [("annotation", "0026_gold_item_answer"), ("training", "0014_prediction_answer_summary")]
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        example = old.get_model("annotation", "Example").objects.create(
            project_id=project.pk, text="charged twice", content_hash="x"
        )
        gold_set = old.get_model("annotation", "GoldSet").objects.create(project_id=project.pk, version=1)
        spans = {"spans": [{"start": 0, "end": 7, "field": "what"}]}
        item = old.get_model("annotation", "GoldSetItem").objects.create(
            gold_set_id=gold_set.pk, example_id=example.pk, label=spans
        )
        log = old.get_model("training", "PredictionLog").objects.create(
            project_id=project.pk, route="student", label="what ×1", student_label="what ×2", latency_ms=1.0
        )

        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new = executor.loader.project_state(after).apps
        assert new.get_model("annotation", "GoldSetItem").objects.get(pk=item.pk).answer == spans
        moved = new.get_model("training", "PredictionLog").objects.get(pk=log.pk)
        assert (moved.answer_summary, moved.student_answer_summary) == ("what ×1", "what ×2")

        executor = MigrationExecutor(connection)
        executor.migrate(before)
        assert old.get_model("annotation", "GoldSetItem").objects.get(pk=item.pk).label == spans
        back = old.get_model("training", "PredictionLog").objects.get(pk=log.pk)
        assert (back.label, back.student_label) == ("what ×1", "what ×2")
    finally:
        # Back to the latest schema: the tests after this one run on it.
        MigrationExecutor(connection).migrate(latest)
