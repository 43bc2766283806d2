"""What a request that needs a sign-in gets, when `login_required` would redirect it."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import resolve_url

from distillapp.views import way_back

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
