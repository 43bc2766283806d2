from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tasks.classification.label_quality import SINGLETON_SCORE, label_quality, label_quality_scores
from tests.shared_data import dataset, first_per_label

LABEL_COUNT = 8
PER_LABEL = 25
FLIP_SHARE = 0.10
BOTTOM_SHARE = 0.20  # the share of flipped examples expected there by chance


@pytest.fixture(scope="module")
def noisy():
    """8 Banking77 labels x 25 train texts, 10 % of the labels flipped to another label (fixed seed)."""
    banking77 = dataset("banking77")
    categories = json.loads((banking77 / "categories.json").read_text(encoding="utf-8"))[:LABEL_COUNT]
    pairs = first_per_label(banking77 / "train.csv", categories, PER_LABEL)
    texts = [text for text, _ in pairs]
    labels = [label for _, label in pairs]
    rng = random.Random(0)
    flipped = sorted(rng.sample(range(len(labels)), round(FLIP_SHARE * len(labels))))
    for i in flipped:
        labels[i] = rng.choice([c for c in categories if c != labels[i]])
    return {"texts": texts, "labels": labels, "flipped": flipped}


@pytest.fixture(scope="module")
def scores(noisy) -> np.ndarray:
    # Embeds the texts itself (no embeddings passed): the path the app takes.
    return label_quality_scores(noisy["texts"], noisy["labels"])


@pytest.fixture(scope="module")
def embeddings(noisy) -> np.ndarray:
    from distillapp.ml import embed_texts

    return embed_texts(noisy["texts"])


def test_scores_are_one_per_example_in_unit_interval(noisy, scores):
    assert len(noisy["texts"]) == LABEL_COUNT * PER_LABEL
    assert scores.shape == (len(noisy["texts"]),)
    assert np.all((scores >= 0) & (scores <= 1))


def test_flipped_labels_are_at_the_bottom(noisy, scores):
    bottom = set(np.argsort(scores, kind="stable")[: round(BOTTOM_SHARE * len(scores))].tolist())
    caught = sum(i in bottom for i in noisy["flipped"]) / len(noisy["flipped"])

    # vs 0.2 by chance; 1.0 when written (0.95-1.0 over flip seeds 0-9).
    assert caught >= 0.75
    flipped = np.zeros(len(scores), dtype=bool)
    flipped[noisy["flipped"]] = True
    assert scores[flipped].mean() < scores[~flipped].mean()


def test_label_issues_are_cleanlabs_noise_rate_pruning_of_the_same_probabilities(noisy, scores, embeddings):
    again, issues = label_quality(noisy["texts"], noisy["labels"], embeddings=embeddings)
    np.testing.assert_allclose(again, scores, atol=1e-6)
    assert issues.dtype == bool and issues.shape == scores.shape
    flipped = np.zeros(len(scores), dtype=bool)
    flipped[noisy["flipped"]] = True
    # Most flagged labels are flipped ones, and most flipped ones are flagged (20 of 200 flipped).
    assert (issues & flipped).sum() >= 0.7 * issues.sum()
    assert (issues & flipped).sum() >= 0.7 * flipped.sum()
    # Flagged labels are low-margin ones: each scores below the mean of the labels kept.
    assert scores[issues].max() < scores[~issues].mean()
    _, none_flagged = label_quality(["a", "b", "c"], ["x", "x", "x"], embeddings=np.eye(3))
    assert not none_flagged.any()


def test_given_embeddings_give_the_same_scores(noisy, scores, embeddings):
    again = label_quality_scores(noisy["texts"], noisy["labels"], embeddings=embeddings)

    np.testing.assert_allclose(again, scores, atol=1e-6)


def test_one_class_scores_all_ones():
    texts = ["card has not arrived", "where is my card", "card still missing"]

    scores = label_quality_scores(texts, ["card_arrival"] * 3)

    assert scores.tolist() == [1.0, 1.0, 1.0]
    assert label_quality_scores([], []).shape == (0,)


def test_singleton_and_small_classes_do_not_crash(noisy, embeddings):
    # One extra label with a single example, and one with only 2 (fewer than the 5 folds).
    texts = [*noisy["texts"], "singleton text", "pair text one", "pair text two"]
    labels = [*noisy["labels"], "only_one", "only_two", "only_two"]
    vectors = np.vstack([embeddings, embeddings[:3]])

    scores = label_quality_scores(texts, labels, embeddings=vectors)

    assert scores.shape == (len(texts),)
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[-3] == SINGLETON_SCORE


def test_only_one_class_with_several_examples():
    vectors = np.eye(4, dtype=np.float32)

    scores = label_quality_scores(["a", "b", "c", "d"], ["x", "x", "x", "y"], embeddings=vectors)

    assert scores.tolist() == [1.0, 1.0, 1.0, SINGLETON_SCORE]


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError):
        label_quality_scores(["a", "b"], ["x"])
    with pytest.raises(ValueError):
        label_quality_scores(["a", "b"], ["x", "y"], embeddings=np.zeros((3, 4)))
