"""The OpenAPI document of both token APIs: it describes every API route, and the APIs keep to it.

schemathesis generates requests from the document (valid ones and broken ones) and sends
them in-process to the WSGI application with a valid token: no answer may be a 5xx, and
each must be JSON with a status and shape the document lists.
"""

from __future__ import annotations

import json
import re

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests.training.conftest import make_run
from training import api, openapi, serving

pytestmark = pytest.mark.django_db

# The views behind the token APIs (the document and its page describe them, not themselves).
API_VIEWS = {"predict", "chat_completions", "models"}


def _api_routes(patterns=None, prefix: str = "") -> dict[str, str]:
    """'/path/{param}' -> view name, for every URL pattern that routes to a token API view."""
    found = {}
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            found |= _api_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and entry.callback.__module__ == api.__name__:
            if entry.callback.__name__ in API_VIEWS:
                found["/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)] = entry.callback.__name__
    return found


def test_every_api_route_is_in_the_document():
    routes = _api_routes()
    assert set(routes.values()) == API_VIEWS
    assert set(routes) == set(openapi.PATHS)


def test_the_document_is_served_and_its_page_lists_every_operation(client):
    document = client.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.") and document["paths"].keys() == openapi.PATHS.keys()
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    for path, methods in openapi.PATHS.items():
        for operation in methods.values():
            assert f'data-operation="{operation["operationId"]}"' in html and path in html
    assert "https://" not in html.split("<main", 1)[1]  # nothing loaded from elsewhere


# --- fuzzing --------------------------------------------------------------------------------------------


@pytest.fixture
def served(project, lead, tiny_classifier):
    """A live model (half the texts unsure), a token, and the test's connection kept across requests.

    The WSGI handler closes the database connection after each request, as a server must;
    here that connection holds the test's transaction, so that is switched off (as Django's
    own test client does).
    """
    version = serving.version_promote(run=make_run(project, tiny_classifier), user=lead, threshold=0.34)
    _, raw = serving.token_create(project=project, user=lead, name="fuzz")
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield project, raw, version
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# Loaded from the route that serves it, through the same WSGI application the requests go to.
schema = schemathesis.openapi.from_wsgi(
    "/api/openapi.json",
    get_wsgi_application(),
    config=schemathesis.Config.from_dict(
        {
            "checks": {
                # A text over a limit is refused with 413, as the document says.
                "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 413, 415]},
                # Some rules have no JSON Schema words here ("a user message with some text", "a
                # text that is not blank"): such requests fit the document and get its 400.
                "positive_data_acceptance": {"enabled": False},
            }
        }
    ),
)


@schema.parametrize()
@hypothesis_settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same requests on every run: CI failures reproduce
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_apis_keep_to_their_document(case, served):
    project, raw, _ = served
    # Given as the caller's own credentials: schemathesis then also checks that requests
    # without them, or with a made-up token, are refused.
    token = {"Authorization": f"Bearer {raw}"}
    if "slug" in (case.path_parameters or {}):
        case.path_parameters["slug"] = project.slug  # other slugs only reach the 404 (tested elsewhere)
    response = case.call(headers=token)
    assert response.status_code < 500, response.text[:500]
    assert response.headers["content-type"][0].startswith("application/json")
    json.loads(response.content)
    case.validate_response(response, headers=token)


def test_the_fuzzer_reaches_the_student(served):
    """A sanity check of the set-up above: a plain valid request through the same path succeeds."""
    project, raw, _ = served
    response = Client().post(
        f"/api/v1/projects/{project.slug}/predict",
        data={"texts": ["refund please"]},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 200


@pytest.fixture
def served_summaries(lead, tmp_path):
    """A live extractive summariser on a summarisation project (the demo's written calls)."""
    from pathlib import Path

    from annotation import projects
    from distillapp import ml
    from tasks.summarization import student

    calls = [
        json.loads(line)
        for line in (Path(__file__).resolve().parents[2] / "annotation/demo/calls.jsonl")
        .read_text()
        .splitlines()
    ][:20]
    project = projects.project_create(name="Calls", slug="calls", user=lead, task_type="summarization")
    student.train(
        texts=[c["text"] for c in calls],
        answers=[{"summary": c["summary"]} for c in calls],
        names=[],
        base_model="unused",
        output_dir=tmp_path / "model",
        hyperparameters=ml.Hyperparameters(),
        target=project.task.target,
    )
    version = serving.version_promote(run=make_run(project, tmp_path), user=lead, threshold=0.5)
    _, raw = serving.token_create(project=project, user=lead, name="fuzz")
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield project, raw, version
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@hypothesis_settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_a_summarisation_project_keeps_to_the_document_too(case, served_summaries):
    """The same fuzzing against a summarisation project: its answers (``summary``) fit the
    document's SummarisationPrediction, one of Prediction's task-type schemas."""
    project, raw, _ = served_summaries
    token = {"Authorization": f"Bearer {raw}"}
    if "slug" in (case.path_parameters or {}):
        case.path_parameters["slug"] = project.slug
    response = case.call(headers=token)
    assert response.status_code < 500, response.text[:500]
    json.loads(response.content)
    case.validate_response(response, headers=token)
