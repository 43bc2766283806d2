"""A stratified gold draw uses the task's strata: labels, or the set of fields a text holds."""

from __future__ import annotations

from collections import Counter

import pytest
from django.urls import reverse

from annotation import review
from annotation.models import Example, Proposal
from annotation.projects import project_create

pytestmark = pytest.mark.django_db


def test_extraction_draws_every_field_set_before_more_of_one(lead, lead_client):
    project = project_create(
        name="Bookings",
        slug="bookings",
        user=lead,
        task_type="extraction",
        labels=[("date", ""), ("people", "")],
    )
    shapes = {"date": 40, "people": 5, "both": 3}
    for shape, n in shapes.items():
        for i in range(n):
            text = f"table for 4 on monday {shape} {i}"
            spans = []
            if shape in ("date", "both"):
                spans.append(
                    {"start": text.index("monday"), "end": text.index("monday") + 6, "field": "date"}
                )
            if shape in ("people", "both"):
                spans.append({"start": 10, "end": 11, "field": "people"})
            example = Example.objects.create(project=project, text=text)
            Proposal.objects.create(
                example=example, agent="teacher:m:v1", value={"spans": spans}, confidence=0.9
            )
    Example.objects.filter(project=project).sync_queue_fields()
    gold = review.gold_draw(project=project, size=9, stratified=True, seed=3)
    drawn = Counter(
        project.task.stratum(p.value)
        for p in Proposal.objects.filter(example__gold_items__gold_set=gold, agent="teacher:m:v1")
    )
    assert drawn == {"date": 3, "people": 3, "date+people": 3}
    page = lead_client.get(reverse("annotation:gold", args=[project.slug])).content.decode()
    assert "stratified by the proposed fields" in page
