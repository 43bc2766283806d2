from __future__ import annotations

import pytest

from tasks.summarization.units import (
    clean_target,
    fit_to_target,
    is_dialogue,
    join_units,
    sentence_spans,
    split_units,
    unit_texts,
    word_count,
)

DIALOGUE = "#Person1#: Hi, Mr. Smith. How are you?\n#Person2#: Fine.\nThanks for asking.\n#Person1#: Good."


def test_a_dialogue_is_cut_into_turns_with_their_continuation_lines():
    assert is_dialogue(DIALOGUE)
    assert unit_texts(DIALOGUE) == [
        "#Person1#: Hi, Mr. Smith. How are you?",
        "#Person2#: Fine.\nThanks for asking.",
        "#Person1#: Good.",
    ]
    spans = split_units(DIALOGUE)
    assert spans[0] == (0, 38)
    assert DIALOGUE[spans[2][0] : spans[2][1]] == "#Person1#: Good."


def test_named_speakers_make_a_dialogue_and_one_speaker_line_does_not():
    chat = "Agent: Hello, how can I help?\nCustomer: My card was charged twice.\nAgent: Sorry about that."
    assert unit_texts(chat) == [
        "Agent: Hello, how can I help?",
        "Customer: My card was charged twice.",
        "Agent: Sorry about that.",
    ]
    note = "Note: the office is closed. We reopen on Monday."
    assert not is_dialogue(note)
    assert unit_texts(note) == ["Note: the office is closed.", "We reopen on Monday."]


def test_sentences_keep_abbreviations_initials_and_decimals_together():
    text = 'Mr. Brown paid $3.50 at 5 p.m. today. "Really?" she asked! J. R. Smith left, e.g. early.  Done'
    assert unit_texts(text) == [
        "Mr. Brown paid $3.50 at 5 p.m. today.",
        '"Really?"',
        "she asked!",
        "J. R. Smith left, e.g. early.",
        "Done",
    ]


def test_blank_lines_end_a_sentence_and_offsets_skip_whitespace():
    text = "  Title line\n\nFirst one. Second one.\n"
    assert sentence_spans(text) == [(2, 12), (14, 24), (25, 36)]
    assert split_units("") == []


def test_fit_to_target_takes_ranked_units_in_document_order():
    units = ["one two three", "four five", "six", "seven eight nine ten"]
    assert fit_to_target(units, [3, 0, 1, 2], {"unit": "sentences", "length": 2}) == [0, 3]
    assert fit_to_target(units, [3, 0, 1, 2], None) == [0, 3]  # default: 2 sentences
    # 6 words: 4 (unit 3) fits, 3 (unit 0) would make 7, 2 (unit 1) makes 6, then none fits.
    assert fit_to_target(units, [3, 0, 1, 2], {"unit": "words", "length": 6}) == [1, 3]
    # Nothing fits within 2 words: the best unit alone.
    assert fit_to_target(units, [3, 2], {"unit": "words", "length": 2}) == [2]
    assert fit_to_target(units, [3, 0], {"unit": "words", "length": 2}) == [3]


def test_targets_are_checked_and_words_counted():
    assert clean_target({"length": "3"}) == {"unit": "sentences", "length": 3}
    with pytest.raises(ValueError):
        clean_target({"unit": "pages", "length": 1})
    with pytest.raises(ValueError):
        clean_target({"unit": "words", "length": 0})
    assert word_count("It's a well-known fact, #Person1#.") == 5


def test_join_units_keeps_turns_on_their_own_lines():
    spans = split_units(DIALOGUE)
    assert join_units(DIALOGUE, spans, [2, 0]) == "#Person1#: Hi, Mr. Smith. How are you?\n#Person1#: Good."
    text = "A b. C d. E f."
    assert join_units(text, split_units(text), [2, 0]) == "A b. E f."
