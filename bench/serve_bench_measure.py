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
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_bench import Server

CLIENTS = 8
BATCH = 32
FLOOR_REQUESTS = 3  # GET /healthz for each single-text request timed (the guard's floor)


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


def load(
    url: str, token: str, slug: str, bodies: list[list[str]], clients: int, *, get: str | None = None
) -> dict:
    """Send every body once from `clients` threads; latencies in ms and wall time. With `get`
    (a path), each body is a GET of it instead (the floor's /healthz).

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
                if get:
                    connection.request("GET", get)
                else:
                    connection.request("POST", path, body=payload, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                elapsed = (time.perf_counter() - started) * 1000
                ok = response.status == 200 and (
                    bool(get) or all(a["route"] == "student" for a in json.loads(raw)["predictions"])
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


def phase(
    server: Server, ctx: dict, bodies: list[list[str]], clients: int, *, get: str | None = None
) -> tuple[dict, dict]:
    """One measured load, with where its time went. Every earlier load's logs must be written
    (each phase waits for its own; settle() after requests sent otherwise)."""
    from django.db import connections
    from django.db.models import Max

    from training.models import PredictionLog

    first = (PredictionLog.objects.aggregate(m=Max("pk"))["m"] or 0) + 1
    connections.close_all()  # no connection of this process held while the server writes
    cpu_server, cpu_client = server.cpu_seconds(), time.process_time()
    out = load(server.url, ctx["token"], ctx["project"].slug, bodies, clients, get=get)
    cpu_client = time.process_time() - cpu_client
    n = len(bodies)
    texts = 0 if get else sum(len(b) for b in bodies)
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


def combined(splits: list[dict]) -> dict:
    """Rounds' splits as one (per request, weighted by their requests)."""
    n = sum(s["requests"] for s in splits)
    out = {"requests": n}
    for key in ("model_ms", "server_cpu_ms", "client_cpu_ms"):
        values = [(s[key], s["requests"]) for s in splits if s[key] is not None]
        out[key] = round(sum(v * k for v, k in values) / n, 3) if values else None
    for key in ("cpu_cores_busy", "requests_per_second"):
        out[key] = round(statistics.median(s[key] for s in splits), 2)
    if len(splits) > 1:
        out["rounds_server_cpu_ms"] = [s["server_cpu_ms"] for s in splits]
    return out


def alone_cpu_ms(predict, bodies: list[list[str]]) -> float:
    """The model alone in this process (one math thread): CPU ms per text over `bodies`."""
    cpu = time.process_time()
    for texts in bodies:
        predict(texts)
    return (time.process_time() - cpu) * 1000 / sum(len(b) for b in bodies)


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
    logged = PredictionLog.objects.count()
    settle(logged + warm_up(server, ctx, singles(8 if args.quick else 16)))
    phase(server, ctx, singles(64), CLIENTS)
    # The measured loads come in --rounds rounds, each with the floors bench/quick.py divides
    # them by, so that figure and floor meet the same machine: a busy neighbour on these 2
    # cores slows a CPU second by up to ~45 %, and it comes and goes (bench/README.md,
    # "Regression guard"). Floors: the server's CPU per GET /healthz from the same 8 clients
    # (its HTTP, threads and middleware, no app code; FLOOR_REQUESTS for each single text, so
    # that its phase lasts about as long) for single texts; the model alone per text in this
    # process for batches of 32. Within a round the order alternates (ABBA), against drift.
    predict = runtime_predict(ctx, runtime)
    rounds = max(1, args.rounds)
    per_round = [args.requests // rounds + (r < args.requests % rounds) for r in range(rounds)]
    batches_per_round = [args.batches // rounds + (r < args.batches % rounds) for r in range(rounds)]
    batches = [rng.sample(texts, BATCH) for _ in range(args.batches)]
    predict(batches[0])  # the model alone, warm
    # A full collection of this process's objects (Django, torch; tens of ms) landing in a
    # model-alone window doubled it; frozen, collections see only what the rounds make.
    gc.collect()
    gc.freeze()
    single_runs, batched_runs, floor_splits, alone_ms, alone_single = [], [], [], [], []
    for r in range(rounds):
        mine = batches[sum(batches_per_round[:r]) : sum(batches_per_round[: r + 1])]
        steps = ["floor", "single", "batched", "alone"] if mine else ["floor", "single"]
        for step in steps if r % 2 == 0 else steps[::-1]:
            if step == "floor":
                healthz = [[]] * (FLOOR_REQUESTS * per_round[r])
                floor_splits.append(phase(server, ctx, healthz, CLIENTS, get="/healthz")[1])
            elif step == "single":
                bodies = singles(per_round[r])
                single_runs.append(phase(server, ctx, bodies, CLIENTS))
                alone_single.append(alone_cpu_ms(predict, bodies))
            elif step == "batched":
                batched_runs.append(phase(server, ctx, mine, CLIENTS))
            else:
                alone_ms.append((alone_cpu_ms(predict, mine), len(mine)))
    gc.unfreeze()
    ratios = {
        "single_over_healthz": [
            run[1]["server_cpu_ms"] / floor["server_cpu_ms"]
            for run, floor in zip(single_runs, floor_splits, strict=True)
        ],
        # Diagnostic: a floor of the same make as a single-text request (its HTTP and
        # middleware, as FLOOR_REQUESTS /healthz, and the model alone on the same text).
        "single_over_healthz_and_model": [
            run[1]["server_cpu_ms"] / (FLOOR_REQUESTS * floor["server_cpu_ms"] + alone)
            for run, floor, alone in zip(single_runs, floor_splits, alone_single, strict=True)
        ],
        "batched_over_alone": [
            run[1]["server_cpu_ms"] / BATCH / alone
            for run, (alone, _) in zip(batched_runs, alone_ms, strict=True)
        ],
    }
    one = empty if args.quick else phase(server, ctx, singles(max(20, args.requests // 10)), 1)[0]
    single = {k: sum((run[0][k] for run in single_runs), []) for k in ("latencies", "errors")}
    batched = {k: sum((run[0][k] for run in batched_runs), []) for k in ("latencies", "errors")}
    batched_wall = sum(run[0]["wall"] for run in batched_runs)
    errors = single["errors"] + one["errors"] + batched["errors"]
    cold_errors = cold["errors"]
    return {
        "p50_ms": percentile(single["latencies"], 50),
        "p99_ms": percentile(single["latencies"], 99),
        "batched_texts_per_second": round(args.batches * BATCH / batched_wall, 1) if batched_wall else None,
        "p50_ms_1_client": percentile(one["latencies"], 50) if one["latencies"] else None,
        "batched_p50_ms": percentile(batched["latencies"], 50) if batched["latencies"] else None,
        "where_the_time_goes": {
            "single": combined([run[1] for run in single_runs]),
            "batched_32": combined([run[1] for run in batched_runs]) if batched_runs else None,
        },
        # Measured between the loads above, round by round (bench/quick.py's floors); the
        # ratios' medians over the rounds are what the guard compares.
        "floors": {
            "rounds": rounds,
            **{f"{key}_median": round(statistics.median(v), 4) for key, v in ratios.items() if v},
            **{f"rounds_{key}": [round(x, 3) for x in v] for key, v in ratios.items()},
            "healthz_server_cpu_ms": combined(floor_splits)["server_cpu_ms"],
            "rounds_healthz_server_cpu_ms": [s["server_cpu_ms"] for s in floor_splits],
            "model_alone_batched_cpu_ms_per_text": round(
                sum(ms * n for ms, n in alone_ms) / sum(n for _, n in alone_ms), 4
            )
            if alone_ms
            else None,
            "rounds_model_alone_batched_cpu_ms_per_text": [round(ms, 4) for ms, _ in alone_ms],
            "rounds_model_alone_single_cpu_ms": [round(ms, 4) for ms in alone_single],
        },
        "errors": errors[:5],
        "error_count": len(errors),
        # Cold workers' first concurrent requests; reported, not counted as a failure.
        "cold_start_errors": sorted({e[:60] for e in cold_errors}),
        "cold_start_error_count": len([e for e in cold_errors if not e.endswith("texts")]),
    }
