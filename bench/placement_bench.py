#!/usr/bin/env python
"""What priming the teacher's task costs the serving fallback per request (#26).

    python bench/placement_bench.py [--reviewed N] [--unreviewed M] [--repeats R] [--database-url URL]

An extraction project with N reviewed receipts (default 2000, ``PRIMING_ANSWERS``: as many as
priming reads) among M unreviewed ones (default 0), then, each R times: ``Project.primed``
(what every fallback request would pay unkept: the reviewed answers read and their context
words counted), ``reviews_key``
(the check a request pays at most every ``PRIMED_RECHECK_SECONDS``), ``primed_task`` kept
(what the other requests pay), and the prompt look-ups ``teacher_answers`` made before this
change (``teacher_config_for`` + ``prompt_version_current``) as the floor it already paid.
Medians of wall ms and of this process's CPU ms (a PostgreSQL backend's CPU is not in it).
SQLite by default (a migrated copy, bench_db.py); PostgreSQL with --database-url (the
database is made from the migrated template and dropped afterwards if this run made it).

Exactly one JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_db import admin_url, postgres_create, quote_ident, sqlite_copy

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

ITEMS = "burger fries soup salad coffee tea cake pasta pizza wine water bread".split()


def receipt(rng: random.Random) -> tuple[str, dict]:
    """A receipt whose total is also an item's price (so placement matters), and its answer."""
    items = [
        (rng.choice(ITEMS).capitalize(), f"{rng.randint(1, 40)}.{rng.randint(0, 99):02d}") for _ in range(3)
    ]
    total = items[0][1]
    text = " ".join(f"{name} {price}" for name, price in items) + f" Tax 0.00 Total {total} thank you"
    start = text.rindex(total)
    return text, {"spans": [{"start": start, "end": start + len(total), "field": "total"}]}


def timed(call, repeats: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return {
        "wall_ms": round(1000 * statistics.median(walls), 3),
        "cpu_ms": round(1000 * statistics.median(cpus), 3),
    }


def measure(reviewed: int, unreviewed: int, repeats: int) -> dict:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from annotation import projects, teacher
    from annotation.models import Example, Review, content_hash
    from annotation.teacher.service import primed_task, primed_tasks_forget, reviews_key

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(f"placement-{os.urandom(3).hex()}", password=None)
    project = projects.project_create(
        name="Placement bench",
        slug=f"placement-{os.urandom(3).hex()}",
        user=user,
        task_type="extraction",
        labels=[("total", "The sum paid")],
    )
    rng = random.Random(26)
    rows = [receipt(rng) for _ in range(reviewed + unreviewed)]
    is_reviewed = [True] * reviewed + [False] * unreviewed
    rng.shuffle(is_reviewed)  # reviewed texts lie among the others, as in a project
    texts = [f"{text} #{n}" for n, (text, _) in enumerate(rows)]
    examples = Example.objects.bulk_create(
        [Example(project=project, text=t, content_hash=content_hash(t)) for t in texts], batch_size=1000
    )
    Review.objects.bulk_create(
        [
            Review(example=e, reviewer=user, kind="review", verdict="correct", value=answer)
            for e, (_, answer), chosen in zip(examples, rows, is_reviewed, strict=True)
            if chosen
        ],
        batch_size=1000,
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # as autovacuum would have after the bulk insert
    prompt = teacher.prompt_version_current(project)
    task = prompt.task
    primed_tasks_forget()
    primed_task(project, prompt)  # kept now: the warm figure below reads no answers

    def floor():
        teacher.teacher_config_for(project)
        teacher.prompt_version_current(project)

    def cold():
        project.primed(task)

    text, _ = receipt(random.Random(1))
    reply = json.dumps({"entities": [{"field": "total", "text": text.split()[1]}]})
    answer, _ = project.primed(task).parse_teacher(reply, text=text)
    return {
        "reviewed": reviewed,
        "unreviewed": unreviewed,
        "repeats": repeats,
        "primed_unkept": timed(cold, repeats),
        "reviews_key": timed(lambda: reviews_key(project), repeats),
        "primed_kept": timed(lambda: primed_task(project, prompt), repeats),
        "prompt_lookups_floor": timed(floor, repeats),
        "placed_after_total": answer["spans"][0]["start"] == text.rindex(text.split()[1]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviewed", type=int, default=2000)
    parser.add_argument("--unreviewed", type=int, default=0, help="examples without a verdict beside them")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (default: a SQLite copy)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="distill-placement-bench-"))
    os.environ["DISTILL_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
    os.environ.pop("REDIS_URL", None)
    os.environ.pop("DJANGO_DEBUG", None)  # DEBUG would keep every query
    created = False
    if args.database_url:
        os.environ["DATABASE_URL"] = args.database_url
        created = postgres_create(args.database_url)
    else:
        os.environ.pop("DATABASE_URL", None)
        sqlite_copy(data_dir / "distillapp.sqlite3")
    try:
        result = measure(args.reviewed, args.unreviewed, args.repeats)
    finally:
        if created:
            from django.db import connections

            connections.close_all()
            import psycopg

            admin, name = admin_url(args.database_url)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        shutil.rmtree(data_dir, ignore_errors=True)
    result["database"] = "postgresql" if args.database_url else "sqlite"
    result["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
