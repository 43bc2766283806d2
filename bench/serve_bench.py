#!/usr/bin/env python
"""Latency and throughput of the prediction API under the production server, fp32 vs ONNX int8.

    python bench/serve_bench.py [--model DIR] [--train-texts N] [--epochs E] [--gold N]
                                [--requests N] [--batches N] [--compare-threads] [--keep]

1. setup (this process): a temp DISTILL_DATA_DIR with SQLite (DATABASE_URL and REDIS_URL are
   removed), ``migrate``, a lead and a project with the 77 Banking77 labels. A real MiniLM-L6
   student (the bundled ``distillapp.ml.default_base_model()``) is fine-tuned briefly with
   ``tasks.classification.student.train`` on a seeded sample of train.csv (``--train-texts``, ``--epochs``;
   max_length 64 as the app's default; ``--model DIR`` keeps it there and reuses it on the next
   run), saved as run 1's artifacts, evaluated with
   ``services.evaluate_run`` on a frozen gold set of ``--gold`` test.csv texts, and quantized
   with ``serving.onnx_prepare`` (the deploy page's "Quantize (int8)"), which reports both
   gold accuracies. An API token is made with ``serving.token_create``.
2. model_alone (in the bench's process, torch.set_num_threads(1)): the model alone, one thread, no HTTP:
   32-text requests through ``student.predict`` (torch) and ``student.predict_onnx`` (batch_size 32 and
   ``serving.SERVING_BATCH_SIZE``), and single texts; texts/s and ms.
3. server: ``manage.py serve --no-worker`` on 127.0.0.1 (gunicorn distillapp.wsgi:application,
   ``--web-workers`` processes x 4 threads, by default the serve command's 2 per core; it also
   starts the embedded Redis) with the serve
   command's own settings (one math thread per web worker: OMP_NUM_THREADS=1), and with
   ``--compare-threads`` once more with one thread per core (``threads_per_core_server``).
   For each runtime, the run is promoted with threshold 0.0 (every answer comes from the
   student) with ``serving.version_promote(runtime="torch" | "onnx-int8")``, the first runtime
   before the server starts; the server notices the second within SERVING_CACHE_SECONDS (the
   bench waits that long), so it is not restarted in between. Then, after a
   warm-up (16 requests one at a time on new connections, so every worker loads the model,
   then 64 from 8 clients), 8 client threads (http.client,
   one keep-alive connection each, loopback only) send:
   - ``--requests`` single-text requests: ``p50_ms`` / ``p99_ms`` of the client-side latency;
   - ``--requests`` // 10 single-text requests from 1 client: ``p50_ms_1_client``, the service
     time without queueing;
   - ``--batches`` requests of 32 texts: ``batched_texts_per_second`` (texts / wall time).
   Every answer is checked (HTTP 200, route "student"). Before the warm-up, 8 concurrent
   requests meet the cold workers, as after a deploy: their failures are reported apart
   (``cold_start_errors``) and do not fail the bench. ``where_the_time_goes`` splits each
   phase per request: ``model_ms`` (PredictionLog.latency_ms, which the app measures around
   ``student_predict``), ``server_cpu_ms`` (CPU of the server's processes, psutil, until the
   requests' prediction logs are written) and
   ``client_cpu_ms`` (CPU of this process: the 8 client threads share the 2 cores with the
   server).

``--task extraction`` does the same with Restaurant-8k (``../shared/data/restaurant8k``): verified
train rows, attested gold, a token classifier answering spans (strict entity F1 in ``gold``).
``app_share``: the app's own CPU per single-text request (Django's WSGI handler in process minus
``routing.student_predict``), on the runtime promoted last.
``paired_with_model_alone`` (bench/quick.py's figures): --requests single-text requests, then
--batches of 32, from one client, each followed in this process by the model alone on the same
texts; the server's CPU per text over the model alone's.

One JSON object goes to stdout (progress to stderr); the first keys are the reported ones:
{"fp32": {"p50_ms", "p99_ms", "batched_texts_per_second"}, "onnx_int8": {...}, "workers": 2,
"clients": 8}. Exits non-zero when a request failed. The temp directory is removed unless --keep.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_db import sqlite_copy

# The loads, their CPU and floors, and the app's share in process (re-exported: load_bench.py and
# load_mixed.py import log, percentile and warm_up from here).
from serve_bench_measure import (  # noqa: F401
    BATCH,
    CLIENTS,
    app_share,
    load,
    log,
    measure,
    one_math_thread,
    percentile,
    phase,
    warm_up,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DATA = Path("/work/shared/data/banking77")
WORKERS = 2 * (os.cpu_count() or 1)  # what `manage.py serve` starts (DISTILL_WEB_WORKERS unset)
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def read_csv(name: str) -> list[dict]:
    with open(DATA / name, newline="") as f:
        return list(csv.DictReader(f))


# --- setup -------------------------------------------------------------------------------------


def setup(args, data_dir: Path) -> dict:
    os.environ["DISTILL_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    # A loopback server speaks plain HTTP, as scripts/run.sh does (no HTTPS redirect).
    os.environ.setdefault("DJANGO_SECURE", "false")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    sqlite_copy(data_dir / "distillapp.sqlite3")  # migrated once per schema (bench_db.py)
    import django

    django.setup()
    if getattr(args, "task", "classification") == "extraction":  # load_bench and fault_bench: classification
        return setup_extraction(args, data_dir)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from annotation.models import Example, GoldSet, GoldSetItem
    from annotation.projects import project_create
    from tasks.classification import student

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench-lead", password="x")
    labels = json.loads((DATA / "categories.json").read_text())
    project = project_create(
        name="Banking77 serving", slug="b77-serve", user=user, labels=[(n, "") for n in labels]
    )
    rng = random.Random(13)
    test = read_csv("test.csv")
    rng.shuffle(test)
    gold = GoldSet.objects.create(project=project, version=1)
    seen: set[str] = set()
    used = 0
    for used, row in enumerate(test, start=1):  # noqa: B007 - `used` is read after the loop
        key = " ".join(row["text"].lower().split())
        if key in seen:
            continue
        seen.add(key)
        example = Example.objects.create(project=project, text=row["text"].strip(), is_gold=True)
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=row["category"])
        if len(seen) == args.gold:
            break
    gold.freeze(user=user)

    train = read_csv("train.csv")
    rng.shuffle(train)
    train = [r for r in train if " ".join(r["text"].lower().split()) not in seen][: args.train_texts]
    ctx = student_run(
        args,
        data_dir,
        project=project,
        user=user,
        student=student,
        names=sorted(labels),
        train=[(r["text"], r["category"]) for r in train],
        gold_count=len(seen),
    )
    config = json.loads((Path(ctx["run"].artifact_path) / "model" / "config.json").read_text())
    if sorted(config["id2label"].values()) != sorted(labels):
        raise SystemExit(f"{args.model} is not a Banking77 classifier (its labels differ)")
    return {**ctx, "test_texts": [r["text"] for r in test[used:]]}  # not gold: what traffic would be


def student_run(args, data_dir: Path, *, project, user, student, names, train, gold_count) -> dict:
    """Run 1 of `project`: a tiny random model (--tiny-model), the one saved in --model, or
    MiniLM-L6 fine-tuned on `train` ((text, answer) pairs); evaluated on gold, exported to int8
    when asked, with an API token whose rate limit is never reached."""
    from annotation.models import content_hash
    from distillapp import ml
    from training import services, serving
    from training.models import TrainingRun, default_hyperparameters

    hp = {**default_hyperparameters(), "epochs": args.epochs}
    artifacts = data_dir / "models" / project.slug / "run-1"
    saved = Path(args.model) if args.model else None
    if args.tiny_model:
        # The server's path is measured, not the model: a small random model built in code.
        log("building a tiny random model (--tiny-model)")
        tiny_classifier(
            artifacts / "model", names, token_classifier=student.AUTO_CLASS.endswith("TokenClassification")
        )
        train_seconds = None
    elif saved and (saved / "config.json").is_file():
        log(f"reusing the student in {saved}")
        shutil.copytree(saved, artifacts / "model", ignore=shutil.ignore_patterns("checkpoints"))
        train_seconds = None
    else:
        log(f"fine-tuning MiniLM-L6 on {len(train)} texts, {args.epochs} epoch(s)")
        result = student.train(
            texts=[text for text, _ in train],
            answers=[answer for _, answer in train],
            names=names,
            base_model=ml.default_base_model(),
            output_dir=artifacts / "model",
            hyperparameters=ml.Hyperparameters(epochs=args.epochs, max_length=hp["max_length"]),
        )
        train_seconds = round(result.seconds, 1)
        if saved:
            shutil.copytree(artifacts / "model", saved, ignore=shutil.ignore_patterns("checkpoints"))
    run = TrainingRun.objects.create(
        project=project,
        number=1,
        status=TrainingRun.Status.SUCCEEDED,
        hyperparameters=hp,
        artifact_path=str(artifacts),
        train_seconds=train_seconds,
        counts={"train": len(train)},
    )
    # The manifest says what the student saw (evaluation checks it against gold). With --model
    # the saved student was trained on texts drawn the same way, from train minus gold.
    (artifacts / "manifest.json").write_text(
        json.dumps({"run": run.number, "train": [{"id": None, "hash": content_hash(t)} for t, _ in train]})
    )
    log(f"evaluating on {gold_count} gold texts")  # the app promotes only an evaluated run
    evaluation = services.evaluate_run(run=run)
    if "onnx-int8" in args.runtimes:
        log("exporting and quantizing (onnx_prepare)")
        int8 = serving.onnx_prepare(run=run)
        log(f"gold {int8['score_name']}: fp32 {int8['fp32_accuracy']:.4f}, int8 {int8['onnx_accuracy']:.4f}")
    else:
        int8 = dict.fromkeys(
            ("examples", "fp32_accuracy", "onnx_accuracy", "agreement", "may_activate", "size_mb")
        )
        int8["export_seconds"] = None
    _, token = serving.token_create(project=project, user=user, name="bench")
    # The rate limit is counted on every request (its cost is measured) but never reached here.
    config = serving.serving_config_for(project)
    config.requests_per_minute = 1_000_000
    config.save()
    return {
        "project": project,
        "run": run,
        "user": user,
        "token": token,
        "train_seconds": train_seconds,
        # The task's headline score on gold (accuracy; strict entity micro-F1 for extraction).
        "evaluation_accuracy": round(evaluation.metrics.get("score") or evaluation.accuracy or 0.0, 4),
        "int8": int8,
        "student": student,
        "max_length": hp["max_length"],
    }


def setup_extraction(args, data_dir: Path) -> dict:
    """Restaurant-8k as an extraction project: --train-texts train rows as verified labels,
    --gold test rows as attested gold, the rest of test as traffic; the student is a token
    classifier (fine-tuned MiniLM-L6, or --tiny-model / --model as for classification)."""
    from banking77_distill import bench_user
    from django.core.management import call_command
    from extraction_bench import build_project, restaurant8k

    from tasks.extraction import student

    call_command("migrate", verbosity=0)
    rng = random.Random(13)
    train, test = restaurant8k("train"), restaurant8k("test")
    rng.shuffle(train)
    rng.shuffle(test)
    gold, traffic = test[: args.gold], test[args.gold :]
    train = train[: args.train_texts]
    fields = sorted({span["field"] for _, answer in train + test for span in answer["spans"]})
    project, _ = build_project(
        slug="r8k-serve", fields=fields, train_rows=train, test_rows=gold, work=data_dir
    )
    ctx = student_run(
        args,
        data_dir,
        project=project,
        user=bench_user(),
        student=student,
        names=fields,
        train=train,
        gold_count=len(gold),
    )
    return {**ctx, "test_texts": [text for text, _ in traffic]}


def tiny_classifier(directory: Path, labels: list[str], *, token_classifier: bool = False) -> None:
    """A tiny random BERT sequence (or token) classifier with the bundled tokenizer (as
    distillapp.ml.make_tiny_model, with a head over `labels`)."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        BertForTokenClassification,
    )

    from distillapp import ml

    tokenizer = AutoTokenizer.from_pretrained(ml.default_base_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model = BertForTokenClassification if token_classifier else BertForSequenceClassification
    model(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


# --- the model alone ---------------------------------------------------------------------------


def model_alone(model_dir: str, onnx_dir: str, texts: list[str], student, max_length: int = 64) -> dict:
    """The model alone: one math thread, no HTTP, in this process (after setup, which has
    imported torch and the app already: a child process would pay ~6 s of imports again)."""
    from training import serving

    one_math_thread()
    batches = [texts[i : i + BATCH] for i in range(0, 20 * BATCH, BATCH)]
    singles = texts[:200]

    cpu_ms: dict[str, float] = {}  # CPU ms per text (one thread): steadier than wall on a busy machine

    def batched(fn, name: str = "") -> float:
        fn(batches[0])
        started, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            fn(batch)
        if name:
            cpu_ms[name] = round((time.process_time() - cpu) * 1000 / (len(batches) * BATCH), 3)
        return round(len(batches) * BATCH / (time.perf_counter() - started), 1)

    def single_ms(fn, name: str = "") -> float:
        fn(singles[:1])
        times = []
        cpu = time.process_time()
        for text in singles:
            started = time.perf_counter()
            fn([text])
            times.append((time.perf_counter() - started) * 1000)
        if name:
            cpu_ms[name] = round((time.process_time() - cpu) * 1000 / len(singles), 3)
        return percentile(times, 50)

    def torch_fn(batch):
        return student.predict(model_dir, batch, max_length=max_length)

    def onnx_fn(size):
        return lambda batch: student.predict_onnx(onnx_dir, batch, max_length=max_length, batch_size=size)

    result = {
        "threads": 1,
        "fp32_texts_per_second": batched(torch_fn, "fp32_batched_cpu_ms_per_text"),
        "fp32_single_p50_ms": single_ms(torch_fn, "fp32_single_cpu_ms"),
    }
    if Path(onnx_dir).is_dir():
        result["onnx_int8_texts_per_second_batch_32"] = batched(onnx_fn(32))
        result[f"onnx_int8_texts_per_second_batch_{serving.SERVING_BATCH_SIZE}"] = batched(
            onnx_fn(serving.SERVING_BATCH_SIZE)
        )
        result["onnx_int8_single_p50_ms"] = single_ms(onnx_fn(serving.SERVING_BATCH_SIZE))
    result.update(cpu_ms)
    return result


# --- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, extra_env: dict, web_workers: int):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in SINGLE_THREAD_ENV}
        env.update({"DISTILL_DATA_DIR": str(data_dir), **extra_env})
        self.log_path = data_dir / f"server-{self.port}.log"
        self.log_file = open(self.log_path, "w")  # closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "serve",
                "--no-worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--web-workers",
                str(web_workers),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError("the server did not answer in time")

    def cpu_seconds(self) -> float:
        """CPU seconds of the server's processes (the serve command, gunicorn, its workers, the
        embedded Redis): every thread's /proc/.../schedstat, in nanoseconds (psutil's times
        tick in 10 ms a process: ±5 % on a 0.3 s phase), psutil's where that is unreadable."""
        import psutil

        total = 0.0
        try:
            root = psutil.Process(self.process.pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    tasks = Path(f"/proc/{p.pid}/task")
                    total += sum(int((t / "schedstat").read_text().split()[0]) for t in tasks.iterdir()) / 1e9
                except (OSError, ValueError, IndexError):
                    times = p.cpu_times()
                    total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def promote(ctx: dict, runtime: str) -> str | None:
    """Serve the run on `runtime`; the reason when the app refuses (the int8 gate)."""
    from django.db import connections

    from training import serving

    try:
        serving.version_promote(run=ctx["run"], user=ctx["user"], threshold=0.0, runtime=runtime)
    except serving.ServingError as exc:  # the int8 gate: the app would not serve it either
        return f"{exc.code}: {exc}"
    finally:
        connections.close_all()
    return None


def serve_and_measure(data_dir: Path, ctx: dict, args, extra_env: dict, before_stop=None) -> dict:
    """Measure every runtime on one server; `before_stop()` runs (its result under "then")
    while the server is still up, so that it uses the server's embedded Redis."""
    from django.conf import settings

    runtimes = [(key, r) for key, r in (("fp32", "torch"), ("onnx_int8", "onnx-int8")) if r in args.runtimes]
    refused = promote(ctx, runtimes[0][1])  # before the start: the server serves it at once
    if args.log_flush_seconds is not None:
        extra_env = {**extra_env, "DISTILL_SERVING_LOG_FLUSH_SECONDS": str(args.log_flush_seconds)}
    server = Server(data_dir, extra_env, args.web_workers)
    try:
        server.wait_ready()
        log(f"server up on {server.url} ({extra_env or 'serve defaults'})")
        out = {}
        for i, (key, runtime) in enumerate(runtimes):
            if i:
                refused = promote(ctx, runtime)
                # The server's processes notice within their cache time, without a restart.
                time.sleep(settings.SERVING_CACHE_SECONDS + 0.5)
            out[key] = measure(server, ctx, args, refused, runtime)
            log(f"{key}: {json.dumps({k: v for k, v in out[key].items() if k != 'where_the_time_goes'})}")
        if before_stop is not None:
            out["then"] = before_stop()
        return out
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--task",
        choices=["classification", "extraction"],
        default="classification",
        help="classification: Banking77 (default); extraction: Restaurant-8k, a token classifier answering spans.",
    )
    parser.add_argument("--train-texts", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--gold", type=int, default=1000)
    parser.add_argument(
        "--model",
        help="A directory for the trained student: reused when it holds one, else filled after training.",
    )
    parser.add_argument(
        "--web-workers", type=int, default=WORKERS, help="gunicorn processes (serve's default)."
    )
    parser.add_argument("--requests", type=int, default=400, help="Single-text requests per runtime.")
    parser.add_argument("--batches", type=int, default=48, help="32-text requests per runtime.")
    parser.add_argument(
        "--compare-threads", action="store_true", help="Also measure a server with one math thread per core."
    )
    parser.add_argument(
        "--tiny-model",
        action="store_true",
        help="A tiny random classifier built in code instead of the trained MiniLM (measures the path).",
    )
    parser.add_argument(
        "--runtimes", default="torch,onnx-int8", help="Comma-separated: torch, onnx-int8 (default both)."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="No cold-start or one-client phases, no model alone before the server "
        "(bench/quick.py's regression guard).",
    )
    parser.add_argument(
        "--app-share-requests",
        type=int,
        default=500,
        help="Single-text requests through the WSGI handler in process for the app's CPU share (0: skip).",
    )
    parser.add_argument(
        "--log-flush-seconds",
        type=float,
        help="The server's DISTILL_SERVING_LOG_FLUSH_SECONDS (default: serve's, 1 s). Each load "
        "waits for its prediction logs: bench/quick.py passes 0.05 to wait less.",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temp directory.")
    args = parser.parse_args()
    args.runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if not set(args.runtimes) <= {"torch", "onnx-int8"}:
        parser.error("--runtimes takes torch and/or onnx-int8")

    data_dir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        ctx = setup(args, data_dir)
        alone = None  # --quick: its floors are measured between the server's loads instead
        if not args.quick:
            log("the model alone, one thread")
            alone = model_alone(
                str(Path(ctx["run"].artifact_path) / "model"),
                str(Path(ctx["run"].artifact_path) / "onnx-int8"),
                ctx["test_texts"],
                ctx["student"],
                ctx["max_length"],
            )
            log(f"model alone: {alone}")
        # The reported server runs with `manage.py serve`'s own defaults (one math thread
        # per web worker); --compare-threads adds a run with one thread per core.
        # app_share runs in this process, on the version the server served last, before the
        # server stops (its embedded Redis serves the rate count: no start of one of its own).
        share_fn = (lambda: app_share(ctx, args.app_share_requests)) if args.app_share_requests else None
        reported = serve_and_measure(data_dir, ctx, args, {}, before_stop=share_fn)
        share = reported.pop("then", None)
        if share:
            share["runtime"] = args.runtimes[-1]
            log(f"app share: {share}")
        per_core = {"OMP_NUM_THREADS": str(os.cpu_count()), "MKL_NUM_THREADS": str(os.cpu_count())}
        default = serve_and_measure(data_dir, ctx, args, per_core) if args.compare_threads else None
        from training.serving import SERVING_BATCH_SIZE

        result = {
            "fp32": reported.get("fp32"),
            "onnx_int8": reported.get("onnx_int8"),
            "workers": args.web_workers,
            "clients": CLIENTS,
            "threads_per_worker_process": 4,
            "server_env": "manage.py serve defaults (OMP_NUM_THREADS=1 per web worker)",
            "threads_per_core_server": default,
            "model_alone": alone,
            "app_share": share,
            "onnx_batch_size": SERVING_BATCH_SIZE,
            "gold": {
                "examples": ctx["int8"]["examples"],
                "fp32_accuracy": ctx["int8"]["fp32_accuracy"],
                "onnx_int8_accuracy": ctx["int8"]["onnx_accuracy"],
                "agreement": ctx["int8"]["agreement"],
                "may_activate": ctx["int8"]["may_activate"],
                "evaluate_run_accuracy": ctx["evaluation_accuracy"],
                "score": "accuracy" if args.task == "classification" else "strict entity micro-F1",
            },
            "model": {
                "task": args.task,
                "base": ("tiny random BERT (2 layers, 32 wide)" if args.tiny_model else "bundled MiniLM-L6")
                + (", 77-way head" if args.task == "classification" else ", BIO token head (Restaurant-8k)"),
                "train_texts": args.train_texts,
                "epochs": args.epochs,
                "train_seconds": ctx["train_seconds"],
                "reused": bool(args.model) and ctx["train_seconds"] is None,
                "onnx_int8_mb": ctx["int8"]["size_mb"],
                "export_seconds": ctx["int8"]["export_seconds"],
            },
            "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
        print(json.dumps(result, indent=1))
        failed = sum(r["error_count"] for r in reported.values())
        return 1 if failed else 0
    finally:
        if args.keep:
            log(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
