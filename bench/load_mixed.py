"""load_bench.py --mixed: reviewers, API clients, an import and a training run at once (issue #23).

    python bench/load_bench.py --mixed [--mixed-seconds 600] [--smoke] [--database-url URL] ...

One JSON object on stdout, progress on stderr; loopback only, bounded in time.

1. setup: load_bench's ``prepare`` (serve_bench.setup: a Banking77 project, a MiniLM-L6
   student, gold, int8, promoted with the threshold that sends --review-share of the traffic to
   review), then with the app's services: ``--train-rows`` Banking77 train texts imported as
   verified labels (what the training run learns from) and ``--review-pool`` more imported as
   another system's predictions (``import:crm``, 20 % of them wrong): the reviewers' cards;
   8 reviewers (``--reviewers``) with passwords, members of the project; a second project for
   the lead's uploads (its queue does not grow the reviewed project's); the upload files
   (``--import-rows`` unique generated texts each) written before the server starts.
2. ``manage.py serve --no-worker`` and one ``manage.py rqworker`` beside it (load_bench).
3. idle (``--idle-seconds``): one reviewer (think time 0.3-0.8 s) and one API client
   (10 requests/s) alone on the warmed server: the same requests as under load.
4. load (``--mixed-seconds``): every reviewer signs in through the login page, GETs the review
   page and loops: think 2-6 s, then POSTs the verdict as the card's htmx form does (HX-Request,
   the CSRF token, the served example id; 60 % accept, 25 % correct, 15 % reject; 3 % of the
   time an undo, then a correction of the card it brings back); ``--api-clients`` keep-alive
   clients send ``--api-rate`` predict requests/s in all; the lead signs in, uploads
   ``--imports`` CSV files in sequence through the import form (each queued on the worker) and
   launches a quick student run from the launch form; the rq worker and its work horse are
   killed -9 every ``--kill-every`` s and a new worker started 1 s later.
5. settle (at most ``--settle-seconds``): imports and the run finish, without kills.

Checks (exit 1 when one fails): no request failed (non-2xx/3xx, an error message on a card,
a connection error); every verdict answered 200 is exactly one Review row of its reviewer
(undone ones none); PredictionLog rows == answered predicts; each import succeeded once with
exactly its rows; the training run ended (succeeded, or failed with its reason: reported); no
job row left pending or running; every text answered "review" stored once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import load_bench
import serve_bench
from banking77_distill import cpu_model
from serve_bench import Server, log, percentile

THINK = (2.0, 6.0)
IDLE_THINK = (0.3, 0.8)
IDLE_API_RATE = 10.0
UNDO_SHARE = 0.03
CARD_ID = re.compile(r'id="card"[^>]*data-example-id="(\d+)"')
FORM_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
# A message shown (the sign-in dialog's empty, hidden one on every page is not).
ERROR_MESSAGE = re.compile(r'class="msg msg-error">([^<].{0,300})', re.S)
HX_TOKEN = re.compile(r'"X-CSRFToken": "([^"]+)"')
LABEL_VALUE = re.compile(r'name="verdict" value="correct"><input type="hidden" name="label" value="([^"]+)"')
WORDS = (
    "refund invoice charge card payment double billed subscription plan upgrade cancel renewal "
    "receipt login password reset account profile email address phone verify code blocked app "
    "order parcel delivery tracking courier late lost damaged return exchange please help urgent"
).split()


def add_arguments(parser) -> None:
    group = parser.add_argument_group("--mixed")
    group.add_argument(
        "--mixed", action="store_true", help="Reviewers, API clients, imports and training at once."
    )
    group.add_argument("--mixed-seconds", type=float, default=600)
    group.add_argument("--idle-seconds", type=float, default=45)
    group.add_argument("--reviewers", type=int, default=8)
    group.add_argument("--api-clients", type=int, default=8)
    group.add_argument("--api-rate", type=float, default=16, help="Predict requests/s of all API clients.")
    group.add_argument("--imports", type=int, default=3, help="Uploads, one after the other.")
    group.add_argument("--import-rows", type=int, default=100_000)
    group.add_argument("--kill-every", type=float, default=120)
    group.add_argument("--review-pool", type=int, default=3000)
    group.add_argument(
        "--train-rows", type=int, default=2000, help="Verified labels the quick run learns from."
    )
    group.add_argument("--settle-seconds", type=float, default=600)


def smoke(args) -> None:
    args.mixed_seconds, args.idle_seconds, args.kill_every = 60, 20, 20
    args.imports, args.import_rows = 1, 20_000
    args.review_pool, args.train_rows, args.settle_seconds = 800, 400, 300


def summary(latencies: list[float]) -> dict:
    if not latencies:
        return {"n": 0}
    return {
        "n": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": round(max(latencies), 1),
    }


class Errors:
    """Failed requests by kind, with a few samples each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: Counter[str] = Counter()
        self.samples: dict[str, list[str]] = {}

    def add(self, kind: str, sample: str) -> None:
        with self.lock:
            self.kinds[kind] += 1
            if len(self.samples.setdefault(kind, [])) < 3:
                self.samples[kind].append(sample[:300])

    def report(self) -> dict:
        return {"total": sum(self.kinds.values()), "by_kind": dict(self.kinds), "samples": self.samples}


# --- browsers --------------------------------------------------------------------------------------


class Browser:
    """One person's httpx session: cookies, the CSRF token of the last page, timed requests."""

    def __init__(self, base_url: str, errors: Errors, who: str, timeout: float):
        import httpx

        self.http = httpx.Client(base_url=base_url, timeout=timeout, follow_redirects=False)
        self.errors, self.who, self.token = errors, who, ""

    def request(self, kind: str, method: str, url: str, *, expect=(200, 302), **kw):
        """(response or None, ms); a failure is recorded under `kind`."""
        import httpx

        sent = time.perf_counter()
        try:
            response = self.http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.errors.add(f"{kind}:{type(exc).__name__}", f"{self.who} {method} {url}: {exc}")
            return None, (time.perf_counter() - sent) * 1000
        ms = (time.perf_counter() - sent) * 1000
        for pattern in (HX_TOKEN, FORM_TOKEN):
            if match := pattern.search(response.text):
                self.token = match.group(1)
                break
        message = ERROR_MESSAGE.search(response.text)
        if response.status_code not in expect or message:
            what = str(response.status_code) if response.status_code not in expect else "error message"
            seen = message.group(1) if message else response.text[:300]
            self.errors.add(f"{kind}:{what}", f"{self.who} {method} {url}: {seen!r}")
            return None, ms
        return response, ms

    def sign_in(self, username: str, password: str) -> bool:
        page, _ = self.request("login", "GET", "/login/")
        if page is None:
            return False
        done, _ = self.request(
            "login",
            "POST",
            "/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": self.token},
            expect=(302,),
        )
        return done is not None

    def close(self) -> None:
        self.http.close()


class Reviewer:
    """A reviewer at human pace; every verdict answered is remembered per example."""

    def __init__(self, base_url, slug, username, password, errors, seed, timeout):
        self.browser = Browser(base_url, errors, username, timeout)
        self.slug, self.username, self.password = slug, username, password
        self.rng = random.Random(seed)
        self.stored: Counter[int] = Counter()  # example id -> verdicts answered minus undone
        self.done: list[int] = []  # the examples of my verdicts, last last
        self.card: int | None = None
        self.labels: list[str] = []
        self.has_accept = False
        self.signed_in = False
        self.thread: threading.Thread | None = None

    def _read_card(self, response) -> None:
        match = CARD_ID.search(response.text)
        self.card = int(match.group(1)) if match else None
        self.has_accept = 'name="verdict" value="accept"' in response.text
        self.labels = LABEL_VALUE.findall(response.text) or self.labels

    def open(self) -> bool:
        if not self.signed_in:
            self.signed_in = self.browser.sign_in(self.username, self.password)
        if not self.signed_in:
            return False
        page, _ = self.browser.request("review_page", "GET", f"/p/{self.slug}/review/")
        if page is not None:
            self._read_card(page)
        return page is not None

    def _htmx(self) -> dict:
        return {
            "HX-Request": "true",
            "HX-Target": "card",
            "HX-Current-URL": f"{self.browser.http.base_url}p/{self.slug}/review/",
            "X-CSRFToken": self.browser.token,
        }

    def act(self, *, correct: bool = False) -> tuple[str, float | None]:
        """One verdict on the current card (or an undo); its kind and latency (None: failed)."""
        if self.done and not correct and self.rng.random() < UNDO_SHARE:
            response, ms = self.browser.request(
                "undo", "POST", f"/p/{self.slug}/review/undo/", headers=self._htmx(),
                data={"csrfmiddlewaretoken": self.browser.token},
            )  # fmt: skip
            if response is None:
                return "undo", None
            self._read_card(response)
            last = self.done.pop()
            if self.card == last:
                self.stored[last] -= 1
            else:
                self.browser.errors.add("undo:other card", f"{self.username}: undid {last}, got {self.card}")
            return "undo", ms
        example = self.card
        draw = self.rng.random()
        data = {"csrfmiddlewaretoken": self.browser.token, "example_id": str(example)}
        if correct or not self.has_accept or 0.60 <= draw < 0.85:
            data.update(verdict="correct", label=self.rng.choice(self.labels))
        elif draw < 0.60:
            data["verdict"] = "accept"
        else:
            data["verdict"] = "reject"
        response, ms = self.browser.request(
            "review_act",
            "POST",
            f"/p/{self.slug}/review/act/",
            data=data,
            headers=self._htmx(),
            expect=(200,),
        )
        if response is None:
            self.card = None  # as review.js swaps in the 409's card: here the page is loaded again
            return "act", None
        self.stored[example] += 1
        self.done.append(example)
        self._read_card(response)
        return "act", ms

    def run(self, stop: threading.Event, think: tuple[float, float], out: dict, lock) -> None:
        if not self.open():
            return
        after_undo = False
        while not stop.wait(self.rng.uniform(*think)):
            if self.card is None:  # an empty queue or a failed answer: load the page again
                self.open()
                continue
            kind, ms = self.act(correct=after_undo)
            after_undo = kind == "undo" and ms is not None
            if ms is not None:
                with lock:
                    out.setdefault(kind, []).append(ms)

    def start(self, stop, think, out, lock) -> None:
        self.thread = threading.Thread(target=self.run, args=(stop, think, out, lock), daemon=True)
        self.thread.start()


# --- setup -----------------------------------------------------------------------------------------


def write_upload(path: Path, rows: int, tag: str) -> None:
    rng = random.Random(tag)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text"])
        for n in range(rows):
            writer.writerow([f"{tag}-{n}", f"{' '.join(rng.choices(WORDS, k=rng.randint(6, 16)))} {tag}-{n}"])


def populate(args, ctx: dict, data_dir: Path) -> dict:
    """The reviewed project's verified rows and review pool, reviewers, the upload project and files."""
    from django.contrib.auth import get_user_model
    from django.db import connections

    from annotation import corpus, projects
    from annotation.models import Example, Membership
    from distillapp import embedded_redis

    # The imports queue the similarity index: the embedded Redis runs from here on (the
    # server's `serve` finds it running), so that the queued job waits for the worker.
    ctx["redis"] = embedded_redis.ensure_started()

    project, lead = ctx["project"], ctx["user"]
    rng = random.Random(29)
    rows = serve_bench.read_csv("train.csv")
    rng.shuffle(rows)
    labels = [label.name for label in project.label_list()]
    files = {
        "verified": (rows[: args.train_rows], "verified"),
        "pool": (rows[args.train_rows : args.train_rows + args.review_pool], "predictions"),
    }
    imported = {}
    for name, (part, meaning) in files.items():
        path = data_dir / f"{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "label"])
            for row in part:  # another system's predictions are wrong a fifth of the time
                wrong = meaning == "predictions" and rng.random() < 0.2
                writer.writerow([row["text"], rng.choice(labels) if wrong else row["category"]])
        batch = corpus.import_batch_create(
            project=project, user=lead, file_name=path.name, path=path, label_column="label",
            label_meaning=meaning, label_agent="crm", id_column="",
        )  # fmt: skip
        if not corpus.import_batch_claim(batch.pk):
            raise SystemExit(f"could not claim the {name} import")
        batch = corpus.import_batch_run(batch=batch)
        if batch.status != "succeeded":
            raise SystemExit(f"the {name} import: {batch.status} {batch.error}")
        imported[name] = batch.rows_created
    User = get_user_model()
    reviewers = []
    for i in range(args.reviewers):
        user = User.objects.create_user(f"reviewer-{i + 1}", password=f"pw-{i + 1}-load")
        projects.membership_set(project=project, username=user.username, role=Membership.Role.REVIEWER)
        reviewers.append((user.username, f"pw-{i + 1}-load"))
    uploads = projects.project_create(
        name="Uploads", slug="uploads", user=lead, labels=[(n, "") for n in labels[:4]]
    )
    paths = []
    for i in range(args.imports):
        path = data_dir / f"upload-{i + 1}.csv"
        write_upload(path, args.import_rows, f"u{i + 1}")
        paths.append(path)
    queue = Example.objects.filter(project=project, review_state="unreviewed", is_gold=False).count()
    connections.close_all()
    log(f"imported {imported}, {queue} in the review queue, {len(reviewers)} reviewers")
    return {"imported": imported, "queue": queue, "reviewers": reviewers, "uploads": uploads, "files": paths}


# --- the lead's work and the worker's faults --------------------------------------------------------


def row_watch(model, pk: int, stop: threading.Event, samples: list) -> None:
    """(t, status, worker) of a job row every second until `stop`."""
    from django.db import connections

    while not stop.wait(1.0):
        try:
            row = model.objects.filter(pk=pk).values_list("status", "worker").first()
            samples.append((time.monotonic(), *row))
        except Exception:  # noqa: BLE001 - a sample missed is not a result
            pass
        finally:
            connections.close_all()


def lead_work(base_url, args, ctx, pop, errors, stop_load, began, out) -> None:
    """Upload the files one after the other; launch a quick run after the first upload."""
    from django.db import connections

    from annotation.models import ImportBatch
    from training.forms import LaunchForm
    from training.models import TrainingRun

    lead = Browser(base_url, errors, "lead", args.request_timeout * 4)
    if not lead.sign_in("bench-lead", "x"):
        return
    slug, uploads = ctx["project"].slug, pop["uploads"]
    out["imports"] = []
    for i, path in enumerate(pop["files"]):
        if i and stop_load.is_set():
            out["imports"].append({"file": path.name, "skipped": "the load window was over"})
            continue
        lead.request("page", "GET", f"/p/{uploads.slug}/")
        before = set(ImportBatch.objects.filter(project=uploads).values_list("pk", flat=True))
        connections.close_all()
        started = time.monotonic()
        with open(path, "rb") as f:
            response, ms = lead.request(
                "import_upload", "POST", f"/p/{uploads.slug}/imports/new/", expect=(302,),
                files={"file": (path.name, f, "text/csv")},
                data={"csrfmiddlewaretoken": lead.token, "text_column": "text", "id_column": "id",
                      "keep_no_columns": "on"},
            )  # fmt: skip
        entry = {"file": path.name, "rows": args.import_rows, "upload_ms": round(ms, 1)}
        entry["at_s"] = round(started - began, 1)
        out["imports"].append(entry)
        if response is None:
            continue
        batch_id = next(
            iter(set(ImportBatch.objects.filter(project=uploads).values_list("pk", flat=True)) - before), None
        )
        entry["batch"] = batch_id
        if i == 0:  # the lead launches the run from the launch form with its defaults, a quick student
            lead.request("page", "GET", f"/training/p/{slug}/")
            form = LaunchForm(project=ctx["project"])
            data = {"csrfmiddlewaretoken": lead.token, "kind": "quick", "label_source": "reviewed"}
            for name in form.fields:
                value = form[name].initial
                if name not in data and value is not None and value is not False and value != "":
                    data[name] = "on" if value is True else str(value)
            launched_at = time.monotonic()
            response, ms = lead.request(
                "run_create", "POST", f"/training/p/{slug}/runs/new/", data=data, expect=(302,)
            )
            # The run page the form redirects to names the run (a review round may start runs too).
            number = re.search(r"/runs/(\d+)/", response.headers.get("location", "")) if response else None
            run = (
                TrainingRun.objects.filter(project=ctx["project"], number=int(number.group(1))).first()
                if number
                else None
            )
            connections.close_all()
            if run is not None:
                out["training"] = {"run": run.number, "pk": run.pk, "launch_ms": round(ms, 1)}
                out["training"]["at_s"] = round(launched_at - began, 1)
                out["training_samples"] = []
                threading.Thread(
                    target=row_watch, args=(TrainingRun, run.pk, out["stop_watch"], out["training_samples"]),
                    daemon=True,
                ).start()  # fmt: skip
        # The next upload after this one is imported (the lead watches the progress bar).
        while batch_id and not out["stop_watch"].is_set():
            status = ImportBatch.objects.filter(pk=batch_id).values_list("status", flat=True).first()
            connections.close_all()
            if status in ("succeeded", "failed", "cancelled"):
                entry["seconds"] = round(time.monotonic() - started, 1)
                break
            time.sleep(1)
    lead.close()


def killer(
    worker: load_bench.RqWorker, every: float, stop: threading.Event, began: float, kills: list
) -> None:
    """SIGKILL the rq worker and its work horse every `every` s; a new one 1 s later."""
    import psutil

    n = 0
    while True:
        n += 1
        if stop.wait(max(0.0, began + n * every - time.monotonic())):
            return
        event = {"at_s": round(time.monotonic() - began, 1)}
        try:
            parent = psutil.Process(worker.process.pid)
            horses = parent.children(recursive=True)
            for process in [parent, *horses]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGKILL)
            worker.process.wait()
            event.update(killed_pid=parent.pid, horses_killed=len(horses))
            time.sleep(1)
            event["restart_s"] = worker.start()
        except Exception as exc:  # noqa: BLE001 - reported; the load goes on
            event["failure"] = f"{type(exc).__name__}: {exc}"
        kills.append(event)
        log(f"worker kill {event}")


# --- phases ----------------------------------------------------------------------------------------


def phase(name, seconds, reviewers, think, drive, clients, rate, extra=None, seed=0) -> dict:
    """Reviewers and predict clients together for `seconds`; `extra` starts more work alongside."""
    stop = threading.Event()
    latencies: dict[str, list[float]] = {}
    lock = threading.Lock()
    for reviewer in reviewers:
        reviewer.start(stop, think, latencies, lock)
    if extra:
        extra(stop)
    predicted = drive.run(clients=clients, seconds=seconds, rate=rate, seed=seed)
    stop.set()
    for reviewer in reviewers:
        reviewer.thread.join(60)
    review_texts = predicted.pop("_review_texts")
    out = {
        "seconds": predicted["seconds"],
        "review_act": summary(latencies.get("act", [])),
        "review_undo": summary(latencies.get("undo", [])),
        "predict": {
            k: predicted[k]
            for k in ("clients", "requests", "ok", "requests_per_second", "p50_ms", "p95_ms", "p99_ms")
        },
        "predict_errors": {"total": predicted["errors"], "by_kind": predicted["error_kinds"], "samples": predicted["error_samples"]},
        "predict_max_lag_behind_schedule_ms": predicted.get("max_lag_behind_schedule_ms"),
    }  # fmt: skip
    log(f"{name}: review {out['review_act']}, predict p50 {predicted['p50_ms']} p99 {predicted['p99_ms']} ms")
    return {**out, "_review_texts": review_texts, "_ok": predicted["ok"]}


def stored_reviews(project, reviewers: list[Reviewer]) -> dict:
    """Every verdict answered 200 is one Review row of its reviewer; undone ones none."""
    from django.db import connections

    from annotation.models import Review

    rows = Counter(
        Review.objects.filter(example__project=project, kind=Review.Kind.REVIEW, reviewer__username__startswith="reviewer-")
        .values_list("reviewer__username", "example_id")
    )  # fmt: skip
    connections.close_all()
    expected = Counter()
    for r in reviewers:
        for example, n in r.stored.items():
            if n:
                expected[(r.username, example)] = n
    per_reviewer = {
        r.username: {"answered": sum(r.stored.values()), "rows": sum(n for (u, _), n in rows.items() if u == r.username)}
        for r in reviewers
    }  # fmt: skip
    by_example = Counter(example for _, example in rows.elements())
    return {
        "examples_reviewed_by_two": sum(1 for n in by_example.values() if n > 1),
        "verdicts_answered_net_of_undo": sum(expected.values()),
        "review_rows": sum(rows.values()),
        "lost": sum(max(0, n - rows[k]) for k, n in expected.items()),
        "duplicated_or_unexpected": sum(max(0, n - expected[k]) for k, n in rows.items()),
        "per_reviewer": per_reviewer,
    }


def settle_jobs(out: dict, deadline: float) -> dict:
    """Wait for the imports and the run to end; then the job rows left pending or running."""
    from django.db import connections

    from annotation.models import ImportBatch
    from distillapp import jobs
    from training.models import TrainingRun

    pending = {"pending", "running"}
    while time.monotonic() < deadline:
        waiting = ImportBatch.objects.filter(status__in=pending).exists()
        training = out.get("training")
        waiting = waiting or (
            training and TrainingRun.objects.filter(pk=training["pk"], status__in=pending).exists()
        )
        connections.close_all()
        if not waiting:
            break
        time.sleep(2)
    time.sleep(10)  # a job the last ones queued (an evaluation, a round refresh) gets its turn
    left: dict = {}
    deadline = max(deadline, time.monotonic() + 60)
    while True:
        held = rq_jobs()
        left = {}
        for model in jobs.job_models():
            for row in model.objects.filter(status__in=pending):
                # Stuck: running for a dead process, or pending with no rq job to run it.
                queued = (jobs.job_type(model).function, row.pk) in held
                left.setdefault(model._meta.label, []).append(
                    {
                        "pk": row.pk,
                        "status": row.status,
                        "worker": row.worker,
                        "stuck": jobs.is_stale(row) or (row.status == "pending" and not queued),
                    }
                )
        connections.close_all()
        if not any(r["stuck"] for v in left.values() for r in v) or time.monotonic() > deadline:
            return left
        time.sleep(3)


def rq_jobs() -> set[tuple[str, int]]:
    """(function, row id) of every job queued or being run on the app's queues."""
    import django_rq
    from django.conf import settings
    from rq.job import Job
    from rq.registry import StartedJobRegistry

    out = set()
    for name in settings.RQ_QUEUE_NAMES:
        queue = django_rq.get_queue(name)
        ids = queue.get_job_ids() + StartedJobRegistry(queue=queue).get_job_ids()
        for job in Job.fetch_many(ids, connection=queue.connection):
            if job is not None and job.args:
                out.add((job.func_name, job.args[0]))
    return out


def outcomes(args, ctx, pop, out: dict, began: float) -> tuple[list, dict, dict]:
    from django.db import connections

    from annotation.models import Example, ImportBatch
    from training.models import TrainingRun

    imports = []
    for entry in out.get("imports", []):
        batch = ImportBatch.objects.filter(pk=entry.get("batch")).first() if entry.get("batch") else None
        if batch is not None:
            entry.update(
                status=batch.status, error=batch.error, rows_created=batch.rows_created,
                rows_duplicate=batch.rows_duplicate, exact=batch.rows_created == args.import_rows,
            )  # fmt: skip
        imports.append(entry)
    examples = Example.objects.filter(project=pop["uploads"]).count()
    uploaded = sum(e.get("rows_created", 0) for e in imports)
    training = dict(out.get("training") or {"launched": False})
    if "pk" in training:
        run = TrainingRun.objects.get(pk=training.pop("pk"))
        samples = out.get("training_samples", [])
        workers = [w for _, _, w in samples if w]
        training.update(
            kind=run.kind, status=run.status, error=run.error, train_examples=run.counts.get("train"),
            workers_seen=len(dict.fromkeys(workers)),
            running_at_s=[round(t - began, 1) for t, s, _ in samples if s == "running"][:1],
            ended_at_s=next((round(t - began, 1) for t, s, _ in samples if s in ("succeeded", "failed", "cancelled")), None),
        )  # fmt: skip
    connections.close_all()
    return imports, training, {"upload_project_examples": examples, "rows_created_by_the_imports": uploaded}


def run(args) -> int:
    from load_bench import Drive, LogLedger, RqWorker, prepare, traffic_check

    machine = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    data_dir = Path(tempfile.mkdtemp(prefix="load-mixed-"))
    server = worker = short = None
    ctx: dict = {}
    if args.database_url:
        from bench_db import postgres_create

        postgres_create(args.database_url)  # a copy of the migrated template unless it exists
    try:
        ctx = prepare(args, data_dir)
        pop = populate(args, ctx, data_dir)
        extra_env = {
            k: v for k, v in (("DATABASE_URL", args.database_url), ("REDIS_URL", args.redis_url)) if v
        }
        server = Server(data_dir, extra_env, args.web_workers)
        server.wait_ready(timeout=180)
        # As `manage.py serve` starts them: one worker on every queue (the one killed) and one
        # on the short lane only.
        from distillapp.queues import worker_queues

        worker = RqWorker(data_dir, extra_env, queues=tuple(worker_queues(short_workers=1)))
        worker.start()
        short = RqWorker(data_dir, extra_env, queues=("short",), name="rqworker-short")
        short.start()
        log(
            f"server up on {server.url}, rq worker {worker.process.pid}, short-lane worker {short.process.pid}"
        )
        slug = ctx["project"].slug
        drive = Drive(
            port=server.port, token=ctx["token"], slug=slug, texts=ctx["pool"], timeout=args.request_timeout
        )
        ledger = LogLedger()
        serve_bench.warm_up(server, ctx, [[t] for t in ctx["pool"][:16]])  # each web process loads the model
        warm = drive.run(clients=4, seconds=3, seed=7)
        ledger.expected += len(ctx["pool"][:16]) + warm["ok"]
        review_texts = warm.pop("_review_texts")
        errors = Errors()
        reviewers = [
            Reviewer(server.url, slug, name, password, errors, seed=i, timeout=args.request_timeout)
            for i, (name, password) in enumerate(pop["reviewers"])
        ]
        # idle: one reviewer and one API client alone
        loads = [os.getloadavg()[0]]
        idle = phase("idle", args.idle_seconds, reviewers[:1], IDLE_THINK, drive, 1, IDLE_API_RATE, seed=1)
        idle.update(ledger.settle(idle.pop("_ok")))
        review_texts += idle.pop("_review_texts")
        loads.append(os.getloadavg()[0])
        # under load
        kills: list[dict] = []
        lead_out: dict = {"stop_watch": threading.Event()}
        began = time.monotonic()
        threads = []

        def extra(stop: threading.Event) -> None:
            nonlocal began
            began = time.monotonic()
            threads.append(
                threading.Thread(
                    target=killer, args=(worker, args.kill_every, stop, began, kills), daemon=True
                )
            )
            threads.append(
                threading.Thread(target=lead_work, args=(server.url, args, ctx, pop, errors, stop, began, lead_out), daemon=True)
            )  # fmt: skip

            def sample_load() -> None:
                while not stop.wait(10):
                    loads.append(os.getloadavg()[0])

            threads.append(threading.Thread(target=sample_load, daemon=True))
            for t in threads:
                t.start()

        load = phase(
            "load",
            args.mixed_seconds,
            reviewers,
            THINK,
            drive,
            args.api_clients,
            args.api_rate,
            extra,
            seed=2,
        )
        load_end = time.monotonic()
        threads[0].join(90)  # the killer: a restart in progress ends first
        log("load over; waiting for the imports and the training run")
        stuck = settle_jobs(lead_out, time.monotonic() + args.settle_seconds)
        lead_out["stop_watch"].set()
        threads[1].join(30)
        load.update(ledger.settle(load.pop("_ok")))
        review_texts += load.pop("_review_texts")
        imports, training, uploaded = outcomes(args, ctx, pop, lead_out, began)
        reviews = stored_reviews(ctx["project"], reviewers)
        traffic = traffic_check(ctx["project"], review_texts)
        for r in reviewers:
            r.browser.close()

        def ratio(key: str) -> float | None:
            a, b = load[key].get("p99_ms"), idle[key].get("p99_ms")
            return round(a / b, 2) if a and b else None

        errors_report = errors.report()
        predict_errors = idle["predict_errors"]["total"] + load["predict_errors"]["total"]
        lost = {
            "verdicts": reviews["lost"],
            "verdicts_duplicated": reviews["duplicated_or_unexpected"],
            "prediction_logs": ledger.expected - ledger.rows,
            "traffic_examples": traffic["lost"],
            "traffic_duplicated": traffic["duplicated"],
        }
        result = {
            "errors": errors_report["total"] + predict_errors,
            "lost": sum(lost.values()),
            "p99_load_over_idle": {"review_act": ratio("review_act"), "predict": ratio("predict")},
            "machine": {
                **machine,
                "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                "loadavg_1min_during_load": {"min": round(min(loads[1:]), 2), "max": round(max(loads[1:]), 2)},
            },
            "smoke": args.smoke,
            "config": {
                "database": "postgresql" if args.database_url else "sqlite",
                "redis": "given" if args.redis_url else "embedded",
                "runtime": ctx["runtime"], "student_gold_accuracy": ctx["evaluation_accuracy"],
                "web_workers": args.web_workers, "threads_per_web_worker": 4,
                "idle_seconds": args.idle_seconds, "load_seconds": args.mixed_seconds,
                "reviewers": args.reviewers, "think_s": THINK, "idle_think_s": IDLE_THINK,
                "api_clients": args.api_clients, "api_rate": args.api_rate, "idle_api_rate": IDLE_API_RATE,
                "imports": args.imports, "import_rows": args.import_rows, "kill_every_s": args.kill_every,
                "review_share": args.review_share, "setup_imported": pop["imported"], "review_queue_at_start": pop["queue"],
            },  # fmt: skip
            "idle": idle,
            "load": {**load, "seconds_with_settle": round(time.monotonic() - began, 1), "ended_at_s": round(load_end - began, 1)},
            "review_and_page_errors": errors_report,
            "lost_counts": lost,
            "reviews": reviews,
            "traffic_examples": traffic,
            "worker_kills": kills,
            "imports": imports,
            "upload_project": uploaded,
            "training": training,
            "jobs_left_pending_or_running": stuck,
            "server_log_tracebacks": server.log_path.read_text().count("Traceback"),
            "worker_log_tracebacks": sum(p.read_text().count("Traceback") for p in data_dir.glob("rqworker-*.log")),
        }  # fmt: skip
        print(json.dumps(result, indent=1))
        run_ended = training.get("status") in ("succeeded", "failed")
        ok = (
            result["errors"] == 0
            and result["lost"] == 0
            and all(e.get("status") == "succeeded" and e.get("exact") for e in imports if "skipped" not in e)
            and uploaded["rows_created_by_the_imports"] == uploaded["upload_project_examples"]
            and run_ended
            and not any(r["stuck"] for v in stuck.values() for r in v)
            and all("failure" not in k for k in kills)
        )
        return 0 if ok else 1
    finally:
        for w in (worker, short):
            if w:
                w.stop()
        if server:
            server.stop()
        if ctx.get("redis") is not None:
            from distillapp import embedded_redis

            embedded_redis.stop(ctx["redis"], save=False)
        if args.keep:
            log(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit("run it as: python bench/load_bench.py --mixed")
