"""Run the web server and an rq worker together; Ctrl-C stops both.

With REDIS_URL unset, the embedded Redis server is started first and
stopped last.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from distillapp import embedded_redis


class Command(BaseCommand):
    help = "Start the web server and a job worker (queues llm, training, default) together."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1, help="Number of rq worker processes.")
        parser.add_argument("--no-worker", action="store_true", help="Start the web server only.")

    def handle(self, *args, **opts) -> None:
        server = embedded_redis.ensure_started()
        if settings.REDIS_IS_EMBEDDED:
            self.stdout.write(f"Embedded Redis on {settings.EMBEDDED_REDIS_SOCKET}")
        python = sys.executable
        children: list[subprocess.Popen] = []
        if not opts["no_worker"]:
            for _ in range(opts["workers"]):
                children.append(subprocess.Popen([python, "manage.py", "rqworker", *settings.RQ_QUEUE_NAMES]))
        children.append(
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "gunicorn",
                    "distillapp.wsgi:application",
                    "--bind",
                    f"{opts['host']}:{opts['port']}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--timeout",
                    "120",
                    "--access-logfile",
                    "-",
                ]
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
            for child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 15
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
            if server is not None:
                embedded_redis.stop(server)
            self.stdout.write("Stopped.")
        if exit_code:
            sys.exit(exit_code)
