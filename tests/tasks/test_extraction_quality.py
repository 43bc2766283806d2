"""Span label quality: BIO tags per word, out-of-sample word probabilities, a score per text."""

from __future__ import annotations

import numpy as np
import pytest

from distillapp import ml
from tasks.extraction import span_quality
from tasks.extraction.spans import whitespace_tokens

NAMES = ["Ana", "Ben", "Carla", "Dev", "Eva", "Femi", "Gus", "Hana", "Ivo", "Jun"]
MEALS = ["lunch", "dinner", "brunch"]
WRONG = 17  # the text whose answer a test spoils


def bookings() -> tuple[list[str], list[dict]]:
    """36 consistent bookings: "<name> wants a table for <n> at <h>pm for <meal>"."""
    texts, answers = [], []
    for i in range(36):
        name, people, time = NAMES[i % 10], str(2 + i % 7), f"{1 + i % 11}pm"
        text = f"{name} wants a table for {people} at {time} for {MEALS[i % 3]}"
        spans = [
            {"start": 0, "end": len(name), "field": "name"},
            {
                "start": text.index(f" {people} at") + 1,
                "end": text.index(f" {people} at") + 1 + len(people),
                "field": "people",
            },
            {"start": text.index(time), "end": text.index(time) + len(time), "field": "time"},
        ]
        texts.append(text)
        answers.append({"spans": sorted(spans, key=lambda s: s["start"])})
    return texts, answers


def spoiled(answers: list[dict], how: str) -> list[dict]:
    answers = [dict(a) for a in answers]
    name, people, time = (dict(s) for s in answers[WRONG]["spans"])
    if how == "wrong field":
        people["field"], time["field"] = "time", "people"
        answers[WRONG] = {"spans": [name, people, time]}
    else:  # "missed": the time is not marked
        answers[WRONG] = {"spans": [name, people]}
    return answers


@pytest.fixture(scope="module")
def vectors() -> list[np.ndarray]:
    """The bundled MiniLM's word vectors of the bookings (embedded once for the module)."""
    texts, _ = bookings()
    return ml.embed_words(texts, [whitespace_tokens(t) for t in texts], layer=span_quality.LAYER)


def test_word_tags_mark_first_and_inner_words_of_each_span():
    text = "Table for 4 on 12 May, name Ana Lopez"
    words = whitespace_tokens(text)
    spans = [
        {"start": 10, "end": 11, "field": "people"},
        {"start": 15, "end": 21, "field": "date"},  # "12 May" of "12 May,": the word overlaps
        {"start": 28, "end": 37, "field": "name"},
        {"start": 32, "end": 37, "field": "last"},  # overlaps "name": the first span wins
    ]

    tags = span_quality.word_tags(text, spans, words)

    assert [text[s:e] for s, e in words] == ["Table", "for", "4", "on", "12", "May,", "name", "Ana", "Lopez"]
    assert tags == ["O", "O", "B-people", "O", "B-date", "I-date", "O", "B-name", "I-name"]


@pytest.mark.parametrize("how", ["wrong field", "missed"])
def test_the_spoiled_text_scores_lowest_and_is_flagged(how):
    # Embeds the texts itself (no vectors given): the path the quality run takes.
    texts, answers = bookings()

    result = span_quality.span_quality(texts, spoiled(answers, how))

    scores = result.text_scores
    assert scores.shape == (len(texts),) and np.all((scores >= 0) & (scores <= 1))
    assert int(np.argmin(scores)) == WRONG
    assert scores[WRONG] < 0.5 <= np.delete(scores, WRONG).min()
    # The word it is about scores lowest among the text's words: the time "<h>pm".
    words = [texts[WRONG][s:e] for s, e in result.words[WRONG]]
    assert words[int(np.argmin(result.word_scores[WRONG]))] in {"7pm", "5"}


def test_consistent_answers_score_high(vectors):
    texts, answers = bookings()

    scores = span_quality.label_quality_scores(texts, answers, word_vectors=vectors)

    assert scores.min() >= 0.5


def test_given_vectors_give_the_same_scores(vectors):
    texts, answers = bookings()
    answers = spoiled(answers, "missed")

    again = span_quality.label_quality_scores(texts, answers, word_vectors=vectors)

    np.testing.assert_allclose(again, span_quality.label_quality_scores(texts, answers), atol=1e-6)


def test_a_tag_in_one_text_only_is_neutral(vectors):
    texts, answers = bookings()
    # Only this text has a two-word time ("7pm for"): its I-time cannot be predicted out of sample.
    name, people, time = answers[WRONG]["spans"]
    answers[WRONG] = {"spans": [name, people, {**time, "end": time["end"] + len(" for")}]}

    result = span_quality.span_quality(texts, answers, word_vectors=vectors)

    tags = result.tags[WRONG]
    assert tags.count("I-time") == 1
    assert result.word_scores[WRONG][tags.index("I-time")] == span_quality.NEUTRAL_SCORE
    assert result.text_scores[WRONG] <= span_quality.NEUTRAL_SCORE


def test_a_texts_words_are_never_scored_by_a_model_that_saw_them():
    # Each text's words share one feature of their own and one tag: a model that saw any word
    # of the text (folds by word) would know the tag; one that saw none knows only the prior.
    groups = np.repeat(np.arange(20), 3)
    features = np.eye(20, dtype=np.float32)[groups]
    labels = groups % 2

    probs = span_quality.out_of_sample_word_probs(features, labels, groups, folds=5, seed=0)

    assert probs.shape == (60, 2)
    assert probs.max() < 0.6


def test_nothing_to_compare_scores_all_ones():
    texts = ["no fields here", "none here either", "still nothing"]

    assert span_quality.label_quality_scores(texts, [{"spans": []}] * 3).tolist() == [1.0, 1.0, 1.0]
    assert span_quality.label_quality_scores([], []).shape == (0,)
    # An empty text has no words: nothing to score.
    assert span_quality.label_quality_scores([""], [{"spans": []}]).tolist() == [1.0]


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError):
        span_quality.label_quality_scores(["a b"], [])
    with pytest.raises(ValueError):
        span_quality.label_quality_scores(["a b"], [{"spans": []}], word_vectors=[np.zeros((3, 4))])


def test_the_task_types_score_through_the_seam():
    from tasks.base import Category
    from tasks.classification.task import ClassificationTask
    from tasks.extraction.task import ExtractionTask

    extraction = ExtractionTask([Category("time"), Category("people"), Category("name")])
    texts, answers = bookings()

    scores = extraction.label_quality_scores(texts, spoiled(answers, "wrong field"))

    assert extraction.scores_label_errors and ClassificationTask.scores_label_errors
    assert int(np.argmin(scores)) == WRONG
    # Both prune what the quality run flags; extraction flags texts below FLAGGED_BELOW.
    assert extraction.handles_label_noise and ClassificationTask.handles_label_noise
    flagged_scores, flags = extraction.label_quality(texts, spoiled(answers, "wrong field"))
    assert flags.tolist() == (flagged_scores < span_quality.FLAGGED_BELOW).tolist()


def test_embed_words_reads_long_texts_in_windows(tmp_path):
    tiny = ml.make_tiny_model(tmp_path / "tiny")
    long_text = " ".join(f"word{i}" for i in range(60))
    texts = [long_text, "Table for 4", ""]
    words = [whitespace_tokens(t) for t in texts]

    vectors = ml.embed_words(texts, words, model_name=tiny, max_length=16)

    assert [v.shape for v in vectors] == [(60, 32), (3, 32), (0, 32)]
    # Every word of the long text got a vector, not only those of its first window.
    assert np.all(np.abs(vectors[0]).sum(axis=1) > 0)
    # A word's vector is its FIRST sub-token's: "Table" and "table" are one token here.
    again = ml.embed_words(
        ["table for 4"], [whitespace_tokens("table for 4")], model_name=tiny, max_length=16
    )
    np.testing.assert_allclose(again[0], vectors[1], atol=1e-5)


def test_the_parts_to_mask_are_the_words_of_the_wrong_spans():
    """Noise handling "mask": the quality run gives each text's flagged words, and the words of
    a missed time are among the spoiled text's, while a clean text has few or none."""
    from tasks.base import Category
    from tasks.classification.task import ClassificationTask
    from tasks.extraction.task import ExtractionTask

    extraction = ExtractionTask([Category("time"), Category("people"), Category("name")])
    texts, answers = bookings()
    wrong = spoiled(answers, "missed")

    scores, flags, parts = extraction.label_quality_parts(texts, wrong)

    assert extraction.masks_label_noise and not ClassificationTask.masks_label_noise
    assert flags.tolist() == (scores < span_quality.FLAGGED_BELOW).tolist()
    time = next(s for s in answers[WRONG]["spans"] if s["field"] == "time")
    assert [time["start"], time["end"]] in parts[WRONG]
    # Every part is a whole word of its text, and the spoiled text holds the most of them.
    for text, text_parts in zip(texts, parts, strict=True):
        assert all([s, e] in [list(w) for w in whitespace_tokens(text)] for s, e in text_parts)
    assert len(parts[WRONG]) == max(len(p) for p in parts)
