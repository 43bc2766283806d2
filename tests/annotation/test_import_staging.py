"""The import's staging (annotation.corpus.staging): rows settled lot by lot, and the moves'
foreign keys, checked by the database or vouched for by the import."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from annotation.corpus import importing, staging
from annotation.models import Example, ImportBatch, Proposal, Review
from tests.annotation.test_import import run_import

pytestmark = pytest.mark.django_db

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's staging and foreign-key checks"
)

# Duplicates within a lot, across lots (case and spacing variants) and of a text the
# project already has; the first occurrence in the file is the one kept.
FILE = (
    "id,text,label\n"
    "a1,alpha one,Billing\n"
    "a2,ALPHA   one,Technical support\n"
    "a3,beta two,Technical support\n"
    "a4,already here,Billing\n"
    "a5,gamma three,Billing\n"
    "a6,Beta Two,Billing\n"
    "a7,delta four,Technical support\n"
    "a8,alpha one,Technical support\n"
    "a9,epsilon five,Billing\n"
    "a10,gamma  THREE,Technical support\n"
    "a11,zeta six,Technical support\n"
)
FIRSTS = [
    ("a1", "alpha one", "Billing"),
    ("a3", "beta two", "Technical support"),
    ("a5", "gamma three", "Billing"),
    ("a7", "delta four", "Technical support"),
    ("a9", "epsilon five", "Billing"),
    ("a11", "zeta six", "Technical support"),
]


@pytest.mark.parametrize("lot, settle", [(3, 4), (2, 1), (5000, 200_000)])
def test_rows_settled_in_lots_keep_the_first_occurrence_in_file_order(
    project, tmp_path, monkeypatch, lot, settle
):
    monkeypatch.setattr(importing, "STAGE_BATCH_ROWS", lot)
    monkeypatch.setattr(staging, "SETTLE_ROWS", settle)
    Example.objects.create(project=project, text="Already here", source=Example.Source.TRAFFIC)
    batch = run_import(project, tmp_path, FILE, label_column="label")
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    assert (batch.rows_read, batch.rows_created, batch.rows_duplicate, batch.proposals_created) == (
        11,
        6,
        5,
        6,
    )
    imported = Example.objects.filter(project=project, source=Example.Source.IMPORTED).order_by("pk")
    assert [(e.external_id, e.text) for e in imported] == [(i, t) for i, t, _ in FIRSTS]
    assert [e.proposals.get().value for e in imported] == [label for _, _, label in FIRSTS]
    assert not Example.objects.get(text="Already here").proposals.exists()


@postgres_only
def test_the_moves_skip_row_checks_only_inside_and_vouch_for_every_key(project, tmp_path):
    with staging.Stage(project_id=project.pk) as stage, connection.cursor() as cursor:
        assert stage._keys_vouched()
        batch = ImportBatch.objects.create(project=project, file_name="x.csv", format="csv")
        with stage.keys_checked_here(batch_id=batch.pk):
            cursor.execute("SHOW session_replication_role")
            assert cursor.fetchone() == ("replica",)
        cursor.execute("SHOW session_replication_role")
        assert cursor.fetchone() == ("origin",)
        # A foreign key the import does not know of: every row is checked again.
        cursor.execute("ALTER TABLE annotation_proposal ADD COLUMN audit_id bigint REFERENCES auth_user (id)")
        assert not stage._keys_vouched()


@postgres_only
def test_a_trigger_on_the_written_tables_still_fires_for_imported_rows(project, tmp_path):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE import_trigger_count (n integer)")
        cursor.execute(
            "CREATE FUNCTION import_trigger_counted() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO import_trigger_count VALUES (1); RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER counted AFTER INSERT ON annotation_proposal "
            "FOR EACH ROW EXECUTE FUNCTION import_trigger_counted()"
        )
        batch = run_import(project, tmp_path, FILE, label_column="label")
        assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
        cursor.execute("SELECT count(*) FROM import_trigger_count")
        assert cursor.fetchone() == (batch.proposals_created,) == (7,)


@postgres_only
def test_a_role_that_may_not_switch_off_row_checks_imports_the_same(project, lead, tmp_path):
    # Not a superuser and no SET right on session_replication_role: the database checks every
    # key at COMMIT, as before (here at the savepoint's end: the constraints are made immediate).
    role = f"import_plain_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role}")
        cursor.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        cursor.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        cursor.execute(f"SET LOCAL ROLE {role}")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        batch = run_import(project, tmp_path, FILE, label_column="label", label_meaning="verified", user=lead)
        cursor.execute("SHOW session_replication_role")
        assert cursor.fetchone() == ("origin",)
    assert batch.status == ImportBatch.Status.SUCCEEDED, batch.error
    assert (batch.rows_created, batch.proposals_created) == (7, 7)
    assert Review.objects.filter(example__project=project, reviewer=lead).count() == 7
    assert not Proposal.objects.filter(example__project=project).exists()
