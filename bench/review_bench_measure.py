"""Step 2 of bench/review_bench.py (a child process, once per queue order): review actions
through django.test.Client as the card's forms post them, timed, their SQL counted and timed,
then the view's parts one by one. bench/review_bench.py's docstring says what is measured.
"""

from __future__ import annotations

import atexit
import cProfile
import gc
import json
import os
import random
import re
import statistics
import time
from contextlib import contextmanager

import review_bench_spans
from import_bench import backend_cpu_seconds
from review_bench_setup import SEED, log, setup_django


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


CARD_ID = re.compile(r'data-example-id="(\d+)"')
# An extraction card's span editor: the text and the teacher's spans it starts from (json_script).
SPAN_EDITOR = re.compile(r'<script id="span-editor-data" type="application/json">(.*?)</script>', re.S)


def card_of(response) -> tuple[int | None, dict | None]:
    """The card's example id, and on an extraction card what its span editor starts from."""
    if response.status_code != 200:
        raise SystemExit(f"{response.request['PATH_INFO']}: HTTP {response.status_code}")
    html = response.content.decode()
    match, editor = CARD_ID.search(html), SPAN_EDITOR.search(html)
    return int(match.group(1)) if match else None, json.loads(editor.group(1)) if editor else None


class QueryTimer:
    """connection.execute_wrapper: the time of every SQL statement, by statement text."""

    def __init__(self) -> None:
        self.by_sql: dict[str, list[float]] = {}
        self.params: dict[str, object] = {}
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            self.by_sql.setdefault(sql, []).append(elapsed)
            self.params[sql] = params
            self.count += 1
            self.seconds += elapsed


def verdict_for(rng: random.Random, labels: list[str], editor: dict | None = None) -> tuple[str, dict]:
    """A verdict (60 % accept, 25 % correct, 15 % reject) and what the card's form posts for it.

    A classification card has label buttons: accept, or correct to a random label. An
    extraction card (``editor``: its span editor's data) posts verdict=correct with the span
    set as JSON in ``value`` (static/js/spans.js): unchanged for an accept (the server counts
    it as one), one span removed or a name added for a correction."""
    draw = rng.random()
    kind = "accept" if draw < 0.60 else "correct" if draw < 0.85 else "reject"
    if kind == "reject":
        return kind, {"verdict": "reject"}
    if editor is None and kind == "accept":
        return kind, {"verdict": "accept"}
    if editor is None:
        return kind, {"verdict": "correct", "label": rng.choice(labels)}
    value = editor["initial"] or {"spans": []}
    if kind == "correct":
        value = review_bench_spans.edited(editor["initial"], rng)
    return kind, {"verdict": "correct", "value": json.dumps(value)}


REFERENCE_PATH = "bench/reference"


def install_reference_view(project) -> None:
    """The floor the regression guard divides an action by: a request through the same client
    and middleware that does the kinds of work an action does (the session's user, indexed
    reads of the project's rows, one write and its commit, a small template) and none of the
    review code. /healthz (no query, 0.2 ms) was too small and too unlike an action to divide
    by (bench/README.md, "Regression guard")."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.http import HttpResponse
    from django.template import engines
    from django.urls import clear_url_caches, path
    from django.utils import timezone

    import distillapp.urls
    from annotation.models import Example, Project, Proposal

    template = engines["django"].from_string(
        "{% for e in rows %}<li data-id='{{ e.id }}'>{{ e.text|truncatechars:80 }} {{ e.review_state }}"
        "</li>{% endfor %}{% for p in proposals %}{{ p.agent }} {{ p.value }} "
        "{{ p.confidence|floatformat:2 }}{% endfor %}"
    )
    pks = list(Example.objects.filter(project=project).order_by("pk").values_list("pk", flat=True)[:1000])
    served = [0]

    def reference(request):
        user = request.user
        this = Project.objects.get(slug=project.slug)
        pk = pks[served[0] % len(pks)]
        served[0] += 7
        rows = list(Example.objects.filter(project=this, pk__gte=pk).order_by("pk")[:5])
        proposals = list(Proposal.objects.filter(example__in=[row.pk for row in rows]))
        with transaction.atomic():
            get_user_model().objects.filter(pk=user.pk).update(last_login=timezone.now())
        return HttpResponse(template.render({"rows": rows, "proposals": proposals}, request))

    distillapp.urls.urlpatterns.insert(0, path(REFERENCE_PATH, reference))
    clear_url_caches()


def measure(
    project_id: int,
    user_ids: list[int],
    actions: int,
    warmup: int,
    strategy: str,
    explain: bool,
    synchronous_commit: bool = True,
    breakdown_parts: bool = True,
    floor_per_action: int = 1,
) -> dict:
    setup_django()
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connection
    from django.shortcuts import render
    from django.test import Client, RequestFactory
    from django.urls import reverse
    from django_htmx.middleware import HtmxDetails

    from annotation import review
    from annotation.models import Membership, Project, Review
    from annotation.views import review as review_views
    from distillapp import embedded_redis

    # Every 100 verdicts a review round queues a refresh job: without REDIS_URL the app's
    # embedded Redis (in the bench's temp data directory) takes it, as under `run.sh`; no
    # worker runs it here.
    atexit.register(embedded_redis.stop, embedded_redis.ensure_started(), save=False)

    if not synchronous_commit:
        # Diagnostic only: how much of an action is waiting for WAL flushes at COMMIT.
        # django.test.Client keeps this thread's connection, so the setting holds.
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")
    project = Project.objects.get(pk=project_id)
    users = get_user_model().objects.in_bulk(user_ids)
    reviewers = [users[user_ids[1]], users[user_ids[2]]]
    labels = list(project.labels.values_list("name", flat=True))
    page_url = reverse("annotation:review", kwargs={"slug": project.slug})
    act_url = reverse("annotation:review-act", kwargs={"slug": project.slug})
    rng = random.Random(SEED)

    clients = []
    for user in reviewers:
        client = Client()
        client.force_login(user)
        clients.append(client)

    # The first card: the review page as a browser first loads it (a cold process:
    # URL resolver, template loading and compiling are in it).
    started = time.perf_counter()
    response = clients[0].get(page_url, {"strategy": strategy})
    first_card = time.perf_counter() - started
    cards = [card_of(response), card_of(clients[1].get(page_url, {"strategy": strategy}))]
    current = [card[0] for card in cards]
    editors = [card[1] for card in cards]  # None on classification cards
    if None in current or current[0] == current[1]:
        raise SystemExit(f"bad first cards: {current}")
    # The same page again, warm (the reviewer's claim is held, so the same card).
    reloads = []
    for _ in range(20):
        started = time.perf_counter()
        response = clients[0].get(page_url)
        reloads.append(time.perf_counter() - started)
        if card_of(response)[0] != current[0]:
            raise SystemExit("a reload changed the card")

    # The cheapest request through the same client and middleware (sessions, auth, messages;
    # no database query in the view): its wall time is reported as floor_ms.
    # CPU seconds (this process + its PostgreSQL backend) move much less with the machine's
    # load than wall time: the regression guard compares those.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def cpu_now() -> float:
        return time.process_time() + backend_cpu_seconds(backend)

    install_reference_view(project)

    def reference() -> None:
        response = clients[0].get("/" + REFERENCE_PATH)
        if response.status_code != 200:
            raise SystemExit(f"the reference request answered {response.status_code}")

    floor = []
    for i in range(210):
        if i == 10:
            healthz_cpu = time.process_time()
        started = time.perf_counter()
        response = clients[0].get("/healthz")
        floor.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"/healthz answered {response.status_code}")
    healthz_cpu = time.process_time() - healthz_cpu

    # The timed loop: full client.post() calls, alternating reviewers, each timed action
    # followed by `floor_per_action` reference requests (the guard's floor), so that both meet
    # the same machine: on these 2 cores a busy neighbour slows a CPU second by up to ~45 %,
    # and it comes and goes (bench/README.md, "Regression guard").
    timer = QueryTimer()
    times: list[float] = []
    queries_per_action: list[int] = []
    db_ms_per_action: list[float] = []
    verdicts: dict[str, int] = {}
    actions_cpu = floor_cpu = 0.0
    # REVIEW_BENCH_PROFILE=<file>: cProfile the timed actions (diagnostic; slows them).
    profiler = cProfile.Profile() if os.environ.get("REVIEW_BENCH_PROFILE") else None
    for i in range(warmup + actions):
        if i == warmup:
            # A full collection walks every object set-up made (~75 ms here): where one fell,
            # it moved a figure of 60 actions by 5 % and the /healthz floor by 2x. Frozen, the
            # timed loop's collections see only what the loop makes.
            gc.collect()
            gc.freeze()
        who = i % 2
        kind, posted = verdict_for(rng, labels, editors[who])
        data = {"example_id": current[who], **posted}
        count_before, seconds_before = timer.count, timer.seconds
        measured = i >= warmup
        if measured:
            with connection.execute_wrapper(timer):
                if profiler:
                    profiler.enable()
                cpu_started = cpu_now()
                started = time.perf_counter()
                response = clients[who].post(act_url, data, headers={"HX-Request": "true"})
                elapsed = time.perf_counter() - started
                actions_cpu += cpu_now() - cpu_started
                if profiler:
                    profiler.disable()
        else:
            response = clients[who].post(act_url, data, headers={"HX-Request": "true"})
        for _ in range(floor_per_action):
            cpu_started = cpu_now()
            reference()
            if measured:
                floor_cpu += cpu_now() - cpu_started
        next_id, editors[who] = card_of(response)
        if next_id is None:
            raise SystemExit(f"the queue ran out after {i} actions")
        if next_id == current[1 - who]:
            raise SystemExit(f"both reviewers got example {next_id}")
        current[who] = next_id
        if measured:
            times.append(elapsed)
            queries_per_action.append(timer.count - count_before)
            db_ms_per_action.append((timer.seconds - seconds_before) * 1000)
            verdicts[kind] = verdicts.get(kind, 0) + 1
    gc.unfreeze()
    if profiler:
        profiler.dump_stats(os.environ["REVIEW_BENCH_PROFILE"])
    log(f"{actions} actions: median {ms(statistics.median(times))} ms")

    # The parts, timed directly: the same calls review_act makes (--no-breakdown: skipped,
    # bench/quick.py reads only the CPU per action).
    factory = RequestFactory()
    parts: dict[str, list[float]] = {}

    @contextmanager
    def clock(name: str):
        started = time.perf_counter()
        yield
        parts.setdefault(name, []).append(time.perf_counter() - started)

    sessions = [SessionStore(session_key=client.session.session_key) for client in clients]
    breakdown_error = ""
    try:
        for i in range(warmup + actions if breakdown_parts else 0):
            who = i % 2
            user = reviewers[who]
            request = factory.post(act_url, headers={"HX-Request": "true"})
            request.user = user
            request.session = sessions[who]
            request.htmx = HtmxDetails(request)
            _, data = verdict_for(rng, labels, editors[who])
            value = json.loads(data["value"]) if "value" in data else None
            with clock("project_and_role"):
                project_, role = review_views.project_for_member(request, project.slug)
            filters = review_views._queue_filter(request, project_)
            with clock("load_example"):
                example = review.queue_card(project_, current[who])
            with clock("review_record"):  # with the card's counts, in the verdict's transaction
                review.review_record(
                    example=example,
                    user=user,
                    verdict=data["verdict"],
                    label=data.get("label"),
                    value=value,
                    filters=filters,
                )
            with clock("review_next"):
                nxt = review.review_next(project=project_, user=user, filters=filters, after_verdict=True)
            if nxt is None:
                raise SystemExit("the queue ran out in the breakdown loop")
            with clock("card_context"):
                context = review_views._card_context(request, project_, role, nxt, filters)
            with clock("render_card"):
                render(request, "annotation/review.html#card", context)
            # The card's counts (one query, inside review_record above), again on their own
            # (not in the sum below).
            with clock("queue_counts"):
                project_.forget("queue_counts")
                review.queue_counts(project_, user, filters)
            current[who] = nxt.pk
            if editors[who] is not None:
                editors[who] = context["editor"]
    except (TypeError, AttributeError, KeyError) as exc:
        # The parts are the view's own helpers: a change of their signatures stops this loop,
        # not the timed one (whose figures are reported as they are).
        breakdown_error = f"{type(exc).__name__}: {exc}"
        log(f"breakdown stopped: {breakdown_error}")
        parts = {}
    parts = {k: v[warmup:] for k, v in parts.items()}
    breakdown = {f"{k}_ms": ms(statistics.median(v)) for k, v in parts.items()}
    measured_parts = (
        "project_and_role",
        "load_example",
        "review_record",
        "review_next",
        "card_context",
        "render_card",
    )
    if parts:
        breakdown["sum_of_parts_ms"] = round(sum(breakdown[f"{k}_ms"] for k in measured_parts), 2)
        breakdown["http_and_middleware_ms"] = round(
            ms(statistics.median(times)) - breakdown["sum_of_parts_ms"], 2
        )
    if breakdown_error:
        breakdown["error"] = breakdown_error
    breakdown["queries_per_action"] = statistics.median(queries_per_action)
    breakdown["queries_max"] = max(queries_per_action)
    breakdown["db_ms_per_action"] = round(statistics.median(db_ms_per_action), 2)
    breakdown["python_ms_per_action"] = round(ms(statistics.median(times)) - breakdown["db_ms_per_action"], 2)

    measured_actions = len(times)
    top = sorted(timer.by_sql.items(), key=lambda item: -sum(item[1]))[:8]
    top_queries = [
        {
            "sql": " ".join(sql.split())[:220],
            "calls_per_action": round(len(durations) / measured_actions, 2),
            "median_ms": ms(statistics.median(durations)),
            "ms_per_action": round(sum(durations) * 1000 / measured_actions, 2),
        }
        for sql, durations in top
    ]
    for q in top_queries:
        log(
            f"{q['ms_per_action']:7.2f} ms/action  {q['calls_per_action']:.2f}x  {q['median_ms']:6.2f} ms  {q['sql'][:150]}"
        )

    if explain:
        slow = [sql for sql, _ in top if sql.lstrip().upper().startswith("SELECT")][:4]
        with connection.cursor() as cursor:
            for sql in slow:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, timer.params[sql])
                plan = "\n".join(row[0] for row in cursor.fetchall())
                log(f"EXPLAIN ANALYZE {' '.join(sql.split())[:300]}\n{plan}\n")

    reviewed = Review.objects.filter(example__project=project).count()
    return {
        "times": [round(t * 1000, 3) for t in times],
        "first_card_ms": ms(first_card),
        "first_card_warm_ms": ms(statistics.median(reloads)),
        "floor_ms": ms(statistics.median(floor[10:])),
        # The reference request's CPU (this process + backend), interleaved with the actions.
        "floor_cpu_ms": round(floor_cpu * 1000 / max(1, actions * floor_per_action), 4),
        "healthz_cpu_ms": round(healthz_cpu * 1000 / 200, 4),
        "cpu_ms_per_action": round(actions_cpu * 1000 / actions, 3),
        "breakdown": breakdown,
        "top_queries": top_queries,
        "verdicts": verdicts,
        "reviews_written": reviewed,
        "role_check": project.role_of(reviewers[0]) == Membership.Role.REVIEWER,
        "task": project.task_type,
        # The order the queue served (not counting audit draws): "auto" names what it chose.
        "served_order": review.resolved_strategy(project, strategy),
    }
