"""A lead adds someone new from the Members page, without the Django admin (issue #24): a
one-time, expiring invitation link, stored as a hash, that creates the account with the
password its holder chooses and makes them a member."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotation import projects
from annotation.models import Invitation, Membership

pytestmark = pytest.mark.django_db

PASSWORD = "a-fresh-long-passphrase"


def invite(client, project, username: str = "nina", role: str = "reviewer"):
    return client.post(
        reverse("annotation:invitation-create", args=[project.slug]),
        {"invite-username": username, "invite-role": role},
    )


def link_in(response) -> str:
    found = re.search(r'value="(http://testserver/invite/[^"]+/)"', response.content.decode())
    assert found, "the page shows the link"
    return found.group(1).removeprefix("http://testserver")


def accept(path: str, password: str = PASSWORD, client: Client | None = None):
    return (client or Client()).post(path, {"new_password1": password, "new_password2": password})


def test_a_lead_invites_and_the_link_creates_the_member(project, lead_client):
    response = invite(lead_client, project, role="lead")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    path = link_in(response)
    token = path.removeprefix("/invite/").rstrip("/")
    invitation = Invitation.objects.get()
    # Only the hash is kept: the database never holds a usable link.
    assert (
        invitation.token_hash == projects.invitation_token_hash(token) and token not in invitation.token_hash
    )
    assert invitation.expires_at > timezone.now() + dt.timedelta(hours=71)
    page = lead_client.get(reverse("annotation:project-members", args=[project.slug])).content.decode()
    assert "Invitations not used yet" in page and "nina" in page and token not in page

    newcomer = Client()
    form = newcomer.get(path)
    assert form.status_code == 200 and "Join Tickets" in form.content.decode()
    done = accept(path, client=newcomer)
    assert done.status_code == 302 and done.url == reverse("annotation:project-detail", args=[project.slug])
    user = get_user_model().objects.get(username="nina")
    assert user.check_password(PASSWORD)
    assert project.memberships.get(user=user).role == Membership.Role.LEAD
    assert newcomer.get(done.url).status_code == 200  # signed in as nina
    signed_in = Client().post(reverse("login"), {"username": "nina", "password": PASSWORD})
    assert signed_in.status_code == 302  # and next time through the sign-in page
    invitation.refresh_from_db()
    assert invitation.used_at and invitation.user == user


def test_the_link_works_once(project, lead_client):
    path = link_in(invite(lead_client, project))
    assert accept(path).status_code == 302
    again = accept(path, password="another-long-passphrase")
    assert again.status_code == 410 and "does not work" in again.content.decode()
    assert Client().get(path).status_code == 410
    assert get_user_model().objects.get(username="nina").check_password(PASSWORD)


def test_two_tabs_sending_the_link_at_once_make_one_account(project, lead_client):
    # The service behind the page: the second caller finds the link used, never a second account.
    _, token = projects.invitation_create(project=project, username="nina", role="reviewer", user=None)
    projects.invitation_accept(token=token, password=PASSWORD)
    with pytest.raises(projects.ServiceError, match="used already"):
        projects.invitation_accept(token=token, password=PASSWORD)
    assert get_user_model().objects.filter(username="nina").count() == 1


def test_an_expired_link_is_refused(project, lead_client):
    path = link_in(invite(lead_client, project))
    Invitation.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert Client().get(path).status_code == 410
    refused = accept(path)
    assert refused.status_code == 410 and "has expired" in refused.content.decode()
    assert not get_user_model().objects.filter(username="nina").exists()
    page = lead_client.get(reverse("annotation:project-members", args=[project.slug])).content.decode()
    assert "expired" in page


def test_an_unknown_link_is_404_and_a_weak_password_is_refused(project, lead_client):
    assert Client().get("/invite/not-a-token/").status_code == 404
    path = link_in(invite(lead_client, project))
    weak = accept(path, password="nina")
    assert weak.status_code == 200 and "too short" in weak.content.decode()
    assert not get_user_model().objects.filter(username="nina").exists()
    assert Invitation.objects.get().used_at is None


def test_withdrawn_link_stops_working(project, lead_client):
    path = link_in(invite(lead_client, project))
    invitation = Invitation.objects.get()
    response = lead_client.post(reverse("annotation:invitation-withdraw", args=[project.slug, invitation.pk]))
    assert response.status_code == 302
    assert not Invitation.objects.exists()
    assert Client().get(path).status_code == 404


def test_an_existing_user_name_is_not_invited(project, lead_client, reviewer):
    response = invite(lead_client, project, username=reviewer.username)
    assert response.status_code == 302
    assert not Invitation.objects.exists()
    page = lead_client.get(response.url).content.decode()
    assert "There is already a user called" in page


def test_inviting_again_replaces_the_pending_link(project, lead_client):
    first = link_in(invite(lead_client, project))
    second = link_in(invite(lead_client, project))
    assert first != second and Invitation.objects.count() == 1
    assert Client().get(first).status_code == 404 and Client().get(second).status_code == 200


# --- who may invite: works (above), needs login, needs POST, outsider 404, reviewer 403 ----------


def test_inviting_needs_a_signed_in_lead(project, reviewer_client, outsider_client):
    url = reverse("annotation:invitation-create", args=[project.slug])
    data = {"invite-username": "nina", "invite-role": "lead"}
    anonymous = Client().post(url, data)
    assert anonymous.status_code == 302 and anonymous.url.startswith(reverse("login"))
    assert reviewer_client.post(url, data).status_code == 403
    assert outsider_client.post(url, data).status_code == 404
    assert not Invitation.objects.exists()


def test_inviting_and_withdrawing_need_post(project, lead_client, lead):
    assert lead_client.get(reverse("annotation:invitation-create", args=[project.slug])).status_code == 405
    invitation, _ = projects.invitation_create(project=project, username="nina", role="reviewer", user=lead)
    url = reverse("annotation:invitation-withdraw", args=[project.slug, invitation.pk])
    assert lead_client.get(url).status_code == 405
    assert Invitation.objects.exists()


def test_withdrawing_needs_the_projects_lead(project, lead, reviewer_client, outsider_client):
    invitation, _ = projects.invitation_create(project=project, username="nina", role="reviewer", user=lead)
    url = reverse("annotation:invitation-withdraw", args=[project.slug, invitation.pk])
    assert Client().post(url).status_code == 302
    assert reviewer_client.post(url).status_code == 403
    assert outsider_client.post(url).status_code == 404
    assert Invitation.objects.exists()


def test_a_reviewer_sees_no_invitations_nor_the_form(project, lead, reviewer_client):
    projects.invitation_create(project=project, username="nina", role="reviewer", user=lead)
    page = reviewer_client.get(reverse("annotation:project-members", args=[project.slug])).content.decode()
    assert "Invite someone new" not in page and "nina" not in page
