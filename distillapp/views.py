"""The site's pages outside any project: the error pages in the app's frame, and the sign-in
that both the login page and the "signed out" dialog (static/js/session.js) post to."""

from __future__ import annotations

import logging
import sqlite3
import sys
import traceback

from django.contrib.auth import views as auth_views
from django.db.utils import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.template import loader
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import defaults

from distillapp.embedded_redis import REDIS_DOWN

logger = logging.getLogger(__name__)

# training/api.py's paths: they answer JSON only, errors in OpenAI's shape.
API_PATH_PREFIXES = ("/api/", "/v1/")
RETRY_AFTER_SECONDS = 5
# SQLite calls a missing table an OperationalError too: a bug, not an outage.
_SQLITE_OUTAGES = ("database is locked", "unable to open database file", "disk i/o error")
# What the 503 to a POST to these pages says: not saved, saved, or stopped at the commit (the
# server may have committed it and died before saying so).
_SENT = {
    "annotation:review-act": (
        "your verdict on this card was not saved",
        "Your verdict on this card was saved",
        "your verdict on this card may or may not have been saved; sending it again is safe: "
        "a verdict is never stored twice",
    ),
    "login": ("you are not signed in", "You are signed in", "you may or may not be signed in"),
}
_SENT_DEFAULT = (
    "what you sent was not saved",
    "What you sent was saved",
    "what you sent may or may not have been saved",
)


def way_back(request: HttpRequest) -> str | None:
    """The page the user came from, if it is on this site and is not this very page."""
    referer = request.META.get("HTTP_REFERER", "")
    if not referer or referer == request.build_absolute_uri():
        return None
    if not url_has_allowed_host_and_scheme(
        referer, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return None
    return referer


def _project_home(request: HttpRequest) -> str | None:
    """A page under a project (its slug in the URL) leads back to the project's overview."""
    slug = (request.resolver_match.kwargs.get("slug") if request.resolver_match else None) or None
    if slug is None:
        return None
    try:
        return reverse("annotation:project-detail", args=[slug])
    except NoReverseMatch:
        return None


def _reason(exception: Exception | None) -> str:
    # Http404("No such project.") and PermissionDenied("Only the project's leads can do this.")
    # carry a sentence for the user; the resolver's own 404 carries a dict of patterns.
    message = exception.args[0] if exception is not None and exception.args else ""
    return message if isinstance(message, str) else ""


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    reason = _reason(exception) if isinstance(exception, Http404) else ""
    context = {
        "reason": reason,
        "path": request.path,
        "back": way_back(request),
        "in_a_project": request.path.startswith(("/p/", "/training/p/")),
    }
    return render(request, "404.html", context, status=404)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    context = {
        "reason": _reason(exception),
        "back": way_back(request),
        "project_home": _project_home(request),
    }
    return render(request, "403.html", context, status=403)


class SignInView(auth_views.LoginView):
    """Django's login page, which also answers the "signed out" dialog in JSON.

    The dialog first GETs a fresh CSRF token (the page's may belong to a cookie that has
    changed since), then posts the credentials; signing in rotates the token, so the answer
    carries the new one for the page's forms and htmx headers.
    """

    def _wants_json(self) -> bool:
        return "application/json" in self.request.headers.get("Accept", "")

    def get(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if self._wants_json():
            return JsonResponse({"csrf_token": get_token(request)})
        return super().get(request, *args, **kwargs)

    def form_valid(self, form) -> HttpResponse:
        response = super().form_valid(form)
        if self._wants_json():
            user = form.get_user()
            return JsonResponse({"username": user.get_username(), "csrf_token": get_token(self.request)})
        return response

    def form_invalid(self, form) -> HttpResponse:
        if self._wants_json():
            errors = " ".join(form.non_field_errors()) or "Enter your username and password."
            return JsonResponse({"error": errors}, status=400)
        return super().form_invalid(form)


def is_outage(exc: BaseException | None) -> bool:
    """The database or Redis did not answer (down, restarting, unreachable)."""
    if isinstance(exc, (InterfaceError, *REDIS_DOWN)):
        return True
    if not isinstance(exc, OperationalError):
        return False
    return not isinstance(exc.__cause__, sqlite3.Error) or any(m in str(exc).lower() for m in _SQLITE_OUTAGES)


def unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The 503 for a request that met an outage: what is down, and whether what it sent was saved
    (`request.has_saved_writes`, set by distillapp.middleware.OutageMiddleware). One log line."""
    database = isinstance(exc, OperationalError | InterfaceError)
    down = "The database is not answering" if database else "Redis (sessions and job queues) is not answering"
    match = request.resolver_match
    not_saved, saved, unsure = _SENT.get(match.view_name if match else "", _SENT_DEFAULT)
    if request.method in ("GET", "HEAD", "OPTIONS"):
        message = f"{down}. Nothing you did was lost: try again in a few seconds."
    elif getattr(request, "has_saved_writes", False):
        message = f"{down}. {saved}; only the page after it could not be shown. Reload in a few seconds."
    elif any(frame.f_code.co_name == "_commit" for frame, _ in traceback.walk_tb(exc.__traceback__)):
        message = f"{down}: it stopped as it was saving, so {unsure}. Reload in a few seconds to see."
    else:
        message = f"{down}, so {not_saved}. Nothing else was lost: send it again in a few seconds."
    first_line = (str(exc).strip().splitlines() or [""])[0]
    logger.warning("503 %s %s: %s: %s", request.method, request.path, type(exc).__name__, first_line)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if request.path.startswith(API_PATH_PREFIXES):
        body = {"error": {"message": message, "type": "server_error", "param": None, "code": "unavailable"}}
        response = JsonResponse(body, status=503, headers=headers)
    elif request.headers.get("HX-Request") == "true":
        response = JsonResponse({"error": "unavailable", "message": message}, status=503, headers=headers)
    else:
        # No request context: drawing the top bar would ask the session store, which may be what is down.
        html = loader.get_template("503.html").render({"reason": message, "is_get": request.method == "GET"})
        response = HttpResponse(html, status=503, headers=headers)
    response._has_been_logged = True  # the line above; Django would add one with a traceback
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: an outage met outside a view (the session saved after the response) is a 503 too."""
    exc = sys.exc_info()[1]
    if is_outage(exc):
        return unavailable(request, exc)
    return defaults.server_error(request)
