"""The offline dictionary teacher for extraction: patterns from reviewed values."""

from __future__ import annotations

import pytest

from tasks.base import Category
from tasks.extraction import ExtractionTask
from tasks.extraction.offline import DictionaryTeacher, value_key

FIELDS = [Category("city"), Category("people", allows_many=False), Category("time")]


def answer(text: str, *pairs: tuple[str, str]) -> tuple[str, dict]:
    """(text, answer) marking each (field, value) at its first occurrence."""
    spans = []
    for field, value in pairs:
        start = text.index(value)
        spans.append({"start": start, "end": start + len(value), "field": field})
    return text, {"spans": spans}


def values(text: str, predicted: dict) -> list[tuple[str, str]]:
    return [(s["field"], text[s["start"] : s["end"]]) for s in predicted["spans"]]


MEMORY = [
    answer("A table in Paris for 4 at 7pm", ("city", "Paris"), ("people", "4"), ("time", "7pm")),
    answer("paris, 2 people, 8pm", ("city", "paris"), ("people", "2"), ("time", "8pm")),
    answer("New York City at 7pm please", ("city", "New York City"), ("time", "7pm")),
    answer("new  york city for 4", ("city", "new  york city"), ("people", "4")),
    answer("hello there"),
]


def test_reviewed_values_are_found_case_insensitively_on_word_boundaries():
    teacher = DictionaryTeacher(FIELDS, MEMORY)
    text = "Book PARIS for 4 at 7PM, not 14 or 47pm"
    ((predicted, confidence),) = teacher.predict([text])
    assert values(text, predicted) == [("city", "PARIS"), ("people", "4"), ("time", "7PM")]
    assert 0 < confidence <= 1
    # The answer is in the task's normal form.
    task = ExtractionTask(FIELDS)
    assert task.validate(predicted, text=text) == predicted


def test_longest_value_wins_and_whitespace_runs_match():
    teacher = DictionaryTeacher(
        FIELDS + [Category("place")], [*MEMORY, answer("York is nice", ("place", "York"))]
    )
    text = "NEW YORK\ncity tonight"
    ((predicted, _),) = teacher.predict([text])
    assert values(text, predicted) == [("city", "NEW YORK\ncity")]


def test_precision_is_how_often_a_present_value_was_marked():
    memory = [answer("the bistro", ("city", "the"))] + [(f"the text {i}", {"spans": []}) for i in range(3)]
    teacher = DictionaryTeacher(FIELDS, memory)
    assert teacher.precision[("city", "the")] == pytest.approx(1 / 4)
    ((predicted, confidence),) = teacher.predict(["the end"])
    assert predicted == {"spans": []}  # marked in a quarter of its texts: left out
    assert confidence == pytest.approx(teacher.coverage * (1 - 1 / 4))


def test_a_field_that_takes_one_value_keeps_its_most_precise_match():
    teacher = DictionaryTeacher(FIELDS, MEMORY)
    text = "for 4 or 2"
    ((predicted, _),) = teacher.predict([text])
    assert [f for f, _ in values(text, predicted)] == ["people"]


def test_coverage_counts_texts_whose_values_were_seen_elsewhere():
    teacher = DictionaryTeacher(FIELDS, MEMORY)
    # Paris/paris, 7pm and 4 and the two New York spellings recur; "2" and "8pm" do not.
    assert value_key("new  york CITY") == "new york city"
    assert teacher.coverage == pytest.approx(4 / 5)


def test_without_memory_it_answers_nothing_with_no_confidence():
    teacher = DictionaryTeacher(FIELDS, [])
    assert teacher.predict(["Paris for 4"]) == [({"spans": []}, 0.0)]
    assert teacher.predict([]) == []


def test_values_with_punctuation_and_unknown_fields_are_handled():
    memory = [answer("costs $5 today", ("price", "$5"), ("city", "today"))]
    teacher = DictionaryTeacher(
        [*FIELDS, Category("price")], memory + [("x", {"spans": [{"start": 0, "end": 1, "field": "gone"}]})]
    )
    text = "now$5 today"
    ((predicted, _),) = teacher.predict([text])
    assert values(text, predicted) == [("price", "$5"), ("city", "today")]


def test_the_task_gives_its_offline_teacher():
    task = ExtractionTask(FIELDS)
    teacher = task.offline_teacher(MEMORY)
    assert isinstance(teacher, DictionaryTeacher)
    assert task.offline_teacher_name == "dictionary" and not task.offline_teacher_zero_shot
