"""Every form and HTMX endpoint of a project, fuzzed with a signed-in reviewer and lead:
no input they can send is a server error; bad input answers 4xx with a message (issue #23)."""

from __future__ import annotations

import json

import pytest
from django.forms import BaseForm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation import forms
from tests.test_permission_matrix import ACCESS, url_of, world  # noqa: F401 (the fixture)
from training import forms as training_forms

pytestmark = pytest.mark.django_db

# Every project page of both apps (the training pages read the same reviewer-reachable input).
ENDPOINTS = sorted(ACCESS)

# Every field a form or view of the app reads, so the fuzzer fills real fields, not only noise.
FIELDS = sorted(
    {
        name
        for module in (forms, training_forms)
        for form in vars(module).values()
        if isinstance(form, type) and issubclass(form, BaseForm)
        for name in getattr(form, "base_fields", {})
    }
    | {"example_id", "verdict", "value", "label", "threshold", "confirm", "strategy", "min", "max", "q"}
    | {"source", "scope", "format", "gold", "size", "selection", "provider", "username", "role"}
    | {"cell", "predicted", "true", "run", "runtime"}
)


def nested(depth: int, kind: str = "[]") -> str:
    return kind[0] * depth + kind[1] * depth


NASTY = st.sampled_from(
    [
        "",
        "abc",
        "²",
        "١٢",
        "-1",
        "0",
        "9" * 40,
        "1e309",
        "nan",
        "inf",
        "-inf",
        "yes",
        "on",
        "accept",
        "correct",
        "reject",
        "skip",
        "lead",
        "\x00",
        "' OR 1=1 --",
        "<script>x</script>",
        nested(100_000),
        '{"spans": ' + nested(50_000) + "}",
        nested(900),
        json.dumps({"spans": [{"start": -1, "end": 10**30, "field": "x"}]}),
        json.dumps({"spans": [{"start": "a", "end": None, "field": []}]}),
        json.dumps({"spans": "x"}),
        "x" * 20_000,
    ]
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
).map(json.dumps)
VALUES = NASTY | JSONISH | st.text(max_size=30) | st.integers(-(10**20), 10**20).map(str)
# Each field present or not, so most requests fill several of the fields a view reads.
DATA = st.fixed_dictionaries({}, optional={name: VALUES | st.lists(VALUES, max_size=3) for name in FIELDS})


@pytest.mark.parametrize("name", ENDPOINTS)
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,  # nothing written into the checkout
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=DATA, who=st.sampled_from(["reviewer", "lead"]), htmx=st.booleans())
def test_no_input_is_a_server_error(world, name, data, who, htmx):  # noqa: F811 (the fixture)
    project, clients, ids = world
    url = url_of(name, project, ids)
    client = clients[who]
    headers = {"HX-Request": "true"} if htmx else {}
    for method in ("get", "post"):
        response = getattr(client, method)(url, data, headers=headers)
        assert response.status_code < 500, (name, method, data)
        if response.status_code in (400, 409):
            assert response.content.strip(), (name, method, data)  # it says why


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("annotation:review-act", {"example_id": "abc", "verdict": "accept"}, 404),
        ("annotation:review-act", {"example_id": "²", "verdict": "accept"}, 404),
        ("annotation:review-similar", {"example_id": "abc"}, 404),
        ("annotation:review-similar", {"example_id": "1e3"}, 404),
        ("annotation:review-skip", {"example_id": "²"}, 200),
        ("annotation:gold-label", {"example_id": "٣"}, 404),
    ],
)
def test_the_bad_inputs_of_the_issue_answer_4xx(world, name, data, status):  # noqa: F811 (the fixture)
    project, clients, ids = world
    response = clients["reviewer"].post(url_of(name, project, ids), data, headers={"HX-Request": "true"})
    assert response.status_code == status


def test_an_answer_nested_past_the_parsers_limit_is_a_400_with_its_reason(world):  # noqa: F811
    from annotation import review
    from annotation.models import Example, Review, ReviewClaim

    project, clients, ids = world
    example = Example.objects.create(project=project, text="charged twice")
    reviewer = project.memberships.get(role="reviewer").user
    assert review.review_next(project=project, user=reviewer, filters=review.QueueFilter()) == example
    response = clients["reviewer"].post(
        url_of("annotation:review-act", project, ids),
        {"example_id": example.pk, "verdict": "correct", "value": nested(100_000)},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 400 and "not valid JSON" in response.content.decode()
    assert not Review.objects.exists() and ReviewClaim.objects.filter(example=example, user=reviewer).exists()


def test_a_nul_character_in_the_queue_filter_is_no_server_error(world):  # noqa: F811 (the fixture)
    # PostgreSQL text holds no NUL: a search with one was a DataError there (found by the fuzzer).
    project, clients, ids = world
    url = url_of("annotation:review", project, ids)
    response = clients["reviewer"].get(url, {"strategy": "confidence", "q": "a\x00b", "label": "\x00"})
    assert response.status_code == 200
