from __future__ import annotations

import numpy as np

from distillapp.ml import default_base_model, embed_texts

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


def test_same_length_batches_never_pad_and_keep_every_index():
    from distillapp.ml import same_length_batches

    lengths = [5, 3, 5, 9, 3, 5, 5, 3]
    batches = same_length_batches(lengths, 3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(len({lengths[i] for i in batch}) == 1 and len(batch) <= 3 for batch in batches)
    assert [len(b) for b in batches] == [3, 3, 1, 1]  # 3s, then 5s split at the cap, then 9


def test_grouped_predictions_equal_one_text_at_a_time(tmp_path):
    """Grouping by length changes the calls, not the answers (and keeps their order)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distillapp.ml import make_tiny_model
    from tasks.classification.student import predict_proba

    base = make_tiny_model(tmp_path / "base")
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)
    model.save_pretrained(tmp_path / "clf")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "clf")
    texts = [*TEXTS, "Hi", "What is the exchange rate for dollars today?"]
    together, _ = predict_proba(tmp_path / "clf", texts, batch_size=4, max_length=32)
    alone = np.vstack([predict_proba(tmp_path / "clf", [t], max_length=32)[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert predict_proba(tmp_path / "clf", [], max_length=32)[0].shape == (0, 3)
