#!/usr/bin/env python
"""Benchmark of teacher labelling jobs (annotation.teacher.labeling) against a local OpenAI-compatible server.

    python bench/teacher_bench.py [--examples N] [--concurrency C] [--latency-ms L]
                                  [--database-url URL | --sqlite] [--skip-embedding]
                                  [--in-process-server] [--fake-nagle] [--strict-async]
                                  [--rounds K] [--floor-calls N] [--profile] [--keep]

The LLM part: a fresh project with 4 labels and N unique examples, its
TeacherConfig pointed (provider "openai", base_url, api_key_env) at
tests/fake_openai.py's FakeOpenAI, which answers every call with a valid label
after L ms with realistic usage (350 prompt tokens, 6 completion tokens). The
job runs as a worker runs it: ``labeling_job_create(selection="unlabelled")``,
``labeling_job_claim``, then ``run_with_heartbeat(job.pk, lambda:
labeling_job_run(job=job))``; only that last call is timed.

With concurrency C and latency L the best possible rate is C / L calls per
second (``ideal_calls_per_second``); ``overhead_ms_per_call`` is what each call
costs beyond L with C calls in flight: ``seconds / ceil(calls / C) * 1000 - L`` (the
calls go in waves of C, and a last, partial wave takes L too; ``overhead_per_wave``).
Targets: calls_per_second >= 0.8 * ideal and overhead < 5 ms.

Two departures from a bare run, each with a flag to undo it:

- the job process sets DJANGO_ALLOW_ASYNC_UNSAFE=true, as tests/pytest_env.py
  does: labeling._run_openai reads ``job.prompt_version`` and ``job.project``
  (lazy ORM queries) inside its event loop, which Django otherwise refuses with
  SynchronousOnlyOperation (``--strict-async`` shows it);
- the fake's handler gets TCP_NODELAY: it sends the headers and the body in two
  writes, and with Nagle's algorithm the body waits for the client's delayed
  ACK, ~40 ms a call that no real provider adds (``--fake-nagle`` keeps it).

For bench/quick.py, ``--rounds K`` labels the examples with K jobs one after the other (each
on a lot of examples made just before it) and ``--floor-calls N`` times N calls of the bare
SDK (teacher_floor.py's "post" mode, against a fake of its own) in the job's process before
the first job and after each: ``rounds_job_over_floor`` pairs each job with the floor runs
around it, and ``job_over_floor_median`` is what the guard compares.

Besides the targets it reports where the time goes: ``phases_s`` (wall time in
the job's functions, wrapped at run time; no app code is changed),
``job_cpu_ms_per_call``, ``loop_lag`` (how late the event loop wakes a 5 ms
sleeper) and the fake's own time per call. ``--profile`` adds cProfile stats of
the event loop thread and of ``_write`` (the ORM thread) on stderr.

Processes (the parent only uses the standard library, plus psycopg to drop the
database at the end):

- server: the fake OpenAI server, in its own process by default, so that its
  handler threads do not compete with the job for the GIL (a real provider is
  another machine); the parent asks it for its counters over a pipe.
  ``--in-process-server`` runs it inside the job's process instead;
- job: creates the database (PostgreSQL) or a temp SQLite file, migrates,
  creates the project and examples, runs and checks the job;
- embedding (unless --skip-embedding): bench/embedding_teacher_bench.run() on
  Banking77 test.

Exactly one JSON object goes to stdout; progress goes to stderr. The exit
status is non-zero if the job did not succeed or a check failed.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_db import admin_url, postgres_create, quote_ident  # noqa: E402
from import_bench import run_child, setup_django  # noqa: E402  (stdlib-only helpers)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/distillapp_teacher_bench"
API_KEY_ENV = "TEACHER_BENCH_API_KEY"
MODEL = "gpt-4o-mini"
PRICE_INPUT = "0.15"  # USD per million tokens
PRICE_OUTPUT = "0.60"
PROMPT_TOKENS = 350
COMPLETION_TOKENS = 6
LABELS = [
    ("Billing", "Invoices, charges, refunds and payment methods."),
    ("Technical", "Errors, crashes, outages and things that do not work."),
    ("Account", "Logins, passwords, profiles and account settings."),
    ("Shipping", "Deliveries, tracking, returns and lost parcels."),
]
LABEL_NAMES = [name for name, _ in LABELS]
SUBJECTS = [
    "I was charged twice for my subscription",
    "The app crashes when I open the settings page",
    "I cannot log in after resetting my password",
    "My parcel has not arrived and tracking shows nothing",
]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def example_text(n: int) -> str:
    """A unique ticket text; its label is LABEL_NAMES[n % 4] (the fake reads it back from the #n)."""
    return f"{SUBJECTS[n % len(SUBJECTS)]}, please help (ticket #{n})"


def label_for(text: str) -> str:
    number = text.rpartition("#")[2].rstrip(")")
    return LABEL_NAMES[int(number) % len(LABEL_NAMES)] if number.isdigit() else LABEL_NAMES[0]


def make_responder(latency_s: float):
    import dataclasses

    from tests.fake_openai import answer_with, slow

    labels = answer_with(label_for)

    def with_usage(request):
        return dataclasses.replace(
            labels(request), prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS
        )

    return slow(with_usage, latency_s)


def timed_server(server):
    """Record how long the fake's handler takes per chat call (its latency included)."""
    original = server._handle_chat
    server.handle_seconds = 0.0

    def handle(handler, body):
        started = time.perf_counter()
        try:
            return original(handler, body)
        finally:
            server.handle_seconds += time.perf_counter() - started  # += under the GIL: close enough

    server._handle_chat = handle
    return server


def server_stats(server) -> dict:
    return {
        "calls": server.calls,
        "max_concurrency": server.max_concurrency,
        "errors": [repr(e) for e in server.errors],
        "distinct_texts": len(set(server.texts)),
        "handle_mean_ms": round(1000 * server.handle_seconds / max(1, server.calls), 2),
        "cpu_seconds": round(time.process_time(), 2),
    }


# --- the fake server in its own process ---------------------------------------------------------


def fake_server(latency_s: float, *, nagle: bool):
    """A FakeOpenAI answering every text with its label after latency_s.

    Unless nagle is True, its handler sets TCP_NODELAY: the fake writes the status
    line and headers, then the body, in two send()s, and with Nagle's algorithm on
    the body waits for the client's delayed ACK (~40 ms on Linux), which a real
    provider does not add. (--fake-nagle keeps the fake as it is, to show this.)
    """
    from tests import fake_openai

    fake_openai._Handler.disable_nagle_algorithm = not nagle
    return timed_server(fake_openai.FakeOpenAI(make_responder(latency_s)))


def serve(latency_s: float, nagle: bool) -> int:
    """Run the fake; print its base_url, then answer 'stats' lines on stdin until EOF."""
    with fake_server(latency_s, nagle=nagle) as server:
        print(json.dumps({"base_url": server.base_url}), flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(server_stats(server)), flush=True)
    return 0


class ServerProcess:
    def __init__(self, latency_s: float, *, nagle: bool):
        command = [sys.executable, str(Path(__file__).resolve()), "--_step", "server"]
        command += ["--latency-ms", str(latency_s * 1000)] + (["--fake-nagle"] if nagle else [])
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, cwd=REPO_ROOT, text=True
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fake server did not start")
        self.base_url = json.loads(line)["base_url"]

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the job (child process) -----------------------------------------------------------------------


class PhaseTimer:
    """Wall time and count of calls to a few functions of the job, wrapped at run time."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.marks: dict[str, float] = {}

    def wrap(self, owner, attr: str, phase: str, *, is_async: bool = False) -> None:
        original = getattr(owner, attr)
        timer = self

        def record(started: float) -> None:
            now = time.perf_counter()
            timer.totals[phase] = timer.totals.get(phase, 0.0) + now - started
            timer.calls[phase] = timer.calls.get(phase, 0) + 1
            timer.marks.setdefault(f"{phase}_first_end", now)
            timer.marks[f"{phase}_last_end"] = now

        if is_async:

            async def wrapped(*args, **kwargs):
                started = time.perf_counter()
                timer.marks.setdefault(f"{phase}_first_start", started)
                try:
                    return await original(*args, **kwargs)
                finally:
                    record(started)
        else:

            def wrapped(*args, **kwargs):
                started, cpu = time.perf_counter(), time.thread_time()
                timer.marks.setdefault(f"{phase}_first_start", started)
                try:
                    return original(*args, **kwargs)
                finally:
                    # CPU time of this thread only: wall time less this is waiting (I/O, the GIL).
                    key = f"{phase}_cpu"
                    timer.totals[key] = timer.totals.get(key, 0.0) + time.thread_time() - cpu
                    record(started)

        setattr(owner, attr, wrapped)


class LoopLag:
    """How late the job's event loop wakes a 5 ms sleeper: a measure of how busy (or blocked) it is."""

    INTERVAL = 0.005

    def __init__(self) -> None:
        self.lags: list[float] = []

    def wrap(self, module, attr: str) -> None:
        original = getattr(module, attr)
        monitor = self

        async def wrapped(*args, **kwargs):
            import asyncio

            task = asyncio.ensure_future(monitor.watch())
            try:
                return await original(*args, **kwargs)
            finally:
                task.cancel()

        setattr(module, attr, wrapped)

    async def watch(self) -> None:
        import asyncio

        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.INTERVAL)
            self.lags.append(time.perf_counter() - started - self.INTERVAL)

    def summary(self) -> dict:
        if not self.lags:
            return {}
        lags = sorted(self.lags)
        return {
            "samples": len(lags),
            "mean_ms": round(1000 * sum(lags) / len(lags), 2),
            "p50_ms": round(1000 * lags[len(lags) // 2], 2),
            "p99_ms": round(1000 * lags[int(len(lags) * 0.99)], 2),
            "max_ms": round(1000 * lags[-1], 2),
        }


def prepare_database(database_url: str) -> bool:
    """Create the PostgreSQL database if it is missing; True if this run created it."""
    if not database_url.startswith(("postgres://", "postgresql://")):
        return False
    return postgres_create(database_url)  # a copy of the migrated template


def run_job(args, data_dir: str) -> dict:
    created_db = prepare_database(args.database_url)
    # Reported first, so that the parent can drop the database even if a later step fails.
    Path(args._result + ".db").write_text(json.dumps({"db_created": created_db}))
    os.environ[API_KEY_ENV] = "sk-teacher-bench"
    if not args.strict_async:
        # labeling._run_openai reads job.prompt_version and job.project (lazy ORM
        # queries) inside its event loop, which Django refuses without this; the
        # test suite sets it too (tests/pytest_env.py). See --strict-async.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    setup_django(args.database_url, data_dir)
    from distillapp import embedded_redis

    # The job keeps each answer in the cache as it arrives (annotation/teacher/journal.py), as
    # an rq worker does with the installation's Redis; without one (until 2026-12-07) every
    # answer failed to connect and logged a warning, CPU no worker spends.
    atexit.register(embedded_redis.stop, embedded_redis.ensure_started(), save=False)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count, Sum

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    log(f"migrate: {time.perf_counter() - started:.1f}s")

    from annotation import projects, teacher
    from annotation.models import Example, Proposal, TeacherConfig, content_hash
    from annotation.teacher import client as teacher_boundary
    from annotation.teacher import labeling

    in_process = None
    base_url = args.base_url
    if args.in_process_server:
        in_process = fake_server(args.latency_ms / 1000, nagle=args.fake_nagle)
        base_url = in_process.base_url

    user, _ = get_user_model().objects.get_or_create(username="teacher-bench")
    slug = f"teacher-bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
    project = projects.project_create(name=f"Teacher bench {slug}", slug=slug, user=user, labels=LABELS)
    texts = [example_text(n) for n in range(1, args.examples + 1)]
    # The bench is the operator: it allows its own key variable and fake server.
    from django.conf import settings as django_settings

    django_settings.TEACHER_API_KEY_VARS = [*django_settings.TEACHER_API_KEY_VARS, API_KEY_ENV]
    django_settings.TEACHER_BASE_URLS = [*django_settings.TEACHER_BASE_URLS, base_url.rstrip("/")]
    config = teacher.teacher_config_for(project)
    config.provider = TeacherConfig.Provider.OPENAI
    config.model = MODEL
    config.base_url = base_url
    config.api_key_env = API_KEY_ENV
    config.concurrency = args.concurrency
    config.price_input_per_mtok = PRICE_INPUT
    config.price_output_per_mtok = PRICE_OUTPUT
    config.save()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT version()")
            server_version = cursor.fetchone()[0].split(" on ")[0]
        else:
            cursor.execute("SELECT sqlite_version()")
            server_version = f"SQLite {cursor.fetchone()[0]}"

    # What the rq worker imports once before it forks a work horse per job
    # (distillapp.worker.preload): not part of a job's time in production.
    from distillapp.worker import preload

    preload()
    # A full collection walks every object Django, openai and pydantic made at import (tens
    # of ms); where one fell into the timed job or a floor run it moved that CPU figure by up
    # to ~10 %. Frozen, the collections in there see only what the calls make.
    gc.collect()
    gc.freeze()
    floor_runs, floor_server = [], None
    if args.floor_calls:
        floor_server = ServerProcess(args.latency_ms / 1000, nagle=args.fake_nagle)
        floor_runs.append(sdk_floor(floor_server.base_url, args))

    from django.db import connections

    timer = PhaseTimer()
    queries = {"write": 0}
    write_profiler = None
    if args.profile:
        import cProfile

        # CPU time, not wall: _write runs in asgiref's one ORM thread.
        write_profiler = cProfile.Profile(time.thread_time)

    def counted_write(original):
        def write(*write_args):
            def count(execute, sql, params, many, context):
                queries["write"] += 1
                return execute(sql, params, many, context)

            # connections["default"] is the ORM thread's own connection here.
            with connections["default"].execute_wrapper(count):
                if write_profiler is not None:
                    return write_profiler.runcall(original, *write_args)
                return original(*write_args)

        return write

    labeling._write = counted_write(labeling._write)
    # Module globals looked up at call time by _run_openai: wrapping them changes no app code.
    timer.wrap(labeling, "_ensure_items", "ensure_items")
    timer.wrap(labeling, "_prepare", "prepare")
    timer.wrap(labeling, "_write", "write")
    timer.wrap(teacher_boundary.OpenAITeacher, "__init__", "client_init")
    timer.wrap(labeling, "_is_cancelled", "cancel_checks")
    timer.wrap(labeling, "_finish", "finish")
    timer.wrap(teacher_boundary.OpenAITeacher, "ask", "ask", is_async=True)
    lag = LoopLag()
    lag.wrap(labeling, "_run_openai")

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU of the main thread: the event loop
    # --rounds K: K jobs one after the other, each on a lot of examples made just before it,
    # with the floor run after each (bench/quick.py: figure and floor meet the same machine).
    jobs, rounds, seconds, cpu_seconds = [], [], 0.0, 0.0
    spans = {"first_call_after": 0.0, "calls_window": 0.0, "after_last_call": 0.0}
    done_texts = 0
    for size in lot_sizes(args.examples, args.rounds):
        lot = texts[done_texts : done_texts + size]
        done_texts += size
        Example.objects.bulk_create(
            [Example(project=project, text=t, content_hash=content_hash(t)) for t in lot], batch_size=2000
        )
        job = teacher.labeling_job_create(project=project, user=user, selection="unlabelled")
        if not teacher.labeling_job_claim(job.pk):
            raise SystemExit("could not claim the job")
        timer.marks = {}
        if profiler is not None:
            profiler.enable()
        cpu_started = time.process_time()
        started = time.perf_counter()
        teacher.run_with_heartbeat(job.pk, lambda job=job: teacher.labeling_job_run(job=job))
        job_seconds = time.perf_counter() - started
        job_cpu = time.process_time() - cpu_started
        if profiler is not None:
            profiler.disable()
        seconds += job_seconds
        cpu_seconds += job_cpu
        m = timer.marks
        # From the start to the first call: items, client, first chunk and its _prepare.
        spans["first_call_after"] += m.get("ask_first_start", started) - started
        # From the first call's start to the last call's end: the steady state.
        spans["calls_window"] += m.get("ask_last_end", started) - m.get("ask_first_start", started)
        # From the last answer to the end: the last writes, _finish, closing.
        spans["after_last_call"] += started + job_seconds - m.get("ask_last_end", started + job_seconds)
        rounds.append({"calls": size, "job_cpu_ms_per_call": round(job_cpu * 1000 / size, 3)})
        jobs.append(job)
        if floor_server is not None:
            floor_runs.append(sdk_floor(floor_server.base_url, args))
    if floor_server is not None:
        floor_server.close()
    if profiler is not None:
        import io
        import pstats

        for title, prof in (("event loop (main thread)", profiler), ("_write (ORM thread)", write_profiler)):
            report = io.StringIO()
            stats = pstats.Stats(prof, stream=report)
            stats.sort_stats("cumulative").print_stats(30)
            stats.sort_stats("tottime").print_stats(25)
            # The app's own functions (not the SDK's, the ORM's or asyncio's), by CPU.
            stats.sort_stats("cumulative").print_stats(r"/(annotation|tasks|distillapp)/", 40)
            print(f"===== cProfile: {title} =====\n{report.getvalue()}", file=sys.stderr)

    for job in jobs:
        job.refresh_from_db()
    proposals = Proposal.objects.filter(labeling_job__in=jobs)
    sums = proposals.aggregate(n=Count("pk"), i=Sum("input_tokens"), o=Sum("output_tokens"))
    rows = list(proposals.values_list("example__text", "value", "cost_usd"))
    # Summed in Python: SQLite's SUM() of a decimal column is a float.
    proposal_cost = sum((cost for _, _, cost in rows), Decimal("0"))
    wrong = sum(1 for text, value, _ in rows if value != label_for(text))
    t = timer.totals
    phases = {
        "ensure_items": t.get("ensure_items", 0.0),
        # OpenAITeacher(): mostly the first `import openai` in this process.
        "client_init": t.get("client_init", 0.0),
        "first_call_after": spans["first_call_after"],
        "ask_total": t.get("ask", 0.0),
        "ask_mean_ms": 1000 * t.get("ask", 0.0) / max(1, timer.calls.get("ask", 0)),
        "prepare": t.get("prepare", 0.0),
        "write": t.get("write", 0.0),
        "write_calls": timer.calls.get("write", 0),
        "write_ms_per_item": 1000 * t.get("write", 0.0) / max(1, args.examples),
        "write_cpu": t.get("write_cpu", 0.0),
        "write_queries": queries["write"],
        "cancel_checks": t.get("cancel_checks", 0.0),
        "calls_window": spans["calls_window"],
        "after_last_call": spans["after_last_call"],
        "finish": t.get("finish", 0.0),
    }
    failed = [job for job in jobs if job.status != "succeeded"]
    result = {
        "seconds": seconds,
        "status": failed[0].status if failed else "succeeded",
        "error": "; ".join(job.error for job in jobs if job.error),
        "total": sum(job.total for job in jobs),
        "done": sum(job.done for job in jobs),
        "failed": sum(job.failed for job in jobs),
        "cached": sum(job.cached for job in jobs),
        "input_tokens": sum(job.input_tokens for job in jobs),
        "output_tokens": sum(job.output_tokens for job in jobs),
        "cost_usd": str(sum((job.cost_usd for job in jobs), Decimal("0"))),
        "proposals": sums["n"],
        "proposal_input_tokens": sums["i"] or 0,
        "proposal_output_tokens": sums["o"] or 0,
        "proposal_cost_usd": str(proposal_cost),
        "wrong_labels": wrong,
        "phases": {k: (v if isinstance(v, int) else round(v, 3)) for k, v in phases.items()},
        "job_cpu_seconds": round(cpu_seconds, 3),
        "loop_lag": lag.summary(),
        "floor_runs": floor_runs,
        "rounds": rounds,
        "database_server": server_version,
        "project_id": project.pk,
    }
    if in_process is not None:
        result["server"] = server_stats(in_process)
        in_process.close()
    connection.close()
    return result


def sdk_floor(base_url: str, args) -> dict:
    """The bare SDK (teacher_floor.py's "post" mode) in this process, against a fake of its own
    (the job's fake counts only the job's calls): the CPU a call that bench/quick.py divides by,
    timed just before and just after the job so that both meet the same machine."""
    import asyncio

    import teacher_floor

    return asyncio.run(
        teacher_floor._run(base_url, "post", args.floor_calls, args.concurrency, args.latency_ms)
    )


def drop_database(database_url: str) -> str:
    import psycopg

    admin, name = admin_url(database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    return f"dropped database {name}"


def lot_sizes(examples: int, rounds: int) -> list[int]:
    """How --rounds splits the examples into jobs (the first ones a call bigger)."""
    rounds = max(1, min(rounds, examples))
    return [examples // rounds + (r < examples % rounds) for r in range(rounds)]


def overhead_per_wave(seconds: float, waves: int, latency_ms: float) -> float | None:
    """What each call costs beyond the latency, in ms, with C calls in flight.

    The calls go in waves of C (ceil(calls / C) a job) that each take the latency plus this
    overhead; a job's last wave, however few its calls, takes the latency too. (Until
    2026-12-07 the figure was seconds * C / calls * 1000 - L, which counts that partial wave's
    latency as overhead: +13.3 ms a call at 300 calls and C=32, +1.6 ms at 2,000.)"""
    if not waves:
        return None
    return seconds / waves * 1000 - latency_ms


def floor_figures(runs: list[dict], rounds: list[dict]) -> dict:
    """The in-process SDK floor's runs (--floor-calls), before the first job and after each.
    `job_over_floor`: all the jobs' CPU a call over the floor runs' mean, what the guard
    compares (with 3 jobs it moved ±4 % between runs on a busy machine, the median of the
    jobs' own ratios ±7 %); `rounds_job_over_floor`: each job over the runs around it."""
    if not runs:
        return {}
    cpu = [run["client_cpu_ms_per_call"] for run in runs]
    floor = sum(cpu) / len(cpu)
    calls = sum(r["calls"] for r in rounds)
    job = sum(r["job_cpu_ms_per_call"] * r["calls"] for r in rounds) / calls if calls else 0.0
    ratios = [
        r["job_cpu_ms_per_call"] / ((before + after) / 2)
        for r, before, after in zip(rounds, cpu, cpu[1:], strict=False)
    ]
    return {
        "floor_cpu_ms_per_call": round(floor, 3),
        "floor_runs": runs,
        "job_over_floor": round(job / floor, 4) if floor else None,
        "rounds_job_over_floor": [round(x, 3) for x in ratios],
    }


# --- the parent -----------------------------------------------------------------------------------


def child(step: str, result_file: Path, *extra: str) -> dict:
    return run_child(__file__, step, result_file, *extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples to label (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="the teacher's concurrency (default 32)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the fake's latency (default 200)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--sqlite", action="store_true", help="use a temp SQLite file instead of PostgreSQL")
    parser.add_argument(
        "--skip-embedding", action="store_true", help="do not run the embedding-teacher bench"
    )
    parser.add_argument(
        "--in-process-server", action="store_true", help="run the fake server inside the job's process"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the event loop and _write (stats to stderr)"
    )
    parser.add_argument(
        "--fake-nagle",
        action="store_true",
        help="leave Nagle's algorithm on in the fake server (as tests/fake_openai.py has it: +~40 ms a call)",
    )
    parser.add_argument(
        "--strict-async",
        action="store_true",
        help="do not set DJANGO_ALLOW_ASYNC_UNSAFE in the job (as in production; the job then fails)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="label the examples with this many jobs one after the other, each on a lot made "
        "just before it (default 1: one job)",
    )
    parser.add_argument(
        "--floor-calls",
        type=int,
        default=0,
        help="also time N calls of the bare SDK (teacher_floor.py --modes post) in the job's "
        "process just before and just after the job (floor_cpu_ms_per_call; default 0: not)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database (PostgreSQL) afterwards")
    parser.add_argument("--_step", help=argparse.SUPPRESS)
    parser.add_argument("--_result", help=argparse.SUPPRESS)
    parser.add_argument("--_data-dir", dest="data_dir", help=argparse.SUPPRESS)
    parser.add_argument("--_base-url", dest="base_url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._step == "server":
        return serve(args.latency_ms / 1000, args.fake_nagle)
    if args._step:
        if args._step == "job":
            result = run_job(args, args.data_dir)
        elif args._step == "embedding":
            import embedding_teacher_bench

            result = embedding_teacher_bench.run()
        else:
            raise SystemExit(f"unknown step {args._step}")
        Path(args._result).write_text(json.dumps(result))
        return 0

    if args.examples < 1 or args.concurrency < 1 or args.latency_ms <= 0:
        parser.error("--examples and --concurrency must be at least 1, --latency-ms above 0")
    tmp = Path(tempfile.mkdtemp(prefix="distill-teacher-bench-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    if args.sqlite:
        args.database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    load_before = os.getloadavg()[0]  # other work on the machine skews the timing
    ideal = args.concurrency / (args.latency_ms / 1000)
    result: dict = {
        "examples": args.examples,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "ideal_calls_per_second": round(ideal, 1),
        "database": "sqlite" if args.sqlite else "postgresql",
        "status": "not run",
    }
    ok = False
    server: ServerProcess | None = None
    db_created = False
    try:
        common = ["--database-url", args.database_url, "--_data-dir", str(data_dir)]
        job_args = [*common, "--examples", str(args.examples), "--concurrency", str(args.concurrency)]
        job_args += ["--latency-ms", str(args.latency_ms)]
        if args.in_process_server:
            job_args.append("--in-process-server")
        else:
            server = ServerProcess(args.latency_ms / 1000, nagle=args.fake_nagle)
            log(f"fake server at {server.base_url}")
            job_args += ["--_base-url", server.base_url]
        if args.profile:
            job_args.append("--profile")
        if args.strict_async:
            job_args.append("--strict-async")
        if args.fake_nagle:
            job_args.append("--fake-nagle")
        if args.floor_calls:
            job_args += ["--floor-calls", str(args.floor_calls)]
        job_args += ["--rounds", str(args.rounds)]
        log(f"labelling {args.examples:,} examples ({result['database']})")
        try:
            job = child("job", tmp / "job.json", *job_args)
        finally:
            db_file = tmp / "job.json.db"
            db_created = db_file.exists() and json.loads(db_file.read_text())["db_created"]
        stats = job.pop("server", None) or server.stats()
        seconds = job["seconds"]
        calls = stats["calls"]
        cps = calls / seconds if seconds else 0.0
        window = job["phases"]["calls_window"]
        waves = sum(math.ceil(size / args.concurrency) for size in lot_sizes(args.examples, args.rounds))
        overhead = overhead_per_wave(seconds, waves, args.latency_ms) if calls else None
        expected_input = args.examples * PROMPT_TOKENS
        expected_output = args.examples * COMPLETION_TOKENS
        checks = {
            "job_succeeded": job["status"] == "succeeded",
            "done_is_examples": job["done"] == job["total"] == args.examples and job["failed"] == 0,
            "calls_is_examples": calls == args.examples and stats["distinct_texts"] == args.examples,
            "max_concurrency_is_concurrency": stats["max_concurrency"]
            == min(args.concurrency, max(lot_sizes(args.examples, args.rounds))),
            "tokens_match_proposals": (job["input_tokens"], job["output_tokens"])
            == (job["proposal_input_tokens"], job["proposal_output_tokens"])
            == (expected_input, expected_output),
            "cost_matches_proposals": Decimal(job["cost_usd"]) == Decimal(job["proposal_cost_usd"]),
            "one_proposal_each": job["proposals"] == args.examples,
            "labels_right": job["wrong_labels"] == 0,
            "no_server_errors": not stats["errors"],
        }
        exact_cost = (
            expected_input * Decimal(PRICE_INPUT) + expected_output * Decimal(PRICE_OUTPUT)
        ) / 1_000_000
        result.update(
            {
                "calls_per_second": round(cps, 1),
                "overhead_ms_per_call": round(overhead, 2) if overhead is not None else None,
                "seconds": round(seconds, 3),
                "calls": calls,
                "max_concurrency": stats["max_concurrency"],
                "cost_usd": job["cost_usd"],
                "cost_usd_at_list_price": str(exact_cost),
                "input_tokens": job["input_tokens"],
                "output_tokens": job["output_tokens"],
                "status": job["status"],
                "error": job["error"],
                "done": job["done"],
                "failed": job["failed"],
                "cached": job["cached"],
                "phases_s": job["phases"],
                # The same two numbers over the calls' window only (no start-up, no tail).
                "steady_calls_per_second": round(calls / window, 1) if window else None,
                "steady_overhead_ms_per_call": round(overhead_per_wave(window, waves, args.latency_ms), 2)
                if window and calls
                else None,
                "job_cpu_seconds": job["job_cpu_seconds"],
                "job_cpu_ms_per_call": round(1000 * job["job_cpu_seconds"] / max(1, calls), 2),
                "loop_lag": job["loop_lag"],
                "rounds": job["rounds"],
                **floor_figures(job["floor_runs"], job["rounds"]),
                "server_handle_mean_ms": stats["handle_mean_ms"],
                "server_cpu_seconds": stats["cpu_seconds"],
                "checks": checks,
                "checks_ok": all(checks.values()),
                "targets": {"calls_per_second_min": round(0.8 * ideal, 1), "overhead_ms_max": 5.0},
                "targets_met": cps >= 0.8 * ideal and overhead is not None and overhead < 5.0,
                "server_in_process": args.in_process_server,
                "fake_tcp_nodelay": not args.fake_nagle,
                "django_allow_async_unsafe": not args.strict_async,
                "profiled": args.profile,
                "database_server": job["database_server"],
                "cpus": os.cpu_count(),
                "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "python": sys.version.split()[0],
                "date": time.strftime("%Y-%m-%d"),
            }
        )
        ok = job["status"] == "succeeded" and all(checks.values())
        if not ok:
            log(f"failed checks: {[k for k, v in checks.items() if not v]}")
    except Exception as exc:  # report a failed step as JSON too
        log(f"error: {exc}")
        result["status"] = "failed"
        result["error"] = str(exc)
    finally:
        if server is not None:
            server.close()
        if db_created and not args.keep:
            try:
                log(drop_database(args.database_url))
            except Exception as exc:
                log(f"could not drop the database: {exc}")
        elif not args.sqlite and not args.keep:
            log("the database was there before this run; the bench project is left in it")

    if not args.skip_embedding:
        try:
            log("embedding teacher on Banking77 test")
            emb = child("embedding", tmp / "embedding.json")
            result["embedding_teacher"] = {
                key: emb[key] for key in ("zero_shot_accuracy", "five_shot_accuracy", "examples_per_second")
            }
        except Exception as exc:
            log(f"embedding bench failed: {exc}")
            result["embedding_teacher"] = {"error": str(exc)}
            ok = False
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
