"""Step 1 of bench/review_bench.py (a child process): the database, the users, a project of either
task type with N examples imported through the import service, the teacher's and the student's
proposals and the queue fields written with plain SQL, and a label-quality run.

Standard library only at import time (the bench's parent imports the constants).
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

import review_bench_spans as spans_data
from bench_db import postgres_create

REPO_ROOT = Path(__file__).resolve().parent.parent
LABELS = [
    ("Billing", "Invoices, charges, refunds and payment methods."),
    ("Technical", "Errors, crashes, outages and things that do not work."),
    ("Account", "Logins, passwords, profiles and account settings."),
    ("Shipping", "Deliveries, tracking, returns and lost parcels."),
]
TEACHER_AGENT = "teacher:gpt-4o-mini:prompt-v1"
STUDENT_AGENT = "student:run-1"
SEED = 20261127
WORDS = (
    "refund invoice charge card payment double billed subscription plan upgrade cancel renewal "
    "receipt tax discount coupon price error crash login password reset account profile email "
    "address phone verify code blocked locked two-factor app website page slow timeout outage "
    "server sync update version install browser mobile order parcel package delivery tracking "
    "courier late lost damaged return exchange warehouse shipped missing wrong item please help "
    "urgent again still since yesterday today week month customer support ticket reply waiting "
    "thanks hello sorry issue problem question request my our your the a and but not with for"
).split()
PROPOSAL_COLUMNS = """(example_id, agent, value, confidence, raw_response, input_tokens, output_tokens,
                 cost_usd, latency_ms, error, confidence_method, cache_key, created_at)"""
# The queue fields the setup writes, checked against sync_queue_fields() on a sample.
QUEUE_FIELDS = [
    "review_state",
    "teacher_label",
    "teacher_confidence",
    "student_label",
    "student_confidence",
    "is_disagreement",
    "risk",
]


def log(message: str) -> None:
    print(f"[review-bench] {message}", file=sys.stderr, flush=True)


def setup_django() -> None:
    # DATABASE_URL, DISTILL_DATA_DIR, DJANGO_ALLOWED_HOSTS, DJANGO_SECURE and
    # DJANGO_SETTINGS_MODULE are set by the parent before it starts any child.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


def write_csv(path: Path, rows: int) -> None:
    """Classification: N unique texts of support-ticket words, each with an imported label."""
    rng = random.Random(SEED)
    labels = [name for name, _ in LABELS]
    with open(path, "w", newline="", encoding="utf-8", buffering=1024 * 1024) as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text", "label"])
        for n in range(1, rows + 1):
            # The counter keeps every text unique, so the project gets exactly N examples.
            text = " ".join(rng.choices(WORDS, k=rng.randint(8, 20))) + f" #{n}"
            writer.writerow([f"r{n:08d}", text.capitalize(), rng.choice(labels)])


def classification_proposals(cursor, project) -> tuple[int, int, int]:
    """The teacher's and the student's labels and the queue fields, all in SQL; (teacher rows,
    student rows, examples updated)."""
    labels_sql = "ARRAY[" + ", ".join("%s" for _ in LABELS) + "]"
    label_names = [name for name, _ in LABELS]
    cursor.execute("SELECT setseed(0.27)")
    # The teacher: one proposal per example, 1 s after the import's, so it is
    # the latest valid non-student proposal (the teacher label). It agrees with
    # the imported label 85 % of the time; confidences lean high, as LLMs' do.
    cursor.execute(
        f"""
        INSERT INTO annotation_proposal {PROPOSAL_COLUMNS}
        SELECT p.example_id, %s,
               CASE WHEN random() < 0.85 THEN p.value
                    ELSE to_jsonb(({labels_sql})[1 + floor(random() * 4)::int]) END,
               round((0.3 + 0.7 * sqrt(random()))::numeric, 4)::float8,
               '', 350, 6, 0.000060, 400, '', 'logprobs', '', p.created_at + interval '1 second'
        FROM annotation_proposal p JOIN annotation_example e ON e.id = p.example_id
        WHERE e.project_id = %s AND p.agent = 'import'
        """,
        [TEACHER_AGENT, *label_names, project.pk],
    )
    teacher_rows = cursor.rowcount
    # A student run has labelled a fifth of the examples.
    cursor.execute(
        f"""
        INSERT INTO annotation_proposal {PROPOSAL_COLUMNS}
        SELECT e.id, %s, to_jsonb(({labels_sql})[1 + floor(random() * 4)::int]),
               round(random()::numeric, 4)::float8, '', 0, 0, 0, 5, '', 'softmax', '',
               e.created_at + interval '2 seconds'
        FROM annotation_example e
        WHERE e.project_id = %s AND random() < 0.2
        """,
        [STUDENT_AGENT, *label_names, project.pk],
    )
    student_rows = cursor.rowcount
    cursor.execute("ANALYZE annotation_proposal")
    # The queue fields, as sync_queue_fields() computes them (checked on a sample).
    cursor.execute(
        """
        UPDATE annotation_example e
        SET teacher_label = t.value #>> '{}',
            teacher_confidence = t.confidence,
            student_label = coalesce(s.value #>> '{}', ''),
            student_confidence = s.confidence,
            is_disagreement = s.value IS NOT NULL AND s.value <> t.value,
            risk = CASE WHEN s.value IS NOT NULL AND s.value <> t.value THEN 1.0 ELSE 0.0 END,
            quality_score = random(),
            label_issue = random() < 0.1
        FROM annotation_proposal t
        LEFT JOIN annotation_proposal s ON s.example_id = t.example_id AND s.agent = %s
        WHERE t.example_id = e.id AND t.agent = %s AND e.project_id = %s
        """,
        [STUDENT_AGENT, TEACHER_AGENT, project.pk],
    )
    return teacher_rows, student_rows, cursor.rowcount


def extraction_proposals(cursor, project, rows_path: Path) -> tuple[int, int, int]:
    """The answers and queue fields review_bench_spans wrote (the task's own summary, risk and
    disagreement per text), copied into a temp table and moved with SQL; the same counts."""
    cursor.execute(
        "CREATE TEMP TABLE bench_answers (external_id text, teacher jsonb, teacher_conf float8,"
        " student jsonb, student_conf float8, teacher_label text, student_label text,"
        " is_disagreement boolean, risk float8) ON COMMIT DROP"
    )
    with open(rows_path, "rb") as rows, cursor.copy("COPY bench_answers FROM STDIN") as copy:
        while chunk := rows.read(1 << 20):
            copy.write(chunk)
    cursor.execute("ANALYZE bench_answers")
    joined = "FROM bench_answers b JOIN annotation_example e ON e.project_id = %s AND e.external_id = b.external_id"
    cursor.execute(
        f"""
        INSERT INTO annotation_proposal {PROPOSAL_COLUMNS}
        SELECT e.id, %s, b.teacher, b.teacher_conf, '', 420, 40, 0.000090, 600, '', 'logprobs', '',
               e.created_at + interval '1 second'
        {joined}
        """,
        [TEACHER_AGENT, project.pk],
    )
    teacher_rows = cursor.rowcount
    cursor.execute(
        f"""
        INSERT INTO annotation_proposal {PROPOSAL_COLUMNS}
        SELECT e.id, %s, b.student, b.student_conf, '', 0, 0, 0, 8, '', 'softmax', '',
               e.created_at + interval '2 seconds'
        {joined} WHERE b.student IS NOT NULL
        """,
        [STUDENT_AGENT, project.pk],
    )
    student_rows = cursor.rowcount
    cursor.execute("ANALYZE annotation_proposal")
    cursor.execute("SELECT setseed(0.27)")
    cursor.execute(
        """
        UPDATE annotation_example e
        SET teacher_label = b.teacher_label,
            teacher_confidence = b.teacher_conf,
            student_label = b.student_label,
            student_confidence = b.student_conf,
            is_disagreement = b.is_disagreement,
            risk = b.risk,
            quality_score = random(),
            label_issue = random() < 0.1
        FROM bench_answers b
        WHERE e.project_id = %s AND e.external_id = b.external_id
        """,
        [project.pk],
    )
    return teacher_rows, student_rows, cursor.rowcount


def quality_run_record(project, lead, examples: int, flag_coverage: float | None) -> None:
    """The finished label-quality run the queue's scores stand for: "auto" reads its flag
    coverage (kept at or above annotation.review.next_card.KEPT_FROM_COVERAGE)."""
    from django.utils import timezone

    from annotation.models import Example, QualityRun

    now = timezone.now()
    QualityRun.objects.create(
        project=project,
        created_by=lead,
        status=QualityRun.Status.SUCCEEDED,
        started_at=now,
        finished_at=now,
        examples=examples,
        seconds=60.0,
        flagged=Example.objects.filter(project=project, label_issue=True).count(),
        flag_coverage=flag_coverage,
    )


def setup(
    database_url: str,
    data_dir: str,
    examples: int,
    churn: float,
    result_file: Path,
    task_type: str = "classification",
    flag_coverage: float | None = None,
    quality_run: bool = True,
) -> dict:
    exists = not postgres_create(database_url)  # a copy of the migrated template
    setup_django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction

    from annotation import corpus, projects
    from annotation.corpus import import_batch_claim, import_batch_run
    from annotation.models import Example, Label, Membership, ReviewState
    from distillapp import embedded_redis

    # The import queues the similarity index job after it commits: the app's embedded Redis (in
    # the bench's temp data directory) takes it, as in measure; no worker runs it here.
    atexit.register(embedded_redis.stop, embedded_redis.ensure_started(), save=False)

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    log(f"migrate: {time.perf_counter() - started:.1f}s")

    tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
    User = get_user_model()
    lead = User.objects.create_user(username=f"rb-lead-{tag}", password=None)
    reviewers = [User.objects.create_user(username=f"rb-rev{i}-{tag}", password=None) for i in (1, 2)]
    slug = f"review-bench-{tag}"
    extraction = task_type == "extraction"
    project = projects.project_create(
        name=f"Review bench {tag}",
        slug=slug,
        user=lead,
        task_type=task_type,
        labels=spans_data.FIELDS if extraction else LABELS,
    )
    if extraction:
        # A booking has one date, one time, one party size and one name.
        Label.objects.filter(project=project).update(allows_many=False)
    for user in reviewers:
        projects.membership_set(project=project, username=user.username, role=Membership.Role.REVIEWER)
    # Written now too, so that the parent can clean up if a later part of the setup fails.
    partial = {"project_id": project.pk, "slug": slug, "db_created": not exists}
    partial["user_ids"] = [lead.pk, *(u.pk for u in reviewers)]
    result_file.write_text(json.dumps(partial))

    timings = {}
    started = time.perf_counter()
    csv_path = Path(data_dir) / "examples.csv"
    rows_path = Path(data_dir) / "answers.tsv"
    if extraction:
        project.refresh_from_db()
        spans_data.write_files(project.task, csv_path, rows_path, examples, SEED)
    else:
        write_csv(csv_path, examples)
    timings["generate_files"] = time.perf_counter() - started

    started = time.perf_counter()
    batch = corpus.import_batch_create(
        project=project,
        user=lead,
        file_name=csv_path.name,
        path=csv_path,
        label_column="" if extraction else "label",
    )
    if not import_batch_claim(batch.pk):
        raise SystemExit("could not claim the import batch")
    batch = import_batch_run(batch=batch)
    timings["import"] = time.perf_counter() - started
    if batch.status != "succeeded" or batch.rows_created != examples:
        raise SystemExit(
            f"import: status {batch.status}, {batch.rows_created} created, error {batch.error!r}"
        )
    log(f"imported {batch.rows_created:,} examples in {timings['import']:.1f}s")

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        # Statistics with this project's rows: in a database kept from an earlier run (--keep,
        # bench/quick.py) the planner otherwise takes the new project for a few rows and joins
        # its examples to every import proposal in a nested loop (minutes at 100k).
        cursor.execute("ANALYZE annotation_example")
        cursor.execute("ANALYZE annotation_proposal")
        if extraction:
            teacher_rows, student_rows, updated = extraction_proposals(cursor, project, rows_path)
        else:
            teacher_rows, student_rows, updated = classification_proposals(cursor, project)
    timings["proposals_and_queue_fields"] = time.perf_counter() - started
    if teacher_rows != examples or updated != examples:
        raise SystemExit(
            f"teacher proposals {teacher_rows}, queue rows updated {updated}, expected {examples}"
        )
    log(
        f"{teacher_rows:,} teacher + {student_rows:,} student proposals in {timings['proposals_and_queue_fields']:.1f}s"
    )
    if quality_run:
        quality_run_record(project, lead, examples, flag_coverage)

    # Check the SQL above against the app's own rule on a sample.
    sample = list(Example.objects.filter(project=project).order_by("?").values_list("pk", flat=True)[:300])
    before = {row["pk"]: row for row in Example.objects.filter(pk__in=sample).values("pk", *QUEUE_FIELDS)}
    Example.objects.filter(pk__in=sample).sync_queue_fields()
    after = {row["pk"]: row for row in Example.objects.filter(pk__in=sample).values("pk", *QUEUE_FIELDS)}
    mismatches = [pk for pk in sample if before[pk] != after[pk]]
    if mismatches:
        pk = mismatches[0]
        raise SystemExit(
            f"{len(mismatches)} of {len(sample)} examples' queue fields differ from sync_queue_fields(),"
            f" e.g. {before[pk]} against {after[pk]}"
        )
    disagreements = Example.objects.filter(project=project, is_disagreement=True).count()

    started = time.perf_counter()
    old_autocommit = connection.get_autocommit()
    connection.set_autocommit(True)
    with connection.cursor() as cursor:
        for table in ("annotation_example", "annotation_proposal"):
            cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute("SELECT version()")
        server = cursor.fetchone()[0]
    connection.set_autocommit(old_autocommit)
    timings["vacuum_analyze"] = time.perf_counter() - started

    reviewed_before = 0
    if churn > 0:
        # A project part-way through review, as autovacuum leaves it just before its
        # next run (by default it runs once 20 % of the rows have changed): a share of
        # the examples reviewed (two days ago, by the two reviewers) after the VACUUM,
        # so their pages are no longer all-visible.
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT setseed(0.5)")
            cursor.execute(
                """
                WITH picked AS MATERIALIZED (
                    SELECT e.id, t.value FROM annotation_example e
                    JOIN annotation_proposal t ON t.example_id = e.id AND t.agent = %(teacher)s
                    WHERE e.project_id = %(project)s AND random() < %(churn)s
                ), reviews AS (
                    INSERT INTO annotation_review
                        (example_id, reviewer_id, proposal_id, kind, verdict, value, seconds_spent,
                         is_bulk, created_at)
                    SELECT id, CASE WHEN id %% 2 = 0 THEN %(r1)s ELSE %(r2)s END, NULL, 'review',
                           'accept', value, 4.0, false, now() - interval '2 days'
                    FROM picked
                )
                UPDATE annotation_example e SET review_state = %(reviewed)s
                FROM picked WHERE e.id = picked.id
                """,
                {
                    "project": project.pk,
                    "teacher": TEACHER_AGENT,
                    "churn": churn,
                    "r1": reviewers[0].pk,
                    "r2": reviewers[1].pk,
                    "reviewed": ReviewState.REVIEWED,
                },
            )
            reviewed_before = cursor.rowcount
            cursor.execute("ANALYZE annotation_example")
            cursor.execute("ANALYZE annotation_review")
        timings["churn"] = time.perf_counter() - started
        log(f"{reviewed_before:,} examples reviewed after the VACUUM in {timings['churn']:.1f}s")
    return {
        "reviewed_before": reviewed_before,
        "project_id": project.pk,
        "slug": slug,
        "db_created": not exists,
        "user_ids": [lead.pk, *(u.pk for u in reviewers)],
        "server": server,
        "examples": Example.objects.filter(project=project).count(),
        "proposals": teacher_rows + student_rows + batch.proposals_created,
        "disagreements": disagreements,
        "setup_s": {k: round(v, 2) for k, v in timings.items()},
    }
