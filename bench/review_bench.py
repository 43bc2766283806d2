#!/usr/bin/env python
"""Benchmark of the review queue (annotation.review.verdicts, annotation.views.review) on PostgreSQL.

    python bench/review_bench.py [--examples N] [--actions A] [--warmup W] [--strategy S]
                                 [--churn F] [--synchronous-commit on|off]
                                 [--database-url URL] [--explain] [--keep]

Target (from the issue): the server time for an action plus the next card is
under 50 ms at the median with 100,000 examples in the project.

Steps, each in its own child process (the parent only uses the standard
library, plus psycopg in the cleanup child):

1. setup: create the bench database if it is missing, `migrate`, create a
   lead and two reviewers and a project with 4 labels; write N unique rows
   (id,text,label) to a temp CSV and import them with the import service
   (which creates one `import` proposal per example and sets teacher_label);
   then, with plain SQL, add one teacher proposal per example (with a
   confidence; it agrees with the imported label 85 % of the time), one
   student proposal for 20 % of them, a quality score (10 % flagged as likely
   label errors, for the "kept" order), and set the queue
   fields (teacher_label, teacher_confidence, student_*, is_disagreement) from
   them exactly as ExampleQuerySet.sync_queue_fields() would; a sample of 300
   examples is re-synced with sync_queue_fields() to check that. Then
   VACUUM ANALYZE (what autovacuum would have done by the time anyone reviews).
   With --churn F, a share F of the examples is then marked reviewed (with
   review rows) without a VACUUM: the table as autovacuum leaves it just
   before its next run, when index-only scans need many heap visits.
2. measure: the real request path through django.test.Client (middleware,
   sessions, auth, the view, the database, template rendering). Each reviewer
   has their own client (force_login). The first card is a plain GET of the
   review page; then W warm-up and A timed POSTs to the review-act URL with an
   HX-Request header, alternating the two reviewers so that their claims
   interact; the verdicts are mixed (60 % accept, 25 % correct to a random
   label, 15 % reject) and the example_id is the data-example-id of the card
   the previous response returned. Each full client.post() is timed. A second
   loop then times the parts directly (the same calls the view makes):
   loading the example, review.review_record, review.review_next,
   views.review._card_context (and, separately, its `remaining` count and
   reviewed_today) and rendering the #card partial. Every SQL statement of
   the timed POSTs is timed too (connection.execute_wrapper) and the costliest
   are listed in `top_queries`; --explain prints EXPLAIN (ANALYZE, BUFFERS) of
   the slowest SELECTs on stderr.
3. cleanup (unless --keep): DROP DATABASE if this run created it, else delete
   the project's rows and the bench users with plain SQL.

Exactly one JSON object goes to stdout; progress goes to stderr. The exit
status is non-zero if a step failed (the target being missed is reported in
targets_met, not in the exit status).
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import csv
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_db import admin_url, postgres_create, quote_ident  # noqa: E402
from import_bench import backend_cpu_seconds, delete_project, run_child  # noqa: E402  (stdlib-only helpers)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/distillapp_review_bench"
TARGET_MEDIAN_MS = 50.0
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


def log(message: str) -> None:
    print(f"[review-bench] {message}", file=sys.stderr, flush=True)


def setup_django() -> None:
    # DATABASE_URL, DISTILL_DATA_DIR, DJANGO_ALLOWED_HOSTS and DJANGO_SETTINGS_MODULE
    # are set by the parent before it starts any child.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- step 1: database, users, project, examples (child process) -----------------------


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(SEED)
    labels = [name for name, _ in LABELS]
    with open(path, "w", newline="", encoding="utf-8", buffering=1024 * 1024) as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text", "label"])
        for n in range(1, rows + 1):
            # The counter keeps every text unique, so the project gets exactly N examples.
            text = " ".join(rng.choices(WORDS, k=rng.randint(8, 20))) + f" #{n}"
            writer.writerow([f"r{n:08d}", text.capitalize(), rng.choice(labels)])


def setup(database_url: str, data_dir: str, examples: int, churn: float, result_file: Path) -> dict:
    exists = not postgres_create(database_url)  # a copy of the migrated template
    setup_django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction

    from annotation import corpus, projects
    from annotation.corpus import import_batch_claim, import_batch_run
    from annotation.models import Example, Membership, ReviewState

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    log(f"migrate: {time.perf_counter() - started:.1f}s")

    tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
    User = get_user_model()
    lead = User.objects.create_user(username=f"rb-lead-{tag}", password=None)
    reviewers = [User.objects.create_user(username=f"rb-rev{i}-{tag}", password=None) for i in (1, 2)]
    slug = f"review-bench-{tag}"
    project = projects.project_create(name=f"Review bench {tag}", slug=slug, user=lead, labels=LABELS)
    for user in reviewers:
        projects.membership_set(project=project, username=user.username, role=Membership.Role.REVIEWER)
    # Written now too, so that the parent can clean up if a later part of the setup fails.
    partial = {"project_id": project.pk, "slug": slug, "db_created": not exists}
    partial["user_ids"] = [lead.pk, *(u.pk for u in reviewers)]
    result_file.write_text(json.dumps(partial))

    timings = {}
    started = time.perf_counter()
    csv_path = Path(data_dir) / "examples.csv"
    write_csv(csv_path, examples)
    timings["generate_csv"] = time.perf_counter() - started

    started = time.perf_counter()
    batch = corpus.import_batch_create(
        project=project, user=lead, file_name=csv_path.name, path=csv_path, label_column="label"
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

    labels_sql = "ARRAY[" + ", ".join("%s" for _ in LABELS) + "]"
    label_names = [name for name, _ in LABELS]
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.27)")
        # The teacher: one proposal per example, 1 s after the import's, so it is
        # the latest valid non-student proposal (the teacher label). It agrees with
        # the imported label 85 % of the time; confidences lean high, as LLMs' do.
        cursor.execute(
            f"""
            INSERT INTO annotation_proposal
                (example_id, agent, value, confidence, raw_response, input_tokens, output_tokens,
                 cost_usd, latency_ms, error, confidence_method, cache_key, created_at)
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
            INSERT INTO annotation_proposal
                (example_id, agent, value, confidence, raw_response, input_tokens, output_tokens,
                 cost_usd, latency_ms, error, confidence_method, cache_key, created_at)
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
        # The queue fields, as sync_queue_fields() computes them (checked below).
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
        updated = cursor.rowcount
    timings["proposals_and_queue_fields"] = time.perf_counter() - started
    if teacher_rows != examples or updated != examples:
        raise SystemExit(
            f"teacher proposals {teacher_rows}, queue rows updated {updated}, expected {examples}"
        )
    log(
        f"{teacher_rows:,} teacher + {student_rows:,} student proposals in {timings['proposals_and_queue_fields']:.1f}s"
    )

    # Check the SQL above against the app's own rule on a sample.
    fields = ["review_state", "teacher_label", "teacher_confidence", "student_label", "student_confidence"]
    fields += ["is_disagreement", "risk"]
    sample = list(Example.objects.filter(project=project).order_by("?").values_list("pk", flat=True)[:300])
    before = {row["pk"]: row for row in Example.objects.filter(pk__in=sample).values("pk", *fields)}
    Example.objects.filter(pk__in=sample).sync_queue_fields()
    after = {row["pk"]: row for row in Example.objects.filter(pk__in=sample).values("pk", *fields)}
    mismatches = sum(before[pk] != after[pk] for pk in sample)
    if mismatches:
        raise SystemExit(
            f"{mismatches} of {len(sample)} examples' queue fields differ from sync_queue_fields()"
        )

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
                    SELECT id, teacher_label FROM annotation_example
                    WHERE project_id = %(project)s AND random() < %(churn)s
                ), reviews AS (
                    INSERT INTO annotation_review
                        (example_id, reviewer_id, proposal_id, kind, verdict, value, seconds_spent,
                         is_bulk, created_at)
                    SELECT id, CASE WHEN id %% 2 = 0 THEN %(r1)s ELSE %(r2)s END, NULL, 'review',
                           'accept', to_jsonb(teacher_label), 4.0, false, now() - interval '2 days'
                    FROM picked
                )
                UPDATE annotation_example e SET review_state = %(reviewed)s
                FROM picked WHERE e.id = picked.id
                """,
                {
                    "project": project.pk,
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
        "setup_s": {k: round(v, 2) for k, v in timings.items()},
    }


# --- step 2: the measurement (child process) ---------------------------------------------


CARD_ID = re.compile(r'data-example-id="(\d+)"')


def card_id(response) -> int | None:
    if response.status_code != 200:
        raise SystemExit(f"{response.request['PATH_INFO']}: HTTP {response.status_code}")
    match = CARD_ID.search(response.content.decode())
    return int(match.group(1)) if match else None


class QueryTimer:
    """connection.execute_wrapper: the time of every SQL statement, by statement text."""

    def __init__(self) -> None:
        self.by_sql: dict[str, list[float]] = {}
        self.params: dict[str, object] = {}
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            self.by_sql.setdefault(sql, []).append(elapsed)
            self.params[sql] = params
            self.count += 1
            self.seconds += elapsed


def verdict_for(rng: random.Random, labels: list[str]) -> dict:
    draw = rng.random()
    if draw < 0.60:
        return {"verdict": "accept"}
    if draw < 0.85:
        return {"verdict": "correct", "label": rng.choice(labels)}
    return {"verdict": "reject"}


def measure(
    project_id: int,
    user_ids: list[int],
    actions: int,
    warmup: int,
    strategy: str,
    explain: bool,
    synchronous_commit: bool = True,
    breakdown_parts: bool = True,
) -> dict:
    setup_django()
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connection
    from django.shortcuts import render
    from django.test import Client, RequestFactory
    from django.urls import reverse
    from django_htmx.middleware import HtmxDetails

    from annotation import review
    from annotation.models import Example, Membership, Project, Review
    from annotation.views import review as review_views
    from distillapp import embedded_redis

    # Every 100 verdicts a review round queues a refresh job: without REDIS_URL the app's
    # embedded Redis (in the bench's temp data directory) takes it, as under `run.sh`; no
    # worker runs it here.
    atexit.register(embedded_redis.stop, embedded_redis.ensure_started(), save=False)

    if not synchronous_commit:
        # Diagnostic only: how much of an action is waiting for WAL flushes at COMMIT.
        # django.test.Client keeps this thread's connection, so the setting holds.
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")
    project = Project.objects.get(pk=project_id)
    users = get_user_model().objects.in_bulk(user_ids)
    reviewers = [users[user_ids[1]], users[user_ids[2]]]
    labels = list(project.labels.values_list("name", flat=True))
    page_url = reverse("annotation:review", kwargs={"slug": project.slug})
    act_url = reverse("annotation:review-act", kwargs={"slug": project.slug})
    rng = random.Random(SEED)

    clients = []
    for user in reviewers:
        client = Client()
        client.force_login(user)
        clients.append(client)

    # The first card: the review page as a browser first loads it (a cold process:
    # URL resolver, template loading and compiling are in it).
    started = time.perf_counter()
    response = clients[0].get(page_url, {"strategy": strategy})
    first_card = time.perf_counter() - started
    current = [card_id(response), card_id(clients[1].get(page_url, {"strategy": strategy}))]
    if None in current or current[0] == current[1]:
        raise SystemExit(f"bad first cards: {current}")
    # The same page again, warm (the reviewer's claim is held, so the same card).
    reloads = []
    for _ in range(20):
        started = time.perf_counter()
        response = clients[0].get(page_url)
        reloads.append(time.perf_counter() - started)
        if card_id(response) != current[0]:
            raise SystemExit("a reload changed the card")

    # The floor: the cheapest request through the same client and middleware (sessions,
    # auth, messages; no database query in the view), timed as the actions are.
    # CPU seconds (this process + its PostgreSQL backend) move much less with the machine's
    # load than wall time: the regression guard compares those.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def cpu_now() -> float:
        return time.process_time() + backend_cpu_seconds(backend)

    # /healthz runs no query, so its floor is this process's CPU alone (nanosecond clock; the
    # backend's /proc counter ticks in 10 ms, too coarse for 0.2 ms requests).
    floor = []
    for i in range(210):
        if i == 10:
            floor_cpu = time.process_time()
        started = time.perf_counter()
        response = clients[0].get("/healthz")
        floor.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"/healthz answered {response.status_code}")
    floor_cpu = time.process_time() - floor_cpu

    # The timed loop: full client.post() calls, alternating reviewers.
    timer = QueryTimer()
    times: list[float] = []
    queries_per_action: list[int] = []
    db_ms_per_action: list[float] = []
    verdicts: dict[str, int] = {}
    actions_cpu = 0.0
    # REVIEW_BENCH_PROFILE=<file>: cProfile the timed actions (diagnostic; slows them).
    profiler = cProfile.Profile() if os.environ.get("REVIEW_BENCH_PROFILE") else None
    for i in range(warmup + actions):
        if i == warmup:
            actions_cpu = cpu_now()
        who = i % 2
        data = {"example_id": current[who], **verdict_for(rng, labels)}
        count_before, seconds_before = timer.count, timer.seconds
        measured = i >= warmup
        if measured:
            with connection.execute_wrapper(timer):
                if profiler:
                    profiler.enable()
                started = time.perf_counter()
                response = clients[who].post(act_url, data, headers={"HX-Request": "true"})
                elapsed = time.perf_counter() - started
                if profiler:
                    profiler.disable()
        else:
            response = clients[who].post(act_url, data, headers={"HX-Request": "true"})
        next_id = card_id(response)
        if next_id is None:
            raise SystemExit(f"the queue ran out after {i} actions")
        if next_id == current[1 - who]:
            raise SystemExit(f"both reviewers got example {next_id}")
        current[who] = next_id
        if measured:
            times.append(elapsed)
            queries_per_action.append(timer.count - count_before)
            db_ms_per_action.append((timer.seconds - seconds_before) * 1000)
            verdicts[data["verdict"]] = verdicts.get(data["verdict"], 0) + 1
    actions_cpu = cpu_now() - actions_cpu
    if profiler:
        profiler.dump_stats(os.environ["REVIEW_BENCH_PROFILE"])
    log(f"{actions} actions: median {ms(statistics.median(times))} ms")

    # The parts, timed directly: the same calls review_act makes (--no-breakdown: skipped,
    # bench/quick.py reads only the CPU per action).
    factory = RequestFactory()
    parts: dict[str, list[float]] = {}

    @contextmanager
    def clock(name: str):
        started = time.perf_counter()
        yield
        parts.setdefault(name, []).append(time.perf_counter() - started)

    sessions = [SessionStore(session_key=client.session.session_key) for client in clients]
    for i in range(warmup + actions if breakdown_parts else 0):
        who = i % 2
        user = reviewers[who]
        request = factory.post(act_url, headers={"HX-Request": "true"})
        request.user = user
        request.session = sessions[who]
        request.htmx = HtmxDetails(request)
        data = verdict_for(rng, labels)
        with clock("project_and_role"):
            project_, role = review_views.project_for_member(request, project.slug)
        filters = review_views._queue_filter(request, project_)
        with clock("load_example"):
            example = Example.objects.get(project=project_, pk=current[who], is_gold=False)
        with clock("review_record"):
            review.review_record(example=example, user=user, verdict=data["verdict"], label=data.get("label"))
        with clock("review_next"):
            nxt = review.review_next(project=project_, user=user, filters=filters)
        if nxt is None:
            raise SystemExit("the queue ran out in the breakdown loop")
        with clock("card_context"):
            context = review_views._card_context(request, project_, role, nxt, filters)
        with clock("render_card"):
            render(request, "annotation/review.html#card", context)
        # Two parts of card_context, again on their own (not in the sum below).
        with clock("remaining_count"):
            review.queue(project_, filters).count()
        with clock("reviewed_today"):
            review.reviewed_today(project=project_, user=user)
        current[who] = nxt.pk
    parts = {k: v[warmup:] for k, v in parts.items()}
    breakdown = {f"{k}_ms": ms(statistics.median(v)) for k, v in parts.items()}
    measured_parts = (
        "project_and_role",
        "load_example",
        "review_record",
        "review_next",
        "card_context",
        "render_card",
    )
    if parts:
        breakdown["sum_of_parts_ms"] = round(sum(breakdown[f"{k}_ms"] for k in measured_parts), 2)
        breakdown["http_and_middleware_ms"] = round(
            ms(statistics.median(times)) - breakdown["sum_of_parts_ms"], 2
        )
    breakdown["queries_per_action"] = statistics.median(queries_per_action)
    breakdown["db_ms_per_action"] = round(statistics.median(db_ms_per_action), 2)
    breakdown["python_ms_per_action"] = round(ms(statistics.median(times)) - breakdown["db_ms_per_action"], 2)

    measured_actions = len(times)
    top = sorted(timer.by_sql.items(), key=lambda item: -sum(item[1]))[:8]
    top_queries = [
        {
            "sql": " ".join(sql.split())[:220],
            "calls_per_action": round(len(durations) / measured_actions, 2),
            "median_ms": ms(statistics.median(durations)),
            "ms_per_action": round(sum(durations) * 1000 / measured_actions, 2),
        }
        for sql, durations in top
    ]
    for q in top_queries:
        log(
            f"{q['ms_per_action']:7.2f} ms/action  {q['calls_per_action']:.2f}x  {q['median_ms']:6.2f} ms  {q['sql'][:150]}"
        )

    if explain:
        slow = [sql for sql, _ in top if sql.lstrip().upper().startswith("SELECT")][:4]
        with connection.cursor() as cursor:
            for sql in slow:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, timer.params[sql])
                plan = "\n".join(row[0] for row in cursor.fetchall())
                log(f"EXPLAIN ANALYZE {' '.join(sql.split())[:300]}\n{plan}\n")

    reviewed = Review.objects.filter(example__project=project).count()
    return {
        "times": [round(t * 1000, 3) for t in times],
        "first_card_ms": ms(first_card),
        "first_card_warm_ms": ms(statistics.median(reloads)),
        "floor_ms": ms(statistics.median(floor[10:])),
        "floor_cpu_ms": round(floor_cpu * 1000 / 200, 4),
        "cpu_ms_per_action": round(actions_cpu * 1000 / actions, 2),
        "breakdown": breakdown,
        "top_queries": top_queries,
        "verdicts": verdicts,
        "reviews_written": reviewed,
        "role_check": project.role_of(reviewers[0]) == Membership.Role.REVIEWER,
    }


# --- step 3: cleanup (child process) -----------------------------------------------------


def cleanup(database_url: str, project_id: int, user_ids: list[int], drop_database: bool) -> dict:
    import psycopg

    admin, name = admin_url(database_url)
    started = time.perf_counter()
    if drop_database:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        action = f"dropped database {name}"
    else:
        with psycopg.connect(database_url) as conn:
            delete_project(conn, project_id)
            conn.execute("DELETE FROM annotation_reviewclaim WHERE user_id = ANY(%(u)s)", {"u": user_ids})
            conn.execute("DELETE FROM auth_user WHERE id = ANY(%(u)s)", {"u": user_ids})
        action = f"deleted project {project_id} and its users from {name}"
    return {"cleanup": action, "cleanup_seconds": round(time.perf_counter() - started, 2)}


# --- the parent: runs each step in a child ------------------------------------------------


def child(step: str, result_file: Path, *extra: str) -> dict:
    return run_child(__file__, step, result_file, *extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples", type=int, default=100_000, help="examples in the project (default 100000)"
    )
    parser.add_argument("--actions", type=int, default=300, help="timed actions (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed actions first (default 20)")
    parser.add_argument("--strategy", default="confidence", help="queue order (default confidence)")
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="share of the examples reviewed after the setup's VACUUM (0 to 0.2; default 0)",
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the slowest SELECTs (stderr)")
    parser.add_argument(
        "--synchronous-commit",
        choices=["on", "off"],
        default="on",
        help="diagnostic: 'off' sets synchronous_commit=off for the measuring connection (default on)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the project and the database afterwards")
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip timing the action's parts one by one (bench/quick.py)",
    )
    parser.add_argument("--_step", help=argparse.SUPPRESS)
    parser.add_argument("--_result", help=argparse.SUPPRESS)
    parser.add_argument("--_data-dir", dest="data_dir", help=argparse.SUPPRESS)
    parser.add_argument("--_setup", dest="setup", help=argparse.SUPPRESS)
    parser.add_argument("--_drop", dest="drop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._step:
        if args._step == "setup":
            result = setup(args.database_url, args.data_dir, args.examples, args.churn, Path(args._result))
        else:
            info = json.loads(Path(args.setup).read_text())
            if args._step == "measure":
                result = measure(
                    info["project_id"],
                    info["user_ids"],
                    args.actions,
                    args.warmup,
                    args.strategy,
                    args.explain,
                    args.synchronous_commit == "on",
                    not args.no_breakdown,
                )
            elif args._step == "cleanup":
                result = cleanup(args.database_url, info["project_id"], info["user_ids"], args.drop)
            else:
                raise SystemExit(f"unknown step {args._step}")
        Path(args._result).write_text(json.dumps(result))
        return 0

    if args.examples < 2 * (args.actions + args.warmup) + 10:
        parser.error("--examples must leave cards for both loops (more than 2 × (actions + warmup))")
    if not 0 <= args.churn < 1:
        parser.error("--churn must be in [0, 1)")
    if args.strategy not in ("auto", "confidence", "disagreement", "errors", "kept", "random", "oldest"):
        parser.error(f"unknown --strategy {args.strategy}")
    tmp = Path(tempfile.mkdtemp(prefix="distill-review-bench-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    # Inherited by every child, and set before any of them calls django.setup().
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["DISTILL_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver,localhost,127.0.0.1"  # django.test.Client's host
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("DJANGO_DEBUG", None)  # DEBUG would log every query
    # django.test.Client speaks plain HTTP: with DJANGO_SECURE on (the default without DEBUG)
    # every request would be a redirect to HTTPS.
    os.environ["DJANGO_SECURE"] = "false"

    common = ["--database-url", args.database_url, "--_data-dir", str(data_dir)]
    setup_file = tmp / "setup.json"
    setup_info: dict | None = None
    result: dict = {"examples": args.examples, "database": "postgresql", "status": "not run"}
    ok = False
    try:
        log(f"setting up a project with {args.examples:,} examples")
        started = time.perf_counter()
        setup_info = child(
            "setup", setup_file, *common, "--examples", str(args.examples), "--churn", str(args.churn)
        )
        setup_seconds = time.perf_counter() - started
        log(f"setup done in {setup_seconds:.1f}s; measuring")
        extra = ["--actions", str(args.actions), "--warmup", str(args.warmup), "--strategy", args.strategy]
        if args.explain:
            extra.append("--explain")
        extra += ["--synchronous-commit", args.synchronous_commit]
        if args.no_breakdown:
            extra.append("--no-breakdown")
        load_before = os.getloadavg()[0]
        if load_before > 0.5:
            log(f"the 1-minute load average is {load_before:.2f}: other work may skew the timings")
        run = child("measure", tmp / "measure.json", *common, "--_setup", str(setup_file), *extra)
        times = run["times"]
        median = statistics.median(times)
        result = {
            "examples": setup_info["examples"],
            "actions": len(times),
            "median_ms": round(median, 2),
            "p95_ms": round(percentile(times, 95), 2),
            "p99_ms": round(percentile(times, 99), 2),
            "mean_ms": round(statistics.fmean(times), 2),
            "min_ms": round(min(times), 2),
            "max_ms": round(max(times), 2),
            "first_card_ms": run["first_card_ms"],
            "first_card_warm_ms": run["first_card_warm_ms"],
            # The median GET /healthz through the same client: the request path's floor.
            "floor_ms": run["floor_ms"],
            # CPU ms (this process + its backend) per timed action and per /healthz request.
            "cpu_ms_per_action": run["cpu_ms_per_action"],
            "floor_cpu_ms": run["floor_cpu_ms"],
            "breakdown": run["breakdown"],
            "top_queries": run["top_queries"],
            "verdicts": run["verdicts"],
            "churn": args.churn,
            "reviewed_before": setup_info["reviewed_before"],
            "strategy": args.strategy,
            "warmup": args.warmup,
            "proposals": setup_info["proposals"],
            "setup_s": {**setup_info["setup_s"], "total": round(setup_seconds, 1)},
            "database": "postgresql",
            "server": setup_info["server"].split(" on ")[0],
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d"),
            "synchronous_commit": args.synchronous_commit,
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "target_median_ms": TARGET_MEDIAN_MS,
            "targets_met": median < TARGET_MEDIAN_MS,
        }
        ok = True
    except Exception as exc:  # report a failed step as JSON too
        log(f"error: {exc}")
        result["error"] = str(exc)
    finally:
        if setup_info is None and setup_file.exists():
            setup_info = json.loads(setup_file.read_text())
        if setup_info and not args.keep:
            try:
                drop = ["--_drop"] if setup_info["db_created"] else []
                done = child("cleanup", tmp / "cleanup.json", *common, "--_setup", str(setup_file), *drop)
                log(f"{done['cleanup']} in {done['cleanup_seconds']}s")
            except Exception as exc:
                log(f"cleanup failed: {exc}")
        elif setup_info:
            log(f"kept project {setup_info['slug']} (id {setup_info['project_id']})")
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
