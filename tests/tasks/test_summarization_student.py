from __future__ import annotations

import random

import pytest

from distillapp import ml
from tasks.summarization import measure, student
from tasks.summarization.units import split_units

NAMES = ["Anna", "Ben", "Carl", "Dora", "Emil", "Fay", "Gus", "Hana"]
THINGS = ["a red car", "two tickets", "a new phone", "a cheap flat", "fresh bread", "a blue coat"]


def dialogue(rng: random.Random) -> tuple[str, str]:
    """The first turn says what #Person1# wants; the rest is small talk. The summary restates it."""
    thing = rng.choice(THINGS)
    turns = [f"#Person1#: I want to buy {thing} today."]
    for _ in range(rng.randint(3, 5)):
        turns.append(f"#Person{rng.choice((1, 2))}#: {rng.choice(NAMES)} says hello, how nice.")
    return "\n".join(turns), f"#Person1# wants to buy {thing}."


def test_train_learns_the_oracle_units_and_predict_keeps_them(tmp_path):
    rng = random.Random(3)
    train = [dialogue(rng) for _ in range(40)]
    val = [dialogue(rng) for _ in range(10)]
    seen = []
    result = student.train(
        texts=[t for t, _ in train],
        answers=[{"summary": s} for _, s in train],
        names=[],
        output_dir=tmp_path / "model",
        hyperparameters=ml.Hyperparameters(max_length=32),
        validation=([t for t, _ in val], [{"summary": s} for _, s in val]),
        on_progress=seen.append,
        target={"unit": "sentences", "length": 2},
    )
    assert result.steps == 40
    assert seen and seen[-1].step == seen[-1].total_steps
    # One unit is the whole oracle: the rule learned on validation keeps one, not the target's two.
    assert result.validation["rule"] == {"unit": "units", "length": 1}
    assert result.validation["rouge1"] > 0.8
    test = [dialogue(rng) for _ in range(5)]
    answers, confidences = student.predict(tmp_path / "model", [t for t, _ in test] + [""])
    for (text, _), answer in zip(test, answers, strict=False):
        # The kept turn, in the third person: the form of the references.
        assert answer == {"summary": text.split("\n")[0].replace(": I want", " wants")}
    extracts, _ = student.predict(tmp_path / "model", [t for t, _ in test], rewrite=False)
    assert [a["summary"] for a in extracts] == [t.split("\n")[0] for t, _ in test]
    assert answers[-1] == {"summary": ""}
    assert all(0.5 < c <= 1.0 for c in confidences[:-1])  # a clear margin
    with pytest.raises(ValueError, match="not offered"):
        student.export_onnx(tmp_path / "model", tmp_path / "onnx", max_length=32)


def test_train_stops_when_asked_and_without_validation_keeps_the_target(tmp_path):
    rng = random.Random(5)
    data = [dialogue(rng) for _ in range(6)]
    kwargs = dict(
        texts=[t for t, _ in data],
        answers=[{"summary": s} for _, s in data],
        names=[],
        hyperparameters=ml.Hyperparameters(max_length=32),
    )
    with pytest.raises(ml.Stopped):
        student.train(**kwargs, output_dir=tmp_path / "stopped", should_stop=lambda: True)
    student.train(**kwargs, output_dir=tmp_path / "model", target={"unit": "sentences", "length": 2})
    answers, _ = student.predict(tmp_path / "model", [data[0][0]])
    assert len(answers[0]["summary"].split("\n")) == 2
    with pytest.raises(ValueError, match="no text"):
        student.train(**{**kwargs, "answers": [{"summary": ""}] * 6}, output_dir=tmp_path / "none")


def test_a_text_that_is_not_a_dialogue_keeps_its_sentences_as_they_are(tmp_path):
    rng = random.Random(7)
    data = [dialogue(rng) for _ in range(20)]
    student.train(
        texts=[t for t, _ in data],
        answers=[{"summary": s} for _, s in data],
        names=[],
        output_dir=tmp_path / "model",
        hyperparameters=ml.Hyperparameters(max_length=32),
        target={"unit": "sentences", "length": 3},
    )
    prose = "I want my car back. You said your garage is full. We will see."
    answers, _ = student.predict(tmp_path / "model", [prose])
    assert answers[0]["summary"] == prose


def test_the_oracle_labels_a_dialogue_over_its_rewritten_turns():
    text = "#Person1#: Well, I want my car.\n#Person2#: You can have it."
    rewritten, spans = student._as_summarised(text, split_units(text))
    assert [rewritten[s:e] for s, e in spans] == [
        "#Person1# wants #Person1#'s car.",
        "#Person2#: #Person1# can have it.",
    ]
    # The rewrite is what the oracle reads: the reference's words and the speaker tags match.
    assert measure.oracle_units(rewritten, spans, "#Person1# wants #Person1#'s car.") == [0]
    prose = "I want my car. You can have it."
    assert student._as_summarised(prose, split_units(prose)) == (prose, split_units(prose))


def test_a_training_set_whose_units_are_all_chosen_still_trains(tmp_path):
    """Every text one sentence: every unit is in its oracle, one class only; the student keeps
    the first units instead of failing (a new project's first few summaries)."""
    from distillapp import ml
    from tasks.summarization import student

    texts = ["Order 1 was late.", "The card was charged twice.", "A parcel went missing."]
    answers = [{"summary": t} for t in texts]
    student.train(
        texts=texts * 2,
        answers=answers * 2,
        names=[],
        base_model="unused",
        output_dir=tmp_path / "model",
        hyperparameters=ml.Hyperparameters(),
        target={"unit": "sentences", "length": 1},
    )
    predicted, confidences = student.predict(tmp_path / "model", texts)
    assert [p["summary"] for p in predicted] == texts and all(0 <= c <= 1 for c in confidences)


def test_confidence_is_calibrated_on_validation_to_how_often_a_summary_is_right(tmp_path):
    """The margin is mapped (isotonic, on validation) to the share of summaries that sure whose
    ROUGE-L reaches the task's floor: on the validation texts themselves, the mean calibrated
    confidence is that share."""
    import random

    import numpy as np

    from distillapp import ml
    from tasks.summarization import measure, student
    from tasks.summarization.task import RIGHT_FLOOR

    coin = random.Random(7)
    texts, answers = [], []
    for i in range(60):
        turns = [
            f"Customer: The lamp number {i} came cracked.",
            "Agent: Money goes back tomorrow morning.",
            "Customer: The courier left it outside in rain.",
            "Agent: A new driver arrives on Friday.",
        ]
        texts.append("\n".join(turns))
        # The summary is one of the turns at random: no margin is always right.
        answers.append({"summary": coin.choice(turns)})
    student.train(
        texts=texts[:40],
        answers=answers[:40],
        names=[],
        base_model="unused",
        output_dir=tmp_path / "model",
        hyperparameters=ml.Hyperparameters(),
        validation=(texts[40:], answers[40:]),
        target={"unit": "sentences", "length": 1},
    )
    predicted, confidences = student.predict(tmp_path / "model", texts[40:])
    right = [
        measure.rouge_l(a["summary"], p["summary"]) >= RIGHT_FLOOR
        for a, p in zip(answers[40:], predicted, strict=True)
    ]
    assert 0 < sum(right) < len(right)
    assert np.mean(confidences) == pytest.approx(np.mean(right), abs=0.05)
