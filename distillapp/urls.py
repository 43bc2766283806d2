from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import include, path

from distillapp import views
from training import api


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # JSON under /api/ and /v1/, the site's page elsewhere.
    if request.path.startswith(api.API_PATH_PREFIXES):
        return api.not_found(request, exception)
    return views.page_not_found(request, exception)


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    # Browsers ask for /favicon.ico whatever the page links to.
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [
    # The serving paths first: resolving walks the list, and the app's pages are ~40 patterns
    # (0.3 ms a prediction request when they came first; bench/README.md, "Serving").
    path("api/v1/projects/<slug:slug>/predict", api.predict, name="api-predict"),
    path("v1/chat/completions", api.chat_completions, name="api-chat-completions"),
    path("v1/models", api.models, name="api-models"),
    path("api/openapi.json", api.openapi_json, name="api-openapi"),
    path("api/docs", api.api_docs, name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("", include("annotation.urls")),
    path("training/", include("training.urls")),
    path("login/", views.SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("favicon.ico", favicon, name="favicon"),
]

handler403 = "distillapp.views.permission_denied"
handler500 = "distillapp.views.server_error"
handler404 = not_found
