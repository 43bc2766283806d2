from __future__ import annotations

import pytest

from distillapp import ml
from tasks.summarization import seq2seq

TEXTS = [f"#Person1#: I want to buy {n} apples.\n#Person2#: Here you are." for n in range(2, 10)]
SUMMARIES = [{"summary": f"#Person1# buys {n} apples."} for n in range(2, 10)]


def test_max_new_tokens_follows_the_target():
    assert seq2seq.max_new_tokens({"unit": "words", "length": 20}) == 48
    assert seq2seq.max_new_tokens(None) == 88  # 2 sentences


def test_a_tiny_t5_trains_reports_progress_and_generates_with_a_confidence(tmp_path):
    tiny = ml.make_tiny_seq2seq(tmp_path / "tiny")
    seen = []
    result = seq2seq.train(
        texts=TEXTS,
        answers=SUMMARIES,
        names=[],
        base_model=tiny,
        output_dir=tmp_path / "model",
        hyperparameters=ml.Hyperparameters(epochs=2, batch_size=4, learning_rate=1e-3, max_length=32),
        validation=(TEXTS[:2], SUMMARIES[:2]),
        on_progress=seen.append,
        target={"unit": "words", "length": 5},
    )
    assert result.steps == 4 and [p.step for p in seen] == [1, 2, 3, 4]
    assert set(result.validation) == {"examples", "rouge1", "rouge2", "rougeL", "calibrated"}
    assert result.validation["calibrated"] is False  # a few validation texts: too few to calibrate
    answers, confidences = seq2seq.predict(tmp_path / "model", TEXTS[:3])
    assert len(answers) == 3 and all(isinstance(a["summary"], str) for a in answers)
    assert all(0.0 < c <= 1.0 for c in confidences)
    # A random model is unsure: far below 1 per token (30,522-word vocabulary).
    assert max(confidences) < 0.5
    assert seq2seq.predict(tmp_path / "model", []) == ([], [])


def test_training_stops_when_asked(tmp_path):
    tiny = ml.make_tiny_seq2seq(tmp_path / "tiny")
    with pytest.raises(ml.Stopped):
        seq2seq.train(
            texts=TEXTS,
            answers=SUMMARIES,
            names=[],
            base_model=tiny,
            output_dir=tmp_path / "model",
            hyperparameters=ml.Hyperparameters(epochs=1, batch_size=4, max_length=32),
            should_stop=lambda: True,
        )


def test_a_checkpoints_summarisation_prefix_is_read_from_its_config(tmp_path):
    import json

    tiny = ml.make_tiny_seq2seq(tmp_path / "tiny")
    assert ml.task_prefix(tiny, "summarization") == ""
    config = json.loads((tmp_path / "tiny" / "config.json").read_text())
    config["task_specific_params"] = {"summarization": {"prefix": "summarize: "}}
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(config))
    assert ml.task_prefix(tiny, "summarization") == "summarize: "
