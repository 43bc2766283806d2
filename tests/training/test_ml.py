from __future__ import annotations

import numpy as np

from training.ml import default_base_model, embed_texts

TEXTS = [
    "My card has not arrived yet.",
    "Hi",
    "I am still waiting for my new card to be delivered, it has been two weeks.",
    "What is the exchange rate for euros today?",
]


def test_default_base_model_is_the_bundled_local_directory():
    from pathlib import Path

    assert (Path(default_base_model()) / "config.json").is_file()


def test_embeddings_are_float32_rows_of_unit_length():
    vectors = embed_texts(TEXTS)

    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_order_is_kept_whatever_the_batching():
    together = embed_texts(TEXTS, batch_size=2)
    one_by_one = np.stack([embed_texts([text])[0] for text in TEXTS])

    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_same_text_gives_the_same_vector():
    vectors = embed_texts(["the same words", "something else", "the same words"])

    np.testing.assert_array_equal(vectors[0], vectors[2])


def test_empty_input_gives_an_empty_matrix():
    vectors = embed_texts([])

    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_close_meanings_are_closer_than_unrelated_ones():
    card, wait, rate = embed_texts([TEXTS[0], TEXTS[2], TEXTS[3]])

    assert card @ wait > card @ rate + 0.1
