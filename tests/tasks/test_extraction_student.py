"""The extraction student: spans -> BIO token labels -> spans, windows, a tiny model end to end."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from distillapp import ml
from tasks.extraction import student
from tasks.extraction.formats import read_conll
from tasks.extraction.spans import span_key, without_overlaps
from tests.tasks.extraction_data import restaurant8k, wnut17_lines

FIELDS = ["date", "time", "people", "first_name", "last_name"]
WNUT_FIELDS = ["corporation", "creative-work", "group", "location", "person", "product"]


@cache
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ml.default_base_model())


def keys(answer: dict) -> list[tuple[int, int, str]]:
    return sorted(span_key(s) for s in answer["spans"])


def perfect_predictions(texts: list[str], answers: list[dict], names: list[str], max_length: int):
    """What a model that is always right predicts, windowed at `max_length` and merged back.

    The right label of each token comes from labelling the whole text in one window; each
    window's "probabilities" are then one-hot by the token's characters.
    """
    labels = student.bio_labels(names)
    label2id = {label: i for i, label in enumerate(labels)}
    whole = student._windows(tokenizer(), texts, 100_000)
    right = student.token_labels(whole, texts, answers, label2id)
    by_offset = [
        {tuple(o): right[w][i] for i, o in enumerate(whole["offset_mapping"][w]) if right[w][i] >= 0}
        for w in range(len(texts))
    ]
    windows = student._windows(tokenizer(), texts, max_length)
    probabilities = []
    for w, offsets in enumerate(windows["offset_mapping"]):
        text_index = windows["overflow_to_sample_mapping"][w]
        rows = np.zeros((len(offsets), len(labels)), dtype=np.float32)
        for i, offset in enumerate(offsets):
            rows[i, by_offset[text_index].get(tuple(offset), 0)] = 1.0
        probabilities.append(rows)
    return student.merge(windows, probabilities, texts, labels), windows


def assert_round_trip(texts, answers, names, max_length, *, at_least=1.0):
    """Every span BIO can hold comes back exactly (where spans overlap, BIO keeps the first:
    Restaurant-8k marks "in an hour" as both date and time, 12 of its 3,477 test spans)."""
    (predicted, confidences), _ = perfect_predictions(texts, answers, names, max_length)
    held = [{"spans": without_overlaps(a["spans"])} for a in answers]
    same = [keys(p) == keys(a) for p, a in zip(predicted, held, strict=True)]
    assert sum(same) / len(same) >= at_least, [
        (t, keys(a), keys(p)) for t, a, p, ok in zip(texts, answers, predicted, same, strict=True) if not ok
    ][:5]
    assert confidences == [1.0] * len(texts)
    return same


# --- the round trip ----------------------------------------------------------------------


def test_round_trip_on_restaurant8k():
    rows = restaurant8k("test", 400)
    texts, answers = [t for t, _ in rows], [{"spans": s} for _, s in rows]
    assert sum(len(a["spans"]) for a in answers) > 200
    for max_length in (128, 16):  # 16: most texts are cut into several windows
        # "13:00pm" is one token "00pm" short of "13:00": such a span grows to the whole token.
        assert_round_trip(texts, answers, FIELDS, max_length, at_least=0.99)


def test_round_trip_on_wnut17():
    rows = read_conll(wnut17_lines("train", 400))
    texts, answers = [r.text for r in rows], [{"spans": r.spans} for r in rows]
    assert sum(len(a["spans"]) for a in answers) > 200
    # CoNLL tokens are joined by spaces and no sub-word token crosses a space: all exact
    # (all 3,394 train and 1,287 test sentences are, checked when this was written).
    for max_length in (128, 24):
        assert_round_trip(texts, answers, WNUT_FIELDS, max_length)


def spans_of(text: str, *pairs: tuple[str, str]) -> dict:
    """Spans of (value, field) pairs, each value found after the previous one."""
    spans, position = [], 0
    for value, field in pairs:
        start = text.index(value, position)
        spans.append({"start": start, "end": start + len(value), "field": field})
        position = start + len(value)
    return {"spans": spans}


def test_round_trip_with_unicode():
    rows = [
        # "e" + a combining acute accent, which the uncased tokenizer strips from its token
        (
            "Cafe\u0301 Noël für 4 Personen 😀 am 12. Mai",
            ("Cafe\u0301", "first_name"),
            ("4", "people"),
            ("12. Mai", "date"),
        ),
        ("東京タワー で 19:30 に 2 名", ("東京タワー", "last_name"), ("19:30", "time"), ("2", "people")),
        (
            "İstanbul ﬁne, Zoë at 7pm 👩\u200d💻 ok",
            ("İstanbul", "last_name"),
            ("Zoë", "first_name"),
            ("7pm", "time"),
            ("👩\u200d💻", "first_name"),
        ),
        ("Table for   Ångström\ton\nFriday", ("Ångström", "last_name"), ("Friday", "date")),
    ]
    texts = [text for text, *_ in rows]
    answers = [spans_of(text, *pairs) for text, *pairs in rows]
    assert_round_trip(texts, answers, FIELDS, 128)
    assert_round_trip(texts, answers, FIELDS, 8)


def long_text(repeats: int = 30) -> tuple[str, dict]:
    parts, spans, position = [], [], 0
    for n in range(repeats):
        for piece, field in (
            ("Book a table for", None),
            (f"{n + 2} people", "people"),
            ("on", None),
            (f"Friday the {n + 1}th", "date"),
            ("at", None),
            ("7:30pm", "time"),
            ("for Anna-Lena Müller, thanks.", None),
        ):
            if parts:
                position += 1
            if field:
                spans.append({"start": position, "end": position + len(piece), "field": field})
            parts.append(piece)
            position += len(piece)
    return " ".join(parts), {"spans": spans}


def test_a_long_text_is_windowed_and_no_span_is_lost():
    text, answer = long_text()
    windows = student._windows(tokenizer(), [text], 64)
    assert len(windows["input_ids"]) > 5
    (predicted, _), _ = perfect_predictions([text], [answer], FIELDS, 64)
    assert keys(predicted[0]) == keys(answer) and len(answer["spans"]) == 90


def test_training_labels_hold_every_span_whole_in_some_window():
    text, answer = long_text()
    labels = student.bio_labels(FIELDS)
    label2id = {label: i for i, label in enumerate(labels)}
    windows = student._windows(tokenizer(), [text], 32)
    window_labels = student.token_labels(windows, [text], [answer], label2id)
    found = set()
    for w, row in enumerate(window_labels):
        inner = student._content(windows, w)
        offsets = [windows["offset_mapping"][w][i] for i in inner]
        onehot = np.eye(len(labels))[[max(row[i], 0) for i in inner]]  # ignored -> O
        decoded, _ = student.decode(text, offsets, onehot, labels)
        found |= set(keys(decoded))
    assert set(keys(answer)) <= found
    # A span cut by a window's edge is not taught as a span there (its tokens are ignored).
    assert any(student.IGNORE in row[1:-1] for row in window_labels)


def test_a_span_longer_than_a_window_is_still_labelled():
    text = "The guest is " + " ".join(["Maria"] * 40) + " today"
    answer = {"spans": [{"start": 13, "end": 13 + len(" ".join(["Maria"] * 40)), "field": "first_name"}]}
    assert_round_trip([text], [answer], FIELDS, 16)


def test_decode_confidences():
    labels = student.bio_labels(["date", "time"])
    offsets = [(0, 4), (5, 7), (8, 11), (12, 14), (15, 20)]
    # O  B-date  I-date  O  I-time: an I- cannot follow O, so the last token takes the best
    # tag that can (B-time, 0.25), and its confidence is that tag's probability.
    probabilities = np.full((5, len(labels)), 0.01, dtype=np.float32)
    for row, (label, p) in enumerate(
        [("O", 0.9), ("B-date", 0.8), ("I-date", 0.6), ("O", 0.95), ("I-time", 0.7)]
    ):
        probabilities[row, labels.index(label)] = p
    probabilities[4, labels.index("B-time")] = 0.25
    answer, confidence = student.decode("Book 12 May at 19:30", offsets, probabilities, labels)
    assert answer["spans"] == [
        {"start": 5, "end": 11, "field": "date", "confidence": pytest.approx(0.6)},
        {"start": 15, "end": 20, "field": "time", "confidence": pytest.approx(0.25)},
    ]
    assert confidence == pytest.approx(0.25)  # the least sure token decision
    empty, sure = student.decode("", [], np.zeros((0, len(labels))), labels)
    assert empty == {"spans": []} and sure == 1.0


def test_decoding_takes_the_best_valid_tag_sequence():
    labels = student.bio_labels(["date", "time"])
    text = "Book 12 May"
    offsets = [(0, 4), (5, 7), (8, 11)]
    rows = {0: {"O": 0.9}, 1: {"B-date": 0.8, "B-time": 0.15}, 2: {"I-time": 0.5, "I-date": 0.45}}
    probabilities = np.full((3, len(labels)), 0.01, dtype=np.float32)
    for row, tags in rows.items():
        for label, p in tags.items():
            probabilities[row, labels.index(label)] = p
    # Each token's own best tag reads "12" as a date and "May" as a time of its own; no
    # time can go on from a date's first token, and B-date I-date beats B-time I-time
    # (0.8 x 0.45 > 0.15 x 0.5).
    assert [labels[i] for i in probabilities.argmax(axis=1)] == ["O", "B-date", "I-time"]
    assert [labels[i] for i in student.best_path(probabilities, labels)] == ["O", "B-date", "I-date"]
    answer, confidence = student.decode(text, offsets, probabilities, labels)
    assert answer["spans"] == [{"start": 5, "end": 11, "field": "date", "confidence": pytest.approx(0.45)}]
    assert confidence == pytest.approx(0.45)
    # A first token cannot be I-: the best allowed tag takes its place.
    first = np.full((1, len(labels)), 0.01, dtype=np.float32)
    first[0, labels.index("I-date")], first[0, labels.index("B-date")] = 0.9, 0.05
    assert [labels[i] for i in student.best_path(first, labels)] == ["B-date"]


def test_spans_grow_to_whole_words():
    labels = student.bio_labels(["person", "group"])
    text = "@justinbieber and the Backstreetboys"
    # Tokens of the words "@", "justinbieber", "and", "the", "Backstreetboys".
    offsets = [(0, 1), (1, 7), (7, 10), (10, 13), (14, 17), (18, 21), (22, 32), (32, 36)]
    words = [(0, 1), (1, 13), (1, 13), (1, 13), (14, 17), (18, 21), (22, 36), (22, 36)]
    predicted = ["O", "B-person", "O", "B-person", "O", "O", "O", "B-group"]
    probabilities = np.full((len(offsets), len(labels)), 0.01, dtype=np.float32)
    for row, label in enumerate(predicted):
        probabilities[row, labels.index(label)] = 0.9 - row / 100
    by_token, _ = student.decode(text, offsets, probabilities, labels)
    assert [(text[s["start"] : s["end"]], s["field"]) for s in by_token["spans"]] == [
        ("justin", "person"),
        ("ber", "person"),
        ("boys", "group"),
    ]
    by_word, confidence = student.decode(text, offsets, probabilities, labels, words=words)
    # Two runs in one word are one span; a run inside a word grows to the whole word.
    assert by_word["spans"] == [
        {"start": 1, "end": 13, "field": "person", "confidence": pytest.approx(0.87)},
        {"start": 22, "end": 36, "field": "group", "confidence": pytest.approx(0.83)},
    ]
    assert confidence == pytest.approx(0.83)
    # A word with runs of two fields keeps the first's.
    predicted[3] = "B-group"
    for row, label in enumerate(predicted):
        probabilities[row] = 0.01
        probabilities[row, labels.index(label)] = 0.9
    mixed, _ = student.decode(text, offsets, probabilities, labels, words=words)
    assert [(s["start"], s["end"], s["field"]) for s in mixed["spans"]] == [
        (1, 13, "person"),
        (22, 36, "group"),
    ]


def test_merge_grows_spans_to_the_tokenizers_words():
    text = "Table for Przybylski at 7pm"
    labels = student.bio_labels(["last_name", "time"])
    # Marked: the first two of the five pieces of "Przybylski", and the "pm" of "7pm".
    marked = {(10, 12): "B-last_name", (12, 14): "I-last_name", (25, 27): "B-time"}
    for max_length in (64, 6):  # 6: "Przybylski" is cut by a window's edge
        windows = student._windows(tokenizer(), [text], max_length)
        probabilities = []
        for offsets in windows["offset_mapping"]:
            rows = np.zeros((len(offsets), len(labels)), dtype=np.float32)
            for i, offset in enumerate(offsets):
                rows[i, labels.index(marked.get(tuple(offset), "O"))] = 1.0
            probabilities.append(rows)
        (answer,), _ = student.merge(windows, probabilities, [text], labels)
        assert [(text[s["start"] : s["end"]], s["field"]) for s in answer["spans"]] == [
            ("Przybylski", "last_name"),
            ("7pm", "time"),
        ], max_length


def test_a_span_of_an_unknown_field_is_refused():
    labels = {label: i for i, label in enumerate(student.bio_labels(["date"]))}
    windows = student._windows(tokenizer(), ["at 7pm"], 32)
    with pytest.raises(ValueError, match="'time'"):
        student.token_labels(
            windows, ["at 7pm"], [{"spans": [{"start": 3, "end": 6, "field": "time"}]}], labels
        )


# --- a tiny model, end to end ------------------------------------------------------------


def test_a_tiny_model_trains_predicts_and_exports(tmp_path):
    rows = restaurant8k("train", 30)
    texts, answers = [t for t, _ in rows], [{"spans": s} for _, s in rows]
    long, long_answer = long_text(6)
    texts, answers = [*texts, long], [*answers, long_answer]
    base = ml.make_tiny_model(tmp_path / "base")
    progress = []
    result = student.train(
        texts=texts,
        answers=answers,
        names=FIELDS,
        base_model=base,
        output_dir=tmp_path / "model",
        hyperparameters=ml.Hyperparameters(epochs=1, batch_size=8, max_length=32, learning_rate=1e-3),
        validation=(texts[:5], answers[:5]),
        on_progress=progress.append,
    )
    assert result.steps > 0 and progress
    assert set(result.validation) == {"examples", "strict_f1", "partial_f1"}
    assert result.validation["examples"] == 5 and 0 <= result.validation["strict_f1"] <= 1

    queries = [*texts[:6], long, "", "Zoë 😀 at 7pm"]
    predicted, confidences = student.predict(tmp_path / "model", queries, batch_size=4, max_length=32)
    assert len(predicted) == len(confidences) == len(queries)
    for text, answer, confidence in zip(queries, predicted, confidences, strict=True):
        assert 0 < confidence <= 1
        for span in answer["spans"]:
            assert 0 <= span["start"] < span["end"] <= len(text)
            assert span["field"] in FIELDS and confidence <= span["confidence"] <= 1
    assert predicted[len(queries) - 2] == {"spans": []} and confidences[len(queries) - 2] == 1.0
    assert student.predict(tmp_path / "model", []) == ([], [])

    onnx_dir = student.export_onnx(tmp_path / "model", tmp_path / "onnx", max_length=32)
    onnx_predicted, onnx_confidences = student.predict_onnx(onnx_dir, queries, batch_size=4, max_length=32)
    assert len(onnx_predicted) == len(onnx_confidences) == len(queries)
    assert all(set(a) == {"spans"} for a in onnx_predicted)
    # int8 weights move the probabilities a little, not the shape of the answer.
    np.testing.assert_allclose(onnx_confidences, confidences, atol=0.1)

    # The export keeps per-token logits with free batch and sequence axes.
    _, session, config = ml.load_onnx(onnx_dir)
    labels = ml.label_names(config)
    assert labels == student.bio_labels(FIELDS)
    for batch, length in ((1, 5), (3, 17)):
        feed = {i.name: np.ones((batch, length), dtype=np.int64) for i in session.get_inputs()}
        assert session.run(["logits"], feed)[0].shape == (batch, length, len(labels))


def test_the_case_feature_gives_an_uncased_student_its_capitals_back(tmp_path):
    texts = ["Lunch with Anna at Noon", "ANNA at 7", "anna at 7"]
    windows = student._windows(tokenizer(), texts, 32, capitals=True)
    for w, text in enumerate(texts):
        marked = [
            text[start:end]
            for (start, end), kind in zip(
                windows["offset_mapping"][w], windows["token_type_ids"][w], strict=True
            )
            if kind
        ]
        assert marked == [word for word in text.split() if word[0].isupper()]
    # Without it the uncased tokenizer sees one text three times over.
    plain = student._windows(tokenizer(), texts[1:], 32)
    assert plain["input_ids"][0] == plain["input_ids"][1] and not any(map(any, plain["token_type_ids"]))

    rows = restaurant8k("train", 12)
    base = ml.make_tiny_model(tmp_path / "base")
    outputs = {}
    for case_feature in (False, True):
        out = tmp_path / f"model-{case_feature}"
        student.train(
            texts=[t for t, _ in rows],
            answers=[{"spans": s} for _, s in rows],
            names=FIELDS,
            base_model=base,
            output_dir=out,
            hyperparameters=ml.Hyperparameters(
                epochs=1, batch_size=4, max_length=32, case_feature=case_feature
            ),
        )
        _, upper = student.predict(out, ["Table for Anna Smith"], max_length=32)
        _, lower = student.predict(out, ["table for anna smith"], max_length=32)
        outputs[case_feature] = (upper, lower)
    # The flag is saved with the model, so prediction marks the capitals too (and the
    # int8 export, from the same config), and only then do capitals change the answer.
    assert outputs[False][0] == outputs[False][1]
    assert outputs[True][0] != outputs[True][1]
    onnx_dir = student.export_onnx(tmp_path / "model-True", tmp_path / "onnx", max_length=32)
    _, onnx_upper = student.predict_onnx(onnx_dir, ["Table for Anna Smith"], max_length=32)
    _, onnx_lower = student.predict_onnx(onnx_dir, ["table for anna smith"], max_length=32)
    assert onnx_upper != onnx_lower
    np.testing.assert_allclose(onnx_upper, outputs[True][0], atol=0.05)


def test_a_base_model_with_one_token_type_refuses_the_case_feature(tmp_path):
    from transformers import BertConfig, BertModel

    base = ml.make_tiny_model(tmp_path / "base")
    config = BertConfig.from_pretrained(base)
    config.type_vocab_size = 1
    BertModel(config).save_pretrained(base)
    with pytest.raises(ValueError, match="no second token type"):
        student.train(
            texts=["Anna at 7"],
            answers=[{"spans": []}],
            names=FIELDS,
            base_model=base,
            output_dir=tmp_path / "model",
            hyperparameters=ml.Hyperparameters(epochs=1, case_feature=True),
        )


def test_ignored_ranges_take_their_tokens_out_of_the_loss_in_every_window():
    """Noise handling "mask": the tokens of a flagged word get the ignore index wherever a
    window holds them; the other tokens keep their tags."""
    text = "Table for 4 people at 7pm tomorrow please, under the name of Alvarez"
    answer = {"spans": [{"start": 22, "end": 25, "field": "time"}]}
    labels = student.bio_labels(FIELDS)
    label2id = {label: i for i, label in enumerate(labels)}
    flagged = [[10, 11], [26, 34]]  # "4" (a missed size) and "tomorrow" (a missed date)
    for max_length in (100_000, 8):
        windows = student._windows(tokenizer(), [text], max_length)
        plain = student.token_labels(windows, [text], [answer], label2id)
        masked = student.token_labels(windows, [text], [answer], label2id, ignore=[flagged])
        changed = 0
        for w, offsets in enumerate(windows["offset_mapping"]):
            for i, (start, end) in enumerate(offsets):
                inside = end > start and any(start < e and end > s for s, e in flagged)
                if inside:
                    assert masked[w][i] == student.IGNORE and plain[w][i] == label2id["O"]
                    changed += 1
                else:
                    assert masked[w][i] == plain[w][i]
        assert changed >= 2
