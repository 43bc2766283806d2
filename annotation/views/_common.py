"""Helpers every view module uses: scoping to the user's projects, messages."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from annotation import projects
from annotation.models import (
    Membership,
    Project,
)

HTMX_STOP_POLLING = 286


def _project_for_member(request: HttpRequest, slug: str) -> tuple[Project, str]:
    """The project and the user's role; 404 for anyone outside it."""
    project = Project.objects.filter(slug=slug).first()
    role = project.role_of(request.user) if project else None
    if role is None:
        raise Http404("No such project.")
    return project, role


def _project_for_lead(request: HttpRequest, slug: str) -> Project:
    project, role = _project_for_member(request, slug)
    if role != Membership.Role.LEAD:
        raise PermissionDenied("Only the project's leads can do this.")
    return project


def _workers_online() -> int | None:
    try:
        import django_rq
        from rq import Worker

        return Worker.count(connection=django_rq.get_connection("default"))
    except Exception:
        return None


def _act(request: HttpRequest, action: Callable[[], str], form: forms.Form | None = None) -> None:
    """Run a change and tell the user how it went, as a message on the next page."""
    if form is not None and not form.is_valid():
        messages.error(request, _form_errors(form))
        return
    try:
        messages.success(request, action())
    except projects.ServiceError as exc:
        messages.error(request, str(exc))


def _form_errors(form) -> str:
    parts = []
    for field, errors in form.errors.items():
        label = form.fields[field].label or field.replace("_", " ") if field in form.fields else ""
        parts.append(f"{label.capitalize() + ': ' if label else ''}{' '.join(errors)}")
    return " ".join(parts)
