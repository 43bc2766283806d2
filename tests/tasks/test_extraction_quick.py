"""The quick extraction student: frozen word vectors + a logistic-regression head over BIO tags."""

from __future__ import annotations

import pytest

from distillapp import embeddings, ml
from tasks.extraction import quick
from tasks.extraction.measure import entity_scores
from tasks.extraction.spans import span_key
from tests.tasks.extraction_data import restaurant8k

FIELDS = ["date", "time", "people", "first_name", "last_name"]


# Read when a test asks (a fresh clone has no ../shared: the tests skip, collection does not).
@pytest.fixture(scope="module")
def train_rows() -> list:
    return [(text, {"spans": spans}) for text, spans in restaurant8k("train", 80)]


@pytest.fixture(scope="module")
def held_out() -> list:
    return [(text, {"spans": spans}) for text, spans in restaurant8k("test", 40)]


HP = ml.Hyperparameters(max_length=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_rows, held_out):
    out = tmp_path_factory.mktemp("xquick")
    cache = out / "cache"
    result = quick.train(
        texts=[t for t, _ in train_rows],
        answers=[a for _, a in train_rows],
        names=FIELDS,
        base_model=ml.default_base_model(),
        output_dir=out / "model",
        hyperparameters=HP,
        validation=([t for t, _ in held_out], [a for _, a in held_out]),
        embedding_cache_dir=cache,
    )
    return out / "model", cache, result


def test_it_learns_the_fields_from_a_tiny_slice(trained, train_rows, held_out):
    model_dir, cache, result = trained
    texts = [t for t, _ in train_rows]
    answers, confidences = quick.predict(model_dir, texts, embedding_cache_dir=cache)
    # The head reproduces most of what it was fitted on, every span on word bounds.
    assert entity_scores([a for _, a in train_rows], answers, FIELDS)["strict"]["micro"]["f1"] > 0.8
    assert all(0.0 <= c <= 1.0 for c in confidences)
    for words, answer in zip(ml.tokenizer_words(texts), answers, strict=True):
        for span in answer["spans"]:
            assert span["field"] in FIELDS and 0.0 <= span["confidence"] <= 1.0
            assert span["start"] in {s for s, _ in words} and span["end"] in {e for _, e in words}
    # And generalises some to texts it never saw (80 texts: far from the full run's score).
    assert result.validation["examples"] == len(held_out)
    assert result.validation["strict_f1"] > 0.4
    config = quick.load(model_dir)[1]
    assert config["labels"][0] == "O" and config["train_examples"] == len(train_rows)


def test_predict_reads_the_word_vectors_from_the_cache(trained, monkeypatch, train_rows):
    model_dir, cache, _ = trained
    texts = [t for t, _ in train_rows[:10]]
    cached = quick.predict(model_dir, texts, embedding_cache_dir=cache)

    def no_model(*args, **kwargs):
        raise AssertionError("a cached text was embedded again")

    monkeypatch.setattr(ml, "embed_words", no_model)
    assert quick.predict(model_dir, texts, embedding_cache_dir=cache) == cached


def test_the_cache_keeps_one_array_per_text_across_chunks(tmp_path, monkeypatch, train_rows):
    monkeypatch.setattr(embeddings, "CHUNK_TEXTS", 3)
    monkeypatch.setattr(embeddings, "MAX_CHUNKS", 2)  # the third write merges the chunks
    texts = [t for t, _ in train_rows[:8]]
    words = ml.tokenizer_words(texts)
    options = dict(unit="tokenizer", model_name=ml.default_base_model(), max_length=64, layer=2)
    first = embeddings.embed_words_cached(texts, words, cache_dir=tmp_path, batch_size=2, **options)
    assert [v.shape for v in first] == [(len(w), 384) for w in words]
    monkeypatch.setattr(ml, "embed_words", lambda *a, **k: pytest.fail("embedded again"))
    again = embeddings.embed_words_cached(texts[::-1], words[::-1], cache_dir=tmp_path, **options)
    assert all((a == b).all() for a, b in zip(again, first[::-1], strict=True))


def test_the_int8_encoder_serves_the_same_spans(trained, tmp_path, held_out):
    model_dir, cache, _ = trained
    texts = [t for t, _ in held_out]
    onnx_dir = quick.export_onnx(model_dir, tmp_path / "onnx", max_length=64)
    fp32, _ = quick.predict(model_dir, texts, embedding_cache_dir=cache)
    int8, confidences = quick.predict_onnx(onnx_dir, texts)
    same = sum(
        sorted(map(span_key, a["spans"])) == sorted(map(span_key, b["spans"]))
        for a, b in zip(fp32, int8, strict=True)
    )
    assert same >= 0.9 * len(texts) and len(confidences) == len(texts)


def test_a_span_of_an_unknown_field_is_refused(tmp_path, train_rows):
    text, answer = train_rows[0]
    with pytest.raises(ValueError, match="not one of the student's fields"):
        quick.train(
            texts=[text, train_rows[1][0]],
            answers=[answer, train_rows[1][1]],
            names=["date"],
            base_model=ml.default_base_model(),
            output_dir=tmp_path,
            hyperparameters=HP,
        )


def test_should_stop_stops_and_writes_no_model(tmp_path, train_rows):
    with pytest.raises(ml.Stopped):
        quick.train(
            texts=[t for t, _ in train_rows[:4]],
            answers=[a for _, a in train_rows[:4]],
            names=FIELDS,
            base_model=ml.default_base_model(),
            output_dir=tmp_path / "model",
            hyperparameters=HP,
            should_stop=lambda: True,
            embedding_cache_dir=tmp_path / "cache",
        )
    assert not (tmp_path / "model").exists()
