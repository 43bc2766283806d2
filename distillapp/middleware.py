"""What a request gets when it needs a sign-in, or meets a database or Redis that does not answer."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import resolve_url

from distillapp.views import is_outage, unavailable, way_back

SIGNED_OUT_EVENT = "distill:signed-out"


class SignInRequiredMiddleware:
    """Turns `login_required`'s redirect into something the asking page can handle.

    - An htmx request gets 401 and JSON: the browser would follow a redirect silently and
      htmx would swap the whole login page into the card. static/js/session.js opens a
      sign-in dialog instead and sends the request again once signed in.
    - A plain form POST is sent to sign in and then back to the page the form was on: the
      redirect after sign-in is a GET, which a POST-only URL answers with 405.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not self._is_sign_in_redirect(response):
            return response
        login_url = resolve_url(settings.LOGIN_URL)
        if request.headers.get("HX-Request") == "true":
            return JsonResponse(
                {
                    "signed_out": True,
                    "login_url": login_url,
                    "message": "You are signed out. Sign in again to go on where you were.",
                },
                status=401,
                headers={"HX-Trigger": SIGNED_OUT_EVENT},
            )
        if request.method == "POST":
            back = way_back(request)
            page = urlsplit(back)._replace(scheme="", netloc="").geturl() if back else ""
            response["Location"] = f"{login_url}?{urlencode({'next': page}, safe='/')}" if page else login_url
        return response

    @staticmethod
    def _is_sign_in_redirect(response: HttpResponse) -> bool:
        # login_required's redirect names the page to come back to; the one after sign-out does not.
        if response.status_code != 302:
            return False
        location = urlsplit(response.get("Location", ""))
        return location.path == resolve_url(settings.LOGIN_URL) and "next=" in location.query


class OutageMiddleware:
    """A database or Redis that does not answer is a 503 saying so (`views.unavailable`): a page,
    or JSON for the API and htmx, with Retry-After and one log line, never a traceback.

    Raised in a view here; raised outside one (the session saved after the view) through
    handler500, `views.server_error`. For a POST the answer says whether what it sent was saved:
    whether a write of this request was committed before the failure.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return self.get_response(request)
        request.has_saved_writes = False
        with connection.execute_wrapper(_SavedWrites(request)):
            return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return unavailable(request, exception) if is_outage(exception) else None


class _SavedWrites:
    """Sets `request.has_saved_writes` once a write statement of the request is committed."""

    def __init__(self, request: HttpRequest):
        self.request = request

    def _saved(self) -> None:
        self.request.has_saved_writes = True

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not self.request.has_saved_writes and sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            if context["connection"].in_atomic_block:
                transaction.on_commit(self._saved, using=context["connection"].alias)
            else:
                self._saved()
        return result
