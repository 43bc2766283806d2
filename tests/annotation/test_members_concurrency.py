"""A project always keeps a lead, also when two leads demote each other at the same moment (issue #23)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.urls import reverse

from annotation.models import Membership
from tests.conftest import client_for, make_project, make_user


@pytest.fixture
def two_leads(django_user_model):
    ana = make_user(django_user_model, "ana_lead")
    bo = make_user(django_user_model, "bo_lead")
    project = make_project(lead=ana)
    Membership.objects.create(project=project, user=bo, role=Membership.Role.LEAD)
    return project, ana, bo


@pytest.mark.django_db(transaction=True)
def test_two_leads_demoting_each_other_at_once_leave_one_lead(two_leads, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs one writer at a time: the race needs PostgreSQL's concurrent transactions")
    project, ana, bo = two_leads
    # Each request, once it has read the leads, waits (up to a second) for the other to have
    # read them too: without a lock both read two leads and both demote, leaving none.
    barrier = threading.Barrier(2)
    update_or_create = Membership.objects.update_or_create

    def after_reading(*args, **kwargs):
        try:
            barrier.wait(timeout=1)
        except threading.BrokenBarrierError:
            pass  # the other request waits on the lock: it reads after this one writes
        return update_or_create(*args, **kwargs)

    monkeypatch.setattr(Membership.objects, "update_or_create", after_reading)
    url = reverse("annotation:membership-add", args=[project.slug])
    statuses = {}

    def demote(me, other):
        try:
            response = client_for(me).post(url, {"username": other.username, "role": "reviewer"})
            statuses[me.username] = response.status_code
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=demote, args=(ana, bo)),
        threading.Thread(target=demote, args=(bo, ana)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == {"ana_lead": 302, "bo_lead": 302}
    leads = list(
        project.memberships.filter(role=Membership.Role.LEAD).values_list("user__username", flat=True)
    )
    assert len(leads) == 1, leads


@pytest.mark.django_db
def test_the_last_lead_is_neither_demoted_nor_removed(two_leads):
    project, ana, bo = two_leads
    lead_client = client_for(ana)
    lead_client.post(
        reverse("annotation:membership-add", args=[project.slug]), {"username": "bo_lead", "role": "reviewer"}
    )
    lead_client.post(
        reverse("annotation:membership-add", args=[project.slug]),
        {"username": "ana_lead", "role": "reviewer"},
    )
    mine = project.memberships.get(user=ana)
    lead_client.post(reverse("annotation:membership-remove", args=[project.slug, mine.pk]))
    assert list(project.memberships.filter(role="lead").values_list("user__username", flat=True)) == [
        "ana_lead"
    ]
