"""Review risk of a teacher's spans: the student's span the teacher missed first, then
ambiguous placements and boundaries, then spans the student does not confirm."""

from __future__ import annotations

from tasks import Category
from tasks.extraction.risk import WEIGHTS, ambiguous_spans, review_risk, signs
from tasks.extraction.task import ExtractionTask

TEXT = "Table for 4 on 12 May at 19:30, name Ana Lopez"


def span(start, end, field, confidence=None):
    out = {"start": start, "end": end, "field": field}
    if confidence is not None:
        out["confidence"] = confidence
    return out


PEOPLE, DATE, TIME = span(10, 11, "people"), span(15, 21, "date"), span(25, 30, "time")


def test_a_span_the_student_marks_and_the_teacher_missed_outranks_every_other_sign():
    teacher = {"spans": [PEOPLE, DATE]}
    missed = review_risk(teacher, {"spans": [PEOPLE, DATE, {**TIME, "confidence": 0.95}]}, text=TEXT)
    boundary = review_risk(teacher, {"spans": [PEOPLE, span(15, 17, "date", 0.95)]}, text=TEXT)
    wrong_field = review_risk(teacher, {"spans": [span(10, 11, "time", 0.95), DATE]}, text=TEXT)
    unconfirmed = review_risk(teacher, {"spans": [PEOPLE]}, text=TEXT)
    agrees = review_risk(teacher, {"spans": [PEOPLE, DATE]}, text=TEXT)
    assert missed > boundary == wrong_field > unconfirmed > agrees == 0.0
    assert missed == WEIGHTS["missed"] * 0.95


def test_a_surer_student_span_is_a_higher_risk():
    teacher = {"spans": [PEOPLE]}
    unsure = review_risk(teacher, {"spans": [PEOPLE, {**DATE, "confidence": 0.3}]}, text=TEXT)
    sure = review_risk(teacher, {"spans": [PEOPLE, {**DATE, "confidence": 0.9}]}, text=TEXT)
    assert sure > unsure > 0


def test_no_teacher_answer_has_no_risk_and_no_student_leaves_only_the_answers_own_signs():
    assert review_risk(None, {"spans": [PEOPLE]}, text=TEXT) == 0.0
    assert review_risk({"spans": [PEOPLE]}, None, text=TEXT) == 0.0
    assert signs({"spans": [PEOPLE]}, None, text=TEXT) == []


def test_a_value_that_occurs_again_where_no_span_of_its_field_is_is_an_ambiguous_placement():
    text = "Subtotal 12.50 Tax 0.00 Total 12.50"
    first = span(9, 14, "total")
    assert ambiguous_spans(text, [first]) == [first]
    assert ambiguous_spans(text, [span(30, 35, "total")]) == [span(30, 35, "total")]
    # Both occurrences marked: nothing was chosen.
    assert ambiguous_spans(text, [first, span(30, 35, "total")]) == []
    # "4" inside "14" is not another occurrence.
    assert ambiguous_spans("4 people on the 14th", [span(0, 1, "people")]) == []
    assert review_risk({"spans": [first]}, None, text=text) == WEIGHTS["ambiguous"]


def test_the_task_answers_for_the_queue_and_auto_serves_its_risk_order():
    task = ExtractionTask([Category("people"), Category("date"), Category("time")])
    assert task.auto_order == "disagreement"
    teacher = {"spans": [PEOPLE]}
    assert task.review_risk(teacher, {"spans": [PEOPLE, DATE]}, text=TEXT) == WEIGHTS["missed"] * 0.5
