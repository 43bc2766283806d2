#!/usr/bin/env python
"""Regression guard: every bench at a small size, each figure as a ratio to a floor measured in
the same run, beside the ratio recorded in bench/baseline.json.

    python bench/quick.py [--json] [--database-url URL] [--only import,review,teacher,serve]
                          [--rows N] [--examples N] [--calls N] [--texts N]
                          [--update-baseline --note "why the figures moved"]

A 2-core machine shared with other work cannot give stable absolute timings: wall times move
2-4x with the load, and even a CPU second buys 10-45 % less work while other work runs (cache
refills after each switch, the host). So each figure is CPU time (of the measured process, plus
its PostgreSQL backend where it has one), divided by the CPU time of a floor of like work timed
*between* the figure's own parts, so that both meet the same machine (the ratio: higher is
worse; bench/README.md, "Regression guard", says how each pairing was chosen):

- import (bench/import_bench.py --floor-during, 100,000 rows): the import over a bare COPY of
  25,000 of its rows into an unindexed temp table, on a connection of its own (the mean of 17
  tries: 2 before the import, one before every other lot staged and each later step, 2 after);
- review (bench/review_bench.py, --examples 10,000, 60 timed actions): a verdict + next card
  through django.test.Client over a reference request through the same client and middleware
  (the session's user, a few indexed reads, one write, a small template; no review code), two
  after each action;
- teacher (bench/teacher_bench.py --rounds 3, 300 calls at concurrency 32, 200 ms fake latency):
  the jobs' CPU per call over the bare SDK's in their process (teacher_floor.py's request
  shape, 100 calls before the first job and after each);
- serve (bench/serve_bench.py --tiny-model --quick, a tiny random classifier built in code,
  fp32, 2 web workers): the server's CPU per text in single-text requests and in 32-text
  requests, from one client, over the model alone's on the same texts, timed in this process
  after each request; and the app's own share: a single-text request through Django's WSGI
  handler in process over the student's predict on the same text, one after the other.

Wall-clock figures (seconds, calls/s, p50) are printed beside them, not compared.
A ratio more than 10 % above the baseline's is marked. The benches' own checks (counts, every
answer right) must pass or the exit status is 1; a marked ratio gives exit status 3. Update the
baseline only with --note saying why a figure moved. Progress goes to stderr; --json also prints
the whole result as JSON after the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
BASELINE = BENCH_DIR / "baseline.json"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/distillapp_quick"
WORSE = 1.10  # a ratio more than 10 % above the baseline's is marked
BENCHES = ("import", "review", "teacher", "serve")
TEACHER_ROUNDS = 3  # teacher_bench.py --rounds: jobs, each followed by a floor run
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_db import admin_url, postgres_create, quote_ident  # noqa: E402  (stdlib-only helpers)


def log(message: str) -> None:
    print(f"[quick] {message}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat: all but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def run_bench(name: str, script: str, args: list[str], logs: Path) -> tuple[dict, float, dict]:
    """Run one bench script; its JSON (stdout), wall seconds and the load while it ran: the
    1-minute load average before and after, then the cores the machine kept busy on average
    and, of those, the bench's own processes (its PostgreSQL backend not among them)."""
    import resource

    log_file = logs / f"{name}.log"
    load = [round(os.getloadavg()[0], 2)]
    busy = machine_cpu_seconds()
    own = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log_file, "w") as err:
        proc = subprocess.run(
            [sys.executable, str(BENCH_DIR / script), *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=REPO_ROOT,
        )
    seconds = time.perf_counter() - started
    load.append(round(os.getloadavg()[0], 2))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_cpu = after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime
    load = {
        "load_1m": load,
        "busy_cores": round((machine_cpu_seconds() - busy) / seconds, 2),
        "own_cores": round(own_cpu / seconds, 2),
    }
    out = proc.stdout.strip()
    try:
        result = json.loads(out)
    except json.JSONDecodeError:
        result = json.loads(out.splitlines()[-1]) if out else {}
    if proc.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise RuntimeError(f"{script} exited with {proc.returncode}: {result.get('error', '')}\n{tail}")
    return result, seconds, load


def figure(value: float, floor: float, unit: str, what: str, inverse: bool = False) -> dict:
    """A figure and its floor; the ratio is always 'how many times worse than the floor'."""
    ratio = (floor / value) if inverse else (value / floor)
    return {"value": value, "floor": floor, "unit": unit, "ratio": round(ratio, 3), "what": what}


def bench_import(args, logs: Path) -> dict:
    out, seconds, load = run_bench(
        "import",
        "import_bench.py",
        ["--rows", str(args.rows), "--database-url", args.database_url, "--keep", "--floor-during"],
        logs,
    )
    if not out.get("counts_ok"):
        raise RuntimeError(f"import counts wrong: {out}")
    cpu = out["cpu_s"]["python"] + out["cpu_s"]["postgres_backend"]
    return {
        "figures": {
            "import_cpu_s": figure(
                round(cpu, 2),
                out["floor_copy_cpu_s"],
                "CPU s",
                f"import {args.rows:,} rows / bare COPY of 25,000 of them, between the import's "
                "steps (this process + backend)",
            )
        },
        "extra": {
            "seconds": out["seconds"],
            "floor_copy_s": out["floor_copy_s"],
            "floor_copy_cpu_tries_s": out["floor_copy_cpu_tries_s"],
            "cpu_s": out["cpu_s"],
            "phases_cpu_s": out["phases_cpu_s"],
        },
        "wall_s": round(seconds, 1),
        "load": load,
    }


def bench_review(args, logs: Path) -> dict:
    actions = max(10, min(60, args.examples // 4 - 20))
    warmup = 5
    out, seconds, load = run_bench(
        "review",
        "review_bench.py",
        ["--examples", str(args.examples), "--actions", str(actions), "--warmup", str(warmup)]
        + ["--database-url", args.database_url, "--keep", "--no-breakdown", "--floor-per-action", "2"],
        logs,
    )
    return {
        "figures": {
            "review_action_cpu_ms": figure(
                out["cpu_ms_per_action"],
                out["floor_cpu_ms"],
                "CPU ms",
                f"review action ({actions}) / reference request between them, same client "
                "(this process + backend)",
            )
        },
        "extra": {
            "median_ms": out["median_ms"],
            "p95_ms": out["p95_ms"],
            "healthz_cpu_ms": out["healthz_cpu_ms"],
        },
        "wall_s": round(seconds, 1),
        "load": load,
    }


def bench_teacher(args, logs: Path) -> dict:
    app, seconds, load = run_bench(
        "teacher",
        "teacher_bench.py",
        ["--examples", str(args.calls), "--skip-embedding", "--database-url", args.database_url]
        + ["--rounds", str(TEACHER_ROUNDS), "--floor-calls", str(max(32, args.calls // TEACHER_ROUNDS))],
        logs,
    )
    if not app.get("checks_ok"):
        raise RuntimeError(f"teacher checks failed: {app.get('checks')}")
    return {
        "figures": {
            "teacher_cpu_ms_per_call": figure(
                app["job_cpu_ms_per_call"],
                app["floor_cpu_ms_per_call"],
                "CPU ms",
                f"labelling jobs / bare SDK in their process before and after each, {args.calls} calls "
                f"in {TEACHER_ROUNDS} jobs",
            )
        },
        "extra": {
            "calls_per_second": app["calls_per_second"],
            "sdk_calls_per_second": [run["calls_per_second"] for run in app["floor_runs"]],
            "sdk_cpu_ms_per_call": [run["client_cpu_ms_per_call"] for run in app["floor_runs"]],
            "rounds_job_over_floor": app["rounds_job_over_floor"],
            "steady_overhead_ms_per_call": app["steady_overhead_ms_per_call"],
        },
        "wall_s": round(seconds, 1),
        "load": load,
    }


def bench_serve(args, logs: Path) -> dict:
    # Half --texts in single-text requests and --texts in requests of 32, each sent twice:
    # from 8 clients (p50, throughput), then from one client paired with the model alone.
    batches = max(1, args.texts // 32)
    requests = max(16, args.texts // 2)
    out, seconds, load = run_bench(
        "serve",
        "serve_bench.py",
        ["--tiny-model", "--quick", "--runtimes", "torch", "--gold", "50", "--web-workers", "2"]
        + ["--requests", str(requests), "--batches", str(batches), "--app-share-requests", "300"]
        + ["--log-flush-seconds", "0.05"],
        logs,
    )
    server, share = out["fp32"], out["app_share"]
    pairs = server["paired_with_model_alone"]
    return {
        "figures": {
            "serve_single_cpu_ms": figure(
                pairs["single"]["server_cpu_ms_per_text"],
                pairs["single"]["model_alone_cpu_ms_per_text"],
                "CPU ms",
                f"server per single-text request ({requests}, one client) / the model alone on "
                "its text after each",
            ),
            "serve_batched_cpu_ms_per_text": figure(
                pairs["batched_32"]["server_cpu_ms_per_text"],
                pairs["batched_32"]["model_alone_cpu_ms_per_text"],
                "CPU ms",
                f"server per text in requests of 32 ({batches}, one client) / the model alone on "
                "their texts after each",
            ),
            "serve_app_cpu_ms": figure(
                share["request_cpu_ms"],
                share["model_cpu_ms"],
                "CPU ms",
                "one single-text request through Django in process / the student's predict after it",
            ),
        },
        "extra": {
            "app_cpu_ms": share["app_cpu_ms"],
            "p50_ms": server["p50_ms"],
            "batched_texts_per_second": server["batched_texts_per_second"],
            "server_cpu_ms_8_clients": {
                k: v["server_cpu_ms"] for k, v in server["where_the_time_goes"].items()
            },
        },
        "wall_s": round(seconds, 1),
        "load": load,
    }


RUNNERS = {"import": bench_import, "review": bench_review, "teacher": bench_teacher, "serve": bench_serve}


def sizes(args) -> dict:
    return {"rows": args.rows, "examples": args.examples, "calls": args.calls, "texts": args.texts}


def compare(result: dict, baseline: dict | None) -> list[dict]:
    """One row per figure, with the baseline's ratio where the sizes are the baseline's."""
    rows = []
    same_sizes = baseline is not None and baseline.get("sizes") == result["sizes"]
    for bench, data in result["benches"].items():
        for key, fig in data.get("figures", {}).items():
            base = (baseline or {}).get("figures", {}).get(key) if same_sizes else None
            change = fig["ratio"] / base["ratio"] - 1 if base else None
            rows.append(
                {
                    "bench": bench,
                    "figure": key,
                    **fig,
                    "baseline_ratio": base["ratio"] if base else None,
                    "change": round(change, 3) if change is not None else None,
                    "worse": change is not None and fig["ratio"] > base["ratio"] * WORSE,
                }
            )
    return rows


def print_table(result: dict, rows: list[dict], baseline: dict | None) -> None:
    print(f"CPU: {result['cpu']} ({result['cpus']} cores)")
    print(
        f"load average 1m: {result['load_1m'][0]} before, {result['load_1m'][1]} after; "
        f"busy cores {result.get('busy_cores')}; "
        f"total {result['seconds']} s; sizes {result['sizes']}"
    )
    if baseline:
        same = baseline.get("sizes") == result["sizes"]
        print(
            f"baseline: {baseline.get('date')} on {baseline.get('cpu')}, load {baseline.get('load_1m')}"
            + ("" if same else f" -- other sizes {baseline.get('sizes')}: not compared")
        )
    header = (
        f"{'bench':8} {'figure':32} {'value':>10} {'floor':>10} {'ratio':>7} {'baseline':>8} {'change':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        base = f"{row['baseline_ratio']:.2f}" if row["baseline_ratio"] is not None else "-"
        change = f"{row['change']:+.0%}" if row["change"] is not None else "-"
        mark = "  << more than 10 % worse" if row["worse"] else ""
        print(
            f"{row['bench']:8} {row['figure']:32} {row['value']:>10g} {row['floor']:>10g} "
            f"{row['ratio']:>7.2f} {base:>8} {change:>7}{mark}"
        )
        print(f"{'':8} {'  ' + row['what'] + ' (' + row['unit'] + ')':80}")
    for bench, data in result["benches"].items():
        if "error" in data:
            print(f"{bench:8} FAILED: {data['error'].splitlines()[0][:200]}")
        else:
            print(
                f"{bench:8} wall {data['wall_s']} s, load {json.dumps(data.get('load'))}, {json.dumps(data['extra'])}"
            )


def ensure_database(database_url: str) -> bool:
    """Create the database if missing (so no bench drops it); True if this run created it."""
    return postgres_create(database_url)  # a copy of the migrated template (bench_db.py)


def drop_database(database_url: str) -> None:
    import psycopg

    admin, name = admin_url(database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="PostgreSQL for import, review and teacher (created and dropped unless it exists)",
    )
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of the benches")
    parser.add_argument("--rows", type=int, default=100_000, help="import rows (default 100000)")
    parser.add_argument("--examples", type=int, default=10_000, help="review examples (default 10000)")
    parser.add_argument("--calls", type=int, default=300, help="teacher calls (default 300)")
    parser.add_argument(
        "--texts", type=int, default=1000, help="texts served: half one a request, all in 32s (default 1000)"
    )
    parser.add_argument(
        "--baseline", default=str(BASELINE), help="baseline file (default bench/baseline.json)"
    )
    parser.add_argument("--update-baseline", action="store_true", help="write this run as the baseline")
    parser.add_argument("--note", default="", help="why the baseline moves (required with --update-baseline)")
    args = parser.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    if set(only) - set(BENCHES):
        parser.error(f"--only takes {', '.join(BENCHES)}")
    if args.update_baseline and not args.note.strip():
        parser.error("--update-baseline needs --note saying why the figures moved")

    baseline_path = Path(args.baseline)
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else None
    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    busy_before = machine_cpu_seconds()
    created = ensure_database(args.database_url) if {"import", "review", "teacher"} & set(only) else False
    benches: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="distill-quick-") as tmp:
        try:
            for name in only:
                log(f"{name} ...")
                try:
                    benches[name] = RUNNERS[name](args, Path(tmp))
                    log(f"{name}: {benches[name]['wall_s']} s")
                except Exception as exc:  # reported in the table; the others still run
                    log(f"{name} failed: {exc}")
                    benches[name] = {"error": str(exc)}
        finally:
            if created:
                drop_database(args.database_url)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "load_1m": [load_before, round(os.getloadavg()[0], 2)],
        "busy_cores": round((machine_cpu_seconds() - busy_before) / (time.perf_counter() - started), 2),
        "seconds": round(time.perf_counter() - started, 1),
        "sizes": sizes(args),
        "benches": benches,
    }
    rows = compare(result, baseline)
    print_table(result, rows, baseline)
    if args.json:
        print(json.dumps({**result, "table": rows}, indent=1))
    failed = any("error" in data for data in benches.values())
    if args.update_baseline:
        if failed or set(only) != set(BENCHES):
            log("not updating the baseline: every bench must run and pass")
        else:
            record = {
                "date": result["date"],
                "cpu": result["cpu"],
                "cpus": result["cpus"],
                "load_1m": result["load_1m"],
                "sizes": result["sizes"],
                "note": args.note.strip(),
                "history": [
                    *(baseline or {}).get("history", []),
                    {"date": result["date"], "note": args.note.strip()},
                ],
                "figures": {
                    row["figure"]: {k: row[k] for k in ("value", "floor", "unit", "ratio")} for row in rows
                },
            }
            baseline_path.write_text(json.dumps(record, indent=1) + "\n")
            log(f"wrote {baseline_path}")
    if failed:
        return 1
    return 3 if any(row["worse"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
