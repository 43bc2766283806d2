from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.summarization.offline import MARGIN_SCALE, CentroidTeacher

VECTORS = {"Cats purr.": [1.0, 0.0], "Dogs bark.": [0.0, 1.0], "Cats sleep.": [0.8, 0.6]}


def fake_embed(texts):
    return np.array([VECTORS[t] for t in texts], dtype=np.float32)


def sigmoid(x):
    return 1 / (1 + math.exp(-x / MARGIN_SCALE))


def test_the_most_central_units_are_kept_in_document_order_with_their_margin():
    # Centroid (0.6, 0.533) normalised: (0.7474, 0.6644); similarities 0.7474, 0.6644, 0.9966.
    text = "Cats purr. Dogs bark. Cats sleep."
    one = CentroidTeacher({"unit": "sentences", "length": 1}, embed=fake_embed)
    two = CentroidTeacher({"unit": "sentences", "length": 2}, embed=fake_embed)
    [(answer, confidence)] = one.predict([text])
    assert answer == {"summary": "Cats sleep."}
    assert confidence == pytest.approx(sigmoid(0.99655 - 0.74741), abs=1e-4)
    [(answer, confidence)] = two.predict([text])
    assert answer == {"summary": "Cats purr. Cats sleep."}
    assert confidence == pytest.approx(sigmoid(0.74741 - 0.66436), abs=1e-4)
    # Every unit kept: sure; no unit at all: not.
    three = CentroidTeacher({"unit": "sentences", "length": 5}, embed=fake_embed)
    assert three.predict([text, "  "]) == [({"summary": text}, 1.0), ({"summary": ""}, 0.0)]
    assert one.confidence_method == "margin"


def test_a_word_target_and_the_bundled_encoder_on_a_dialogue():
    dialogue = (
        "#Person1#: I'd like to book a table for two tonight.\n"
        "#Person2#: Sure, what time would you like the table?\n"
        "#Person1#: Seven o'clock, for two people, please.\n"
        "#Person2#: Great, your table for two is booked at seven."
    )
    teacher = CentroidTeacher({"unit": "words", "length": 12})
    [(answer, confidence)] = teacher.predict([dialogue])
    lines = answer["summary"].split("\n")
    assert len(lines) == 1 and lines[0] in dialogue.split("\n")
    assert 0.0 <= confidence <= 1.0
