#!/usr/bin/env python
"""Faults survived (issue #23): Redis restarted, a worker and a web process killed with SIGKILL.

    python bench/fault_bench.py --database-url postgres://postgres@127.0.0.1:5432/EMPTY_DB
                                [--phase-seconds 12] [--examples 720] [--clients 4] [--keep]

Loopback only. One JSON object goes to stdout, progress to stderr.

1. setup (this process): a temp DISTILL_DATA_DIR, a Redis server of its own (a free port,
   never the shared 6379; append-only file, fsync every second, as a production Redis keeps
   its queues), ``migrate`` on the given empty PostgreSQL database, a 3-label project, a tiny
   random classifier built in code as run 1 (evaluated on a frozen gold set of 30 texts and
   promoted on torch with the confidence threshold that sends about a quarter of the traffic
   to review: those texts are stored once as traffic examples), an API token, and
   ``--examples`` unlabelled texts with the teacher pointed at a local fake OpenAI-compatible
   server (tests/fake_openai.py, in this process: 0.15 s a call, 2 at a time) that counts
   the calls per text.
2. ``manage.py serve --no-worker`` (gunicorn, 2 web processes x 4 threads) and one
   ``manage.py rqworker llm training default``, both on that PostgreSQL and Redis.
3. ``--clients`` threads send one text per predict request without pause, for the whole
   run, while the labelling job runs. Every ``--phase-seconds`` one fault:
   ``redis_restart`` (SIGKILL the Redis server, start it again 2 s later on the same port and
   files), ``worker_kill`` (SIGKILL the rq worker and its work horse; a new worker is started
   1 s later, as a supervisor would), ``web_kill`` (SIGKILL one gunicorn worker process while
   requests are in flight; gunicorn starts another). PostgreSQL is the shared cluster of this
   machine: it is not restarted (``postgres_restart`` says so).
4. Reported per fault, over the requests sent from the fault until the next one: how many
   failed and how (status or exception, and what the user saw: the first bytes of the
   answer, whether it held a traceback), ``recover_s`` (from the fault to the last failed
   request; 0 if none failed), ``job_stall_s`` (from the fault until the labelling job's
   row counted another text) and ``job_taken_over_s`` (until another process held its row). At the end: the labelling job's row, its proposals per
   example (none lost, none doubled), the fake LLM's calls per text (a text called twice was
   paid twice), and every distinct text answered "review" stored exactly once.

Exits 1 when a row was lost or doubled or the job did not finish. The temp directory (and
the Redis server) are removed unless --keep.
"""

from __future__ import annotations

import argparse
import http.client
import json
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
from load_bench import RqWorker, traffic_check, web_processes  # noqa: E402
from serve_bench import REPO_ROOT, Server, free_port, log, tiny_classifier  # noqa: E402

LABELS = ["Billing", "Technical support", "Other"]
WORDS = (
    "refund charge card login crash password invoice screen slow address delivery app error account".split()
)


def sentence(rng: random.Random, i: int) -> str:
    return f"{' '.join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))} #{i}"


class OwnRedis:
    """A redis-server of this bench's own, on a free port, restartable on the same files."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    ["redis-cli", "-p", str(self.port), "ping"], capture_output=True
                ).stdout.strip()
                == b"PONG"
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.kill()


def setup(args, data_dir: Path, redis: OwnRedis, llm) -> dict:
    os.environ.update(
        DISTILL_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="distillapp.settings",
        DJANGO_SECURE="false",
        DATABASE_URL=args.database_url,
        REDIS_URL=redis.url,
        FAKE_LLM_KEY="sk-bench",
        DISTILL_TEACHER_API_KEY_VARS="FAKE_LLM_KEY",
        DISTILL_TEACHER_BASE_URLS=llm.base_url,
    )
    import django

    django.setup()
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from annotation import teacher
    from annotation.models import Example, GoldSet, GoldSetItem, TeacherConfig
    from annotation.projects import project_create
    from training import services, serving
    from training.models import TrainingRun

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench-lead", password="x")
    project = project_create(name="Faults", slug="faults", user=user, labels=[(n, "") for n in LABELS])
    rng = random.Random(23)
    gold = GoldSet.objects.create(project=project, version=1)
    for i in range(30):
        example = Example.objects.create(project=project, text=sentence(rng, 10_000 + i), is_gold=True)
        GoldSetItem.objects.create(gold_set=gold, example=example, label=LABELS[i % 3])
    gold.freeze(user=user)
    artifacts = data_dir / "models" / project.slug / "run-1"
    tiny_classifier(artifacts / "model", sorted(LABELS))
    run = TrainingRun.objects.create(
        project=project, number=1, status=TrainingRun.Status.SUCCEEDED, artifact_path=str(artifacts)
    )
    (artifacts / "manifest.json").write_text(json.dumps({"run": 1, "train": []}))
    services.evaluate_run(run=run)
    traffic = [sentence(rng, 20_000 + i) for i in range(20_000)]
    version = serving.version_promote(run=run, user=user, threshold=0.0)
    _, confidences = serving.student_predict(version, traffic[:200])
    threshold = float(np.quantile(confidences, 0.25))
    version = serving.version_promote(run=run, user=user, threshold=threshold)
    config = serving.serving_config_for(project)
    config.requests_per_minute = 1_000_000
    config.traffic_sample_rate = 1.0  # every unsure text is kept: each can be checked
    config.save()
    _, token = serving.token_create(project=project, user=user, name="bench")
    for i in range(args.examples):
        Example.objects.create(project=project, text=sentence(rng, i))
    config = teacher.teacher_config_for(project)
    config.provider = TeacherConfig.Provider.OPENAI
    config.model = "gpt-bench"
    config.base_url = llm.base_url
    config.api_key_env = "FAKE_LLM_KEY"
    config.concurrency = 2
    config.save()
    return {"project": project, "user": user, "token": token, "traffic": traffic, "threshold": threshold}


class Traffic:
    """Client threads sending predict requests until stopped; every request recorded."""

    def __init__(self, port: int, token: str, slug: str, texts: list[str]):
        self.port, self.slug, self.texts = port, slug, texts
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.records: list[tuple[float, bool, str, str]] = []  # (answered at, ok, kind, what the user saw)
        self.review: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.next = 0

    def _text(self) -> str:
        with self.lock:
            self.next += 1
            return self.texts[self.next % len(self.texts)]

    def client(self) -> None:
        connection = None
        while not self.stop.is_set():
            text = self._text()
            try:
                connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                connection.request(
                    "POST",
                    f"/api/v1/projects/{self.slug}/predict",
                    json.dumps({"texts": [text]}),
                    self.headers,
                )
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200
                kind, seen = str(response.status), body[:160].decode("utf-8", "replace")
                if ok and json.loads(body)["predictions"][0]["route"] == "review":
                    with self.lock:
                        self.review.append(text)
            except (OSError, http.client.HTTPException) as exc:
                ok, kind, seen = False, type(exc).__name__, str(exc)[:160]
                if connection is not None:
                    connection.close()
                connection = None
            with self.lock:
                self.records.append((time.monotonic(), ok, kind, seen))

    def start(self, clients: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        return threads


class JobWatch:
    """The labelling job's row sampled every 0.2 s: (t, done, worker)."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.samples: list[tuple[float, int, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from django.db import connections

        from annotation.models import LabelingJob

        while not self.stop.is_set():
            try:
                done, worker = (
                    LabelingJob.objects.filter(pk=self.job_id).values_list("done", "worker").first()
                )
                self.samples.append((time.monotonic(), done, worker))
            except Exception:  # noqa: BLE001 - a sample missed is not a result
                connections.close_all()
            time.sleep(0.2)
        connections.close_all()

    def stall_after(self, t: float) -> float | None:
        """Seconds from `t` until the job counted another text (None: not before the end)."""
        before = max((d for s, d, _ in self.samples if s <= t), default=0)
        after = next((s for s, d, _ in self.samples if s > t + 0.25 and d > before), None)
        return round(after - t, 2) if after is not None else None

    def taken_over_after(self, t: float, until: float) -> float | None:
        """Seconds from `t` until another process held the job's row, before `until` (None: none did)."""
        held = next((w for s, _, w in reversed(self.samples) if s <= t), "")
        after = next((s for s, _, w in self.samples if t < s < until and w and w != held), None)
        return round(after - t, 2) if after is not None else None


def window(records, start: float, end: float) -> dict:
    """The requests answered (or failed) from `start` until `end`: how many failed, how, and
    until when."""
    sent = [r for r in records if start <= r[0] < end]
    failed = [r for r in sent if not r[1]]
    return {
        "requests": len(sent),
        "failed": len(failed),
        "failed_by_kind": dict(Counter(r[2] for r in failed)),
        "recover_s": round(max(r[0] for r in failed) - start, 2) if failed else 0.0,
        "user_saw": sorted({f"{r[2]}: {r[3][:100]}" for r in failed})[:4],
        "tracebacks_shown": sum("Traceback" in r[3] for r in failed),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="An empty PostgreSQL database.")
    parser.add_argument("--phase-seconds", type=float, default=12)
    parser.add_argument("--examples", type=int, default=720)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO_ROOT))
    from tests.fake_openai import FakeOpenAI, FakeReply, slow

    data_dir = Path(tempfile.mkdtemp(prefix="fault-bench-"))
    redis = OwnRedis(data_dir)
    redis.start()
    server = worker = None
    llm = FakeOpenAI(
        slow(lambda request: FakeReply(content=json.dumps({"label": LABELS[len(request.text) % 3]})), 0.15)
    )
    llm.__enter__()
    try:
        ctx = setup(args, data_dir, redis, llm)
        from annotation import teacher
        from annotation.models import Example, LabelingJob, LabelingJobItem, Proposal

        env = {
            name: os.environ[name]
            for name in (
                "DATABASE_URL",
                "REDIS_URL",
                "FAKE_LLM_KEY",
                "DISTILL_TEACHER_API_KEY_VARS",
                "DISTILL_TEACHER_BASE_URLS",
                "DJANGO_SECURE",
            )
        }
        server = Server(data_dir, env, 2)
        server.wait_ready(timeout=180)
        worker = RqWorker(data_dir, env)
        worker.start()
        log(f"server {server.url}, rq worker {worker.process.pid}, redis :{redis.port}")
        job = teacher.labeling_job_create(project=ctx["project"], user=ctx["user"], selection="unlabelled")
        teacher.labeling_job_start(job=job)
        # The worker chooses the job's texts when it starts it: before any traffic example
        # exists, so that traffic examples keep exactly their one proposal (checked at the end).
        deadline = time.monotonic() + 60
        while not LabelingJob.objects.filter(pk=job.pk, total__gt=0).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        watch = JobWatch(job.pk)
        traffic = Traffic(server.port, ctx["token"], ctx["project"].slug, ctx["traffic"])
        threads = traffic.start(args.clients)
        begin = time.monotonic()
        faults: list[tuple[str, float]] = [("none (baseline)", begin)]

        def at(seconds: float) -> None:
            time.sleep(max(0.0, begin + seconds - time.monotonic()))

        P = args.phase_seconds
        at(P)
        log("fault: Redis restart")
        faults.append(("redis_restart", time.monotonic()))
        redis.kill()
        time.sleep(2)
        redis.start()
        at(2 * P)
        log("fault: kill -9 the rq worker and its work horse")
        faults.append(("worker_kill", time.monotonic()))
        import psutil

        parent = psutil.Process(worker.process.pid)
        horses = parent.children(recursive=True)
        for process in [parent, *horses]:
            process.send_signal(signal.SIGKILL)
        worker.process.wait()
        time.sleep(1)
        worker.start()
        at(3 * P)
        log("fault: kill -9 a web process")
        victims = [pid for pid, (role, _) in web_processes(server).items() if role == "worker"]
        faults.append(("web_kill", time.monotonic()))
        os.kill(victims[0], signal.SIGKILL)
        at(4 * P)
        end = time.monotonic()
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=35)
        log("waiting for the labelling job to finish")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        watch.stop.set()
        # The web processes' traffic writers catch up: wait until the stored count holds still.
        stored_before, still_since = -1, time.monotonic()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and time.monotonic() - still_since < 5:
            now_stored = Example.objects.filter(project=ctx["project"], source=Example.Source.TRAFFIC).count()
            if now_stored != stored_before:
                stored_before, still_since = now_stored, time.monotonic()
            time.sleep(0.5)

        report_faults = []
        for i, (name, start) in enumerate(faults):
            stop = faults[i + 1][1] if i + 1 < len(faults) else end
            row = {"fault": name, **window(traffic.records, start, stop)}
            if name != "none (baseline)":
                row["job_stall_s"] = watch.stall_after(start)
                row["job_taken_over_s"] = watch.taken_over_after(start, stop)
            report_faults.append(row)
        report_faults.append(
            {
                "fault": "postgres_restart",
                "skipped": "the shared PostgreSQL cluster of this machine is not restarted",
            }
        )

        job.refresh_from_db()
        items = dict(LabelingJobItem.objects.filter(job=job).values_list("example_id", "example__text"))
        per_example = Counter(Proposal.objects.filter(labeling_job=job).values_list("example_id", flat=True))
        calls = Counter(llm._attempts)
        texts = set(items.values())
        labelling = {
            "status": job.status,
            "error": job.error,
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "examples": len(texts),
            "examples_with_a_proposal": len(per_example),
            "proposals_doubled": sum(n - 1 for n in per_example.values() if n > 1),
            "llm_calls": sum(calls.values()),
            "texts_called": len(calls),
            "texts_paid_twice": sum(1 for n in calls.values() if n > 1),
            "extra_calls": sum(n - 1 for n in calls.values() if n > 1),
        }
        stored = traffic_check(ctx["project"], traffic.review)
        result = {
            "faults": report_faults,
            "labelling_job": labelling,
            "traffic_examples": stored,
            "requests": len(traffic.records),
            "config": {
                "phase_seconds": P,
                "clients": args.clients,
                "web_processes": 2,
                "threads_per_web_process": 4,
                "database": "postgresql",
                "redis": "own redis-server, appendonly everysec",
                "llm_seconds_per_call": 0.15,
                "teacher_concurrency": 2,
                "review_threshold": round(ctx["threshold"], 4),
            },
            "server_log_tracebacks": server.log_path.read_text().count("Traceback"),
            "worker_log_tracebacks": sum(
                p.read_text().count("Traceback") for p in data_dir.glob("rqworker-*.log")
            ),
        }
        print(json.dumps(result, indent=1))
        ok = (
            job.status == "succeeded"
            and labelling["proposals_doubled"] == 0
            and labelling["examples_with_a_proposal"] == labelling["examples"]
            and stored["lost"] == 0
            and stored["duplicated"] == 0
        )
        return 0 if ok else 1
    finally:
        if worker:
            worker.stop()
        if server:
            server.stop()
        llm.__exit__(None, None, None)
        redis.stop()
        if args.keep:
            log(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
