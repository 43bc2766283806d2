from __future__ import annotations

import random

import pytest

from tasks.base import Category
from tasks.extraction import ExtractionTask
from tasks.extraction.measure import REJECT, token_labels
from tests.tasks.extraction_data import restaurant8k

TASK = ExtractionTask([Category("person"), Category("loc"), Category("date")])


def answer(*spans: tuple[int, int, str]) -> dict:
    return {"spans": [{"start": s, "end": e, "field": f} for s, e, f in spans]}


# --- agreement ---------------------------------------------------------------------------

AGREEMENT_TEXTS = ["Alice met Bob", "in Paris today", "nothing here", "Carol called"]
AGREEMENT_PAIRS = [
    (answer((0, 5, "person"), (10, 13, "person")), answer((0, 5, "person"), (10, 13, "loc"))),
    (answer((3, 8, "loc")), answer((3, 8, "loc"))),
    (None, None),  # both reject
    (None, answer((0, 5, "person"))),  # one rejects
]


def test_agreement_against_a_hand_computed_case():
    result = TASK.agreement(AGREEMENT_PAIRS, texts=AGREEMENT_TEXTS)
    # Units (a reject is one unit of its own): first 5 (person 2, loc 1, reject 2),
    # second 5 (person 2, loc 2, reject 1), both 3 (Alice, Paris, the double reject).
    assert result["f1"] == pytest.approx(2 * 3 / 10)
    assert result["per_field"]["person"] == pytest.approx(0.5)
    assert result["per_field"]["loc"] == pytest.approx(2 / 3)
    assert result["per_field"][REJECT] == pytest.approx(2 / 3)
    assert "date" not in result["per_field"]
    assert result["observed"] == pytest.approx(0.5)
    # Tokens: first  person O person | O loc O | R R | R R
    #         second person O loc    | O loc O | R R | person O
    # observed 7/10; chance (2·2 + 3·4 + 1·2 + 4·2) / 100 = 0.26; kappa = 0.44 / 0.74.
    assert result["tokens"] == 10
    assert result["kappa"] == pytest.approx(0.44 / 0.74)
    assert result["pairs"] == 4


def test_agreement_edges():
    assert TASK.agreement([], texts=[])["f1"] is None
    same = [(answer((0, 5, "person")), answer((0, 5, "person")))]
    assert TASK.agreement(same, texts=["Alice"]) == {
        "pairs": 1,
        "f1": 1.0,
        "per_field": {"person": 1.0},
        "observed": 1.0,
        "kappa": 1.0,
        "tokens": 1,
    }
    empty = TASK.agreement([(answer(), answer())], texts=["no fields"])
    assert (empty["f1"], empty["kappa"]) == (1.0, 1.0)


def test_token_labels_mark_overlaps_and_rejects():
    text = "John Smith called"
    both = answer((0, 4, "first"), (0, 10, "name"))
    assert token_labels(text, both) == ["first+name", "name", "O"]
    assert token_labels(text, None) == [REJECT] * 3


# --- metrics -----------------------------------------------------------------------------

METRIC_TEXTS = ["Alice met Bob in Paris on Monday", "See you on Friday"]
GOLD = [
    answer((0, 5, "person"), (10, 13, "person"), (17, 22, "loc")),
    answer((11, 17, "date")),
]
PREDICTED = [
    # right; right boundaries wrong field; same field one character short; spurious.
    answer((0, 5, "person"), (10, 13, "loc"), (17, 21, "loc"), (26, 32, "date")),
    None,  # no prediction: Friday is missed
]


def test_metrics_against_a_hand_computed_case():
    m = TASK.metrics(GOLD, PREDICTED, texts=METRIC_TEXTS)
    # Strict: 1 right of 4 predicted and 4 gold.
    assert m["strict"]["micro"] == pytest.approx(
        {"precision": 0.25, "recall": 0.25, "f1": 0.25, "correct": 1, "predicted": 4, "gold": 4}
    )
    assert m["score"] == pytest.approx(0.25)
    # Partial (overlap, same field): Alice and Paris are right; Bob as loc is not.
    assert m["partial"]["micro"]["precision"] == pytest.approx(0.5)
    assert m["partial"]["micro"]["recall"] == pytest.approx(0.5)
    per_field = {row["field"]: row for row in m["per_field"]}
    # person: gold Alice, Bob; predicted Alice -> P 1, R 1/2, F1 2/3 (strict and partial).
    assert per_field["person"]["strict"]["f1"] == pytest.approx(2 / 3)
    assert per_field["person"]["partial"]["f1"] == pytest.approx(2 / 3)
    assert (per_field["person"]["support"], per_field["person"]["predicted"]) == (2, 1)
    # loc: gold Paris; predicted Bob (spurious) and "Pari" -> strict 0; partial P 1/2, R 1, F1 2/3.
    assert per_field["loc"]["strict"]["f1"] == 0
    assert per_field["loc"]["partial"]["precision"] == pytest.approx(0.5)
    assert per_field["loc"]["partial"]["recall"] == pytest.approx(1.0)
    # date: gold Friday (text 2), predicted Monday (text 1) -> 0.
    assert per_field["date"]["partial"]["f1"] == 0
    assert m["strict"]["macro"]["f1"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert m["partial"]["macro"]["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert (m["examples"], m["exact_match"], m["missing_predictions"]) == (2, 0.0, 1)


def test_field_confusion_with_missed_and_spurious():
    confusion = TASK.metrics(GOLD, PREDICTED, texts=METRIC_TEXTS)["confusion"]
    labels = confusion["labels"]
    assert labels == ["person", "loc", "date", "(none)"]

    def cell(gold: str, predicted: str) -> int:
        return confusion["matrix"][labels.index(gold)][labels.index(predicted)]

    assert cell("person", "person") == 1  # Alice
    assert cell("person", "loc") == 1  # Bob
    assert cell("loc", "loc") == 1  # Paris, one character short
    assert cell("date", "(none)") == 1  # Friday missed
    assert cell("(none)", "date") == 1  # Monday spurious
    assert sum(map(sum, confusion["matrix"])) == 5
    assert (
        confusion["missed"],
        confusion["spurious"],
        confusion["wrong_field"],
        confusion["boundary_errors"],
    ) == (
        1,
        1,
        1,
        1,
    )
    assert confusion["top_confusions"][0]["count"] == 1


def test_an_exact_prediction_after_an_overlapping_one_still_counts():
    # nervaluate matches in prediction order: "Pari" would claim Paris and leave the
    # exact "Paris" spurious unless exact matches are offered first.
    m = TASK.metrics(
        [answer((17, 22, "loc"))], [answer((17, 21, "loc"), (17, 22, "loc"))], texts=METRIC_TEXTS[:1]
    )
    assert m["strict"]["micro"]["correct"] == 1
    assert m["score"] == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_strict_micro_f1_is_the_span_set_f1_on_restaurant8k():
    rng = random.Random(0)
    examples = restaurant8k("test", 400)
    gold, predicted = [], []
    for text, spans in examples:
        noisy = []
        for s in spans:
            roll = rng.random()
            if roll < 0.15:
                continue  # missed
            if roll < 0.25 and s["end"] < len(text):
                s = {**s, "end": s["end"] + 1}  # boundary off by one
            elif roll < 0.3:
                s = {**s, "field": "people" if s["field"] != "people" else "time"}
            noisy.append(s)
        gold.append({"spans": spans})
        predicted.append({"spans": sorted(noisy, key=lambda s: (s["start"], s["end"], s["field"]))})
    task = ExtractionTask([Category(n) for n in ("people", "date", "time", "first_name", "last_name")])
    m = task.metrics(gold, predicted, texts=[t for t, _ in examples])
    keys = lambda a: {(s["start"], s["end"], s["field"]) for s in a["spans"]}  # noqa: E731
    common = sum(len(keys(g) & keys(p)) for g, p in zip(gold, predicted, strict=True))
    total = sum(len(keys(g)) + len(keys(p)) for g, p in zip(gold, predicted, strict=True))
    assert m["score"] == pytest.approx(2 * common / total)
    assert 0.6 < m["score"] < 0.9
    assert m["partial"]["micro"]["f1"] > m["score"]


def test_rejected_gold_items_are_left_out_and_empty_sets_are_right():
    m = TASK.metrics([None, answer()], [answer((0, 5, "person")), answer()], texts=["Alice", "nothing"])
    assert (m["examples"], m["exact_match"]) == (1, 1.0)
    assert TASK.metrics([None], [None], texts=["x"]) == {"examples": 0, "score": None}


def test_confidences_give_the_coverage_sweep_of_wholly_right_texts():
    texts = ["Alice", "Bob", "Carol", "Dave"]
    gold = [
        answer((0, 5, "person")),
        answer((0, 3, "person")),
        answer((0, 5, "person")),
        answer((0, 4, "person")),
    ]
    predicted = [answer((0, 5, "person")), answer((0, 3, "person")), answer((0, 5, "loc")), None]
    m = TASK.metrics(gold, predicted, texts=texts, confidences=[0.95, 0.9, 0.4, None])
    assert m["exact_match"] == pytest.approx(0.5)
    assert m["exact_match_interval"][0] < 0.5 < m["exact_match_interval"][1]
    assert m["with_confidence"] == 3
    by_threshold = {row["threshold"]: row for row in m["coverage"]}
    assert (by_threshold[0.0]["answered"], by_threshold[0.0]["correct"]) == (3, 2)
    assert (by_threshold[0.5]["answered"], by_threshold[0.5]["correct"]) == (2, 2)
