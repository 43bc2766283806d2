"""Run the web server and the rq workers together; Ctrl-C stops them all.

With REDIS_URL unset, the embedded Redis server is started first and
stopped last.

Each child runs in a process group of its own, which serve stops whole: a
gunicorn worker or an rq work horse that outlives its parent (seen in CI: the
gunicorn master gone, one of its workers still running after serve exited) is
killed with it, never left holding the port or serve's output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from distillapp import embedded_redis
from distillapp.queues import worker_queues

KEEP_ALIVE_SECONDS = 75  # an idle keep-alive connection stays open this long


class Command(BaseCommand):
    help = (
        "Start the web server, a job worker (every queue) and a worker for the short queue "
        "(gold evaluations, int8 exports) together."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers", type=int, default=1, help="rq worker processes listening to every queue."
        )
        parser.add_argument(
            "--short-workers",
            type=int,
            default=1,
            help="rq worker processes for the short queue only (gold evaluations, int8 exports), so "
            "a long fine-tune never holds them up; 0: none.",
        )
        parser.add_argument(
            "--web-workers",
            type=int,
            default=settings.WEB_WORKERS,
            help="Web server processes (default: DISTILL_WEB_WORKERS, else 2 per CPU core).",
        )
        parser.add_argument(
            "--threads", type=int, default=4, help="Request threads in each web server process."
        )
        parser.add_argument("--no-worker", action="store_true", help="Start the web server only.")

    def handle(self, *args, **opts) -> None:
        server = embedded_redis.ensure_started()
        if settings.REDIS_IS_EMBEDDED:
            self.stdout.write(f"Embedded Redis on {settings.EMBEDDED_REDIS_SOCKET}")
        python = sys.executable
        children: list[subprocess.Popen] = []
        if not opts["no_worker"]:
            lanes = worker_queues(short_workers=opts["short_workers"])
            for _ in range(opts["workers"]):
                children.append(subprocess.Popen([python, "manage.py", "rqworker", *lanes], process_group=0))
            # A worker runs one job at a time: the short lane needs its own process.
            for _ in range(opts["short_workers"]):
                children.append(
                    subprocess.Popen([python, "manage.py", "rqworker", settings.SHORT_QUEUE], process_group=0)
                )
        # One math thread per web worker: with two workers on two cores, more threads only fight
        # over the cores (ONNX int8 single-text p50 -26 to -30 %, bench/README.md "Serving").
        web_env = {**os.environ}
        web_env.setdefault("OMP_NUM_THREADS", "1")
        web_env.setdefault("MKL_NUM_THREADS", "1")
        children.append(
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "gunicorn",
                    "distillapp.wsgi:application",
                    # Its post_worker_init hook loads the live models in each web process.
                    "--config",
                    "python:distillapp.gunicorn_config",
                    "--bind",
                    f"{opts['host']}:{opts['port']}",
                    "--workers",
                    str(opts["web_workers"]),
                    "--threads",
                    str(opts["threads"]),
                    "--timeout",
                    "120",
                    # gunicorn's default closes a connection idle for 2 s: a client or the TLS
                    # proxy reusing it then meets a reset (an error, a 502) though the server is
                    # fine. Longer than the proxies' own idle timeouts (60 s for nginx and most
                    # load balancers), so the proxy always closes first (bench/README.md "Load").
                    "--keep-alive",
                    str(KEEP_ALIVE_SECONDS),
                    "--access-logfile",
                    "-",
                ],
                env=web_env,
                process_group=0,
            )
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"distillapp is running at http://{opts['host']}:{opts['port']}/ (Ctrl-C stops it)"
            )
        )

        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        try:
            while not stopping:
                for child in children:
                    if child.poll() is not None:
                        self.stderr.write(
                            f"{child.args[2] if len(child.args) > 2 else child.args} exited with {child.returncode}; stopping."
                        )
                        exit_code = child.returncode or 1
                        stopping = True
                time.sleep(0.3)
        finally:
            # Ctrl-C in a terminal reaches serve's group only: each child is told here (rq
            # workers finish or give back their job, gunicorn its requests in flight).
            for child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 15
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
                # Whatever is left of its group: the child itself past the deadline, and any
                # process of its own (a web worker, a work horse) that did not follow it out.
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait()
            if server is not None:
                embedded_redis.stop(server)
            self.stdout.write("Stopped.")
        if exit_code:
            sys.exit(exit_code)
