from __future__ import annotations

import json

import pytest

from tasks.base import AnswerError, Category, Task
from tasks.extraction import ExtractionTask

TASK = ExtractionTask(
    [
        Category("date", "the day of the booking", key="d", color="#f90", allows_many=False),
        Category("people", "how many people", key="p"),
        Category("time", key="t"),
    ]
)
TEXT = "Table for 4 on 12 May at 4, then 4 more"


def span(start: int, end: int, field: str) -> dict:
    return {"start": start, "end": end, "field": field}


def reply(*entities: tuple[str, str]) -> str:
    return json.dumps({"entities": [{"field": f, "text": t} for f, t in entities]})


def shown(answer: dict, text: str = TEXT) -> list[tuple[str, str]]:
    return [(text[s["start"] : s["end"]], s["field"]) for s in answer["spans"]]


def test_it_is_a_task_with_fields():
    assert isinstance(TASK, Task)
    assert (TASK.type, TASK.title, TASK.category_noun) == ("extraction", "Extraction", "field")
    assert TASK.card_template == "tasks/extraction/card.html"
    assert TASK.names == ["date", "people", "time"]


# --- validate ----------------------------------------------------------------------------


def test_validate_normalises():
    value = {
        "spans": [span(24, 26, "time"), span(14, 21, "date"), span(10, 11, "people"), span(10, 11, "people")]
    }
    assert TASK.validate(value, text=TEXT) == {
        "spans": [span(10, 11, "people"), span(15, 21, "date"), span(25, 26, "time")]
    }


@pytest.mark.parametrize(
    "value, message",
    [
        ("12 May", "an extraction answer is"),
        ({"fields": {}}, "an extraction answer is"),
        ({"spans": [span(0, 99, "date")]}, "outside the text"),
        ({"spans": [span(15, 21, "venue")]}, "unknown field 'venue'; the fields are date, people, time"),
        (
            {"spans": [span(15, 21, "date"), span(10, 11, "date")]},
            "field 'date' takes one value but has 2: '4', '12 May'",
        ),
    ],
)
def test_validate_rejects(value, message):
    with pytest.raises(AnswerError, match=message):
        TASK.validate(value, text=TEXT)


def test_same_compares_span_sets():
    a = {"spans": [span(10, 11, "people")]}
    assert TASK.same(a, {"spans": [{**span(10, 11, "people"), "confidence": 0.9}]})
    assert not TASK.same(a, {"spans": [span(10, 11, "time")]})
    assert not TASK.same(a, None)


def test_summary():
    answer = {"spans": [span(10, 11, "people"), span(15, 21, "date")]}
    assert TASK.summary(answer, text=TEXT) == "people: 4 · date: 12 May"
    assert TASK.summary(answer) == "people ×1 · date ×1"
    assert TASK.summary({"spans": []}, text=TEXT) == "(no fields)"
    long_text = "word " * 100
    many = {"spans": [span(i * 5, i * 5 + 4, "people") for i in range(40)]}
    assert len(TASK.summary(many, text=long_text)) == 100
    assert TASK.summary(many, text=long_text).endswith("…")


# --- the teacher -------------------------------------------------------------------------


def test_prompt_block_and_response_format():
    block = TASK.prompt_block()
    assert "- date (at most one value): the day of the booking" in block
    assert "- people (any number of values): how many people" in block
    assert '{"field": <one of "date", "people", "time">' in block
    schema = TASK.response_format()
    assert schema["json_schema"]["strict"] is True
    item = schema["json_schema"]["schema"]["properties"]["entities"]["items"]
    assert item["properties"]["field"]["enum"] == ["date", "people", "time"]
    assert item["required"] == ["field", "text"] and item["additionalProperties"] is False


def test_parse_teacher_locates_repeats_in_order():
    answer, reason = TASK.parse_teacher(
        reply(("people", "4"), ("date", "12 May"), ("time", "4"), ("people", "4")), text=TEXT
    )
    assert reason == ""
    assert answer == {
        "spans": [span(10, 11, "people"), span(15, 21, "date"), span(25, 26, "time"), span(33, 34, "people")]
    }


def test_parse_teacher_tolerates_fences_and_falls_back_to_any_case():
    answer, reason = TASK.parse_teacher(f"```json\n{reply(('date', '12 MAY'))}\n```", text=TEXT)
    assert (shown(answer), reason) == ([("12 May", "date")], "")
    answer, _ = TASK.parse_teacher(reply(("date", "12 May")), text="12 may or 12 May")
    assert answer == {"spans": [span(10, 16, "date")]}  # the exact case first
    assert TASK.parse_teacher(reply(), text=TEXT) == ({"spans": []}, "")


def test_the_same_single_value_named_twice_is_one_span():
    answer, reason = TASK.parse_teacher(reply(("date", "12 May"), ("date", "12 May")), text=TEXT)
    assert (shown(answer), reason) == ([("12 May", "date")], "")


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "empty answer"),
        ("  ", "empty answer"),
        ('{"entities": [', "not valid JSON"),
        ('{"label": "x"}', 'no "entities" list'),
        (reply(("venue", "Table")), "unknown field 'venue'"),
        (reply(("people", "4"), ("date", "13 May")), "'13 May' (date) is not in the text"),
        (reply(("people", " ")), "empty text"),
        ('{"entities": ["4"]}', "is not an object"),
        ('{"entities": [{"field": ["date"], "text": "4"}]}', "unknown field"),
        (reply(("date", "12 May"), ("date", "4")), "takes one value but has 2"),
    ],
)
def test_parse_teacher_rejects_without_a_partial_answer(content, reason):
    answer, why = TASK.parse_teacher(content, text=TEXT)
    assert answer is None
    assert reason in why


def test_example_reply_parses_back_to_the_same_answer():
    answer = {
        "spans": [span(10, 11, "people"), span(15, 21, "date"), span(25, 26, "time"), span(33, 34, "people")]
    }
    content = TASK.example_reply(answer, text=TEXT)
    assert json.loads(content) == {
        "entities": [
            {"field": "people", "text": "4"},
            {"field": "date", "text": "12 May"},
            {"field": "time", "text": "4"},
            {"field": "people", "text": "4"},
        ]
    }
    assert TASK.parse_teacher(content, text=TEXT) == (answer, "")


def test_a_repeated_value_resolves_by_its_count_not_its_place():
    # Values carry no offsets: the second "4" named is the text's second "4", even when
    # an unnamed "4" lies between them (the limit of values without offsets).
    answer = {"spans": [span(10, 11, "people"), span(33, 34, "people")]}
    parsed, _ = TASK.parse_teacher(TASK.example_reply(answer, text=TEXT), text=TEXT)
    assert parsed == {"spans": [span(10, 11, "people"), span(25, 26, "people")]}


# --- right and served --------------------------------------------------------------------


def test_is_right_needs_the_exact_span_set():
    gold = {"spans": [span(10, 11, "people"), span(15, 21, "date")]}
    assert TASK.is_right(gold, {"spans": list(reversed(gold["spans"]))})
    assert not TASK.is_right(gold, {"spans": gold["spans"][:1]})
    assert not TASK.is_right(gold, {"spans": [span(10, 11, "people"), span(15, 20, "date")]})
    assert not TASK.is_right(gold, None)
    assert TASK.is_right({"spans": []}, {"spans": []})


def test_served_shape():
    value = {
        "spans": [
            {**span(10, 11, "people"), "confidence": 0.91234},
            span(15, 21, "date"),
            span(33, 34, "people"),
        ]
    }
    assert TASK.served(value, text=TEXT) == {
        "spans": [
            {"field": "people", "start": 10, "end": 11, "text": "4", "confidence": 0.9123},
            {"field": "date", "start": 15, "end": 21, "text": "12 May"},
            {"field": "people", "start": 33, "end": 34, "text": "4"},
        ],
        "fields": {"date": "12 May", "people": ["4", "4"], "time": []},
    }
    assert TASK.served({"spans": []}, text=TEXT)["fields"] == {"date": None, "people": [], "time": []}
    assert TASK.served(None, text=TEXT) == {"spans": None, "fields": None}


def test_repair_request_restates_the_format():
    request = TASK.repair_request("'13 May' (date) is not in the text")
    assert "'13 May' (date) is not in the text" in request
    assert '{"entities": [{"field": <one of "date", "people", "time">' in request


def test_logprob_confidence_is_the_whole_reply():
    content = reply(("people", "4"))
    half = len(content) // 2
    tokens = [(content[:half], -0.1), (content[half:], -0.2)]
    assert TASK.logprob_confidence(content, None, tokens) == pytest.approx(2.718281828**-0.3)
    assert TASK.logprob_confidence(content, None, tokens[:1]) is None
    assert TASK.logprob_confidence(content, None, []) is None
