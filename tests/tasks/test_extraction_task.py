from __future__ import annotations

import json
import math
import re

import pytest

from tasks.base import AnswerError, Category, SyntheticBrief, Task
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


def test_the_launch_form_trains_an_extraction_student_at_its_own_rate_with_capitals():
    from training.models import default_hyperparameters
    from training.services import run_defaults

    shared, extraction = default_hyperparameters(), run_defaults(TASK, "finetune")
    # Measured on WNUT-17 and Restaurant-8k (bench/README.md, "Extraction students").
    assert extraction["learning_rate"] == 1e-4 < shared["learning_rate"]
    assert extraction["case_feature"] is True and "case_feature" not in shared
    assert extraction["epochs"] == 8 > shared["epochs"]
    rest = {"learning_rate", "case_feature", "epochs"}
    assert {k: v for k, v in extraction.items() if k not in rest} == {
        k: v for k, v in shared.items() if k not in rest
    }


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


def test_logprob_confidence_per_span_from_its_own_stretch_of_the_reply():
    """Hand-computed: each span's stretch runs from the previous span's end to its value's
    closing quote; the text's confidence is the least sure of the spans and the list's end."""
    content = reply(("people", "4"), ("date", "12 May"))
    tokens = [
        ('{"entities": [', -0.05),  # first stretch: that there is a value at all
        ('{"field": "', 0.0),
        ("people", -0.2),
        ('", "text": "', 0.0),
        ("4", -0.1),
        ('"}', 0.0),  # the value's closing quote ends the people stretch
        (', {"field": "', -0.3),  # one more value
        ("date", -0.4),
        ('", "text": "', 0.0),
        ("12", -0.5),
        (" May", -0.1),
        ('"}', 0.0),
        ("]", -0.7),  # the list's end: no more values
        ("}", -0.2),  # after the list: no choice, not counted
    ]
    assert "".join(t for t, _ in tokens) == content
    value, _ = TASK.parse_teacher(content, text=TEXT)
    answer, confidence = TASK.logprob_answer(content, value, tokens, text=TEXT)
    assert [(TEXT[s["start"] : s["end"]], s["field"], s["confidence"]) for s in answer["spans"]] == [
        ("4", "people", pytest.approx(math.exp(-0.35))),
        ("12 May", "date", pytest.approx(math.exp(-1.3))),
    ]
    assert confidence == pytest.approx(math.exp(-1.3))
    # An unsure list end (a value it may have missed) rules the text.
    tokens[12] = ("]", -2.0)
    assert TASK.logprob_answer(content, value, tokens, text=TEXT)[1] == pytest.approx(math.exp(-2.0))
    assert TASK.validate(answer, text=TEXT) == value
    # Tokens that do not spell the reply give no confidence at all.
    assert TASK.logprob_answer(content, value, tokens[:-1], text=TEXT) == (value, None)
    assert TASK.logprob_answer(content, value, [], text=TEXT) == (value, None)


def test_logprob_confidence_of_repeated_values_and_of_no_values():
    content = reply(("people", "4"), ("people", "4"))
    # Four-character pseudo tokens, each with its own log-prob: -0.01 * its index.
    tokens = [(content[i : i + 4], -0.01 * (i // 4)) for i in range(0, len(content), 4)]
    value, _ = TASK.parse_teacher(content, text=TEXT)
    answer, confidence = TASK.logprob_answer(content, value, tokens, text=TEXT)
    first_end = content.index('"4"') + 3  # just after the first value's closing quote
    second_end = content.index('"4"', first_end) + 3
    list_end = content.index("]") + 1

    def stretch(start: int, end: int) -> float:
        # A token belongs to the stretch in which it starts.
        return math.exp(sum(lp for i, (_, lp) in enumerate(tokens) if start <= 4 * i < end))

    # The first "4" of the reply is the first "4" of the text, the second the second.
    assert [(s["start"], s["confidence"]) for s in answer["spans"]] == [
        (10, pytest.approx(stretch(0, first_end))),
        (25, pytest.approx(stretch(first_end, second_end))),
    ]
    assert confidence == pytest.approx(
        min(stretch(0, first_end), stretch(first_end, second_end), stretch(second_end, list_end))
    )
    empty = '```json\n{"entities": []}\n```'
    tokens = [("```json\n", 0.0), ('{"entities": [', -0.1), ("]", -0.4), ("}\n```", 0.0)]
    assert TASK.logprob_answer(empty, {"spans": []}, tokens, text=TEXT) == (
        {"spans": []},
        pytest.approx(math.exp(-0.5)),
    )


def test_self_consistency_confidence_per_span():
    full = TASK.parse_teacher(reply(("people", "4"), ("date", "12 May")), text=TEXT)[0]
    one = TASK.parse_teacher(reply(("people", "4")), text=TEXT)[0]
    more = TASK.parse_teacher(reply(("people", "4"), ("date", "12 May"), ("time", "4")), text=TEXT)[0]
    answer, confidence = TASK.consistency_answer(full, [full, full, one, more, None])
    assert [s["confidence"] for s in answer["spans"]] == [pytest.approx(4 / 5), pytest.approx(3 / 5)]
    # Only 3 of the 5 samples hold no span beyond the answer's (one adds a time, one is invalid),
    # and only 3 hold the date: the text's confidence is 3/5.
    assert confidence == pytest.approx(3 / 5)


# --- synthetic data ----------------------------------------------------------------------


def test_a_written_example_is_its_text_and_located_spans_or_refused_with_the_reason():
    brief = SyntheticBrief(category=TASK.by_name["people"], count=3)
    text, answer = TASK.synthetic_item(
        {
            "text": f"  {TEXT} ",
            "entities": [{"field": "people", "text": "4"}, {"field": "date", "text": "12 May"}],
        },
        brief=brief,
    )
    assert text == TEXT and shown(answer) == [("4", "people"), ("12 May", "date")]
    for item, why in [
        (
            {"text": TEXT, "entities": [{"field": "people", "text": "five"}]},
            "'five' (people) is not in the text",
        ),
        ({"text": TEXT, "entities": [{"field": "date", "text": "12 May"}]}, "holds no value of 'people'"),
        ({"text": TEXT, "entities": [{"field": "venue", "text": "Table"}]}, "unknown field 'venue'"),
        ({"text": TEXT}, 'no "entities" list'),
        ({"text": " ", "entities": []}, "a non-empty text"),
        ("just a text", "a non-empty text"),
    ]:
        with pytest.raises(AnswerError, match=re.escape(why)):
            TASK.synthetic_item(item, brief=brief)


def test_the_writing_prompt_names_the_field_and_varies_the_others_by_call():
    prompts = {
        TASK.synthetic_prompt(SyntheticBrief(category=TASK.by_name["date"], count=4, seed=seed))
        for seed in range(20)
    }
    assert all(
        "Write 4 new, different texts that each hold a value of the field 'date'" in p for p in prompts
    )
    also = {
        re.search(r"Some of them also hold ([^.]*)\.", p).group(1) if "also hold" in p else ""
        for p in prompts
    }
    assert {"", "'people'", "'time'"} <= also
