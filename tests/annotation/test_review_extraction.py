"""Review and gold for an extraction project: posted span sets are validated by the task."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from annotation import projects, review
from annotation.models import Example, GoldSetItem, Label, Membership, Proposal, Review, ReviewClaim
from tests.annotation.test_review import served
from tests.conftest import client_for, make_user

pytestmark = pytest.mark.django_db

TEXT = "Table for 4 on 12 May at 19:30, name Ana Lopez"
#       0         1         2         3         4
#       0123456789012345678901234567890123456789012345
PROPOSED = {
    "spans": [
        {"start": 10, "end": 11, "field": "people"},
        {"start": 15, "end": 21, "field": "date"},
    ]
}


@pytest.fixture
def extraction(lead, reviewer):
    project = projects.project_create(
        name="Bookings",
        slug="bookings",
        user=lead,
        task_type="extraction",
        labels=[("people", "How many guests"), ("date", "The day"), ("name", "Who booked")],
    )
    Label.objects.filter(project=project, name="date").update(allows_many=False, color="#e76f51")
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    return project


def booking(project, text: str = TEXT, proposal: dict | None = PROPOSED) -> Example:
    example = Example.objects.create(project=project, text=text)
    if proposal is not None:
        Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=proposal, confidence=0.7)
    Example.objects.filter(pk=example.pk).sync_queue_fields()
    return example


def act(client, project, example, **data):
    """Post a verdict on a card served to the client's user (the queue's claim)."""
    if not ReviewClaim.objects.filter(example=example).exists():
        served(example, User.objects.get(pk=client.session["_auth_user_id"]))
    if "value" in data and not isinstance(data["value"], str):
        data["value"] = json.dumps(data["value"])
    return client.post(
        reverse("annotation:review-act", args=[project.slug]),
        {"example_id": example.pk, **data},
        headers={"HX-Request": "true"},
    )


def test_the_review_page_shows_the_span_card_and_loads_spans_js(extraction, reviewer_client):
    booking(extraction)
    html = reviewer_client.get(reverse("annotation:review", args=[extraction.slug])).content.decode()
    assert "js/spans.js" in html
    assert 'id="span-editor-data"' in html and 'id="span-fields"' in html
    assert 'data-field="date"' in html and "--c: #e76f51" in html  # the field's own colour
    assert 'data-field="people"' in html and "--c: #f4a261" in html  # the palette's first
    assert "Accept all spans" in html
    assert "people: 4 · date: 12 May" in html  # the proposal's summary, without JavaScript too


def test_classification_pages_do_not_load_spans_js(project, reviewer_client):
    Example.objects.create(project=project, text="charged twice")
    html = reviewer_client.get(reverse("annotation:review", args=[project.slug])).content.decode()
    assert "js/spans.js" not in html
    assert 'class="label-buttons"' in html


def test_unchanged_spans_are_an_accept_and_edited_ones_a_correction(extraction, reviewer, reviewer_client):
    first, second = booking(extraction), booking(extraction, text=TEXT + ".")
    # The same spans in another order are the same answer.
    response = act(
        reviewer_client, extraction, first, verdict="correct", value={"spans": PROPOSED["spans"][::-1]}
    )
    assert response.status_code == 200
    accepted = Review.objects.get(example=first)
    assert accepted.verdict == "accept" and accepted.value == PROPOSED

    edited = {"spans": [*PROPOSED["spans"][1:], {"start": 37, "end": 46, "field": "name"}]}
    assert act(reviewer_client, extraction, second, verdict="correct", value=edited).status_code == 200
    corrected = Review.objects.get(example=second)
    assert corrected.verdict == "correct"
    assert corrected.value == {
        "spans": [{"start": 15, "end": 21, "field": "date"}, {"start": 37, "end": 46, "field": "name"}]
    }
    assert corrected.reviewer == reviewer


def test_the_server_trims_whitespace_from_a_posted_span(extraction, reviewer):
    example = booking(extraction, proposal=None)
    saved = review.review_record(
        example=served(example, reviewer),
        user=reviewer,
        verdict="correct",
        value={"spans": [{"start": 36, "end": 46, "field": "name"}]},  # " Ana Lopez"
    )
    assert saved.verdict == "correct"
    assert saved.value == {"spans": [{"start": 37, "end": 46, "field": "name"}]}


def test_no_spans_at_all_is_an_answer(extraction, reviewer_client):
    example = booking(extraction, proposal=None)
    html = reviewer_client.get(reverse("annotation:review", args=[extraction.slug])).content.decode()
    assert '"initial": null' in html and "Save: no fields in this text" in html  # the editor starts empty
    assert (
        act(reviewer_client, extraction, example, verdict="correct", value={"spans": []}).status_code == 200
    )
    assert Review.objects.get(example=example).value == {"spans": []}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"spans": [{"start": 40, "end": 99, "field": "name"}]}, "outside the text"),
        ({"spans": [{"start": -1, "end": 3, "field": "name"}]}, "outside the text"),
        ({"spans": [{"start": 5, "end": 5, "field": "name"}]}, "is empty"),
        ({"spans": [{"start": "a", "end": 3, "field": "name"}]}, "whole numbers"),
        ({"spans": [{"start": 37, "end": 46, "field": "city"}]}, "unknown field &#x27;city&#x27;"),
        ({"spans": [{"start": 5, "end": 6, "field": "name"}]}, "holds only whitespace"),
        (
            {"spans": [{"start": 15, "end": 21, "field": "date"}, {"start": 25, "end": 30, "field": "date"}]},
            "takes one value",
        ),
        ({"fields": {"name": "Ana"}}, "an extraction answer is"),
        ('"Billing"', "an extraction answer is"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_span_set_is_a_400_and_nothing_is_stored(extraction, reviewer_client, value, message):
    example = booking(extraction)
    response = act(reviewer_client, extraction, example, verdict="correct", value=value)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert f'data-example-id="{example.pk}"' in html  # the same card comes back, saying why
    assert not Review.objects.exists()
    example.refresh_from_db()
    assert example.review_state == "unreviewed"


def test_a_bad_answer_without_htmx_is_a_400_page(extraction, reviewer_client):
    example = booking(extraction)
    response = reviewer_client.post(
        reverse("annotation:review-act", args=[extraction.slug]),
        {"example_id": example.pk, "verdict": "correct", "value": json.dumps({"spans": [{"start": 0}]})},
    )
    assert response.status_code == 400
    assert "<html" in response.content.decode()
    assert not Review.objects.exists()


def test_a_classification_label_that_is_not_in_the_project_is_a_400(project, reviewer_client):
    example = Example.objects.create(project=project, text="charged twice")
    response = act(reviewer_client, project, example, verdict="correct", label="Refunds")
    assert response.status_code == 400
    assert "is not one of the project&#x27;s labels" in response.content.decode()
    assert not Review.objects.exists()


def test_accept_and_reject_of_an_extraction_proposal(extraction, reviewer_client):
    first, second = booking(extraction), booking(extraction, text="Another " + TEXT)
    assert act(reviewer_client, extraction, first, verdict="accept").status_code == 200
    assert act(reviewer_client, extraction, second, verdict="reject").status_code == 200
    # sort_keys: PostgreSQL's jsonb keeps keys in its own order.
    assert {(r.example_id, r.verdict, json.dumps(r.value, sort_keys=True)) for r in Review.objects.all()} == {
        (first.pk, "accept", json.dumps(PROPOSED, sort_keys=True)),
        (second.pk, "reject", "null"),
    }


# --- gold ------------------------------------------------------------------------------


def gold_post(client, project, name: str, example, **data):
    if "value" in data and not isinstance(data["value"], str):
        data["value"] = json.dumps(data["value"])
    return client.post(
        reverse(f"annotation:{name}", args=[project.slug]),
        {"example_id": example.pk, **data},
        headers={"HX-Request": "true"},
    )


def test_blind_gold_labelling_and_adjudication_of_spans(
    extraction, lead, reviewer, reviewer_client, lead_client, django_user_model
):
    second_reviewer = make_user(django_user_model, "sara_second")
    Membership.objects.create(project=extraction, user=second_reviewer, role=Membership.Role.REVIEWER)
    agree, differ = booking(extraction), booking(extraction, text="Party of 6 on 3 June, name Bo")
    gold = review.gold_draw(project=extraction, size=2, seed=1)

    # The blind card shows no proposal: the editor starts empty.
    html = reviewer_client.get(reverse("annotation:gold-label", args=[extraction.slug])).content.decode()
    assert "js/spans.js" in html and "people: 4" not in html and '"initial": null' in html

    answers = {
        reviewer: {agree: PROPOSED, differ: {"spans": [{"start": 9, "end": 10, "field": "people"}]}},
        second_reviewer: {
            agree: {"spans": PROPOSED["spans"][::-1]},
            differ: {
                "spans": [
                    {"start": 9, "end": 10, "field": "people"},
                    {"start": 14, "end": 20, "field": "date"},
                ]
            },
        },
    }
    for user, by_example in answers.items():
        client = reviewer_client if user == reviewer else client_for(user)
        for example, value in by_example.items():
            assert gold_post(client, extraction, "gold-label", example, value=value).status_code == 200
    assert Review.objects.filter(kind="blind").count() == 4

    status = review.gold_status(gold)
    assert status["disagreements"] == 1  # the reordered set is the same answer
    agreement = status["agreement"]
    # Span F1: 2 common of 2 + 2 on the first, 1 of 1 + 2 on the second: 2*3 / (3 + 4).
    assert agreement["f1"] == pytest.approx(6 / 7)
    assert agreement["per_field"]["people"] == 1.0
    assert agreement["observed"] == 0.5

    page = lead_client.get(reverse("annotation:gold", args=[extraction.slug])).content.decode()
    assert "span F1" in page and 'data-count="span-f1">0.857<' in page
    assert "Agreement per field" in page

    # Adjudication shows both sets, each highlighted by the script, and the lead edits.
    html = lead_client.get(reverse("annotation:gold-adjudicate", args=[extraction.slug])).content.decode()
    assert 'data-span-view="0"' in html and 'data-span-view="1"' in html
    assert "people: 6 · date: 3 June" in html  # the second reviewer's set, as text
    final = {
        "spans": [
            {"start": 9, "end": 10, "field": "people"},
            {"start": 14, "end": 20, "field": "date"},
            {"start": 27, "end": 29, "field": "name"},
        ]
    }
    bad = {"spans": [{"start": 27, "end": 29, "field": "guest"}]}
    assert gold_post(lead_client, extraction, "gold-adjudicate", differ, value=bad).status_code == 400
    assert not Review.objects.filter(kind="adjudication").exists()
    assert gold_post(lead_client, extraction, "gold-adjudicate", differ, value=final).status_code == 200
    adjudication = Review.objects.get(kind="adjudication")
    assert adjudication.value == final and adjudication.verdict == "correct"

    review.gold_freeze(gold_set=gold, user=lead)
    labels = dict(GoldSetItem.objects.filter(gold_set=gold).values_list("example_id", "answer"))
    assert labels == {agree.pk: PROPOSED, differ.pk: final}


def test_a_bad_blind_span_set_is_a_400_and_nothing_is_stored(extraction, reviewer_client):
    example = booking(extraction)
    review.gold_draw(project=extraction, size=1, seed=1)
    bad = {"spans": [{"start": 0, "end": 500, "field": "name"}]}
    response = gold_post(reviewer_client, extraction, "gold-label", example, value=bad)
    assert response.status_code == 400
    assert "outside the text" in response.content.decode()
    assert f'data-example-id="{example.pk}"' in response.content.decode()
    assert not Review.objects.exists()


def test_a_blind_reject_needs_no_spans(extraction, reviewer_client):
    example = booking(extraction)
    review.gold_draw(project=extraction, size=1, seed=1)
    assert gold_post(reviewer_client, extraction, "gold-label", example, verdict="reject").status_code == 200
    assert Review.objects.get().verdict == "reject"


def test_the_disagreement_order_serves_the_text_whose_missed_span_the_student_is_surest_of_first(
    extraction, reviewer
):
    """The task says what a disagreement is: a span the student marks and the teacher missed
    outranks a boundary slip, which outranks agreement; "auto" serves that order."""
    extraction.audit_share = 0
    extraction.save()
    texts = {
        "agrees": "Table for 2 on 3 May",
        "boundary": "Table for 5 on 4 May please",
        "missed sure": "Table for 6 on 5 May at noon",
        "missed unsure": "Table for 7 on 6 May at noon",
    }
    people = {"agrees": (10, 11), "boundary": (10, 11), "missed sure": (10, 11), "missed unsure": (10, 11)}
    dates = {name: (15, 20) for name in texts}
    student_date = {**dates, "boundary": (15, 16)}
    confidence = {"agrees": 0.9, "boundary": 0.9, "missed sure": 0.9, "missed unsure": 0.8}
    for name, text in texts.items():
        p, d = people[name], dates[name]
        teacher = {"spans": [{"start": p[0], "end": p[1], "field": "people"}]}
        student = {"spans": [{"start": p[0], "end": p[1], "field": "people", "confidence": 0.9}]}
        if not name.startswith("missed"):
            teacher["spans"].append({"start": d[0], "end": d[1], "field": "date"})
        s = student_date[name]
        student["spans"].append({"start": s[0], "end": s[1], "field": "date", "confidence": confidence[name]})
        example = Example.objects.create(project=extraction, text=text)
        Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=teacher, confidence=0.9)
        Proposal.objects.create(example=example, agent="student:run-1", value=student, confidence=0.5)
    Example.objects.filter(project=extraction).sync_queue_fields()
    assert review.resolved_strategy(extraction, "auto") == "disagreement"
    order = []
    filters = review.QueueFilter(strategy="auto")
    while (example := review.review_next(project=extraction, user=reviewer, filters=filters)) is not None:
        order.append(next(name for name, text in texts.items() if text == example.text))
        review.review_record(example=example, user=reviewer, verdict="accept")
    assert order == ["missed sure", "missed unsure", "boundary", "agrees"]
    assert set(Review.objects.values_list("queue_order", flat=True)) == {"disagreement"}
