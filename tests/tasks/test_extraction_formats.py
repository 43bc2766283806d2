from __future__ import annotations

import json
from itertools import pairwise

import pytest

from tasks.base import Category
from tasks.extraction import ExtractionTask
from tasks.extraction.formats import (
    SpanFormatError,
    fields_in,
    jsonl_record,
    read_conll,
    read_jsonl,
    write_conll,
    write_jsonl,
)
from tests.tasks.extraction_data import restaurant8k, wnut17_lines

TASK = ExtractionTask([Category("date", allows_many=False), Category("people")])


def jsonl(*objects) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects)


def found(row) -> list[tuple[str, str]]:
    return [(row.text[s["start"] : s["end"]], s["field"]) for s in row.spans]


# --- JSONL -------------------------------------------------------------------------------


def test_jsonl_with_spans_in_each_shape_tools_export():
    text = "5 people on Friday"
    rows = read_jsonl(
        jsonl(
            {"text": text, "spans": [{"start": 12, "end": 18, "label": "date"}], "id": 7, "source": "crm"},
            {"text": text, "spans": [{"start": 0, "end": 8, "field": "people", "text": "5 people"}]},
            {"text": text, "spans": [[0, 8, "people"]]},  # spaCy / Prodigy-style triple
            {"text": text, "spans": [{"start": 0, "end": 8, "labels": ["people"]}]},  # Label Studio
            {"text": text, "entities": [{"id": 1, "start_offset": 12, "end_offset": 18, "label": "date"}]},
            {"text": text, "label": [[12, 18, "date"]]},  # doccano's classic export
            {"text": text, "spans": []},  # labelled: no field in the text
            {"text": text},  # unlabelled
        ),
        task=TASK,
    )
    assert [found(r) if r.spans is not None else None for r in rows] == [
        [("Friday", "date")],
        [("5 people", "people")],
        [("5 people", "people")],
        [("5 people", "people")],
        [("Friday", "date")],
        [("Friday", "date")],
        [],
        None,
    ]
    assert rows[0].line == 1 and rows[0].external_id == "7" and rows[0].metadata == {"source": "crm"}
    assert fields_in(rows) == ["date", "people"]


def test_jsonl_with_a_fields_object():
    rows = read_jsonl(
        jsonl(
            {
                "text": "Table for 4 on 12 May, 4 adults",
                "fields": {"date": "12 May", "people": ["4", "4 adults"]},
            },
        ),
        task=TASK,
    )
    assert found(rows[0]) == [("4", "people"), ("12 May", "date"), ("4 adults", "people")]


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"spans": []}), 'no "text"'),
        (
            json.dumps({"text": "on Friday", "fields": {"date": "Monday"}}),
            "'Monday' (date) is not in the text",
        ),
        (json.dumps({"text": "on Friday", "spans": [{"start": 3, "end": 30, "label": "date"}]}), "outside"),
        (json.dumps({"text": "on Friday", "spans": [{"start": 3, "end": 9}]}), 'no "label"'),
        (
            json.dumps({"text": "on Friday", "spans": [{"start": 3, "end": 9, "label": "venue"}]}),
            "unknown field",
        ),
        (
            json.dumps(
                {"text": "on Friday", "spans": [{"start": 3, "end": 9, "label": "date", "text": "Frida"}]}
            ),
            "says 'Frida' but the text there is 'Friday'",
        ),
        (json.dumps({"text": "Fri or Sat", "fields": {"date": ["Fri", "Sat"]}}), "takes one value but has 2"),
        (json.dumps({"text": "on Friday", "label": "Billing"}), "classification"),
    ],
)
def test_jsonl_rejects_the_whole_file_naming_the_line(line, reason):
    good = json.dumps({"text": "5 people", "spans": [[0, 8, "people"]]})
    with pytest.raises(SpanFormatError) as caught:
        read_jsonl(jsonl(good, "", line, good), task=TASK)
    assert caught.value.line == 3
    assert caught.value.errors[0][0] == 3
    assert reason in caught.value.errors[0][1]
    assert str(caught.value).startswith("line 3: ")


def test_jsonl_reports_every_bad_line():
    with pytest.raises(SpanFormatError) as caught:
        read_jsonl(jsonl("{", {"text": "a"}, "[]", "{"))
    assert [line for line, _ in caught.value.errors] == [1, 3, 4]


def test_jsonl_export_imports_again_unchanged():
    text = "Table for 4 on 12 May 👍, 4 of us"
    spans = TASK.validate(
        {"spans": [{"start": 10, "end": 11, "field": "people"}, {"start": 15, "end": 21, "field": "date"}]},
        text=text,
    )["spans"]
    record = jsonl_record(text, spans, categories=TASK.categories, id="a-1", metadata={"shop": "x"})
    assert record["spans"][1] == {"start": 15, "end": 21, "label": "date", "text": "12 May"}
    assert record["fields"] == {"date": "12 May", "people": ["4"]}
    unlabelled = jsonl_record("no answer yet", None)
    rows = read_jsonl("".join(write_jsonl([record, unlabelled])), task=TASK)
    assert (rows[0].text, rows[0].spans, rows[0].external_id, rows[0].metadata) == (
        text,
        spans,
        "a-1",
        {"shop": "x"},
    )
    assert rows[1].spans is None and "spans" not in unlabelled


def test_jsonl_round_trip_on_restaurant8k():
    examples = restaurant8k("train", 800)
    lines = write_jsonl(jsonl_record(text, spans) for text, spans in examples)
    rows = read_jsonl(list(lines))
    assert [(r.text, r.spans) for r in rows] == examples


# --- CoNLL -------------------------------------------------------------------------------


def test_conll_reads_tab_or_space_separated_and_skips_docstart():
    source = "-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter\tB-PER\nBlack\tI-PER\n\t\n"
    rows = read_conll(source)
    assert [(r.line, r.text, found(r)) for r in rows] == [
        (3, "EU rejects", [("EU", "ORG")]),
        (6, "Peter Black", [("Peter Black", "PER")]),
    ]


@pytest.mark.parametrize(
    "line, reason",
    [
        ("Friday", "expected a token and its tag"),
        ("Friday\tDATE", "is not O, B-<field> or I-<field>"),
        ("Friday\tB-", "names no field"),
        ("Friday\tB-venue", "unknown field"),
    ],
)
def test_conll_rejects_the_whole_file_naming_the_line(line, reason):
    source = f"on\tO\nSunday\tB-date\n\nfor\tO\n{line}\n\n5\tB-people\n"
    with pytest.raises(SpanFormatError) as caught:
        read_conll(source, task=TASK)
    assert caught.value.line in (4, 5)
    assert reason in caught.value.errors[0][1]


def test_a_wnut17_file_imports_as_is_and_exports_the_same_lines():
    lines = wnut17_lines("train", 400)
    rows = read_conll(lines)
    assert len(rows) == 400
    assert set(fields_in(rows)) == {"person", "location", "group", "corporation", "product", "creative-work"}
    assert rows[0].text.startswith("@paulwalk It 's the view from where I 'm living")
    assert found(rows[0]) == [("Empire State Building", "location"), ("ESB", "location")]
    exported = "".join(write_conll((r.text, r.spans) for r in rows))
    # Token for token and tag for tag, the file itself (blank lines aside).
    assert [line.rstrip("\n") for line in exported.splitlines() if line.strip()] == [
        line.rstrip("\n") for line in lines if line.strip()
    ]
    again = read_conll(exported)
    assert [(r.text, r.spans) for r in again] == [(r.text, r.spans) for r in rows]


def test_the_wnut17_test_file_imports_whole():
    rows = read_conll(wnut17_lines("test"))
    assert len(rows) == 1287  # the README's sentence count
    assert sum(len(r.spans) for r in rows) == 1079  # the B- tags in the file


def test_conll_export_of_restaurant8k_keeps_every_value():
    examples = [
        (t, s) for t, s in restaurant8k("test", 600) if all(a["end"] <= b["start"] for a, b in pairwise(s))
    ]
    rows = read_conll("".join(write_conll(examples)))
    assert len(rows) == len([1 for t, _ in examples if t.strip()])
    for row, (text, spans) in zip(rows, examples, strict=True):
        assert found(row) == [(" ".join(text[s["start"] : s["end"]].split()), s["field"]) for s in spans]
