"""403, 404 and 500 are pages of the app: its top bar, the reason, and a way back."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.views import defaults

pytestmark = pytest.mark.django_db


def assert_in_the_app_frame(html: str) -> None:
    assert 'class="topbar"' in html and "css/app.css" in html
    assert "data-way-back" in html


def test_a_project_you_are_not_in_is_a_page_saying_so(project, outsider_client):
    response = outsider_client.get(reverse("annotation:project-detail", args=[project.slug]))
    assert response.status_code == 404
    html = response.content.decode()
    assert_in_the_app_frame(html)
    assert "No such project." in html
    # Signed in: the top bar still offers the projects and the sign-out.
    assert "<span data-signed-in-as>otto_outsider</span>" in html
    assert reverse("annotation:project-list") in html


def test_an_unknown_address_names_the_path(outsider_client):
    response = outsider_client.get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert_in_the_app_frame(html)
    assert "/no/such/page/" in html
    assert "Resolver404" not in html


def test_the_way_back_is_the_page_you_came_from(project, outsider_client):
    response = outsider_client.get(
        reverse("annotation:project-detail", args=[project.slug]),
        HTTP_REFERER="http://testserver/some/page/",
    )
    assert 'href="http://testserver/some/page/"' in response.content.decode()
    # Never a link off the site.
    response = outsider_client.get(
        reverse("annotation:project-detail", args=[project.slug]), HTTP_REFERER="https://evil.example/"
    )
    assert "evil.example" not in response.content.decode()


def test_the_api_still_answers_json_for_an_unknown_path(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_reviewer_on_a_lead_page_reads_why(project, reviewer_client):
    response = reviewer_client.get(reverse("annotation:project-settings", args=[project.slug]))
    assert response.status_code == 403
    html = response.content.decode()
    assert_in_the_app_frame(html)
    assert "Only the project&#x27;s leads can do this." in html
    assert reverse("annotation:project-detail", args=[project.slug]) in html  # back to the project


def test_a_reviewer_posting_a_promotion_reads_why(project, reviewer_client):
    response = reviewer_client.post(reverse("training:promote", args=[project.slug]))
    assert response.status_code == 403
    assert "Only the project&#x27;s leads can do this." in response.content.decode()


def test_the_server_error_page_is_in_the_frame_without_a_request_context():
    # Django renders 500.html with an empty context (no request, no user): it must still render.
    response = defaults.server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    html = response.content.decode()
    assert_in_the_app_frame(html)
    assert "Something went wrong" in html
