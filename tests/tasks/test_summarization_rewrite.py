"""The third-person rewrite of a dialogue's kept turns (units.rewrite_turn / rewrite_summary),
against hand-written cases."""

from __future__ import annotations

import pytest

from tasks.summarization.units import join_units, rewrite_summary, rewrite_turn, speakers, split_units

TWO = ["#Person1#", "#Person2#"]


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        ("#Person1#: I want my car back.", "#Person1# wants #Person1#'s car back."),
        ("#Person2#: Is this mine? Give it to me.", "#Person2#: Is this #Person2#'s? Give it to #Person2#."),
        (
            "#Person1#: Can you show me your ticket?",
            "#Person1#: Can #Person2# show #Person1# #Person2#'s ticket?",
        ),
        # DialogSum's spaced apostrophes and the usual ones.
        ("#Person2#: I ' m sure you ' re right.", "#Person2# is sure #Person1# is right."),
        (
            "#Person1#: I've paid and I'll go; I'd stay.",
            "#Person1# has paid and #Person1# will go; #Person1# would stay.",
        ),
        ("#Person1#: I am late and you are early.", "#Person1# is late and #Person2# is early."),
        (
            "#Person1#: We're late, let's go with us.",
            "#Person1# and #Person2# are late, #Person1# and #Person2# will go with #Person1# and #Person2#.",
        ),
        # Openers of each sentence and hedges go; the first letter left is a capital.
        ("#Person2#: Well, yes, it is. Oh, it really is.", "#Person2#: It is. It is."),
        ("#Person1#: OK. Please just sign here.", "#Person1#: Sign here."),
        # A word that contains a pronoun is left alone, and so is a lowercase "i".
        (
            "#Person1#: Iowa is my home, youth is over, i.e. done.",
            "#Person1#: Iowa is #Person1#'s home, youth is over, i.e. done.",
        ),
    ],
)
def test_rewrite_turn(turn, expected):
    assert rewrite_turn(turn, TWO) == expected


def test_rewrite_turn_keeps_what_it_cannot_resolve():
    # Three speakers: "you" could be either of the others, so it stays.
    assert rewrite_turn("Ann: I told you.", ["Ann", "Ben", "Cy"]) == "Ann told you."
    assert rewrite_turn("#Person2#: You can have it.", TWO) == "#Person2#: #Person1# can have it."
    assert rewrite_turn("no speaker here, I think", TWO) == "no speaker here, I think"
    assert rewrite_turn("#Person1#: Yes.", TWO, fillers=True) == "#Person1#: Yes."  # nothing left: kept
    assert rewrite_turn("#Person1#: Well, I see.", TWO, fillers=False) == "#Person1#: Well, #Person1# sees."


def test_rewrite_summary_rewrites_dialogues_only():
    dialogue = "#Person1#: I lost my keys.\n#Person2#: Did you check your bag?\n#Person1#: Yes."
    spans = split_units(dialogue)
    assert speakers(dialogue) == TWO
    assert rewrite_summary(dialogue, spans, [1, 0]) == (
        "#Person1# lost #Person1#'s keys.\n#Person2#: Did #Person1# check #Person1#'s bag?"
    )
    prose = "I lost my keys. You checked your bag. Nobody found them."
    spans = split_units(prose)
    assert (
        rewrite_summary(prose, spans, [0, 1])
        == join_units(prose, spans, [0, 1])
        == ("I lost my keys. You checked your bag.")
    )


def test_a_speaker_named_for_i_or_you_takes_the_verb_that_agrees():
    from tasks.summarization.units import rewrite_turn

    tags = ["Agent", "Customer"]
    assert (
        rewrite_turn("Customer: I think I have lost my card.", tags)
        == "Customer thinks Customer has lost Customer's card."
    )
    assert (
        rewrite_turn("Agent: You are right, you were charged twice.", tags)
        == "Agent: Customer is right, Customer was charged twice."
    )
    assert rewrite_turn("Customer: I don't know.", tags) == "Customer doesn't know."
    # Only known verbs agree: a word after "I" may be an adverb.
    assert rewrite_turn("Customer: I also want a refund.", tags) == "Customer also want a refund."
