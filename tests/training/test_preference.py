"""Blind A/B preference: the order is drawn per reviewer and text and never posted back, votes
decode to student/teacher/same, and the win rate carries a Wilson interval."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation import projects
from annotation.models import Example, GoldSet, Membership
from tests.conftest import client_for
from training.models import Evaluation, PreferenceVote, TrainingRun
from training.services import preference

pytestmark = pytest.mark.django_db


@pytest.fixture
def judged(lead, reviewer):
    project = projects.project_create(name="Calls", slug="calls", user=lead, task_type="summarization")
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    gold = GoldSet.objects.create(project=project, version=1)
    examples = [
        Example.objects.create(project=project, text=f"Call {i}: parcel {i} is late.", is_gold=True)
        for i in range(40)
    ]
    run = TrainingRun.objects.create(project=project, number=1, status="succeeded")
    student_rows = [
        {"example": e.pk, "gold": {"summary": "ref"}, "predicted": {"summary": f"student {e.pk}"}}
        for e in examples
    ]
    teacher_rows = [
        {"example": e.pk, "gold": {"summary": "ref"}, "predicted": {"summary": f"teacher {e.pk}"}}
        for e in examples
    ]
    teacher_rows[0]["predicted"] = None  # the teacher did not answer this one: no pair
    student = Evaluation.objects.create(
        project=project,
        run=run,
        gold_set=gold,
        subject="student",
        agent="student:run-1",
        predictions=student_rows,
    )
    Evaluation.objects.create(
        project=project,
        gold_set=gold,
        subject="teacher",
        agent="teacher:gpt:prompt-v1",
        predictions=teacher_rows,
    )
    return project, student, examples


def test_the_order_is_random_per_text_stable_and_decoded_on_the_server(judged, reviewer):
    project, student, examples = judged
    firsts = [preference.student_shown_first(user_id=reviewer.pk, example_id=e.pk) for e in examples]
    assert 10 < sum(firsts) < 30  # both sides come up; not one fixed side
    pair = preference.preference_next(evaluation=student, user=reviewer)
    again = preference.preference_next(evaluation=student, user=reviewer)
    assert pair["example"] == again["example"] and pair["a"] == again["a"]  # a reload shows the same
    assert pair["total"] == 39  # the text the teacher skipped has no pair
    student_side = "a" if pair["a"]["summary"].startswith("student") else "b"
    vote = preference.preference_record(
        evaluation=student, example_id=pair["example"].pk, user=reviewer, pick=student_side
    )
    assert vote.choice == "student"
    with pytest.raises(preference.PreferenceError, match="already judged"):
        preference.preference_record(
            evaluation=student, example_id=pair["example"].pk, user=reviewer, pick="same"
        )
    with pytest.raises(preference.PreferenceError, match="no pair"):
        preference.preference_record(evaluation=student, example_id=examples[0].pk, user=reviewer, pick="a")


def test_win_rate_over_decided_votes_with_a_wilson_interval(judged, reviewer, lead):
    project, student, examples = judged
    for user, wins in ((reviewer, 8), (lead, 4)):
        for number, example in enumerate(examples[1:13]):
            first = preference.student_shown_first(user_id=user.pk, example_id=example.pk)
            if number < wins:
                pick = "a" if first else "b"
            elif number < 10:
                pick = "b" if first else "a"
            else:
                pick = "same"
            preference.preference_record(evaluation=student, example_id=example.pk, user=user, pick=pick)
    summary = preference.preference_summary(student)
    assert (summary["wins"], summary["losses"], summary["same"], summary["votes"]) == (12, 8, 4, 24)
    assert summary["win_rate"] == pytest.approx(0.6)
    low, high = summary["interval"]
    assert low < 0.6 < high and low > 0.38 and high < 0.79


def test_the_page_shows_a_pair_without_saying_which_is_which_and_records_a_key(judged, reviewer):
    project, student, _ = judged
    client = client_for(reviewer)
    url = reverse("training:evaluation-preference", args=[project.slug, student.pk])
    page = client.get(url).content.decode()
    assert 'data-side="a"' in page and "student:run-1" in page
    assert "student_first" not in page
    pair = preference.preference_next(evaluation=student, user=reviewer)
    response = client.post(
        url, {"example_id": pair["example"].pk, "pick": "same"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert PreferenceVote.objects.get(reviewer=reviewer).choice == "same"
    bad = client.post(url, {"example_id": "x", "pick": "a"}, headers={"HX-Request": "true"})
    assert bad.status_code == 400
    evaluation_page = client.get(
        reverse("training:evaluation", args=[project.slug, student.pk])
    ).content.decode()
    assert "Which do people prefer?" in evaluation_page
