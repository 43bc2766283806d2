from __future__ import annotations

from itertools import pairwise

import pytest

from tasks.base import AnswerError, Category
from tasks.extraction.spans import (
    ValueNotInText,
    conll_to_example,
    example_to_conll,
    fields_to_spans,
    locate,
    normalise_spans,
    snap_to_words,
    spans_to_fields,
)
from tests.tasks.extraction_data import restaurant8k


def values(text: str, places: list[tuple[int, int]]) -> list[str]:
    return [text[s:e] for s, e in places]


# --- locate ------------------------------------------------------------------------------


def test_repeated_values_resolve_in_order():
    text = "Table for 4 at 4pm, then 4 more at 4"
    places = locate(text, ["4", "4", "4"])
    assert places == [(10, 11), (25, 26), (35, 36)]  # "4pm" is not the word "4"


def test_a_value_inside_a_longer_word_is_passed_over_for_the_whole_word():
    assert locate("for 14 people at 4", ["4"]) == [(17, 18)]
    # ...but found inside a word when that is the only place it occurs.
    assert locate("booked for 13:00pm", ["13:00"]) == [(11, 16)]


def test_more_mentions_than_occurrences_reuse_the_last():
    assert locate("dinner for 4", ["4", "4"]) == [(11, 12), (11, 12)]


def test_case_sensitive_first_then_any_case():
    text = "may I book May 12? may"
    assert locate(text, ["May 12"]) == [(11, 17)]
    assert locate(text, ["May"]) == [(11, 14)]  # the exact case wins over the earlier "may"
    assert values(text, locate(text, ["MAY 12"])) == ["May 12"]


def test_whitespace_in_a_value_matches_any_whitespace_in_the_text():
    text = "Invoice date:\n12\tMay  2024"
    assert values(text, locate(text, [" 12 May 2024 "])) == ["12\tMay  2024"]


def test_a_value_not_in_the_text_raises_with_the_value():
    with pytest.raises(ValueNotInText) as caught:
        locate("Table for four", ["4"], ["people"])
    assert caught.value.value == "4"
    assert "'4' (people) is not in the text" in str(caught.value)
    with pytest.raises(AnswerError):
        locate("text", ["  "])


def test_unicode_offsets_are_code_points_with_emoji_and_combining_accents():
    text = "🎉 Party at Café 🍕 for 4 people 👨‍👩‍👧"
    assert values(text, locate(text, ["Café", "4 people"])) == ["Café", "4 people"]
    assert locate(text, ["Café"]) == [(text.index("Café"), text.index("Café") + 4)]
    decomposed = "dinner at cafe\u0301 Rene\u0301e"  # "e" + combining acute
    (start, end), (start2, end2) = locate(decomposed, ["café", "Renée"])  # typed precomposed (NFC)
    assert decomposed[start:end] == "cafe\u0301"
    assert decomposed[start2:end2] == "Rene\u0301e"
    # A bare "cafe" is not the decomposed "café" on word boundaries, but is found inside it.
    assert locate(decomposed, ["Rene"]) == [(start2, start2 + 4)]


def test_overlapping_values_of_different_fields():
    text = "Book for John Smith"
    spans = fields_to_spans(text, {"name": "John Smith", "first_name": "John"})
    assert spans == [
        {"start": 9, "end": 13, "field": "first_name"},
        {"start": 9, "end": 19, "field": "name"},
    ]


# --- normal form -------------------------------------------------------------------------


def test_normalise_trims_sorts_and_drops_repeats():
    text = "Friday at  8pm "
    spans = normalise_spans(
        text,
        [
            {"start": 9, "end": 15, "field": "time"},
            {"start": 0, "end": 7, "field": "date"},
            {"start": 0, "end": 6, "field": "date"},
            {"start": 0, "end": 6, "field": "day"},
        ],
    )
    assert spans == [
        {"start": 0, "end": 6, "field": "date"},
        {"start": 0, "end": 6, "field": "day"},
        {"start": 11, "end": 14, "field": "time"},
    ]


@pytest.mark.parametrize(
    "span, message",
    [
        ({"start": 0, "end": 99, "field": "x"}, "outside the text of 9 characters"),
        ({"start": -1, "end": 2, "field": "x"}, "outside the text"),
        ({"start": 3, "end": 3, "field": "x"}, "is empty: start must be below end"),
        ({"start": 4, "end": 2, "field": "x"}, "start must be below end"),
        ({"start": 0, "end": 2.0, "field": "x"}, "whole numbers"),
        ({"start": True, "end": 2, "field": "x"}, "whole numbers"),
        ({"start": 0, "end": 2, "field": ""}, "field must be"),
        ({"start": 3, "end": 5, "field": "x"}, "only whitespace"),
    ],
)
def test_normalise_rejects_what_is_not_a_span_of_the_text(span, message):
    with pytest.raises(AnswerError, match=message):
        normalise_spans("ab     cd", [span])


# --- snapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start, end, expected",
    [
        (15, 17, "Smith"),  # inside a word
        (11, 16, "John Smith"),  # from inside one word into another
        (8, 21, "John Smith"),  # surrounding spaces trimmed
        (10, 10, ""),  # an empty selection stays empty
        (19, 21, ""),  # only whitespace
        (24, 26, "13"),  # a whole word: ":" is not part of it
        (25, 28, "13:00pm"),  # across ":" into the next word: both words, whole
        (28, 25, "13:00pm"),  # a backwards selection
    ],
)
def test_snap_to_words(start, end, expected):
    text = "Book for John Smith  at 13:00pm."
    s, e = snap_to_words(text, start, end)
    assert text[s:e] == expected


def test_snap_never_splits_an_accent_or_an_emoji():
    text = "cafe\u0301 👨‍👩‍👧 ok"
    s, e = snap_to_words(text, 0, 4)  # stops before the combining accent
    assert text[s:e] == "cafe\u0301"
    family = text.index("👨")
    s, e = snap_to_words(text, family, family + 1)  # one person of a ZWJ family
    assert text[s:e] == "👨‍👩‍👧"


# --- fields objects ----------------------------------------------------------------------


def test_fields_to_spans_and_back():
    text = "Table for 4 on 12 May, and 4 more on 13 May"
    fields = {"date": ["12 May", "13 May"], "people": ["4", "4"], "name": None, "time": ""}
    spans = fields_to_spans(text, fields)
    assert [(text[s["start"] : s["end"]], s["field"], s["start"]) for s in spans] == [
        ("4", "people", 10),
        ("12 May", "date", 15),
        ("4", "people", 27),
        ("13 May", "date", 37),
    ]
    categories = [Category("date"), Category("people"), Category("name", allows_many=False)]
    assert spans_to_fields(text, spans, categories) == {
        "date": ["12 May", "13 May"],
        "people": ["4", "4"],
        "name": None,
    }
    assert spans_to_fields(text, spans) == {"people": ["4", "4"], "date": ["12 May", "13 May"]}
    assert fields_to_spans(text, spans_to_fields(text, spans, categories)) == spans


def test_fields_with_a_value_not_in_the_text_raise_with_it():
    with pytest.raises(ValueNotInText, match="'14 May' \\(date\\)"):
        fields_to_spans("Table on 12 May", {"date": "14 May"})
    with pytest.raises(AnswerError, match="must be a string"):
        fields_to_spans("Table for 4", {"people": 4})


# --- BIO ---------------------------------------------------------------------------------


def test_conll_to_example_joins_tokens_and_reads_tags():
    text, spans = conll_to_example(
        ["Empire", "State", "Building", "=", "ESB", "."],
        ["B-location", "I-location", "I-location", "O", "B-location", "O"],
    )
    assert text == "Empire State Building = ESB ."
    assert [(text[s["start"] : s["end"]], s["field"]) for s in spans] == [
        ("Empire State Building", "location"),
        ("ESB", "location"),
    ]


def test_conll_to_example_tolerates_tagging_slips():
    tokens = ["a", "b", "c", "d", "e", "f", "g"]
    tags = ["I-x", "I-x", "I-y", "O", "I-x", "B-x", "S-z"]
    text, spans = conll_to_example(tokens, tags)
    assert [(text[s["start"] : s["end"]], s["field"]) for s in spans] == [
        ("a b", "x"),  # I- without B- starts a span
        ("c", "y"),  # I- of another field starts a new one
        ("e", "x"),
        ("f", "x"),  # B- after I- of the same field starts a new one
        ("g", "z"),
    ]


def test_example_to_conll_splits_tokens_at_span_edges_and_keeps_the_first_of_overlaps():
    text = "Book  13:00pm. for\nJohn Smith"
    spans = normalise_spans(
        text,
        [
            {"start": 6, "end": 11, "field": "time"},
            {"start": 19, "end": 29, "field": "name"},
            {"start": 19, "end": 23, "field": "first_name"},
        ],
    )
    assert example_to_conll(text, spans) == [
        ("Book", "O"),
        ("13:00", "B-time"),
        ("pm.", "O"),
        ("for", "O"),
        ("John", "B-name"),
        ("Smith", "I-name"),
    ]


def test_bio_round_trip_on_restaurant8k():
    rows = restaurant8k("test", 1500)
    exact = 0
    for text, spans in rows:
        new_text, new_spans = conll_to_example(*zip(*example_to_conll(text, spans), strict=True))
        overlapping = any(a["end"] > b["start"] for a, b in pairwise(spans))
        if overlapping:  # BIO keeps one of two overlapping spans
            assert len(new_spans) < len(spans)
            continue
        # Every value comes back exactly (whitespace inside a value collapses to one space).
        assert [(new_text[s["start"] : s["end"]], s["field"]) for s in new_spans] == [
            (" ".join(text[s["start"] : s["end"]].split()), s["field"]) for s in spans
        ]
        if new_text == text:
            assert new_spans == spans
            exact += 1
    # Most texts are single-spaced with spans on word edges: those come back unchanged.
    assert exact > 0.7 * len(rows)


RECEIPT = "Burger 12.50 Subtotal 12.50 Total 12.50"


def test_a_value_named_fewer_times_than_it_occurs_goes_where_its_fields_reviewed_words_precede_it():
    from tasks.extraction.spans import locate, placement_context

    rules = []
    assert locate(RECEIPT, ["12.50"], ["total"], rules=rules) == [(7, 12)]  # nothing learnt: the first
    assert rules == ["first"]
    context = placement_context(
        [("Fries 3.00 Total 3.00", {"spans": [{"start": 17, "end": 21, "field": "total"}]})]
    )
    rules = []
    assert locate(RECEIPT, ["12.50"], ["total"], context=context, rules=rules) == [(34, 39)]
    assert rules == ["context"]
    # Two fields naming the value twice: the total by its words, the price at the first free one.
    assert locate(RECEIPT, ["12.50", "12.50"], ["total", "price"], context=context) == [(34, 39), (7, 12)]
    # Named as often as it occurs: the n-th mention is the n-th occurrence, as before.
    assert locate("4 and 4", ["4", "4"], ["people", "people"], context=context) == [(0, 1), (6, 7)]
