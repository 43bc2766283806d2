from __future__ import annotations

import pytest

from tasks.summarization import measure
from tasks.summarization.units import split_units


def test_rouge_is_the_best_over_references_and_against_the_first():
    # Tokens (stemmed): candidate the cat ran home; first reference the cat are run home,
    # second a cat ran home ("ran" does not stem to "run").
    scores = measure.rouge(["the cats are running home", "a cat ran home"], "The cats ran home")
    assert scores["rouge1_first"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)  # 3 of 4, 3 of 5
    assert scores["rouge1"] == pytest.approx(0.75)  # 3 of 4 both ways
    assert scores["rouge2_first"] == pytest.approx(2 / 7)  # the-cat: P 1/3, R 1/4
    assert scores["rouge2"] == pytest.approx(2 / 3)  # cat-ran, ran-home
    assert scores["rougeL"] == pytest.approx(0.75)
    assert measure.rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    with pytest.raises(ValueError):
        measure.rouge([], "x")


def test_mean_pairwise_rouge_l():
    assert measure.mean_pairwise_rouge_l(["a b", "a b", "c d", None]) == pytest.approx(1 / 3)
    assert measure.mean_pairwise_rouge_l(["a b", None]) is None


DIALOGUE = "#Person1#: I want to buy a red car.\n#Person2#: What colour?\n#Person1#: Red. It costs too much money though."
REFERENCE = "#Person1# wants to buy a red car but it costs too much."


def test_greedy_oracle_adds_units_while_rouge_1_plus_2_rises():
    units = split_units(DIALOGUE)
    # Turn 0 alone: R1 F 14/20 + R2 F 10/18 = 1.26 beats turn 2 (0.6 + 0.33); adding turn 2
    # gives 22/28 + 16/25 = 1.43 (bigrams within turns: 7 + 7); adding turn 1 then lowers it.
    assert measure.oracle_units(DIALOGUE, units, REFERENCE) == [0, 2]
    assert measure.oracle_units(DIALOGUE, units, REFERENCE, max_units=1) == [0]
    assert measure.oracle_units(DIALOGUE, units, "") == []
    # The oracle's own count agrees with rouge_score on the joined units.
    joined = DIALOGUE[units[0][0] : units[0][1]] + " " + DIALOGUE[units[2][0] : units[2][1]]
    assert measure.rouge([REFERENCE], joined)["rouge1"] == pytest.approx(22 / 28)


def test_unsupported_finds_numbers_money_dates_and_names_the_source_lacks():
    source = "mr smith paid 5 dollars on the 5th of May to John. #Person1# owes 1200 to alice at 4:30"
    summary = (
        "Mr. Smith paid $5 on May 5th to John Brown. He met Alice at 4:30 in Paris. "
        "#Person1# owes 1,200 and 7 euros on 3/4/2024, on Friday."
    )

    def item(text, kind):
        start = summary.index(text)
        return {"start": start, "end": start + len(text), "kind": kind, "text": text}

    assert measure.unsupported(summary, source) == [
        item("John Brown", "name"),
        item("Paris", "name"),
        item("7 euros", "money"),
        item("3/4/2024", "date"),
        item("Friday", "date"),
    ]
    # Literal on purpose: "five" does not support "5"; a title is not a name.
    assert measure.unsupported("They met Mr. Jones at 5.", "they met jones at five") == [
        {"start": 22, "end": 23, "kind": "number", "text": "5"}
    ]
    assert measure.unsupported("Paris is big.", "") == []  # a sentence opener is not a name


def test_length_in_words_and_sentences():
    assert measure.length("Mr. Brown left. He came back!", "words") == 6
    assert measure.length("Mr. Brown left. He came back!", "sentences") == 2
    with pytest.raises(ValueError):
        measure.length("x", "pages")


REFERENCES = [["a cat ran home"], ["Bob paid 5 dollars"], ["nothing"]]
PREDICTED = ["The cats ran home", "Bob paid 7 dollars", None]
TEXTS = ["the cats ran home", "Bob paid 5 dollars.", "nothing"]


def test_metrics_against_a_hand_computed_case():
    result = measure.metrics(REFERENCES, PREDICTED, texts=TEXTS, target={"unit": "words", "length": 10})
    assert (result["examples"], result["predicted"], result["missing"]) == (3, 2, 1)
    # ROUGE-L: 3 of 4 both ways for each predicted item; the missing one counts 0.
    assert result["score"] == pytest.approx((0.75 + 0.75 + 0) / 3)
    assert result["rougeL"] == result["score"]
    assert result["rouge2"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert result["rouge1_first"] == pytest.approx(0.5)
    # "7 dollars" is not in its source: one of two predicted summaries, one item.
    assert result["unsupported_rate"] == pytest.approx(0.5)
    assert result["unsupported_per_summary"] == pytest.approx(0.5)
    assert result["length_mean"] == 4
    assert result["length_within_50"] == 0.0  # 4 words is 60 % short of 10
    assert result["embedding_similarity"] is None
    sentences = measure.metrics(REFERENCES, PREDICTED, texts=TEXTS)
    assert sentences["target"] == {"unit": "sentences", "length": 2}
    assert sentences["length_within_50"] == 1.0  # one sentence each, 2 +- 1


def test_metrics_embedding_similarity_uses_the_bundled_encoder():
    result = measure.metrics([["a cat ran home", "x"]], ["a cat ran home"], texts=["t"], embeddings=True)
    assert result["embedding_similarity"] == pytest.approx(1.0, abs=1e-5)


def test_agreement_rouge_between_reviewers_and_ordinal_alpha():
    pairs = [
        ({"summary": "a b c", "rating": 5}, {"summary": "a b d", "rating": 4}),
        ({"summary": "x", "rating": 1}, {"summary": "x", "rating": 2}),
        (None, {"summary": "x"}),
    ]
    result = measure.agreement(pairs)
    assert result["summaries"] == 2
    assert result["rougeL"] == pytest.approx((2 / 3 + 1) / 2)
    # Values 1, 2, 4, 5 once each. Ordinal distances: neighbours 1, (1,4) 4, (1,5) 9,
    # (2,4) 1, (2,5) 4: D_o = (2·1 + 2·1) / 4 = 1, D_e = 2·20 / (4·3) = 10/3, alpha = 0.7.
    assert result["alpha"] == pytest.approx(0.7)
    same = [({"summary": "a", "rating": 3}, {"summary": "a", "rating": 3})] * 2
    assert measure.agreement(same)["alpha"] is None  # no variation
    assert measure.agreement([])["rougeL"] is None


def test_the_cached_tokenizer_scores_as_rouge_scores_own():
    from rouge_score import rouge_scorer

    own = rouge_scorer.RougeScorer(list(measure.MEASURES), use_stemmer=True)
    reference = "#Person1# is buying running shoes; the shop's prices were 20% higher."
    candidate = "#Person2#: These running shoes cost $120, the prices are higher now!"
    expected = own.score(reference, candidate)
    scores = measure.rouge([reference], candidate)
    assert scores == pytest.approx(
        {
            **{m: expected[m].fmeasure for m in measure.MEASURES},
            **{f"{m}_first": expected[m].fmeasure for m in measure.MEASURES},
        }
    )
    assert measure.tokens("Running shoes!") == ["run", "shoe"]


def test_a_calibration_map_turns_a_confidence_into_how_often_that_sure_was_right():
    confidences = [i / 40 for i in range(40)]
    right = [c > 0.5 for c in confidences]  # right exactly above 0.5
    mapping = measure.calibration_map(confidences, right)
    assert measure.calibrated([0.1, 0.9], mapping) == [0.0, 1.0]
    assert measure.calibrated([0.3], None) == [0.3]  # no map: unchanged
    assert measure.calibration_map(confidences[:5], right[:5]) is None  # too few
    assert measure.calibration_map(confidences, [True] * 40) is None  # one-sided


def test_agreement_gives_the_mean_rating_beside_alpha():
    pairs = [
        ({"summary": "a b", "rating": 4}, {"summary": "a b", "rating": 5}),
        ({"summary": "c", "rating": 2}, None),
    ]
    assert measure.agreement(pairs)["mean_rating"] == pytest.approx(4.5)
