"""Helpers every view module uses: scoping to the user's projects, messages."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from annotation import projects
from annotation.models import (
    Membership,
    Project,
)
from distillapp.sql import Prepared

HTMX_STOP_POLLING = 286

# Actions that each start expensive work (a job, an embedding search, a teacher run), per
# account and minute: enough for anyone working by hand, not for a script replaying them.
RATE_LIMITS = {
    "similar": (30, "“More like this” searches"),
    "quality": (6, "label-error scoring runs"),
    "import": (20, "imports"),
    "teacher": (20, "teacher runs"),
    # Launching, evaluating or quantizing a model (and resuming one): each queues minutes of
    # the training worker's time.
    "training": (10, "training launches, evaluations and int8 exports"),
}


RATE_LIMIT_KEY = "ratelimit"  # the cache keys' prefix (tests give each test its own)
_rate_clock = time.time  # tests hold it still, so a count never straddles two minutes


def rate_limit_refusal(request: HttpRequest, action: str) -> HttpResponse | None:
    """Count this POST against the user's RATE_LIMITS[action]; past it, the 429 to answer.

    Counted in Django's cache, one key per user, action and minute (a fixed window); the
    first request of a window adds the key, the rest increment it, so concurrent requests
    of one user are counted once each."""
    if request.method != "POST" or not request.user.is_authenticated:
        return None
    per_minute, what = RATE_LIMITS[action]
    now = _rate_clock()
    window = int(now // 60)
    key = f"{RATE_LIMIT_KEY}:{action}:{request.user.pk}:{window}"
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        count = 1
    if count <= per_minute:
        return None
    wait = 60 - int(now) % 60
    return HttpResponse(
        f"Too many {what}: at most {per_minute} a minute. Try again in {wait} seconds.",
        status=429,
        headers={"Retry-After": str(wait)},
        content_type="text/plain; charset=utf-8",
    )


def rate_limited(action: str) -> Callable:
    """Refuse a user's POST to this view past RATE_LIMITS[action] in a minute (429)."""
    RATE_LIMITS[action]  # an unknown action fails at import, not on the first request

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def limited(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            return rate_limit_refusal(request, action) or view(request, *args, **kwargs)

        return limited

    return decorate


# Every project page's first query, compiled once (bench/README.md, review queue).
_PROJECT_WITH_ROLE = Prepared(
    lambda slug, user: Project.objects.with_role_of(user).with_labels().filter(slug=slug), slug=str, user=int
)


def project_for_member(request: HttpRequest, slug: str) -> tuple[Project, str]:
    """The project and the user's role; 404 for anyone outside it."""
    user = request.user
    project = (
        next(iter(_PROJECT_WITH_ROLE.objects(slug=slug, user=user.pk)), None)
        if user.is_authenticated
        else None
    )
    role = project.role_of(user) if project else None
    if role is None:
        raise Http404("No such project.")
    return project, role


def project_for_lead(request: HttpRequest, slug: str) -> Project:
    project, role = project_for_member(request, slug)
    if role != Membership.Role.LEAD:
        raise PermissionDenied("Only the project's leads can do this.")
    return project


def render_polled(request: HttpRequest, template: str, context: dict, *, ended: bool) -> HttpResponse:
    """A fragment htmx polls while a job runs; once it has `ended`, polling stops."""
    response = render(request, template, context)
    if ended:
        response.status_code = HTMX_STOP_POLLING
    return response


def workers_online() -> int | None:
    try:
        import django_rq
        from rq import Worker

        return Worker.count(connection=django_rq.get_connection("default"))
    except Exception:
        return None


def act(request: HttpRequest, action: Callable[[], str], form: forms.Form | None = None) -> None:
    """Run a change and tell the user how it went, as a message on the next page."""
    if form is not None and not form.is_valid():
        messages.error(request, form_errors(form))
        return
    try:
        messages.success(request, action())
    except projects.ServiceError as exc:
        messages.error(request, str(exc))


def form_errors(form) -> str:
    parts = []
    for field, errors in form.errors.items():
        label = form.fields[field].label or field.replace("_", " ") if field in form.fields else ""
        parts.append(f"{label.capitalize() + ': ' if label else ''}{' '.join(errors)}")
    return " ".join(parts)
