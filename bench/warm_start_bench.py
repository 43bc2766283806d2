#!/usr/bin/env python
"""How soon a restarted server answers pages, and what the first predictions cost (issue #24 item 9).

    python bench/warm_start_bench.py [--port 8022] [--code DIR] [--keep]

In a temp DISTILL_DATA_DIR (SQLite, embedded Redis): migrate, seed the demo, review 60
support tickets with random labels, train a quick student (inline), record a stand-in gold
evaluation and promote it, make a token. Then `manage.py serve --no-worker --web-workers 2`
from `--code` (default: this checkout; a `git archive` of another commit measures that one)
and time: the sign-in page's first 200 from the start; one prediction sent at that moment
(wall ms and the logged latency_ms); four more 20 s later. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETUP = """
import io, random, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from annotation.models import Example, GoldSet, Project, Review
from training import serving, services
from training.models import Evaluation

call_command("seed_demo", stdout=io.StringIO())
project = Project.objects.get(slug="support-tickets")
lead = get_user_model().objects.get(username="demo")
labels = list(project.labels.values_list("name", flat=True))
rng = random.Random(1)
for e in Example.objects.filter(project=project)[:60]:
    Review.objects.create(example=e, reviewer=lead, verdict="correct", value=rng.choice(labels))
Example.objects.filter(project=project).sync_queue_fields()
run = services.run_create(project=project, user=lead, kind="quick")
assert services.run_claim(run.pk)
run = services.run_execute(run=run)
gold = GoldSet.objects.create(project=project, version=1)
Evaluation.objects.create(project=project, run=run, gold_set=gold, subject="student", agent=run.agent,
                          metrics={"accuracy": 0.9, "score": 0.9, "examples": 100})
serving.version_promote(run=run, user=lead, threshold=0.0)
print(serving.token_create(project=project, user=lead, name="bench")[1])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8022)
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="warm-start-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DISTILL_DATA_DIR=str(data), DJANGO_SECURE="false", DJANGO_SETTINGS_MODULE="distillapp.settings"
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.code), env.get("PYTHONPATH", "")]))
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=args.code, env=env, check=True)
        setup = subprocess.run(
            [sys.executable, "-c", SETUP], cwd=args.code, env=env, check=True, capture_output=True, text=True
        )
        token = setup.stdout.strip().splitlines()[-1]
        print(json.dumps(measure(args.code, env, args.port, token)))
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


def measure(code: Path, env: dict, port: int, token: str) -> dict:
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--no-worker", "--web-workers", "2"],
        cwd=code,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def predict(text: str) -> list[int]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/projects/support-tickets/predict",
            data=json.dumps({"texts": [text]}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        sent = time.monotonic()
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read())
        return [round((time.monotonic() - sent) * 1000), round(body["predictions"][0]["latency_ms"])]

    out: dict = {}
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=60):
                    break
            except OSError:
                assert server.poll() is None, "the server stopped"
                time.sleep(0.1)
        out["login_first_200_s"] = round(time.monotonic() - started, 1)
        out["predict_at_once_wall_ms_latency_ms"] = predict("Do you have a Slack integration?")
        time.sleep(20)
        out["after_20s_wall_ms_latency_ms"] = [predict(f"I was charged twice in month {i}") for i in range(4)]
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(30)
    return out


if __name__ == "__main__":
    main()
