#!/usr/bin/env python
"""Benchmark of the corpus import (annotation.corpus.importing) into PostgreSQL.

    python bench/import_bench.py [--rows N] [--database-url URL] [--keep] [--profile] [--floor-during]

Steps, each in its own child process so that the number that matters (the
importing process's peak RSS) only ever counts the import:

1. generate: write a CSV of N rows (id,text,label; ~100 bytes a row, ~1 %
   exact duplicates and ~1 % case/whitespace variants) to a temp file,
   streaming;
2. setup: create the bench database if it is missing, `migrate`, create a
   user and a fresh project with 4 labels;
3. import: `import_batch_create` + `import_batch_claim` + `import_batch_run`
   on the file, timed, with the phases timed by wrapping the staging methods
   (no change to the app's code); peak RSS read in that process;
4. cleanup (unless --keep): DROP DATABASE if this run created it, else delete
   the project's rows with raw SQL.

The floor (a bare COPY of the file into an unindexed temp table) is timed before and after the
import; ``--floor-during`` (bench/quick.py) also takes its tries between the import's own
steps, on a connection of its own, copying the file's first 25,000 rows each time.

The parent only uses the standard library and stays small: on Linux a child's
ru_maxrss starts from its parent's RSS (it survives fork and exec), so a big
parent would inflate the child's number.

Exactly one JSON object goes to stdout; everything else goes to stderr.
The exit status is non-zero if the import did not succeed or its counts are
not the expected ones.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from bench_db import admin_url, postgres_create, quote_ident

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/distillapp_bench"
LABELS = [
    ("Billing", "Invoices, charges, refunds and payment methods."),
    ("Technical", "Errors, crashes, outages and things that do not work."),
    ("Account", "Logins, passwords, profiles and account settings."),
    ("Shipping", "Deliveries, tracking, returns and lost parcels."),
]
# Generated data: a fixed seed so every run imports the same file.
SEED = 20261127
# COPY tries for the floor before the import and after it; their mean is the floor.
FLOOR_TRIES_PER_GAP = 4
FLOOR_SAMPLE_ROWS = 25_000  # a --floor-during try copies this many of the file's rows
DUPLICATE_SHARE = 0.01  # exact copies of an earlier text
VARIANT_SHARE = 0.01  # an earlier text with other case / whitespace


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mb() -> float | None:
    """This process's own RSS high-water mark (not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def setup_django(database_url: str, data_dir: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DISTILL_DATA_DIR"] = data_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    os.environ.pop("REDIS_URL", None)  # the embedded one, in the data directory (run_import)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


# --- step 1: generate the CSV (child process) -------------------------------------

WORDS = (
    "refund invoice charge card payment double billed subscription plan upgrade downgrade "
    "cancel renewal receipt tax discount coupon price error crash login password reset "
    "account profile email address phone verify code blocked locked locked-out two-factor "
    "app website page slow timeout outage server sync update version install browser "
    "mobile desktop tablet order parcel package delivery tracking courier late lost damaged "
    "return exchange warehouse shipped arrived missing wrong item size colour please help "
    "urgent again still since yesterday today week month customer support agent ticket "
    "reply waiting thanks hello hi regards sorry issue problem question request, "
    "\"quoted\" can't won't doesn't isn't it's my our your the a an and but or not with "
    "from for to in on at of by about after before during"
).split()
OPENERS = ["Hi,", "Hello", "Dear support,", "Urgent:", "Question:", "FYI", "Help!", ""]


def generate(path: Path, rows: int) -> dict:
    rng = random.Random(SEED)
    recent: deque[str] = deque(maxlen=5000)  # unique texts only; bounded memory
    labels = [name for name, _ in LABELS]
    duplicates = variants = 0
    size = 0
    started = time.perf_counter()
    with open(path, "w", newline="", encoding="utf-8", buffering=1024 * 1024) as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text", "label"])
        for n in range(1, rows + 1):
            draw = rng.random()
            if recent and draw < DUPLICATE_SHARE:
                text = rng.choice(recent)
                duplicates += 1
            elif recent and draw < DUPLICATE_SHARE + VARIANT_SHARE:
                base = rng.choice(recent)
                kind = rng.randrange(4)
                if kind == 0:
                    text = base.upper()
                elif kind == 1:
                    text = base.title()
                elif kind == 2:
                    text = "  " + base.replace(" ", "   ", 3) + "\t"
                else:
                    text = base.swapcase().replace(" ", "  ")
                variants += 1
            else:
                # The counter makes the text unique; the words make it varied.
                words = rng.choices(WORDS, k=rng.randint(8, 13))
                opener = rng.choice(OPENERS)
                text = f"{opener} {' '.join(words)} #{n}".strip()
                recent.append(text)
            writer.writerow([f"r{n:08d}", text, rng.choice(labels)])
        size = out.tell()
    return {
        "rows": rows,
        "file_bytes": size,
        "duplicates": duplicates,
        "variants": variants,
        "expected_duplicates": duplicates + variants,
        "generate_seconds": round(time.perf_counter() - started, 2),
    }


# --- step 2: database and project (child process) ------------------------------------


def setup(database_url: str, data_dir: str) -> dict:
    exists = not postgres_create(database_url)  # a copy of the migrated template
    setup_django(database_url, data_dir)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    log(f"migrate: {time.perf_counter() - started:.1f}s")

    from annotation import projects
    from annotation.models import Example

    user, _ = get_user_model().objects.get_or_create(username="import-bench")
    slug = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
    project = projects.project_create(name=f"Import bench {slug}", slug=slug, user=user, labels=LABELS)
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        server = cursor.fetchone()[0]
    return {
        "project_id": project.pk,
        "slug": slug,
        "db_created": not exists,
        "examples_before": Example.objects.count(),
        "server": server,
    }


# --- step 3: the import (child process; this is what is measured) ---------------------


class PhaseTimer:
    """Wraps the import's staging steps to time them, without editing the app."""

    def __init__(self, backend_pid: int | None = None) -> None:
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.marks: dict[str, float] = {}
        # CPU seconds of this process and of the PostgreSQL backend serving it, per phase: on a
        # shared machine wall time moves with the load, CPU time much less.
        self.backend_pid = backend_pid
        self.cpu: dict[str, list[float]] = {}
        self.sampler: FloorSampler | None = None  # --floor-during: floor tries between steps

    def cpu_now(self) -> tuple[float, float]:
        return time.process_time(), backend_cpu_seconds(self.backend_pid)

    def wrap(self, owner, attr: str, phase: str, *, mark: str | None = None) -> None:
        original = getattr(owner, attr)
        timer = self

        def wrapped(*args, **kwargs):
            if timer.sampler is not None:
                timer.sampler.step(phase)
            started = time.perf_counter()
            cpu = timer.cpu_now()
            if mark and mark not in timer.marks:
                timer.marks[mark] = started
                timer.marks[mark + "_cpu"] = cpu
                timer.marks[mark + "_sampler_wall"] = timer.sampler.wall if timer.sampler else 0.0
                timer.marks[mark + "_totals"] = (
                    dict(timer.totals),
                    {k: list(v) for k, v in timer.cpu.items()},
                )
            try:
                return original(*args, **kwargs)
            finally:
                timer.totals[phase] = timer.totals.get(phase, 0.0) + time.perf_counter() - started
                timer.calls[phase] = timer.calls.get(phase, 0) + 1
                spent = [b - a for a, b in zip(cpu, timer.cpu_now(), strict=True)]
                totals = timer.cpu.setdefault(phase, [0.0, 0.0])
                totals[0] += spent[0]
                totals[1] += spent[1]

        setattr(owner, attr, wrapped)


class FloorSampler:
    """--floor-during (bench/quick.py): the floor's COPY tries on a connection of their own,
    taken between the import's own steps (before every other lot staged and before each later
    step), so that floor and import meet the machine alike: a vCPU here flips between two
    speeds 1.6x apart every few hundred ms (bench/README.md, "Regression guard"), and tries
    only before and after an import met other speeds than it. A try copies the file's first
    FLOOR_SAMPLE_ROWS rows into a temp table; its CPU is its backend's and this thread's, which
    the import's CPU and wall time are given back (`import_cpu`, `import_wall`)."""

    def __init__(self, database_url: str, csv_path: Path) -> None:
        import psycopg

        with open(csv_path, "rb") as source:
            self.data = b"".join(line for _, line in zip(range(FLOOR_SAMPLE_ROWS + 1), source, strict=False))
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.tries: list[tuple[float, float]] = []  # (wall s, CPU s)
        self.client_cpu = self.wall = 0.0
        self.lots = 0

    def step(self, phase: str) -> None:
        if phase == "stage_copy_and_settle":
            self.lots += 1
            if self.lots % 2:
                return
        elif phase not in ("finish_last_settle_analyze", "insert_examples", "insert_proposals"):
            return
        self.take()

    def take(self) -> None:
        started, thread, backend = time.perf_counter(), time.thread_time(), backend_cpu_seconds(self.pid)
        with self.conn.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS floor_rows")
            cursor.execute("CREATE TEMP TABLE floor_rows (id text, text text, label text)")
            with cursor.copy("COPY floor_rows FROM STDIN (FORMAT csv, HEADER)") as copy:
                copy.write(self.data)
        client = time.thread_time() - thread
        wall = time.perf_counter() - started
        self.tries.append((wall, client + backend_cpu_seconds(self.pid) - backend))
        self.client_cpu += client
        self.wall += wall

    def close(self) -> None:
        self.conn.close()


def backend_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of a local PostgreSQL backend (one thread), 0 if unreadable.

    /proc/PID/schedstat counts nanoseconds; /proc/PID/stat (the fallback) counts 10 ms ticks,
    which moved a 0.1 s floor by ±10 % (bench/README.md, "Regression guard")."""
    if pid is None:
        return 0.0
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_import(
    database_url: str,
    data_dir: str,
    csv_path: Path,
    project_id: int,
    profile: bool,
    floor_during: bool = False,
) -> dict:
    """Import the file into the project, with the COPY floor's tries before and after it (and
    between its steps with --floor-during)."""
    setup_django(database_url, data_dir)
    from django.db import connection, connections

    from annotation.corpus import importing, staging
    from annotation.models import Project
    from distillapp import embedded_redis

    # After its commit the import queues the similarity index job: the app's embedded Redis
    # takes it, as under run.sh (no worker runs it here). Without one (until 2026-12-07) each
    # import logged a failed connection and its traceback inside the timed window.
    atexit.register(embedded_redis.stop, embedded_redis.ensure_started(), save=False)
    project = Project.objects.get(pk=project_id)
    connection.ensure_connection()
    baseline_rss = peak_rss_mb()

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend_pid = cursor.fetchone()[0]
    timer = PhaseTimer(backend_pid if Path(f"/proc/{backend_pid}/stat").exists() else None)
    # Stage.add copies a lot and, every SETTLE_ROWS rows, settles (deduplicates) what is staged;
    # both run in the main thread while the reader thread parses the next lots.
    timer.wrap(staging.Stage, "add", "stage_copy_and_settle")
    timer.wrap(staging.Stage, "_settle", "stage_settle")
    timer.wrap(importing, "_report_progress", "progress_updates")
    timer.wrap(staging.Stage, "finish", "finish_last_settle_analyze", mark="finish")
    timer.wrap(staging.Stage, "insert_examples", "insert_examples")
    timer.wrap(staging.Stage, "insert_proposals", "insert_proposals")
    timer.wrap(staging.Stage, "__exit__", "drop_stage")
    # The FKs are DEFERRABLE INITIALLY DEFERRED, so their checks run at COMMIT.
    timer.wrap(type(connections["default"]), "commit", "commit")

    # The floor's tries come before the import and after it (and with --floor-during between
    # its steps), so that floor and import meet the same machine: a CPU second here buys 1.6x
    # less work at times (bench/README.md, "Regression guard").
    sampler = FloorSampler(database_url, csv_path) if floor_during else None

    def floor_gap() -> list[tuple[float, float]]:
        if sampler is None:
            return copy_floor(csv_path, timer, tries=FLOOR_TRIES_PER_GAP)
        for _ in range(2):
            sampler.take()
        return []

    floor_tries = floor_gap()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    timer.sampler = sampler
    run = import_once(project, csv_path, timer)
    timer.sampler = None
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        report = io.StringIO()
        stats = pstats.Stats(profiler, stream=report)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(25)
        print(report.getvalue(), file=sys.stderr)
    floor_tries += floor_gap()
    if sampler is not None:
        floor_tries = sampler.tries
        sampler.close()
    batch = run["batch"]
    return {
        "status": batch.status,
        "error": batch.error,
        "seconds": run["seconds"],
        "rows_read": batch.rows_read,
        "rows_created": batch.rows_created,
        "rows_duplicate": batch.rows_duplicate,
        "rows_invalid": batch.rows_invalid,
        "proposals_created": batch.proposals_created,
        "peak_rss_mb": peak_rss_mb(),
        "vm_hwm_mb": vm_hwm_mb(),
        "baseline_rss_mb": baseline_rss,
        "phases": {k: round(v, 2) for k, v in run["phases"].items()},
        "within_read_check_stage_s": {k: round(v, 2) for k, v in run["within"].items()},
        "stage_copy_calls": timer.calls.get("stage_copy_and_settle", 0),
        "progress_update_calls": timer.calls.get("progress_updates", 0),
        "profiled": profile,
        "floor_copy_s": round(min(wall for wall, _ in floor_tries), 3),
        # The mean try: an import's CPU is a sum over its time, through both speeds a vCPU here
        # flips between (bench/README.md, "Regression guard"); the median try picked one.
        "floor_copy_cpu_s": round(statistics.fmean(cpu for _, cpu in floor_tries), 4),
        "floor_copy_cpu_tries_s": [round(cpu, 4) for _, cpu in floor_tries],
        # The rows a floor try copies: the whole file, or FLOOR_SAMPLE_ROWS of it (--floor-during).
        "floor_copy_rows": FLOOR_SAMPLE_ROWS if floor_during else None,
        # [this process, the PostgreSQL backend] CPU seconds: the whole import, and per phase.
        "cpu_s": [round(x, 2) for x in run["cpu"]],
        "phases_cpu_s": {k: [round(x, 2) for x in v] for k, v in run["phases_cpu"].items()},
    }


def import_once(project, csv_path: Path, timer: PhaseTimer) -> dict:
    """One import of the file into `project`, with where its time went."""
    from annotation import corpus
    from annotation.corpus import import_batch_claim, import_batch_run

    # The timer's totals are the whole run's: this import's are what they grow by.
    totals0 = dict(timer.totals)
    cpu0 = {k: list(v) for k, v in timer.cpu.items()}
    timer.marks = {}
    sampled = (timer.sampler.client_cpu, timer.sampler.wall) if timer.sampler else (0.0, 0.0)
    started = time.perf_counter()
    cpu_started = timer.cpu_now()
    batch = corpus.import_batch_create(
        project=project, user=None, file_name=csv_path.name, path=csv_path, label_column="label"
    )
    created_at = time.perf_counter()
    if not import_batch_claim(batch.pk):
        raise SystemExit("could not claim the batch")
    run_started = time.perf_counter()
    batch = import_batch_run(batch=batch)
    finished = time.perf_counter()
    cpu_finished = timer.cpu_now()
    seconds = finished - started
    # The floor's tries taken between this import's steps are not the import's.
    sampler_cpu, sampler_wall = 0.0, 0.0
    if timer.sampler is not None:
        sampler_cpu = timer.sampler.client_cpu - sampled[0]
        sampler_wall = timer.sampler.wall - sampled[1]
    seconds -= sampler_wall

    def grown(now: dict, before: dict, key: str, zero):
        value = now.get(key, zero)
        if isinstance(zero, list):
            return [a - b for a, b in zip(value, before.get(key, zero), strict=True)]
        return value - before.get(key, zero)

    t = {key: grown(timer.totals, totals0, key, 0.0) for key in timer.totals}
    phases = {"create_batch_sha256": created_at - started}
    if "finish" in timer.marks:
        # Reading, parsing, checking and hashing rows (the reader thread) overlap with the COPY
        # calls and settles (this thread): the phase is the whole window up to finish().
        phases["read_check_stage"] = (
            timer.marks["finish"] - run_started - (timer.marks["finish_sampler_wall"] - sampled[1])
        )
    for key in (
        "finish_last_settle_analyze",
        "insert_examples",
        "insert_proposals",
        "drop_stage",
        "commit",
    ):
        phases[key] = t.get(key, 0.0)
    phases["other"] = seconds - sum(phases.values())
    # Inside read_check_stage, not added to the total: the main thread's calls before finish().
    before, before_cpu = timer.marks.get("finish_totals", (timer.totals, timer.cpu))
    within = {
        key: grown(before, totals0, key, 0.0)
        for key in ("stage_copy_and_settle", "stage_settle", "progress_updates")
    }
    cpu = {phase: grown(timer.cpu, cpu0, phase, [0.0, 0.0]) for phase in timer.cpu if phase != "stage_settle"}
    cpu["stage_settle_before_finish"] = grown(before_cpu, cpu0, "stage_settle", [0.0, 0.0])
    if "finish_cpu" in timer.marks:
        # [both Python threads, the backend] from the start of the run to finish().
        cpu["read_check_stage"] = [b - a for a, b in zip(cpu_started, timer.marks["finish_cpu"], strict=True)]
    return {
        "batch": batch,
        "seconds": seconds,
        "cpu": [cpu_finished[0] - cpu_started[0] - sampler_cpu, cpu_finished[1] - cpu_started[1]],
        "phases": phases,
        "within": within,
        "phases_cpu": cpu,
    }


def copy_floor(csv_path: Path, timer: PhaseTimer, tries: int) -> list[tuple[float, float]]:
    """The floor under the import: a bare COPY of the same file into a temp table with no
    index (the import reads, checks, hashes, deduplicates and indexes it too). Returns each
    try's (wall seconds, CPU seconds of this process + the backend)."""
    from django.db import connection

    out = []
    with connection.cursor() as cursor:
        for _ in range(tries):
            cursor.execute("DROP TABLE IF EXISTS floor_rows")
            cursor.execute("CREATE TEMP TABLE floor_rows (id text, text text, label text)")
            started, cpu_started = time.perf_counter(), timer.cpu_now()
            with (
                open(csv_path, "rb") as source,
                cursor.copy("COPY floor_rows FROM STDIN (FORMAT csv, HEADER)") as copy,
            ):
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
            cpu = sum(b - a for a, b in zip(cpu_started, timer.cpu_now(), strict=True))
            out.append((time.perf_counter() - started, cpu))
        cursor.execute("DROP TABLE floor_rows")
    return out


# --- step 4: cleanup (child process) ---------------------------------------------------


def delete_project(conn, project_id: int) -> None:
    """Delete a bench project and everything under it with plain SQL in the caller's transaction
    (the ORM's cascade would load every row first)."""
    examples = "SELECT id FROM annotation_example WHERE project_id = %(p)s"
    for table in (
        "annotation_reviewclaim",
        "annotation_review",
        "annotation_proposal",
        "annotation_goldsetitem",
    ):
        conn.execute(f"DELETE FROM {table} WHERE example_id IN ({examples})", {"p": project_id})
    conn.execute("DELETE FROM annotation_goldset WHERE project_id = %(p)s", {"p": project_id})
    conn.execute("DELETE FROM annotation_example WHERE project_id = %(p)s", {"p": project_id})
    # Every other table with a project column (jobs the bench's actions queued: the similarity
    # index, a round's refresh), read from the catalogue so a new job kind needs no edit here.
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'project_id'"
            " AND table_schema = current_schema() AND table_name <> 'annotation_example'"
        )
    ]
    for table in sorted(tables, key=lambda name: name.startswith("annotation_")):
        conn.execute(f"DELETE FROM {quote_ident(table)} WHERE project_id = %(p)s", {"p": project_id})
    conn.execute("DELETE FROM annotation_project WHERE id = %(p)s", {"p": project_id})


def cleanup(database_url: str, project_id: int, drop_database: bool) -> dict:
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
        action = f"deleted project {project_id} from {name}"
    return {"cleanup": action, "cleanup_seconds": round(time.perf_counter() - started, 2)}


# --- the parent: runs each step in a child --------------------------------------------------


def run_child(script: str, step: str, result_file: Path, *extra: str) -> dict:
    """Run `script --_step STEP --_result FILE ...` and return the JSON it wrote (bench helper)."""
    command = [sys.executable, str(Path(script).resolve()), "--_step", step, "--_result", str(result_file)]
    command += list(extra)
    # The child's stdout goes to our stderr: our stdout carries only the JSON.
    proc = subprocess.run(command, stdout=sys.stderr, stderr=None, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"step {step!r} failed with exit status {proc.returncode}")
    return json.loads(result_file.read_text())


def child(step: str, result_file: Path, *extra: str) -> dict:
    return run_child(__file__, step, result_file, *extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="data rows in the CSV (default 1000000)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--keep", action="store_true", help="keep the project and the database afterwards")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the import (slower; stats go to stderr)"
    )
    parser.add_argument(
        "--floor-during",
        action="store_true",
        help="take the floor's COPY tries (the file's first 25,000 rows) between the import's own "
        "steps too, on a connection of their own (bench/quick.py)",
    )
    parser.add_argument("--_step", help=argparse.SUPPRESS)
    parser.add_argument("--_result", help=argparse.SUPPRESS)
    parser.add_argument("--_data-dir", dest="data_dir", help=argparse.SUPPRESS)
    parser.add_argument("--_csv", dest="csv", help=argparse.SUPPRESS)
    parser.add_argument("--_project", dest="project", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_drop", dest="drop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._step:
        if args._step == "generate":
            result = generate(Path(args.csv), args.rows)
        elif args._step == "setup":
            result = setup(args.database_url, args.data_dir)
        elif args._step == "import":
            result = run_import(
                args.database_url,
                args.data_dir,
                Path(args.csv),
                args.project,
                args.profile,
                args.floor_during,
            )
        elif args._step == "cleanup":
            result = cleanup(args.database_url, args.project, args.drop)
        else:
            raise SystemExit(f"unknown step {args._step}")
        Path(args._result).write_text(json.dumps(result))
        return 0

    if args.rows < 1:
        parser.error("--rows must be at least 1")
    # Inherited by every child, and set before any of them calls django.setup().
    tmp = Path(tempfile.mkdtemp(prefix="distill-import-bench-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["DISTILL_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    os.environ.pop("REDIS_URL", None)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))

    common = ["--database-url", args.database_url, "--_data-dir", str(data_dir)]
    csv_path = tmp / "corpus.csv"
    setup_info: dict | None = None
    result: dict = {"rows": args.rows, "database": "postgresql", "status": "not run"}
    ok = False
    try:
        log(f"generating {args.rows:,} rows into {csv_path}")
        gen = child("generate", tmp / "generate.json", "--rows", str(args.rows), "--_csv", str(csv_path))
        log(f"generated {gen['file_bytes'] / 1e6:.1f} MB in {gen['generate_seconds']}s")
        setup_info = child("setup", tmp / "setup.json", *common)
        log(f"project {setup_info['slug']} (id {setup_info['project_id']})")
        log("importing")
        extra = ["--_csv", str(csv_path), "--_project", str(setup_info["project_id"])]
        if args.profile:
            extra.append("--profile")
        if args.floor_during:
            extra.append("--floor-during")
        load_before = [round(x, 2) for x in os.getloadavg()]
        imp = child("import", tmp / "import.json", *common, *extra)
        seconds = imp["seconds"]
        rows, expected_duplicates = args.rows, gen["expected_duplicates"]
        result = {
            "rows": rows,
            "seconds": round(seconds, 2),
            "rows_per_second": round(rows / seconds) if seconds else None,
            "peak_rss_mb": round(imp["peak_rss_mb"], 1),
            "file_mb": round(gen["file_bytes"] / 1e6, 1),
            "rows_read": imp["rows_read"],
            "rows_created": imp["rows_created"],
            "rows_duplicate": imp["rows_duplicate"],
            "expected_duplicates": expected_duplicates,
            "proposals_created": imp["proposals_created"],
            "database": "postgresql",
            "status": imp["status"],
            "error": imp["error"],
            "vm_hwm_mb": round(imp["vm_hwm_mb"], 1) if imp["vm_hwm_mb"] else None,
            "baseline_rss_mb": round(imp["baseline_rss_mb"], 1),
            "phases_s": imp["phases"],
            "within_read_check_stage_s": imp["within_read_check_stage_s"],
            # A bare COPY of the same file into an unindexed temp table (the best try), same run:
            # FLOOR_TRIES_PER_GAP tries before the (first) import and after each.
            "floor_copy_s": imp["floor_copy_s"],
            # Its CPU seconds (this process + the backend), mean of the tries.
            "floor_copy_cpu_s": imp["floor_copy_cpu_s"],
            "floor_copy_cpu_tries_s": imp["floor_copy_cpu_tries_s"],
            "floor_copy_rows": imp["floor_copy_rows"] or rows,
            "cpu_s": {"python": imp["cpu_s"][0], "postgres_backend": imp["cpu_s"][1]},
            "phases_cpu_s": imp["phases_cpu_s"],
            "loadavg_before": load_before,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "profiled": imp["profiled"],
            "examples_in_db_before": setup_info["examples_before"],
            "server": setup_info["server"].split(" on ")[0],
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d"),
        }
        counts_ok = (
            imp["rows_read"] == rows
            and imp["rows_duplicate"] == expected_duplicates
            and imp["rows_created"] == rows - expected_duplicates
            and imp["proposals_created"] == imp["rows_created"]
        )
        result["counts_ok"] = counts_ok
        ok = imp["status"] == "succeeded" and counts_ok
        if not counts_ok:
            log("the import's counts are not the expected ones")
    except Exception as exc:  # report a failed step as JSON too
        log(f"error: {exc}")
        result["error"] = str(exc)
    finally:
        if setup_info and not args.keep:
            try:
                drop = ["--_drop"] if setup_info["db_created"] else []
                done = child(
                    "cleanup",
                    tmp / "cleanup.json",
                    *common,
                    "--_project",
                    str(setup_info["project_id"]),
                    *drop,
                )
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
