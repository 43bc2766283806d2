"""The site's pages outside any project: the error pages in the app's frame, and the sign-in
that both the login page and the "signed out" dialog (static/js/session.js) post to."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme


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
