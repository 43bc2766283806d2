"""The quick student: frozen MiniLM embeddings + logistic regression, its cache, the ensemble weight."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillapp import embeddings, ml
from tasks.classification import quick

NAMES = ["weather", "food", "sport"]
TEXTS = {
    "weather": [
        "It is raining heavily outside",
        "Tomorrow will be sunny and warm",
        "A storm is coming tonight",
        "Snow is expected this weekend",
        "The wind is very strong today",
        "Cloudy skies all afternoon",
        "Heavy fog on the roads this morning",
        "It has been freezing cold all week",
        "Thunder and lightning last night",
        "The forecast says light showers",
        "What a hot and humid day",
        "Hail damaged the cars in the street",
        "A heatwave is expected next week",
        "The temperature dropped below zero",
    ],
    "food": [
        "This pizza is delicious",
        "I cooked pasta with tomato sauce",
        "The soup needs more salt",
        "We had sushi for dinner",
        "She baked a chocolate cake",
        "Fresh bread from the bakery",
        "The curry was too spicy for me",
        "Breakfast was eggs and bacon",
        "I love grilled vegetables",
        "The restaurant serves great burgers",
        "Add some garlic to the sauce",
        "We ordered noodles and dumplings",
        "This apple pie tastes amazing",
        "The salad had too much dressing",
    ],
    "sport": [
        "The team won the football match",
        "He scored a goal in the final minute",
        "She runs a marathon every year",
        "The tennis final went to five sets",
        "Our basketball coach is very strict",
        "The swimmer broke the world record",
        "The cyclist won the mountain stage",
        "They lost the game on penalties",
        "The boxer was knocked out in round three",
        "Training for the match starts at nine",
        "The golfer hit a hole in one",
        "The referee showed a red card",
        "The runner crossed the finish line first",
        "Our club plays in the league on Sunday",
    ],
}
TRAIN = [(text, name) for name in NAMES for text in TEXTS[name][:10]]
HELD_OUT = [(text, name) for name in NAMES for text in TEXTS[name][10:]]
HP = ml.Hyperparameters(max_length=32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    quick.train(
        texts=[t for t, _ in TRAIN],
        answers=[a for _, a in TRAIN],
        names=NAMES,
        base_model=ml.default_base_model(),
        output_dir=out,
        hyperparameters=HP,
    )
    return out


def test_predicts_held_out_texts_better_than_chance(model_dir):
    labels, confidences = quick.predict(model_dir, [t for t, _ in HELD_OUT])
    accuracy = np.mean([p == g for p, (_, g) in zip(labels, HELD_OUT, strict=True)])
    assert accuracy >= 0.75  # chance is 1/3
    assert len(confidences) == len(HELD_OUT)
    assert all(1 / 3 <= c <= 1 for c in confidences)


def test_predict_proba_shapes_and_saved_config(model_dir):
    probabilities, names = quick.predict_proba(model_dir, ["sunny", "cake", "goal"])
    assert names == NAMES
    assert probabilities.shape == (3, 3)
    assert np.allclose(probabilities.sum(axis=1), 1)
    empty, _ = quick.predict_proba(model_dir, [])
    assert empty.shape == (0, 3)
    assert quick.predict(model_dir, []) == ([], [])
    config = json.loads((model_dir / quick.CONFIG_FILE).read_text())
    assert config["base_model"] == ml.default_base_model()
    assert config["names"] == NAMES
    assert config["max_length"] == 32
    assert config["C"] == quick.DEFAULT_C


def test_label_without_examples_gets_zero_probability_and_validation_is_scored(tmp_path):
    names = [*NAMES, "music"]  # no training example of "music"
    result = quick.train(
        texts=[t for t, _ in TRAIN],
        answers=[a for _, a in TRAIN],
        names=names,
        base_model=ml.default_base_model(),
        output_dir=tmp_path,
        hyperparameters=HP,
        validation=([t for t, _ in HELD_OUT], [a for _, a in HELD_OUT]),
    )
    assert result.validation["examples"] == len(HELD_OUT)
    assert result.validation["accuracy"] >= 0.75
    probabilities, got = quick.predict_proba(tmp_path, ["rain again"])
    assert got == names
    assert probabilities.shape == (1, 4) and probabilities[0, 3] == 0


def test_progress_steps_are_embedding_batches_then_the_head(tmp_path):
    seen: list[ml.Progress] = []
    result = quick.train(
        texts=[t for t, _ in TRAIN],
        answers=[a for _, a in TRAIN],
        names=NAMES,
        base_model=ml.default_base_model(),
        output_dir=tmp_path,
        hyperparameters=HP,
        on_progress=seen.append,
    )
    # 30 texts fit one embedding batch (64); the head is the second step.
    assert [p.step for p in seen] == [1, 2]
    assert all(p.total_steps == 2 for p in seen)
    assert seen[-1].loss is not None
    assert result.steps == 2 and not result.stopped_early


def test_cache_embeds_each_text_once(tmp_path, monkeypatch):
    embedded: list[str] = []
    real = ml.embed_texts

    def counting(texts, **kwargs):
        embedded.extend(texts)
        return real(texts, **kwargs)

    monkeypatch.setattr(ml, "embed_texts", counting)
    model = ml.default_base_model()
    first = [t for t, _ in TRAIN]
    a = embeddings.embed_cached(first, model_name=model, max_length=32, cache_dir=tmp_path)
    assert sorted(embedded) == sorted(first)
    # Again with overlap and a duplicate: only the new texts are embedded.
    second = first[:5] + [t for t, _ in HELD_OUT] + [HELD_OUT[0][0]]
    b = embeddings.embed_cached(second, model_name=model, max_length=32, cache_dir=tmp_path)
    assert sorted(embedded) == sorted(first + [t for t, _ in HELD_OUT])
    assert np.allclose(b[:5], a[:5])
    assert np.allclose(b[5:-1], real([t for t, _ in HELD_OUT], model_name=model, max_length=32), atol=1e-5)
    # Another max_length is another key: embedded anew.
    embedded.clear()
    embeddings.embed_cached(first[:3], model_name=model, max_length=16, cache_dir=tmp_path)
    assert sorted(embedded) == sorted(first[:3])

    # Training and predicting through the same cache embed nothing more.
    embedded.clear()
    quick.train(
        texts=first,
        answers=[a for _, a in TRAIN],
        names=NAMES,
        base_model=model,
        output_dir=tmp_path / "model",
        hyperparameters=HP,
        validation=([t for t, _ in HELD_OUT], [a for _, a in HELD_OUT]),
        embedding_cache_dir=tmp_path,
    )
    quick.predict(tmp_path / "model", second, embedding_cache_dir=tmp_path)
    assert embedded == []


def test_many_chunks_are_merged_and_still_found(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "MAX_CHUNKS", 3)
    model = ml.default_base_model()
    texts = [t for t, _ in TRAIN][:8]
    for text in texts:  # one chunk per call
        embeddings.embed_cached([text], model_name=model, max_length=32, cache_dir=tmp_path)
    (directory,) = tmp_path.iterdir()
    assert len(list(directory.glob("chunk-*.npz"))) <= 3
    calls: list[str] = []
    real = ml.embed_texts
    monkeypatch.setattr(ml, "embed_texts", lambda batch, **kw: calls.extend(batch) or real(batch, **kw))
    embeddings.embed_cached(texts, model_name=model, max_length=32, cache_dir=tmp_path)
    assert calls == []


def test_should_stop_stops_and_writes_no_model(tmp_path):
    with pytest.raises(ml.Stopped):
        quick.train(
            texts=[t for t, _ in TRAIN],
            answers=[a for _, a in TRAIN],
            names=NAMES,
            base_model=ml.default_base_model(),
            output_dir=tmp_path / "model",
            hyperparameters=HP,
            should_stop=lambda: True,
        )
    assert not (tmp_path / "model").exists()


def test_should_stop_between_batches_keeps_cached_embeddings(tmp_path, monkeypatch):
    model = ml.default_base_model()
    asked = []

    def stop_after_two_batches() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(ml.Stopped):
        embeddings.embed_cached(
            [t for t, _ in TRAIN],
            model_name=model,
            max_length=32,
            cache_dir=tmp_path,
            batch_size=8,
            should_stop=stop_after_two_batches,
        )
    embedded: list[str] = []
    real = ml.embed_texts
    monkeypatch.setattr(ml, "embed_texts", lambda batch, **kw: embedded.extend(batch) or real(batch, **kw))
    embeddings.embed_cached([t for t, _ in TRAIN], model_name=model, max_length=32, cache_dir=tmp_path)
    assert len(embedded) == len(TRAIN) - 16  # the two finished batches were kept


def test_needs_two_labels(tmp_path):
    with pytest.raises(ValueError, match="at least two labels"):
        quick.train(
            texts=["a", "b"],
            answers=["food", "food"],
            names=NAMES,
            base_model=ml.default_base_model(),
            output_dir=tmp_path,
            hyperparameters=HP,
        )


def test_average_proba():
    p1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    p2 = np.array([[0.0, 1.0], [0.5, 0.5]])
    assert np.allclose(quick.average_proba(p1, p2, 0.3), [[0.3, 0.7], [0.35, 0.65]])
    assert np.allclose(quick.average_proba(p1, p2, 1.0), p1)
    with pytest.raises(ValueError):
        quick.average_proba(p1, p2[:1], 0.5)
    with pytest.raises(ValueError):
        quick.average_proba(p1, p2, 1.5)
    aligned = quick.align_proba(np.array([[0.2, 0.8]]), ["b", "a"], ["a", "b", "c"])
    assert np.allclose(aligned, [[0.8, 0.2, 0.0]])


def test_choose_weight_picks_the_better_student():
    labels = ["a", "b", "a", "b"]
    right = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    wrong = right[:, ::-1]
    assert quick.choose_weight(right, wrong, labels, ["a", "b"]) == 1.0
    assert quick.choose_weight(wrong, right, labels, ["a", "b"]) == 0.0


def test_choose_weight_finds_a_mix_better_than_either():
    # Right for a weight w on p1 in (1/6, 0.8) on all three; w = 0 gets two, w = 1 one.
    labels = ["x", "y", "x"]
    p1 = np.array([[0.4, 0.6, 0.0], [0.0, 1.0, 0.0], [0.45, 0.55, 0.0]])
    p2 = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.7, 0.3, 0.0]])
    names = ["x", "y", "z"]
    weight = quick.choose_weight(p1, p2, labels, names)
    assert 0.2 <= weight <= 0.7
    averaged = quick.average_proba(p1, p2, weight)
    assert [names[i] for i in averaged.argmax(axis=1)] == labels


def test_the_int8_encoder_export_serves_on_its_own(model_dir, tmp_path, monkeypatch):
    out = quick.export_onnx(model_dir, tmp_path / "onnx", max_length=999)
    assert (out / ml.ONNX_MODEL_FILE).is_file() and (out / quick.HEAD_FILE).is_file()
    texts = [t for t, _ in HELD_OUT] + [t for t, _ in TRAIN][:6]
    torch_p, names = quick.predict_proba(model_dir, texts)
    # No torch encoder from here on: the export is the encoder, with pooling in the graph.
    monkeypatch.setattr(ml, "embed_texts", lambda *a, **k: pytest.fail("the torch encoder was used"))
    int8_p, int8_names = quick.predict_proba_onnx(out, texts)
    assert int8_names == names and int8_p.shape == torch_p.shape
    # Activations are quantized per call, so other batches move the numbers a little.
    assert np.abs(quick.predict_proba_onnx(out, texts, batch_size=4)[0] - int8_p).max() < 0.05
    assert np.allclose(int8_p.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(int8_p - torch_p).max() < 0.1  # int8 weights: close, not equal
    labels, confidences = quick.predict_onnx(out, texts)
    assert labels == [names[i] for i in torch_p.argmax(axis=1)]
    assert confidences == pytest.approx(list(int8_p.max(axis=1)), abs=1e-6)
    assert quick.predict_onnx(out, []) == ([], [])


def test_the_onnx_encoder_embeds_as_embed_texts_does(tmp_path):
    out = ml.export_onnx_int8(ml.default_base_model(), tmp_path, max_length=32, auto_class="AutoModel")
    tokenizer, session, _ = ml.load_onnx(out)
    texts = ["a short text", "a somewhat longer text about a refund of my card payment"]
    feed = {
        i.name: np.array(tokenizer(texts[1:], truncation=True, max_length=32)[i.name], dtype=np.int64)
        for i in session.get_inputs()
    }
    (vector,) = session.run(["embedding"], feed)[0]
    reference = ml.embed_texts(texts[1:], max_length=32)[0]
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-4
    assert float(vector @ reference) > 0.98  # int8 weights: the same direction, nearly


def _text_whose_key_ends_in_nul(model: str, max_length: int) -> str:
    for i in range(5000):
        text = f"refund number {i}"
        if embeddings._digest(model, str(max_length), text).endswith(b"\0"):
            return text
    raise AssertionError("no key ending in 0x00 in 5,000 texts")


def test_a_key_ending_in_a_nul_byte_is_found_again(tmp_path, monkeypatch):
    # numpy's "S32" strings dropped a digest's trailing NUL bytes, so 1 text in 256 was
    # embedded again (and written to a new chunk) on every call.
    model = ml.default_base_model()
    text = _text_whose_key_ends_in_nul(model, 32)
    first = embeddings.embed_cached(
        [text, "another text"], model_name=model, max_length=32, cache_dir=tmp_path
    )
    calls: list[str] = []
    real = ml.embed_texts
    monkeypatch.setattr(ml, "embed_texts", lambda batch, **kw: calls.extend(batch) or real(batch, **kw))
    again = embeddings.embed_cached([text], model_name=model, max_length=32, cache_dir=tmp_path)
    assert calls == []
    assert np.array_equal(again[0], first[0])


def test_chunks_written_with_string_keys_are_still_read(tmp_path, monkeypatch):
    model = ml.default_base_model()
    texts = [_text_whose_key_ends_in_nul(model, 32), "another text"]
    vectors = ml.embed_texts(texts, model_name=model, max_length=32)
    directory = tmp_path / embeddings._digest(model, "32").hex()[:16]
    directory.mkdir()
    keys = [embeddings._digest(model, "32", text) for text in texts]
    with (directory / "chunk-00000000000000000001-old.npz").open("wb") as handle:
        np.savez(handle, keys=np.array(keys, dtype="S32"), vectors=vectors)  # the old format
    monkeypatch.setattr(ml, "embed_texts", lambda batch, **kw: pytest.fail(f"embedded {batch}"))
    found = embeddings.embed_cached(texts, model_name=model, max_length=32, cache_dir=tmp_path)
    assert np.array_equal(found, vectors)
