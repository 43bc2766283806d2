"""Queries compiled once (distillapp.sql.Prepared) return what the ORM returns for the same
values, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import Count, F, Q
from django.utils import timezone

from annotation.models import Example, Project, Proposal, ReviewClaim
from distillapp.sql import Prepared

pytestmark = pytest.mark.django_db


def examples(project, skipped, since):
    return (
        Example.objects.filter(project=project, created_at__gte=since)
        .exclude(pk__in=skipped)
        .annotate(proposals_n=Count("proposals"), twice=F("pk") * 2)
        .order_by("-pk")
    )


def fields(objects) -> list[dict]:
    return [{k: v for k, v in vars(o).items() if k != "_state"} for o in objects]


def test_a_prepared_query_returns_the_orm_s_instances_for_each_call_s_values(project, lead):
    made = [Example.objects.create(project=project, text=f"text {i}", metadata={"i": i}) for i in range(7)]
    for example in made[:3]:
        Proposal.objects.create(example=example, agent="teacher:m:v1", value="Billing", confidence=0.5)
    other = Project.objects.create(name="Other", slug="other")
    Example.objects.create(project=other, text="elsewhere")
    built = []
    prepared = Prepared(
        lambda **values: built.append(values) or examples(**values),
        project=int,
        skipped=list,
        since=dt.datetime,
    )
    since = timezone.now() - dt.timedelta(hours=1)
    ids = [e.pk for e in made]
    # Every length of the skipped list, each against the ORM with the same values.
    for skipped in ([], ids[:1], ids[1:3], ids[:3], ids[2:7], [ids[0], ids[0], ids[4]]):
        expected = list(examples(project.pk, skipped, since))
        got = prepared.objects(project=project.pk, skipped=skipped, since=since)
        assert fields(got) == fields(expected)
        assert [e.pk for e in got] == [e.pk for e in expected] and got[0]._state.adding is False
    assert prepared.objects(project=other.pk, skipped=[], since=since)[0].text == "elsewhere"
    assert (
        prepared.objects(project=project.pk, skipped=[], since=timezone.now() + dt.timedelta(hours=1)) == []
    )
    # Built once per shape: lists of 0, 1, 2, 4 (three ids, padded) and 8 ids (five, padded).
    assert len(built) == 5


def test_prepared_rows_are_dicts_by_column_with_the_orm_s_values(project, reviewer):
    example = Example.objects.create(project=project, text="a card")
    claimed = timezone.now()
    ReviewClaim.objects.create(example=example, user=reviewer, claimed_at=claimed, expires_at=claimed)
    prepared = Prepared(
        lambda example, name: ReviewClaim.objects.filter(example=example, user__username=name).values(
            "claimed_at", "is_audit", mine=Q(user__username=name)
        ),
        example=int,
        name=str,
    )
    assert prepared.rows(example=example.pk, name="rui_reviewer") == [
        {"claimed_at": claimed, "is_audit": False, "mine": True}
    ]
    assert prepared.rows(example=example.pk, name="someone else") == []


def test_a_parameter_the_orm_rewrites_is_refused(project):
    prepared = Prepared(lambda text: Example.objects.filter(text__icontains=text), text=str)
    with pytest.raises(ValueError, match="text"):
        prepared.objects(text="card")
