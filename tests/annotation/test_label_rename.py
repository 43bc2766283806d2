"""Renaming or deleting a label (an extraction field) reaches every answer that names it."""

from __future__ import annotations

import pytest

from annotation import projects
from annotation.models import Example, Label, Proposal, Review

pytestmark = pytest.mark.django_db

TEXT = "Table for 4 on 12 May"
SPANS = {"spans": [{"start": 10, "end": 11, "field": "people"}, {"start": 15, "end": 21, "field": "date"}]}


@pytest.fixture
def bookings(lead):
    return projects.project_create(
        name="Bookings",
        slug="bookings",
        user=lead,
        task_type="extraction",
        labels=[("people", ""), ("date", "")],
    )


def test_renaming_a_field_rewrites_the_spans_that_name_it(bookings, lead):
    example = Example.objects.create(project=bookings, text=TEXT)
    proposal = Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=SPANS)
    review = Review.objects.create(example=example, reviewer=lead, verdict="accept", value=SPANS)
    date = Label.objects.get(project=bookings, name="date")

    projects.label_update(label=date, name="day", description="", key=date.key, order=date.order)

    for row in (proposal, review):
        row.refresh_from_db()
        assert sorted(s["field"] for s in row.value["spans"]) == ["day", "people"]
    assert bookings.task.names == ["people", "day"]


def test_a_field_used_inside_spans_cannot_be_deleted(bookings):
    example = Example.objects.create(project=bookings, text=TEXT)
    Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=SPANS)
    date = Label.objects.get(project=bookings, name="date")
    with pytest.raises(projects.ServiceError, match="used by"):
        projects.label_delete(label=date)
    assert Label.objects.filter(pk=date.pk).exists()


def test_renaming_a_label_still_rewrites_classification_answers(project, lead):
    example = Example.objects.create(project=project, text="refund please")
    proposal = Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value="Billing")
    label = Label.objects.get(project=project, name="Billing")
    projects.label_update(label=label, name="Payments", description="", key=label.key, order=label.order)
    proposal.refresh_from_db()
    assert proposal.value == "Payments"
    unused = Label.objects.get(project=project, name="Other")
    projects.label_delete(label=unused)
    assert not Label.objects.filter(pk=unused.pk).exists()
