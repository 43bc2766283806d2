#!/usr/bin/env python
"""The prediction API under rising load, then a soak with the rq worker killed twice (issue #12).

    python bench/load_bench.py [--max-clients N] [--step-seconds S] [--soak-seconds S] [--smoke]
                               [--database-url URL] [--redis-url URL] [--model DIR] ...

Loopback only, bounded in time (each step and the soak have a deadline; requests time out
after --request-timeout s). Requests carry ``X-Forwarded-Proto: https`` as from the TLS proxy
the app's default settings expect (DJANGO_SECURE). One JSON object goes to stdout, progress to
stderr.

1. setup: ``serve_bench.setup`` (a temp DISTILL_DATA_DIR, SQLite unless --database-url, a
   Banking77 project, a MiniLM-L6 student fine-tuned briefly or reused from --model, evaluated
   on a frozen gold set and quantized). The run is promoted as ``--runtime`` (onnx-int8 by
   default; torch when the int8 gate refuses it) with the confidence threshold that sends
   ``--review-share`` of the traffic texts to review (measured here on 200 of them), with the
   serving config's default fallback, "review": those texts answer null and are stored once
   as ``source=traffic`` examples by the web processes' background writer.
2. server: ``serve_bench.Server`` = ``manage.py serve --no-worker`` (gunicorn, serve's own
   defaults: 2 web processes per core x 4 threads, one math thread each; embedded Redis unless
   --redis-url) and one ``manage.py rqworker llm training default`` started beside it, as
   ``serve`` would start it (it is started apart so the bench can kill it: ``serve`` stops
   everything when one of its children dies).
3. ramp: closed-loop clients (threads, one keep-alive ``http.client`` connection each, one
   text per request drawn from Banking77 test texts that are not gold) for --step-seconds at
   1, 2, 4, 8, ... clients until p99 passes 1 s (or --max-clients). Per step: requests/s,
   p50/p95/p99, errors, and the PredictionLog rows against the successful requests, counted
   cumulatively from before the warm-up (after each step the bench waits, past the background
   writer's flush interval, until every answered request so far has its row or none arrives
   for 10 s; ``prediction_log_wait_s`` is how long that took). ``held_rps`` is the best rate of
   a step with zero errors, no row missing and p99 <= 1 s.
4. soak: --soak-seconds at half ``held_rps`` (open loop: request k is sent at k / rate, by as
   many client threads as the held step had). At 1/3 and 2/3 of it the rq worker is killed
   with SIGKILL and started again; a probe job (``os.getpid``) then shows that the new worker
   takes jobs (the soak runs on until 3 s after the second restart if a slow restart pushed
   it past --soak-seconds). Reported: errors, latency, PredictionLog rows against successes, traffic
   examples (every distinct text answered "review" in the whole run must be stored exactly
   once, with exactly one proposal: lost / unexpected / duplicated), and the RSS of each web
   process (gunicorn master and workers) at the soak's start and end.

Exits 1 when a request failed (outside the ramp's last, overloaded step) or a row was lost or
duplicated. The temp directory is removed
unless --keep. --smoke: a tiny student (300 texts, 1 epoch, 100 gold), 4 s steps up to 64
clients, a 20 s soak.

--mixed: reviewers at human pace, API clients, imports and a training run at once, with the
worker killed every 2 minutes, against the same actions on the idle server (bench/load_mixed.py).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_mixed  # noqa: E402 - --mixed: reviewers, API clients, imports and training at once
import serve_bench  # noqa: E402 - the sibling bench, whose setup and server this one reuses
from banking77_distill import cpu_model  # noqa: E402
from serve_bench import REPO_ROOT, Server, log, percentile  # noqa: E402

P99_LIMIT_MS = 1000.0


# --- the client ----------------------------------------------------------------------------------


class Drive:
    """Client threads sending one text per request to the predict API until a deadline.

    Closed loop (`rate` None: each client sends its next request when the last one is
    answered) or open loop (request k is due at k / rate s; a late client sends at once and
    the lag is reported).
    """

    def __init__(self, *, port: int, token: str, slug: str, texts: list[str], timeout: float):
        self.port = port
        self.path = f"/api/v1/projects/{slug}/predict"
        # As behind the TLS proxy production runs behind: without it, the app's default
        # settings (DJANGO_SECURE unless DEBUG) answer plain HTTP with a redirect to https.
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",
        }
        self.texts = texts
        self.timeout = timeout

    def run(
        self,
        *,
        clients: int,
        seconds: float,
        rate: float | None = None,
        seed: int = 0,
        until: threading.Event | None = None,
    ) -> dict:
        """Send for `seconds` (and, given `until`, until it is set as well)."""
        lock = threading.Lock()
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        samples: list[str] = []
        review: list[str] = []
        routes: Counter[str] = Counter()
        lag_ms = [0.0]
        due = [0]
        barrier = threading.Barrier(clients + 1)
        begin = [0.0]

        def client(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            barrier.wait()
            start = begin[0]
            stop_at = start + seconds
            try:
                while True:
                    if rate is not None:
                        with lock:
                            k = due[0]
                            due[0] += 1
                        at = start + k / rate
                        if at >= stop_at and (until is None or until.is_set()):
                            return
                        wait = at - time.perf_counter()
                        if wait > 0:
                            time.sleep(wait)
                        else:
                            with lock:
                                lag_ms[0] = max(lag_ms[0], -wait * 1000)
                    elif time.perf_counter() >= stop_at and (until is None or until.is_set()):
                        return
                    text = rng.choice(self.texts)
                    sent = time.perf_counter()
                    try:
                        connection.request(
                            "POST", self.path, body=json.dumps({"texts": [text]}), headers=self.headers
                        )
                        response = connection.getresponse()
                        raw = response.read()
                        status = response.status
                    except (OSError, http.client.HTTPException) as exc:
                        connection.close()  # reconnects on the next request
                        with lock:
                            latencies.append((time.perf_counter() - sent) * 1000)
                            errors[type(exc).__name__] += 1
                            if len(samples) < 5:
                                samples.append(f"{type(exc).__name__}: {exc}")
                        continue
                    elapsed = (time.perf_counter() - sent) * 1000
                    route = None
                    if status == 200:
                        try:
                            predictions = json.loads(raw)["predictions"]
                            if len(predictions) == 1:
                                route = predictions[0]["route"]
                        except (ValueError, KeyError, TypeError):
                            pass
                    with lock:
                        latencies.append(elapsed)
                        if route in ("student", "review"):
                            routes[route] += 1
                            if route == "review":
                                review.append(text)
                        else:
                            errors[str(status)] += 1
                            if len(samples) < 5:
                                samples.append(f"{status}: {raw[:300]!r}")
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        begin[0] = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join(seconds + self.timeout + (150 if until else 30))
        wall = time.perf_counter() - begin[0]
        ok = routes["student"] + routes["review"]
        out = {
            "clients": clients,
            "seconds": round(wall, 1),
            "requests": len(latencies),
            "ok": ok,
            "requests_per_second": round(ok / wall, 1),
            "p50_ms": percentile(latencies, 50) if latencies else None,
            "p95_ms": percentile(latencies, 95) if latencies else None,
            "p99_ms": percentile(latencies, 99) if latencies else None,
            "errors": sum(errors.values()),
            "error_kinds": dict(errors),
            "error_samples": samples,
            "routes": dict(routes),
            "_review_texts": review,
        }
        if rate is not None:
            out["target_rps"] = round(rate, 1)
            out["max_lag_behind_schedule_ms"] = round(lag_ms[0], 1)
        if any(t.is_alive() for t in threads):
            out["clients_still_running"] = sum(t.is_alive() for t in threads)
        return out


# --- what the server wrote -----------------------------------------------------------------------


class LogLedger:
    """Successful requests against PredictionLog rows, counted from a starting point.

    Cumulative: the web processes write their logs in the background, and under load a
    step's last rows can land during the next step; so each check waits until every
    request answered so far has its row (or nothing more arrives), not just this step's.
    """

    def __init__(self) -> None:
        from django.db.models import Max

        from training.models import PredictionLog

        with self._closing():
            self.first_pk = PredictionLog.objects.aggregate(m=Max("pk"))["m"] or 0
        self.expected = 0
        self.rows = 0

    @staticmethod
    @contextlib.contextmanager
    def _closing():
        from django.db import connections

        try:
            yield
        finally:
            connections.close_all()  # hold no connection (a SQLite lock) while the server writes

    def settle(self, ok: int, *, quiet_seconds: float = 10, limit: float = 60) -> dict:
        """Add `ok` answered requests; wait for their rows. This batch's rows and the wait."""
        from django.conf import settings

        from training.models import PredictionLog

        self.expected += ok
        before = self.rows
        started = time.monotonic()
        time.sleep(settings.SERVING_LOG_FLUSH_SECONDS)
        last_change, count = time.monotonic(), -1
        while True:
            with self._closing():
                now = PredictionLog.objects.filter(pk__gt=self.first_pk).count()
            if now != count:
                count, last_change = now, time.monotonic()
            waited = time.monotonic() - started
            if count >= self.expected or time.monotonic() - last_change > quiet_seconds or waited > limit:
                break
            time.sleep(0.5)
        self.rows = count
        return {
            "prediction_log_rows": count - before,
            "prediction_log_missing_so_far": self.expected - count,
            "prediction_log_wait_s": round(waited, 1),
        }


def traffic_check(project, review_texts: list[str]) -> dict:
    """Every distinct text answered "review" is one source=traffic example with one proposal."""
    from django.db import connections
    from django.db.models import Count

    from annotation.models import Example, content_hash

    expected = {content_hash(t) for t in review_texts}
    try:
        rows = list(
            Example.objects.filter(project=project, source=Example.Source.TRAFFIC)
            .annotate(n=Count("proposals"))
            .values_list("content_hash", "n")
        )
    finally:
        connections.close_all()
    stored = Counter(h for h, _ in rows)
    return {
        "review_answers": len(review_texts),
        "distinct_review_texts": len(expected),
        "stored": len(rows),
        "lost": len(expected - set(stored)),
        "unexpected": len(set(stored) - expected),
        "duplicated": sum(n - 1 for n in stored.values() if n > 1),
        "examples_without_exactly_one_proposal": sum(1 for _, n in rows if n != 1),
    }


# --- processes -----------------------------------------------------------------------------------


class RqWorker:
    """`manage.py rqworker` on the app's queues (or `queues`), as `manage.py serve` starts it."""

    def __init__(
        self, data_dir: Path, extra_env: dict, queues: tuple[str, ...] | None = None, name: str = "rqworker"
    ):
        self.data_dir = data_dir
        self.env = {**os.environ, "DISTILL_DATA_DIR": str(data_dir), **extra_env}
        self.queues, self.name = queues, name  # None: every queue
        self.starts = 0
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        """Start it; the seconds until it listens on its queues."""
        from django.conf import settings

        self.starts += 1
        self.log_path = self.data_dir / f"{self.name}-{self.starts}.log"
        with open(self.log_path, "w") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "rqworker", *(self.queues or settings.RQ_QUEUE_NAMES)],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        started = time.monotonic()
        while time.monotonic() - started < 60:
            if self.process.poll() is not None:
                raise RuntimeError(f"the rq worker exited: {self.log_path.read_text()[-2000:]}")
            if "Listening on" in self.log_path.read_text():
                return round(time.monotonic() - started, 1)
            time.sleep(0.2)
        raise RuntimeError("the rq worker did not start listening within 60 s")

    def kill(self) -> int:
        pid = self.process.pid
        os.kill(pid, signal.SIGKILL)
        self.process.wait()
        return pid

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            import psutil

            # Its work horse too: killed after the timeout, the worker would leave it running.
            horses = psutil.Process(self.process.pid).children(recursive=True)
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for horse in horses:
                with contextlib.suppress(psutil.NoSuchProcess):
                    horse.kill()


def probe_job(timeout: float = 60) -> float | None:
    """Seconds until a trivial job queued now has been run by a worker (None: not within timeout)."""
    import django_rq

    started = time.monotonic()
    job = django_rq.get_queue("default").enqueue("os.getpid")
    while time.monotonic() - started < timeout:
        if job.get_status(refresh=True) == "finished":
            return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    return None


def web_processes(server: Server) -> dict[int, tuple[str, float]]:
    """pid -> (role, RSS in MB) of the gunicorn master and its workers."""
    import psutil

    out = {}
    try:
        for p in psutil.Process(server.process.pid).children(recursive=True):
            try:
                if "gunicorn" not in " ".join(p.cmdline()):
                    continue
                role = "master" if p.ppid() == server.process.pid else "worker"
                out[p.pid] = (role, round(p.memory_info().rss / 2**20, 1))
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        pass
    return out


def memory_report(before: dict, after: dict) -> list[dict]:
    rows = []
    for pid, (role, rss) in sorted(before.items()):
        end = after.get(pid)
        rows.append(
            {
                "pid": pid,
                "role": role,
                "rss_start_mb": rss,
                "rss_end_mb": end[1] if end else None,
                "growth_pct": round((end[1] - rss) * 100 / rss, 1) if end else None,
                **({} if end else {"gone": "this process was replaced during the soak"}),
            }
        )
    for pid, (role, rss) in sorted(after.items()):
        if pid not in before:
            rows.append({"pid": pid, "role": role, "rss_end_mb": rss, "new": "started during the soak"})
    return rows


# --- the bench -----------------------------------------------------------------------------------


def prepare(args, data_dir: Path) -> dict:
    """serve_bench's setup, then the promotion this bench serves."""
    import django

    # serve_bench.setup removes DATABASE_URL/REDIS_URL from the environment before its
    # django.setup(); settings read here first keep the URLs given on the command line.
    os.environ["DISTILL_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    for name, value in (("DATABASE_URL", args.database_url), ("REDIS_URL", args.redis_url)):
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
    django.setup()
    ctx = serve_bench.setup(args, data_dir)

    import numpy as np
    from django.db import connections

    from annotation.models import Example, content_hash
    from training import serving

    # Traffic is Banking77 test texts that are not already in the project (gold), so that
    # every text answered "review" must become a new traffic example.
    known = set(Example.objects.filter(project=ctx["project"]).values_list("content_hash", flat=True))
    pool = list(dict.fromkeys(t for t in ctx["test_texts"] if content_hash(t) not in known))
    # Every text answered "review" is kept (the default keeps a 10 % sample): the soak checks
    # each one is stored exactly once.
    config = serving.serving_config_for(ctx["project"])
    config.traffic_sample_rate = 1.0
    config.save()
    runtime = args.runtime
    try:
        version = serving.version_promote(run=ctx["run"], user=ctx["user"], threshold=0.0, runtime=runtime)
    except serving.ServingError as exc:
        log(f"{runtime} refused ({exc.code}: {exc}); serving torch")
        runtime = "torch"
        version = serving.version_promote(run=ctx["run"], user=ctx["user"], threshold=0.0, runtime=runtime)
    _, confidences = serving.student_predict(version, random.Random(3).sample(pool, min(200, len(pool))))
    threshold = float(np.quantile(confidences, args.review_share)) if args.review_share > 0 else 0.0
    serving.version_promote(run=ctx["run"], user=ctx["user"], threshold=threshold, runtime=runtime)
    connections.close_all()
    log(f"serving {runtime}, threshold {threshold:.4f}, {len(pool)} traffic texts")
    return {**ctx, "pool": pool, "runtime": runtime, "threshold": round(threshold, 4)}


def ramp(args, drive: Drive, ledger: LogLedger) -> dict:
    steps = []
    clients = 1
    while clients <= args.max_clients:
        step = drive.run(clients=clients, seconds=args.step_seconds, seed=clients)
        step.update(ledger.settle(step["ok"]))
        steps.append(step)
        log(
            f"ramp {clients:>4} clients: {step['requests_per_second']} req/s, p50 {step['p50_ms']} "
            f"p95 {step['p95_ms']} p99 {step['p99_ms']} ms, {step['errors']} errors, "
            f"log {step['prediction_log_rows']}/{step['ok']} in {step['prediction_log_wait_s']} s"
        )
        if step["p99_ms"] is None or step["p99_ms"] > P99_LIMIT_MS or step["errors"] > step["requests"] / 2:
            break
        clients *= 2
    held = [
        s
        for s in steps
        if not s["errors"]
        and not s["prediction_log_missing_so_far"]
        and (s["p99_ms"] or math.inf) <= P99_LIMIT_MS
    ]
    best = max(held, key=lambda s: s["requests_per_second"]) if held else None
    return {
        "steps": steps,
        "held_rps": best["requests_per_second"] if best else None,
        "held_at_clients": best["clients"] if best else None,
        "p99_passed_1s": steps[-1]["p99_ms"] is not None and steps[-1]["p99_ms"] > P99_LIMIT_MS,
        "ok_requests_with_warm_up": ledger.expected,
        "prediction_log_rows_with_warm_up": ledger.rows,
        "prediction_log_lost": ledger.expected - ledger.rows,
    }


def soak(
    args, drive: Drive, server: Server, worker: RqWorker, ledger: LogLedger, rate: float, clients: int
) -> dict:
    kills: list[dict] = []
    started = time.monotonic()
    # The soak goes on past --soak-seconds when a slow restart pushed the second kill late,
    # so that traffic runs through both kills and a few seconds after.
    kills_over = threading.Event()

    def kill_twice() -> None:
        for fraction in (1 / 3, 2 / 3):
            time.sleep(max(0.0, started + args.soak_seconds * fraction - time.monotonic()))
            event = {"at_s": round(time.monotonic() - started, 1)}
            try:
                event["killed_pid"] = worker.kill()
                time.sleep(1)
                event["restart_s"] = worker.start()
                event["restarted_pid"] = worker.process.pid
                event["probe_job_s"] = probe_job()
            except Exception as exc:  # reported, the soak goes on
                event["failure"] = f"{type(exc).__name__}: {exc}"
            kills.append(event)
            log(f"soak: worker kill {event}")
        time.sleep(3)
        kills_over.set()

    rss_start = web_processes(server)
    killer = threading.Thread(target=kill_twice, daemon=True)
    killer.start()
    out = drive.run(clients=clients, seconds=args.soak_seconds, rate=rate, seed=99991, until=kills_over)
    killer.join(120)
    rss_end = web_processes(server)
    out.update(ledger.settle(out["ok"]))
    out["prediction_log_lost"] = ledger.expected - ledger.rows  # the whole run's, warm-up on
    out["worker_kills"] = kills
    out["web_memory"] = memory_report(rss_start, rss_end)
    growths = [r["growth_pct"] for r in out["web_memory"] if r.get("growth_pct") is not None]
    out["max_memory_growth_pct"] = max(growths) if growths else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-clients", type=int, default=256)
    parser.add_argument("--step-seconds", type=float, default=30)
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--smoke", action="store_true", help="Tiny: 4 s steps up to 64 clients, a 20 s soak.")
    parser.add_argument(
        "--database-url", help="An empty PostgreSQL database (default: SQLite in the temp dir)."
    )
    parser.add_argument("--redis-url", help="A Redis for the queues (default: the embedded one).")
    parser.add_argument("--runtime", default="onnx-int8", choices=["onnx-int8", "torch"])
    parser.add_argument(
        "--review-share", type=float, default=0.25, help="Share of traffic answered 'review'."
    )
    parser.add_argument("--request-timeout", type=float, default=30)
    parser.add_argument("--web-workers", type=int, default=serve_bench.WORKERS)
    parser.add_argument("--train-texts", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--gold", type=int, default=1000)
    parser.add_argument("--model", help="A directory for the trained student: reused when it holds one.")
    parser.add_argument("--keep", action="store_true", help="Keep the temp directory.")
    parser.add_argument(
        "--tiny-model",
        action="store_true",
        help="A tiny random classifier instead of MiniLM (the server's path).",
    )
    load_mixed.add_arguments(parser)
    args = parser.parse_args()
    # serve_bench.setup quantizes only for the runtimes it will serve (serve_bench's --runtimes).
    args.runtimes = [args.runtime]
    if args.smoke:
        args.step_seconds, args.soak_seconds = 4, 20
        args.max_clients = min(args.max_clients, 64)
        args.train_texts, args.epochs, args.gold = 300, 1, 100
        if args.mixed:
            load_mixed.smoke(args)
    if args.mixed:
        return load_mixed.run(args)

    machine = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    data_dir = Path(tempfile.mkdtemp(prefix="load-bench-"))
    server = worker = None
    try:
        ctx = prepare(args, data_dir)
        extra_env = {
            k: v for k, v in (("DATABASE_URL", args.database_url), ("REDIS_URL", args.redis_url)) if v
        }
        server = Server(data_dir, extra_env, args.web_workers)
        server.wait_ready(timeout=180)
        worker = RqWorker(data_dir, extra_env)
        worker.start()
        log(f"server up on {server.url}, rq worker {worker.process.pid}")
        drive = Drive(
            port=server.port,
            token=ctx["token"],
            slug=ctx["project"].slug,
            texts=ctx["pool"],
            timeout=args.request_timeout,
        )
        ledger = LogLedger()
        warm = drive.run(clients=4, seconds=2, seed=7)  # warm-up: connections, first requests
        ledger.expected += warm["ok"]  # settled with the first step
        ramped = ramp(args, drive, ledger)
        rate = max(0.5, (ramped["held_rps"] or ramped["steps"][0]["requests_per_second"]) / 2)
        clients = max(2, ramped["held_at_clients"] or 1)
        log(f"soak: {args.soak_seconds:.0f} s at {rate:.1f} req/s from {clients} clients")
        soaked = soak(args, drive, server, worker, ledger, rate, clients)
        review = warm.pop("_review_texts") + soaked.pop("_review_texts")
        review += [t for s in ramped["steps"] for t in s.pop("_review_texts")]
        soaked["traffic_examples"] = traffic_check(ctx["project"], review)
        soaked["traffic_examples"]["scope"] = "the whole run: warm-up, ramp and soak"
        traffic = soaked["traffic_examples"]
        server_log = server.log_path.read_text()
        result = {
            "held_rps": ramped["held_rps"],
            "held_at_clients": ramped["held_at_clients"],
            "soak_errors": soaked["errors"],
            "soak_traffic_lost": traffic["lost"],
            "soak_traffic_duplicated": traffic["duplicated"]
            + traffic["examples_without_exactly_one_proposal"],
            "soak_max_web_memory_growth_pct": soaked["max_memory_growth_pct"],
            "machine": {**machine, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
            "smoke": args.smoke,
            "config": {
                "runtime": ctx["runtime"],
                "threshold": ctx["threshold"],
                "review_share": args.review_share,
                "web_workers": args.web_workers,
                "threads_per_web_worker": 4,
                "database": "postgresql" if args.database_url else "sqlite",
                "redis": "given" if args.redis_url else "embedded",
                "step_seconds": args.step_seconds,
                "soak_seconds": args.soak_seconds,
                "train_texts": args.train_texts,
                "epochs": args.epochs,
                "gold": args.gold,
                "gold_accuracy": ctx["evaluation_accuracy"],
                "traffic_texts": len(ctx["pool"]),
            },
            "ramp": ramped,
            "soak": soaked,
            "server_log_tracebacks": server_log.count("Traceback"),
        }
        print(json.dumps(result, indent=1))
        failed = (
            any(s["errors"] for s in ramped["steps"][:-1])
            or soaked["errors"]
            or soaked["prediction_log_lost"]
            or traffic["lost"]
            or result["soak_traffic_duplicated"]
        )
        return 1 if failed else 0
    finally:
        if worker:
            worker.stop()
        if server:
            server.stop()
        if args.keep:
            log(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
