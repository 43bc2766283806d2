#!/usr/bin/env python
"""Benchmark of the review queue (annotation.review, annotation.views.review) on PostgreSQL.

    python bench/review_bench.py [--examples N] [--task classification|extraction]
                                 [--strategy S[,S...]|all] [--flag-coverage F|none]
                                 [--actions A] [--warmup W] [--churn F] [--synchronous-commit on|off]
                                 [--database-url URL] [--explain] [--keep] [--no-breakdown]
                                 [--floor-per-action K]

Target (issue #25): one action plus the next card in at most 10 queries and under 15 ms at
the median, at 100,000 and 1,000,000 examples, for every order and both task types.

Steps, each in its own child process (the parent only uses the standard library, plus
psycopg in the cleanup child); it sets the environment they need (DJANGO_SECURE=false, ...):

1. setup (bench/review_bench_setup.py): a project of the task type with N synthetic texts
   imported through the import service, one teacher proposal per text and a student's for a
   fifth, written with plain SQL with the queue fields sync_queue_fields() would give them
   (checked on a sample), quality scores, a finished label-quality run, VACUUM ANALYZE.
2. measure, once per order (--strategy), one after the other on the same project: the real
   request path through django.test.Client, two reviewers alternating. The first card is a
   GET of the review page; then W warm-up and A timed POSTs to review-act as the card's form
   posts them (60 % accept, 25 % correct, 15 % reject; an extraction card posts its span set
   as JSON in `value`), each on the card the previous response returned. Every SQL statement
   is counted and timed; after each action K (--floor-per-action) reference requests, the
   floor bench/quick.py divides by (review_bench_measure.install_reference_view), are timed
   too; a second loop times the view's parts one by one (--no-breakdown:
   skipped); --explain prints EXPLAIN (ANALYZE, BUFFERS) of the slowest SELECTs on stderr.
3. cleanup (unless --keep): DROP DATABASE if this run created it, else delete the project's
   rows and the bench users with plain SQL.

Exactly one JSON object goes to stdout: the first order's figures at the top level (what
bench/quick.py reads) and every order's under "orders"; progress goes to stderr. The exit
status is non-zero if a step failed (a missed target is reported in targets_met).
Measurements: bench/README.md, "Review queue".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_db import admin_url, quote_ident  # noqa: E402
from import_bench import delete_project, run_child  # noqa: E402  (stdlib-only helpers)
from review_bench_measure import measure  # noqa: E402  (stdlib-only at import)
from review_bench_setup import log, setup  # noqa: E402  (stdlib-only at import)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/distillapp_review_bench"
# Issue #25: one action plus the next card in at most 10 queries and under 15 ms at the median.
TARGET_MEDIAN_MS = 15.0
TARGET_MAX_QUERIES = 10
STRATEGIES = ("auto", "confidence", "disagreement", "errors", "kept", "random", "oldest")
# --strategy all: the orders issue #25 names, then the disagreement (risk) order.
ALL_ORDERS = ("auto", "confidence", "errors", "kept", "disagreement")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


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


def order_result(run: dict) -> dict:
    """One order's figures: the timed actions' times, CPU and queries, and whether they meet
    the targets (median under TARGET_MEDIAN_MS, at most TARGET_MAX_QUERIES queries at the median)."""
    times = run["times"]
    median = statistics.median(times)
    queries = run["breakdown"]["queries_per_action"]
    return {
        "served_order": run["served_order"],
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
        # CPU ms (this process + its backend) per timed action, per reference request (timed
        # between the actions: bench/quick.py's floor) and per /healthz request.
        "cpu_ms_per_action": run["cpu_ms_per_action"],
        "floor_cpu_ms": run["floor_cpu_ms"],
        "healthz_cpu_ms": run["healthz_cpu_ms"],
        "queries_per_action": queries,
        "queries_max": run["breakdown"]["queries_max"],
        "db_ms_per_action": run["breakdown"]["db_ms_per_action"],
        "verdicts": run["verdicts"],
        "targets_met": median < TARGET_MEDIAN_MS and queries <= TARGET_MAX_QUERIES,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples", type=int, default=100_000, help="examples in the project (default 100000)"
    )
    parser.add_argument(
        "--task",
        choices=["classification", "extraction"],
        default="classification",
        help="the project's task type (default classification)",
    )
    parser.add_argument("--actions", type=int, default=300, help="timed actions per order (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed actions first (default 20)")
    parser.add_argument(
        "--strategy",
        default="confidence",
        help="queue order, a comma-separated list of them (each timed in turn on the same project), "
        f"or 'all' ({','.join(ALL_ORDERS)}); default confidence",
    )
    parser.add_argument(
        "--flag-coverage",
        default="0.8",
        help="flag coverage of the project's finished label-quality run, which 'auto' reads "
        "(>= 0.5: auto serves 'kept'); 'none': no quality run, so auto serves the task's own "
        "order (default 0.8)",
    )
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
    parser.add_argument(
        "--floor-per-action",
        type=int,
        default=1,
        help="reference requests (the floor) timed after each action (default 1)",
    )
    parser.add_argument("--_step", help=argparse.SUPPRESS)
    parser.add_argument("--_result", help=argparse.SUPPRESS)
    parser.add_argument("--_data-dir", dest="data_dir", help=argparse.SUPPRESS)
    parser.add_argument("--_setup", dest="setup", help=argparse.SUPPRESS)
    parser.add_argument("--_drop", dest="drop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    orders = list(ALL_ORDERS) if args.strategy == "all" else [o.strip() for o in args.strategy.split(",")]
    try:
        coverage = None if args.flag_coverage == "none" else float(args.flag_coverage)
    except ValueError:
        parser.error(f"--flag-coverage takes a number or none, not {args.flag_coverage!r}")

    if args._step:
        if args._step == "setup":
            result = setup(
                args.database_url,
                args.data_dir,
                args.examples,
                args.churn,
                Path(args._result),
                task_type=args.task,
                flag_coverage=coverage,
                quality_run=args.flag_coverage != "none",
            )
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
                    args.floor_per_action,
                )
            elif args._step == "cleanup":
                result = cleanup(args.database_url, info["project_id"], info["user_ids"], args.drop)
            else:
                raise SystemExit(f"unknown step {args._step}")
        Path(args._result).write_text(json.dumps(result))
        return 0

    cards_per_order = (2 if not args.no_breakdown else 1) * (args.actions + args.warmup)
    if args.examples < len(orders) * cards_per_order + 10:
        parser.error(
            "--examples must leave cards for every order's loops (more than orders × 2 × (actions + warmup))"
        )
    if not 0 <= args.churn < 1:
        parser.error("--churn must be in [0, 1)")
    unknown = [o for o in orders if o not in STRATEGIES]
    if unknown or not orders:
        parser.error(f"unknown --strategy {','.join(unknown)}; the orders are {', '.join(STRATEGIES)} or all")
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

    common = ["--database-url", args.database_url, "--_data-dir", str(data_dir), "--task", args.task]
    setup_file = tmp / "setup.json"
    setup_info: dict | None = None
    result: dict = {"examples": args.examples, "database": "postgresql", "status": "not run"}
    ok = False
    try:
        log(f"setting up a {args.task} project with {args.examples:,} examples")
        started = time.perf_counter()
        setup_info = child(
            "setup",
            setup_file,
            *common,
            "--examples",
            str(args.examples),
            "--churn",
            str(args.churn),
            "--flag-coverage",
            args.flag_coverage,
        )
        setup_seconds = time.perf_counter() - started
        log(f"setup done in {setup_seconds:.1f}s; measuring {', '.join(orders)}")
        extra = ["--actions", str(args.actions), "--warmup", str(args.warmup)]
        if args.explain:
            extra.append("--explain")
        extra += ["--synchronous-commit", args.synchronous_commit]
        if args.no_breakdown:
            extra.append("--no-breakdown")
        extra += ["--floor-per-action", str(args.floor_per_action)]
        load_before = os.getloadavg()[0]
        if load_before > 0.5:
            log(f"the 1-minute load average is {load_before:.2f}: other work may skew the timings")
        runs = {}
        for order in orders:  # each in its own process, one after the other on the same project
            log(f"order {order}")
            runs[order] = child(
                "measure",
                tmp / f"measure-{order}.json",
                *common,
                "--_setup",
                str(setup_file),
                *extra,
                "--strategy",
                order,
            )
        by_order = {order: order_result(run) for order, run in runs.items()}
        first = runs[orders[0]]
        result = {
            "examples": setup_info["examples"],
            "task": args.task,
            **{k: v for k, v in by_order[orders[0]].items() if k != "targets_met"},
            "breakdown": first["breakdown"],
            "top_queries": first["top_queries"],
            "churn": args.churn,
            "reviewed_before": setup_info["reviewed_before"],
            "strategy": orders[0],
            # Every order timed, in turn, on the same project (the first one's figures are above).
            "orders": by_order,
            "quality_run_flag_coverage": coverage,
            "warmup": args.warmup,
            "proposals": setup_info["proposals"],
            "disagreements": setup_info["disagreements"],
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
            "target_max_queries": TARGET_MAX_QUERIES,
            # Every order timed meets both targets.
            "targets_met": all(o["targets_met"] for o in by_order.values()),
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
