"""A request that needs a sign-in: htmx gets a 401 the page turns into a dialog, a form post
comes back to its page, and the dialog signs in with JSON."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from annotation.models import Example, Proposal

pytestmark = pytest.mark.django_db


@pytest.fixture
def card(project):
    example = Example.objects.create(project=project, text="I was charged twice")
    Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value="Billing", confidence=0.4)
    return example


def test_an_htmx_verdict_after_sign_out_is_a_401_not_the_login_page(project, card):
    response = Client().post(
        reverse("annotation:review-act", args=[project.slug]),
        {"example_id": card.pk, "verdict": "accept"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["login_url"] == reverse("login")
    assert "distill:signed-out" in response["HX-Trigger"]
    assert b"<html" not in response.content


def test_an_htmx_get_after_sign_out_is_a_401_too(project):
    response = Client().get(reverse("annotation:review", args=[project.slug]), HTTP_HX_REQUEST="true")
    assert response.status_code == 401


def test_a_plain_page_still_redirects_to_the_login_page(project):
    url = reverse("annotation:review", args=[project.slug])
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


def test_a_form_posted_after_sign_out_returns_to_its_page_not_to_a_post_only_url(project, card, reviewer):
    review = reverse("annotation:review", args=[project.slug])
    client = Client()
    response = client.post(
        reverse("annotation:review-act", args=[project.slug]),
        {"example_id": card.pk, "verdict": "accept"},
        HTTP_REFERER=f"http://testserver{review}",
    )
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={review}"
    signed_in = client.post(
        response["Location"], {"username": reviewer.username, "password": "pw-rui_reviewer", "next": review}
    )
    assert signed_in["Location"] == review
    assert client.get(signed_in["Location"]).status_code == 200  # the queue, not a 405


def test_a_form_posted_from_another_site_does_not_come_back_there(project, card):
    response = Client().post(
        reverse("annotation:review-act", args=[project.slug]),
        {"example_id": card.pk, "verdict": "accept"},
        HTTP_REFERER="https://evil.example/p/",
    )
    assert response["Location"] == reverse("login")


def test_the_dialog_signs_in_with_json_and_gets_the_new_csrf_token(reviewer):
    client = Client(enforce_csrf_checks=True)
    fresh = client.get(reverse("login"), HTTP_ACCEPT="application/json").json()["csrf_token"]
    wrong = client.post(
        reverse("login"),
        {"username": reviewer.username, "password": "nope", "csrfmiddlewaretoken": fresh},
        HTTP_ACCEPT="application/json",
    )
    assert wrong.status_code == 400
    assert "correct username and password" in wrong.json()["error"]
    right = client.post(
        reverse("login"),
        {"username": reviewer.username, "password": "pw-rui_reviewer", "csrfmiddlewaretoken": fresh},
        HTTP_ACCEPT="application/json",
    )
    assert right.status_code == 200
    body = right.json()
    assert body["username"] == reviewer.username
    # Signing in rotates the token: the answer carries one the new cookie accepts.
    assert body["csrf_token"] and body["csrf_token"] != fresh
    assert client.get(reverse("annotation:project-list")).status_code == 200
