#!/usr/bin/env python
"""Faults survived (issue #23): Redis and PostgreSQL restarted, a worker and a web process killed.

    python bench/fault_bench.py [--faults redis_restart,worker_kill,web_kill,postgres_import,
                                          postgres_review,redis_training,training_kill]
                                [--phase-seconds 12] [--examples 720] [--clients 4] [--reviewers 4]
                                [--review-cards 20000] [--review-pause 0.5] [--import-rows 50000]
                                [--train-examples 48] [--database-url URL] [--keep]

Loopback only; run as root (the PostgreSQL cluster is the ``postgres`` user's). One JSON object
goes to stdout, progress to stderr.

1. setup (this process): a temp DISTILL_DATA_DIR; a PostgreSQL 15 cluster of its own (initdb as
   ``postgres`` into a temp dir, a free port; never the machine's shared cluster; with
   --database-url that empty database instead, and no postgres_* fault); a Redis server of its
   own (a free port; append-only file, fsync every second); ``migrate``; a 3-label project
   with a tiny random classifier promoted as run 1 (a quarter of the traffic goes to review:
   those texts are stored once as traffic examples), an API token and ``--examples``
   unlabelled texts for the teacher, a local fake OpenAI-compatible server (0.15 s a call,
   2 at a time, calls counted per text); a review project of ``--review-cards`` cards with a
   teacher proposal and ``--reviewers`` reviewers; an empty import project; a training project
   of ``--train-examples`` texts with a teacher label.
2. ``manage.py serve --no-worker`` (gunicorn, 2 web processes x 4 threads) and the rq workers
   as ``serve`` starts them: one on every queue (the short lane last) and one on ``short``.
3. For the whole run: ``--clients`` threads send predict requests without pause; reviewer
   threads sign in through the login page and accept every card they are served after
   ``--review-pause`` s (htmx POST to /review/act/; on a 503 the same card again 1 s later, as
   the page's "Try again"); the labelling job runs. After a baseline of ``--phase-seconds``, one fault a phase:
   ``redis_restart`` (SIGKILL, started again 2 s later on the same files), ``worker_kill``
   (the rq worker and its work horse; a new one 1 s later), ``web_kill`` (one gunicorn
   worker process with requests in flight), ``postgres_import`` (the lead uploads a CSV of
   ``--import-rows`` rows through the import form; once the worker has read a fifth of it,
   PostgreSQL is stopped ``-m immediate`` and started again 3 s later; an import that failed is
   uploaded again), ``postgres_review`` (the same restart in the review session),
   ``redis_training`` and ``training_kill`` (a fine-tune of the bundled MiniLM launched as the
   launch form does; once it is fitting, Redis restarted as above, or the rq worker and its
   work horse killed -9 as above; a failed run resumed from its page).
4. Reported per fault, over the requests from the fault until the next one, for predict and
   for the reviewers apart: how many failed and how (status or exception, the first bytes the
   user saw, tracebacks shown), ``recover_s`` (fault to last failure), the labelling job's
   stall and take-over. At the end: the labelling job (proposals per example, LLM calls per
   text: a text called twice was paid twice), the import (batches, examples lost or doubled,
   the content hash of all texts, one proposal each), the review session (every verdict
   answered 200 stored once; none stored that a 503 said was not saved), each training run
   (status, one run row per launch, taken over, the worker alive after Redis came back, one
   student proposal per example), traffic examples.

Exits 1 when something was lost or doubled, a traceback was shown, or a job did not finish.
The temp directories, Redis and PostgreSQL are removed unless --keep (the data dir is kept;
the cluster is always removed).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import RqWorker, traffic_check, web_processes  # noqa: E402
from serve_bench import REPO_ROOT, Server, free_port, log, tiny_classifier  # noqa: E402

LABELS = ["Billing", "Technical support", "Other"]
REVIEWER_PASSWORD = "a-bench-password"
FAULTS = (
    "redis_restart",
    "worker_kill",
    "web_kill",
    "postgres_import",
    "postgres_review",
    "redis_training",
    "training_kill",
)
# The training faults' run: a fine-tune of the bundled MiniLM on --train-examples texts, small
# enough to finish in a minute or two on a loaded 2-core machine.
TRAIN_HYPERPARAMETERS = {"epochs": 2, "batch_size": 8, "max_length": 16, "validation_fraction": 0.0}
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


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class OwnPostgres:
    """A throwaway PostgreSQL cluster of this bench's own (initdb as the ``postgres`` user into a
    temp directory, a free loopback port), stopped with ``-m immediate`` (as a crash: recovery
    from the WAL at the next start). Never the machine's shared cluster."""

    def __init__(self):
        self.directory = Path(tempfile.mkdtemp(prefix="fault-bench-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/fault_bench"
        self.running = False
        self._as_postgres(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def _as_postgres(self, *command) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, command)], check=True, capture_output=True
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._as_postgres(
            PG_BIN / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.directory / "server.log",
            "-o",
            options,
            "-w",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")
        self.running = False

    def createdb(self) -> None:
        self._as_postgres(
            PG_BIN / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "fault_bench"
        )

    def remove(self) -> None:
        if self.running:
            self.stop("fast")
        shutil.rmtree(self.directory, ignore_errors=True)


def retrying(read, seconds: float = 90):
    """`read()`, again until the database answers (this process's connection dies with a restart)."""
    from django.db import connections
    from django.db.utils import InterfaceError, OperationalError

    deadline = time.monotonic() + seconds
    while True:
        try:
            return read()
        except (OperationalError, InterfaceError):
            connections.close_all()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


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
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=LABELS[i % 3])
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
    # The review session's project: cards with a teacher proposal, 4 reviewers with passwords.
    from annotation.models import Membership, Proposal, content_hash

    reviewers = [f"bench-reviewer-{i}" for i in range(args.reviewers)]
    queue = project_create(
        name="Faults review", slug="faults-review", user=user, labels=[(n, "") for n in LABELS]
    )
    for name in reviewers:
        reviewer = get_user_model().objects.create_user(name, password=REVIEWER_PASSWORD)
        Membership.objects.create(project=queue, user=reviewer, role=Membership.Role.REVIEWER)
    cards = Example.objects.bulk_create(
        Example(project=queue, text=t, content_hash=content_hash(t))
        for t in (sentence(rng, 50_000 + i) for i in range(args.review_cards))
    )
    Proposal.objects.bulk_create(
        Proposal(example=e, agent="teacher:gpt-bench", value=LABELS[i % 3], confidence=0.3 + (i % 7) / 10)
        for i, e in enumerate(cards)
    )
    Example.objects.filter(project=queue).sync_queue_fields()
    queue.audit_share = 0
    queue.refresh_every = 0  # no quick-student refreshes: their training jobs would hold the one worker
    queue.save()
    user.set_password(REVIEWER_PASSWORD)
    user.save()
    imports = project_create(
        name="Faults import", slug="faults-import", user=user, labels=[(n, "") for n in LABELS]
    )
    # The training faults' project: --train-examples texts with a teacher label each.
    training = project_create(
        name="Faults training", slug="faults-training", user=user, labels=[(n, "") for n in LABELS]
    )
    cue = dict(zip(LABELS, ("invoice refund charge", "crash error login", "address delivery"), strict=True))
    texts = Example.objects.bulk_create(
        Example(project=training, text=t, content_hash=content_hash(t))
        for t in (f"{cue[LABELS[i % 3]]} {sentence(rng, 90_000 + i)}" for i in range(args.train_examples))
    )
    Proposal.objects.bulk_create(
        Proposal(example=e, agent="teacher:gpt-bench", value=LABELS[i % 3], confidence=0.9)
        for i, e in enumerate(texts)
    )
    Example.objects.filter(project=training).sync_queue_fields()
    training.refresh_every = 0
    training.save()
    config = teacher.teacher_config_for(project)
    config.provider = TeacherConfig.Provider.OPENAI
    config.model = "gpt-bench"
    config.base_url = llm.base_url
    config.api_key_env = "FAKE_LLM_KEY"
    config.concurrency = 2
    config.save()
    return {
        "project": project,
        "user": user,
        "token": token,
        "traffic": traffic,
        "threshold": threshold,
        "queue": queue,
        "reviewers": reviewers,
        "imports": imports,
        "training": training,
    }


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


CARD_ID = re.compile(r'data-example-id="(\d+)"')


def signed_in(port: int, username: str) -> httpx.Client:
    """A browser-like session: the login page's form posted with its CSRF token."""
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    client.get("/login/")
    response = client.post(
        "/login/",
        data={
            "username": username,
            "password": REVIEWER_PASSWORD,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    if response.status_code != 302:
        raise RuntimeError(f"{username} could not sign in: {response.status_code}")
    return client


class Reviewers:
    """Reviewer threads as the review page drives the app: each signs in, opens the review page
    and accepts every card it is served (an htmx POST to /review/act/, the next card in the
    answer) without pause. A 503 is answered as the page's dialog offers: "Try again" 1 s later
    with the same card. Every answer recorded (same layout as Traffic.records)."""

    def __init__(self, port: int, slug: str, usernames: list[str], pause: float):
        self.port, self.slug, self.usernames, self.pause = port, slug, usernames, pause
        self.records: list[tuple[float, bool, str, str]] = []
        self.answered: list[tuple[str, int, str]] = []  # (reviewer, example id, what the answer said)
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _record(self, ok: bool, kind: str, seen: str) -> None:
        with self.lock:
            self.records.append((time.monotonic(), ok, kind, seen))

    def reviewer(self, username: str) -> None:
        client = signed_in(self.port, username)
        card = None
        while card is None and not self.stop.is_set():
            page = client.get(f"/p/{self.slug}/review/")
            if page.status_code == 200:
                card = int(CARD_ID.search(page.text).group(1))
            else:
                time.sleep(1)
        while card is not None and not self.stop.is_set():
            time.sleep(self.pause)  # reads the card
            try:
                response = client.post(
                    f"/p/{self.slug}/review/act/",
                    data={"example_id": card, "verdict": "accept"},
                    headers={
                        "HX-Request": "true",
                        "X-CSRFToken": client.cookies["csrftoken"],
                        "Referer": f"http://127.0.0.1:{self.port}/p/{self.slug}/review/",
                    },
                )
            except httpx.HTTPError as exc:
                self._record(False, type(exc).__name__, str(exc)[:160])
                with self.lock:
                    self.answered.append((username, card, "cut"))
                time.sleep(0.5)
                continue
            seen = response.text[:200]
            if response.status_code in (200, 409):
                with self.lock:
                    self.answered.append((username, card, str(response.status_code)))
                self._record(True, str(response.status_code), "")
                match = CARD_ID.search(response.text)
                card = int(match.group(1)) if match else None
                continue
            if response.status_code == 503:
                try:
                    said = response.json().get("message", "")
                except ValueError:
                    said = seen
                with self.lock:
                    self.answered.append(
                        (username, card, "503 saved" if " was saved" in said else "503 not saved")
                    )
                seen = said
            self._record(False, str(response.status_code), seen)
            time.sleep(1)  # the reviewer reads the dialog, then "Try again": the same card

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.reviewer, args=(u,), daemon=True) for u in self.usernames]
        for thread in threads:
            thread.start()
        return threads

    def check(self, project) -> dict:
        """Every verdict answered 200 stored once; none stored that a 503 said was not saved."""
        from annotation.models import Review

        stored = Counter(
            retrying(
                lambda: list(
                    Review.objects.filter(example__project=project).values_list(
                        "reviewer__username", "example_id"
                    )
                )
            )
        )
        said: dict[tuple[str, int], set[str]] = {}
        for username, card, what in self.answered:
            said.setdefault((username, card), set()).add(what)
        answered_200 = {key for key, whats in said.items() if "200" in whats}
        return {
            "verdicts_answered_200": len(answered_200),
            "verdicts_stored": sum(stored.values()),
            "answered_200_not_stored": len(answered_200 - set(stored)),
            "stored_twice": sum(n - 1 for n in stored.values() if n > 1),
            "stored_without_a_200": len(set(stored) - answered_200),
            "answers_503_not_saved": sum("503 not saved" in w for w in said.values()),
            # Stored, yet every answer for that card said "not saved" (a retry after a "saved" 503
            # is rightly "not saved": that request wrote nothing; its 409 says the card was decided).
            "said_not_saved_but_stored": sum(
                1
                for key, w in said.items()
                if "503 not saved" in w and key in stored and not w & {"200", "503 saved"}
            ),
            "answers_503_saved": sum("503 saved" in w for w in said.values()),
            "said_saved_but_not_stored": sum(
                1 for key, w in said.items() if "503 saved" in w and key not in stored
            ),
            "answers_409": sum("409" in w for w in said.values()),
        }


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


def import_csv(rows: int) -> tuple[bytes, list[str]]:
    rng = random.Random(7)
    texts = [sentence(rng, 100_000 + i) for i in range(rows)]
    lines = ["id,text,label", *(f'{i},"{t}",{LABELS[i % 3]}' for i, t in enumerate(texts))]
    return ("\n".join(lines) + "\n").encode(), texts


def upload(client: httpx.Client, slug: str, name: str, body: bytes) -> int:
    """The lead's upload form posted (queued: the file is past the inline limit); the batch's id."""
    from annotation.models import ImportBatch

    def newest() -> int | None:
        return (
            ImportBatch.objects.filter(project__slug=slug).order_by("pk").values_list("pk", flat=True).last()
        )

    before = retrying(newest)
    response = client.post(
        f"/p/{slug}/imports/new/",
        data={
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
            "text_column": "text",
            "label_column": "label",
            "label_meaning": "predictions",
            "label_agent": "crm-rules",
            "id_column": "id",
        },
        files={"file": (name, body, "text/csv")},
    )
    after = retrying(newest)
    if response.status_code != 302 or after == before:
        page = client.get(response.headers.get("Location", "/")).text
        said = re.findall(r'class="msg msg-\w+"[^>]*>([^<]*)', page)
        raise RuntimeError(f"upload answered {response.status_code}: {said or response.text[:300]}")
    return after


def wait_finished(model, pk: int, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = retrying(lambda: model.objects.get(pk=pk))
        if row.is_finished:
            return row
        time.sleep(0.5)
    return row


def postgres_import_fault(args, ctx, server, postgres: OwnPostgres, faults: list) -> dict:
    """A CSV of --import-rows rows uploaded through the import form; PostgreSQL restarted while
    the worker imports it; a failed import uploaded again (what its page says to do)."""
    from annotation.models import Example, ImportBatch, Proposal

    body, texts = import_csv(args.import_rows)
    lead = signed_in(server.port, "bench-lead")
    slug = ctx["imports"].slug
    batch_id = upload(lead, slug, "fault-import.csv", body)
    # The worker takes it once the labelling job (on the "llm" queue, taken first) is done.
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        row = retrying(lambda: ImportBatch.objects.values("status", "rows_read").get(pk=batch_id))
        if row["status"] not in ("pending", "running") or row["rows_read"] >= args.import_rows // 5:
            break
        time.sleep(0.1)
    log(f"fault: PostgreSQL restart during the import (batch {row})")
    faults.append(("postgres_import", time.monotonic()))
    postgres.stop("immediate")
    time.sleep(3)
    postgres.start()
    batches = [wait_finished(ImportBatch, batch_id, 300)]
    if batches[-1].status != "succeeded":
        log(f"import {batch_id}: {batches[-1].status} ({batches[-1].error}); uploaded again")
        batches.append(wait_finished(ImportBatch, upload(lead, slug, "fault-import.csv", body), 300))
    lead.close()
    project = ctx["imports"]
    hashes = Counter(
        retrying(lambda: list(Example.objects.filter(project=project).values_list("text", flat=True)))
    )
    proposals = Counter(
        retrying(
            lambda: list(
                Proposal.objects.filter(example__project=project).values_list("example_id", flat=True)
            )
        )
    )
    expected = hashlib.sha256("\n".join(sorted(texts)).encode()).hexdigest()
    return {
        "rows": args.import_rows,
        "batches": [
            {
                "status": b.status,
                "error": b.error,
                "rows_read": b.rows_read,
                "rows_created": b.rows_created,
                "rows_duplicate": b.rows_duplicate,
                "proposals_created": b.proposals_created,
                "seconds": round((b.finished_at - b.created_at).total_seconds(), 1)
                if b.finished_at
                else None,
            }
            for b in batches
        ],
        "examples": sum(hashes.values()),
        "examples_lost": len(set(texts) - set(hashes)),
        "examples_doubled": sum(n - 1 for n in hashes.values() if n > 1),
        "content_hash_matches": hashlib.sha256("\n".join(sorted(hashes.elements())).encode()).hexdigest()
        == expected,
        "examples_without_exactly_one_proposal": sum(1 for n in proposals.values() if n != 1)
        + sum(hashes.values())
        - len(proposals),
    }


def training_fault(name: str, ctx, redis: OwnRedis, worker: RqWorker, faults: list) -> dict:
    """A fine-tune launched as the launch form does (run_create and run_start in one
    transaction); once it is fitting, Redis restarted (2 s) or the rq worker and its work
    horse killed -9 (a new worker 1 s later). A failed run is resumed (its page's button)."""
    from django.db import transaction

    from annotation.models import Example, Proposal
    from distillapp import jobs
    from training import services
    from training.models import TrainingRun

    project = ctx["training"]

    def launch() -> TrainingRun:
        with transaction.atomic():
            run = services.run_create(
                project=project, user=ctx["user"], hyperparameters=TRAIN_HYPERPARAMETERS
            )
            services.run_start(run=run)
        return run

    run = retrying(launch)  # this process's connection may have died with a PostgreSQL restart
    launched = time.monotonic()
    deadline = launched + 600  # behind whatever the one worker is doing
    row = {}
    while time.monotonic() < deadline:
        row = retrying(
            lambda: TrainingRun.objects.values("status", "phase", "step", "total_steps").get(pk=run.pk)
        )
        if row["status"] not in ("pending", "running") or (row["phase"] == "training" and row["step"] >= 2):
            break
        time.sleep(0.1)
    started = time.monotonic()
    held_by = retrying(lambda: TrainingRun.objects.get(pk=run.pk).worker)
    log(f"fault: {name} at run {run.number} {row}")
    faults.append((name, started))
    worker_survived = None
    if name == "redis_training":
        redis.kill()
        time.sleep(2)
        redis.start()
    else:
        kill_worker(worker)
    taken_over_s = None  # fault until another process held the row
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        now = retrying(lambda: TrainingRun.objects.values("status", "worker").get(pk=run.pk))
        if taken_over_s is None and now["worker"] not in ("", held_by):
            taken_over_s = round(time.monotonic() - started, 1)
        if now["status"] not in ("pending", "running"):
            break
        time.sleep(0.5)
    finished = retrying(lambda: TrainingRun.objects.get(pk=run.pk))
    if name == "redis_training":
        worker_survived = worker.process.poll() is None
        if not worker_survived:
            log(f"the rq worker exited after the Redis restart: {worker.log_path.read_text()[-1500:]}")
            worker.start()
    resumed = False
    if finished.status == TrainingRun.Status.FAILED:
        log(f"run {run.number} failed ({finished.error}); resumed from its page")
        resumed = retrying(lambda: jobs.resume(TrainingRun, run.pk))
        finished = wait_finished(TrainingRun, run.pk, 600)
    examples = retrying(lambda: Example.objects.filter(project=project).count())
    proposals = Counter(
        retrying(
            lambda: list(
                Proposal.objects.filter(agent=finished.agent, example__project=project).values_list(
                    "example_id", flat=True
                )
            )
        )
    )
    return {
        "fault": name,
        "run": finished.number,
        "status": finished.status,
        "error": finished.error,
        "at_step": row.get("step"),
        "total_steps": finished.total_steps,
        "step": finished.step,
        "resumed": resumed,
        "taken_over_s": taken_over_s,
        "runs_of_the_launch": retrying(
            lambda: TrainingRun.objects.filter(project=project, number__gte=run.number).count()
        ),
        "worker_survived": worker_survived,
        "launch_to_fault_s": round(started - launched, 1),
        "fault_to_end_s": round(time.monotonic() - started, 1),
        "examples": examples,
        "student_proposals": sum(proposals.values()),
        "examples_without_exactly_one_student_proposal": examples
        - sum(1 for n in proposals.values() if n == 1),
    }


def kill_worker(worker: RqWorker) -> None:
    """kill -9 the rq worker and its work horse; a new worker 1 s later, as a supervisor would."""
    import psutil

    parent = psutil.Process(worker.process.pid)
    horses = parent.children(recursive=True)
    for process in [parent, *horses]:
        process.send_signal(signal.SIGKILL)
    worker.process.wait()
    time.sleep(1)
    worker.start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        help="An empty PostgreSQL database; without it (and for the postgres_* faults) a cluster of the bench's own.",
    )
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"Comma-separated, of {', '.join(FAULTS)}."
    )
    parser.add_argument("--phase-seconds", type=float, default=12)
    parser.add_argument("--examples", type=int, default=720)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--reviewers", type=int, default=4)
    parser.add_argument("--review-cards", type=int, default=20_000)
    parser.add_argument(
        "--review-pause", type=float, default=0.5, help="Seconds a reviewer reads a card before the verdict."
    )
    parser.add_argument("--import-rows", type=int, default=50_000)
    parser.add_argument("--train-examples", type=int, default=48)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    selected = [f for f in args.faults.split(",") if f]
    if unknown := set(selected) - set(FAULTS):
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if args.database_url and any(f.startswith("postgres_") for f in selected):
        parser.error("the postgres_* faults restart PostgreSQL: they run on a cluster of the bench's own")

    sys.path.insert(0, str(REPO_ROOT))
    from tests.fake_openai import FakeOpenAI, FakeReply, slow

    load_before = os.getloadavg()
    data_dir = Path(tempfile.mkdtemp(prefix="fault-bench-"))
    redis = OwnRedis(data_dir)
    redis.start()
    postgres = None
    if not args.database_url:
        postgres = OwnPostgres()
        postgres.start()
        postgres.createdb()
        args.database_url = postgres.url
    server = worker = short_worker = None
    llm = FakeOpenAI(
        slow(lambda request: FakeReply(content=json.dumps({"label": LABELS[len(request.text) % 3]})), 0.15)
    )
    llm.__enter__()
    try:
        ctx = setup(args, data_dir, redis, llm)
        from django.conf import settings

        from annotation import teacher
        from annotation.models import Example, LabelingJob, LabelingJobItem, Proposal
        from distillapp.queues import worker_queues

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
        # As `manage.py serve` runs them: a worker for every lane (the short one last) and the
        # short lane's own worker (the similarity index, evaluations).
        worker = RqWorker(data_dir, env, queues=tuple(worker_queues(short_workers=1)))
        worker.start()
        short_worker = RqWorker(data_dir, env, queues=(settings.SHORT_QUEUE,), name="rqworker-short")
        short_worker.start()
        log(
            f"server {server.url}, rq worker {worker.process.pid}, redis :{redis.port}, postgres {args.database_url}"
        )
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
        reviewers = Reviewers(server.port, ctx["queue"].slug, ctx["reviewers"], args.review_pause)
        reviewer_threads = reviewers.start()
        begin = time.monotonic()
        faults: list[tuple[str, float]] = [("none (baseline)", begin)]
        P = args.phase_seconds
        imported = None
        trained: list[dict] = []
        time.sleep(P)
        for name in selected:
            if name == "redis_restart":
                log("fault: Redis restart")
                faults.append((name, time.monotonic()))
                redis.kill()
                time.sleep(2)
                redis.start()
            elif name == "worker_kill":
                log("fault: kill -9 the rq worker and its work horse")
                faults.append((name, time.monotonic()))
                kill_worker(worker)
            elif name == "web_kill":
                log("fault: kill -9 a web process")
                victims = [pid for pid, (role, _) in web_processes(server).items() if role == "worker"]
                faults.append((name, time.monotonic()))
                os.kill(victims[0], signal.SIGKILL)
            elif name == "postgres_import":
                imported = postgres_import_fault(args, ctx, server, postgres, faults)
            elif name in ("redis_training", "training_kill"):
                trained.append(training_fault(name, ctx, redis, worker, faults))
            elif name == "postgres_review":
                log("fault: PostgreSQL restart during the review session")
                faults.append((name, time.monotonic()))
                postgres.stop("immediate")
                time.sleep(3)
                postgres.start()
            time.sleep(max(0.0, faults[-1][1] + P - time.monotonic()))
        end = time.monotonic()
        traffic.stop.set()
        reviewers.stop.set()
        for thread in [*threads, *reviewer_threads]:
            thread.join(timeout=35)
        log("waiting for the labelling job to finish")
        job = wait_finished(LabelingJob, job.pk, 180)
        watch.stop.set()
        # The web processes' traffic writers catch up: wait until the stored count holds still.
        stored_before, still_since = -1, time.monotonic()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and time.monotonic() - still_since < 5:
            now_stored = retrying(
                lambda: Example.objects.filter(project=ctx["project"], source=Example.Source.TRAFFIC).count()
            )
            if now_stored != stored_before:
                stored_before, still_since = now_stored, time.monotonic()
            time.sleep(0.5)

        report_faults = []
        for i, (name, start) in enumerate(faults):
            stop = faults[i + 1][1] if i + 1 < len(faults) else end
            row = {
                "fault": name,
                **window(traffic.records, start, stop),
                "review": window(reviewers.records, start, stop),
            }
            if name != "none (baseline)":
                row["job_stall_s"] = watch.stall_after(start)
                row["job_taken_over_s"] = watch.taken_over_after(start, stop)
            report_faults.append(row)

        items = dict(
            retrying(
                lambda: list(
                    LabelingJobItem.objects.filter(job=job).values_list("example_id", "example__text")
                )
            )
        )
        per_example = Counter(
            retrying(
                lambda: list(Proposal.objects.filter(labeling_job=job).values_list("example_id", flat=True))
            )
        )
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
        stored = retrying(lambda: traffic_check(ctx["project"], traffic.review))
        review_check = reviewers.check(ctx["queue"])
        result = {
            "faults": report_faults,
            "labelling_job": labelling,
            "import": imported,
            "training": trained,
            "review_session": review_check,
            "traffic_examples": stored,
            "requests": len(traffic.records),
            "review_requests": len(reviewers.records),
            "config": {
                "faults": selected,
                "phase_seconds": P,
                "clients": args.clients,
                "reviewers": args.reviewers,
                "web_processes": 2,
                "threads_per_web_process": 4,
                "database": "own PostgreSQL 15 cluster (immediate stop, back after 3 s)"
                if postgres
                else "postgresql (given, not restarted)",
                "redis": "own redis-server, appendonly everysec",
                "llm_seconds_per_call": 0.15,
                "teacher_concurrency": 2,
                "review_threshold": round(ctx["threshold"], 4),
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count(),
            },
            "server_log_tracebacks": server.log_path.read_text().count("Traceback"),
            "server_log_503_lines": server.log_path.read_text().count(" 503 "),
            "worker_log_tracebacks": sum(
                p.read_text().count("Traceback") for p in data_dir.glob("rqworker-*.log")
            ),
        }
        print(json.dumps(result, indent=1))
        shown = sum(f["tracebacks_shown"] + f["review"]["tracebacks_shown"] for f in report_faults)
        ok = (
            job.status == "succeeded"
            and labelling["proposals_doubled"] == 0
            and labelling["examples_with_a_proposal"] == labelling["examples"]
            and stored["lost"] == 0
            and stored["duplicated"] == 0
            and shown == 0
            and review_check["answered_200_not_stored"] == 0
            and review_check["stored_twice"] == 0
            and review_check["said_not_saved_but_stored"] == 0
            and (imported is None or (imported["examples_lost"] == imported["examples_doubled"] == 0))
            and all(
                t["status"] == "succeeded"
                and t["runs_of_the_launch"] == 1
                and t["examples_without_exactly_one_student_proposal"] == 0
                and t["worker_survived"] is not False
                for t in trained
            )
        )
        return 0 if ok else 1
    finally:
        if worker:
            worker.stop()
        if short_worker:
            short_worker.stop()
        if server:
            server.stop()
        llm.__exit__(None, None, None)
        redis.stop()
        if postgres:
            postgres.remove()
        if args.keep:
            log(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
