"""The measuring half of bench/serve_bench.py: the loads sent to the server with the CPU they cost
and the floors timed between them (`measure`), and the app's own share of a prediction in
process (`app_share`). serve_bench.py's docstring says what is measured; bench/README.md
("Regression guard") why the floors are timed the way they are.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_bench import Server

CLIENTS = 8
BATCH = 32


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return round(float(np.percentile(values, q)), 2)


def one_math_thread() -> None:
    """torch and ONNX Runtime on one thread in this process, as in each web worker."""
    import torch

    from distillapp import ml

    torch.set_num_threads(1)
    # ONNX Runtime reads OMP_NUM_THREADS when a session is made (as each web worker does under
    # `serve`): the session onnx_prepare made here used every core, and its idle threads spin.
    os.environ["OMP_NUM_THREADS"] = "1"
    ml._load_onnx.cache_clear()


def app_share(ctx: dict, requests: int = 500) -> dict:
    """What the app adds to one single-text prediction, in CPU: the whole Django request through
    its WSGI handler (middleware, token and version look-ups, routing, rate count, JSON, the
    log write on its background thread) minus `routing.student_predict` on the same texts, in
    this process, one math thread. No HTTP server or client: gunicorn's share is not the app's.
    SERVE_BENCH_PROFILE=<file> writes a cProfile of the requests there."""
    import io

    import torch
    from django.core.handlers.wsgi import WSGIHandler

    from distillapp import embedded_redis
    from training.models import ModelVersion, PredictionLog
    from training.serving import routing, writer

    torch.set_num_threads(1)
    # The rate count needs a Redis: the server's while it is up (None then), else one of ours.
    redis_server = embedded_redis.ensure_started()
    handler = WSGIHandler()
    path = f"/api/v1/projects/{ctx['project'].slug}/predict"
    texts = [ctx["test_texts"][i % len(ctx["test_texts"])] for i in range(requests)]
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]

    def call(body: bytes) -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Bearer {ctx['token']}",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        status = []
        response = handler(environ, lambda s, h, e=None: status.append(s))
        b"".join(response)
        response.close()
        if not status[0].startswith("200"):
            raise SystemExit(f"predict answered {status[0]}")

    version = ModelVersion.objects.select_related("run", "project").get(
        project=ctx["project"], is_active=True
    )
    for body, text in zip(bodies[:20], texts[:20], strict=True):  # warm: model loaded, caches filled
        call(body)
        routing.student_predict(version, [text])
    profile = os.environ.get("SERVE_BENCH_PROFILE")
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    # A request, then the student's predict on the same text, one after the other, so that
    # both meet the same machine (the ratio bench/quick.py compares); a full collection of
    # set-up's objects (tens of ms) would otherwise fall in one of them by chance.
    gc.collect()
    gc.freeze()
    model_cpu = request_wall = 0.0
    cpu = time.process_time()
    for body, text in zip(bodies, texts, strict=True):
        if profiler:
            profiler.enable()
        wall = time.perf_counter()
        call(body)
        request_wall += time.perf_counter() - wall
        if profiler:
            profiler.disable()
        thread_cpu = time.thread_time()
        routing.student_predict(version, [text])
        model_cpu += time.thread_time() - thread_cpu
    writer.prediction_logs.flush()  # the log rows' write is the app's too (no wait for the thread)
    # This process's CPU less the predicts' (this thread's): the requests', with the log
    # writer thread's.
    request_cpu = time.process_time() - cpu - model_cpu
    gc.unfreeze()
    if profiler:
        profiler.dump_stats(profile)
    embedded_redis.stop(redis_server, save=False)
    return {
        "requests": requests,
        "request_cpu_ms": round(request_cpu * 1000 / requests, 3),
        "model_cpu_ms": round(model_cpu * 1000 / requests, 3),
        "app_cpu_ms": round((request_cpu - model_cpu) * 1000 / requests, 3),
        "request_wall_ms": round(request_wall * 1000 / requests, 3),
        "target_app_cpu_ms": 1.0,
        "prediction_logs": PredictionLog.objects.count(),
        "how": "in process: Django's WSGI handler on one single-text request at a time, "
        "each followed by routing.student_predict on the same text (one math thread); "
        "the requests' CPU less the predicts'",
    }


def load(url: str, token: str, slug: str, bodies: list[list[str]], clients: int) -> dict:
    """Send every body once from `clients` threads; latencies in ms and wall time.

    Each client is a keep-alive ``http.client`` connection: the load generator shares the
    2 cores with the server, and the standard library's client costs about a third of
    httpx's CPU per request (``client_cpu_ms``), so more of the machine measures the server.
    """
    import http.client
    from urllib.parse import urlparse

    parsed = urlparse(url)
    path = f"/api/v1/projects/{slug}/predict"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(reversed(bodies))
    barrier = threading.Barrier(clients)

    def client() -> None:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        try:
            barrier.wait()
            while True:
                with lock:
                    if not queue:
                        return
                    texts = queue.pop()
                payload = json.dumps({"texts": texts})
                started = time.perf_counter()
                connection.request("POST", path, body=payload, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                elapsed = (time.perf_counter() - started) * 1000
                ok = response.status == 200 and all(
                    a["route"] == "student" for a in json.loads(raw)["predictions"]
                )
                with lock:
                    latencies.append(elapsed)
                    if not ok:
                        errors.append(f"{response.status}: {raw[:200]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "wall": time.perf_counter() - started, "errors": errors}


def warm_up(server: Server, ctx: dict, bodies: list[list[str]]) -> int:
    """One request at a time, each on a new connection, so both workers get some; the number
    of texts answered (each gets a prediction log)."""
    import httpx

    answered = 0
    for texts in bodies:
        response = httpx.post(
            f"{server.url}/api/v1/projects/{ctx['project'].slug}/predict",
            json={"texts": texts},
            headers={"Authorization": f"Bearer {ctx['token']}"},
            timeout=120,
        )
        answered += len(texts) if response.status_code == 200 else 0
    return answered


def settle(expected: int) -> None:
    """Wait until the server's background writer has written `expected` prediction logs in
    all, or until their count stops moving for 1.5 s."""
    from django.db import connections

    from training.models import PredictionLog

    deadline, seen, moved = time.monotonic() + 15, -1, time.monotonic()
    while (count := PredictionLog.objects.count()) < expected and time.monotonic() < deadline:
        if count != seen:
            seen, moved = count, time.monotonic()
        elif time.monotonic() - moved > 1.5:
            break
        time.sleep(0.05)
    connections.close_all()


def phase(server: Server, ctx: dict, bodies: list[list[str]], clients: int) -> tuple[dict, dict]:
    """One measured load, with where its time went. Every earlier load's logs must be written
    (each phase waits for its own; settle() after requests sent otherwise)."""
    from django.db import connections
    from django.db.models import Max

    from training.models import PredictionLog

    first = (PredictionLog.objects.aggregate(m=Max("pk"))["m"] or 0) + 1
    connections.close_all()  # no connection of this process held while the server writes
    cpu_server, cpu_client = server.cpu_seconds(), time.process_time()
    out = load(server.url, ctx["token"], ctx["project"].slug, bodies, clients)
    cpu_client = time.process_time() - cpu_client
    n = len(bodies)
    texts = sum(len(b) for b in bodies)
    # The server writes its prediction logs in the background (SERVING_LOG_FLUSH_SECONDS).
    deadline = time.monotonic() + 15
    while (
        texts and PredictionLog.objects.filter(pk__gte=first).count() < texts and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    # Read once these requests' monitoring rows are written (by the server's background
    # thread, partly after the last answer): otherwise a flush falls in or out by chance.
    cpu_server = server.cpu_seconds() - cpu_server
    logs = list(PredictionLog.objects.filter(pk__gte=first).values_list("latency_ms", flat=True))
    connections.close_all()
    split = {
        "requests": n,
        "model_ms": round(sum(logs) / n, 2) if logs else None,  # latency_ms is per text
        "server_cpu_ms": round(cpu_server * 1000 / n, 3),
        "client_cpu_ms": round(cpu_client * 1000 / n, 3),
        "cpu_cores_busy": round((cpu_server + cpu_client) / out["wall"], 2),
        "requests_per_second": round(n / out["wall"], 1),
    }
    if len(logs) != texts:
        out["errors"].append(f"{len(logs)} prediction logs for {texts} texts")
    return out, split


def runtime_predict(ctx: dict, runtime: str):
    """The student's own predict on `runtime`, as the server's workers call it."""
    from training import serving

    one_math_thread()
    artifacts = Path(ctx["run"].artifact_path)
    student, max_length = ctx["student"], ctx["max_length"]
    if runtime == "onnx-int8":
        return lambda texts: student.predict_onnx(
            str(artifacts / "onnx-int8"), texts, max_length=max_length, batch_size=serving.SERVING_BATCH_SIZE
        )
    return lambda texts: student.predict(str(artifacts / "model"), texts, max_length=max_length)


def paired(server: Server, ctx: dict, bodies: list[list[str]], predict) -> dict:
    """bench/quick.py's figures: one client sends each body, and after each answer the model
    alone predicts the same texts in this process (one math thread). The server's CPU is read
    over the whole window, once the requests' prediction logs are written (its idle processes
    cost next to nothing while this process predicts).

    Request by request, because a vCPU here runs at one of two speeds 1.6x apart, flipping
    every few hundred ms (bench/README.md, "Regression guard"): a floor timed at another moment
    meets another speed. One client, because with eight the server's CPU per text in 32-text
    requests moved 1.09-2.12 ms between repeats on a quiet machine (their torch work and the
    GIL contending in each worker), with one 0.94-1.12 ms."""
    import http.client
    from urllib.parse import urlparse

    from django.db import connections
    from django.db.models import Max

    from training.models import PredictionLog

    parsed = urlparse(server.url)
    path = f"/api/v1/projects/{ctx['project'].slug}/predict"
    headers = {"Authorization": f"Bearer {ctx['token']}", "Content-Type": "application/json"}
    first = (PredictionLog.objects.aggregate(m=Max("pk"))["m"] or 0) + 1
    connections.close_all()  # no connection of this process held while the server writes
    texts = sum(len(b) for b in bodies)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    alone, errors = 0.0, []
    server_cpu = server.cpu_seconds()
    try:
        for body in bodies:
            connection.request("POST", path, body=json.dumps({"texts": body}), headers=headers)
            response = connection.getresponse()
            raw = response.read()
            if response.status != 200:
                errors.append(f"{response.status}: {raw[:200]!r}")
            cpu = time.process_time()
            predict(body)
            alone += time.process_time() - cpu
    finally:
        connection.close()
    deadline = time.monotonic() + 15
    while PredictionLog.objects.filter(pk__gte=first).count() < texts and time.monotonic() < deadline:
        time.sleep(0.05)
    server_cpu = server.cpu_seconds() - server_cpu
    connections.close_all()
    return {
        "requests": len(bodies),
        "server_cpu_ms_per_text": round(server_cpu * 1000 / texts, 4),
        "model_alone_cpu_ms_per_text": round(alone * 1000 / texts, 4),
        "ratio": round(server_cpu / alone, 4) if alone else None,
        "errors": errors,
    }


def measure(server: Server, ctx: dict, args, refused: str | None, runtime: str = "torch") -> dict:
    if refused:
        return {"refused": refused, "error_count": 0}
    texts = ctx["test_texts"]
    rng = random.Random(7)

    def singles(n: int) -> list[list[str]]:
        return [[rng.choice(texts)] for _ in range(n)]

    # Cold workers first meet 8 concurrent requests, as after a deploy; then one client on
    # fresh connections makes sure both workers have loaded the model, and 64 requests from 8
    # clients warm every request thread. --quick (bench/quick.py) skips the cold start and
    # the one-client phase.
    from training.models import PredictionLog

    empty = {"latencies": [], "errors": [], "wall": 0.0}
    cold = empty if args.quick else phase(server, ctx, singles(CLIENTS), CLIENTS)[0]
    settle(PredictionLog.objects.count() + warm_up(server, ctx, singles(8 if args.quick else 16)))
    phase(server, ctx, singles(64), CLIENTS)
    # --quick: the 8-client loads' p50 and throughput are printed beside the guard's figures,
    # not compared, so a quarter of the requests does (the guard stays under 60 s).
    share = 4 if args.quick else 1
    single, single_split = phase(server, ctx, singles(max(16, args.requests // share)), CLIENTS)
    one = empty if args.quick else phase(server, ctx, singles(max(20, args.requests // 10)), 1)[0]
    batches = [rng.sample(texts, BATCH) for _ in range(args.batches)]
    loaded = batches[: max(8, args.batches // share)]
    batched, batched_split = phase(server, ctx, loaded, CLIENTS)
    # Then the guard's pairs, on as many texts again.
    predict = runtime_predict(ctx, runtime)
    predict(batches[0])  # the model alone, warm
    # A full collection of this process's objects (Django, torch; tens of ms) landing among
    # the model alone's calls would count for it; frozen, collections see only what these make.
    gc.collect()
    gc.freeze()
    pairs = {
        "single": paired(server, ctx, singles(args.requests), predict),
        "batched_32": paired(server, ctx, batches, predict),
    }
    gc.unfreeze()
    errors = single["errors"] + one["errors"] + batched["errors"]
    errors += pairs["single"].pop("errors") + pairs["batched_32"].pop("errors")
    cold_errors = cold["errors"]
    return {
        "p50_ms": percentile(single["latencies"], 50),
        "p99_ms": percentile(single["latencies"], 99),
        "batched_texts_per_second": round(len(loaded) * BATCH / batched["wall"], 1),
        "p50_ms_1_client": percentile(one["latencies"], 50) if one["latencies"] else None,
        "batched_p50_ms": percentile(batched["latencies"], 50),
        "where_the_time_goes": {"single": single_split, "batched_32": batched_split},
        # One client, each request followed by the model alone on its texts (bench/quick.py).
        "paired_with_model_alone": pairs,
        "errors": errors[:5],
        "error_count": len(errors),
        # Cold workers' first concurrent requests; reported, not counted as a failure.
        "cold_start_errors": sorted({e[:60] for e in cold_errors}),
        "cold_start_error_count": len([e for e in cold_errors if not e.endswith("texts")]),
    }
