from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.classification.offline import EmbeddingTeacher
from tests.shared_data import dataset, first_per_label

LABEL_COUNT = 10
PER_LABEL = 5
CHANCE = 1 / LABEL_COUNT


@pytest.fixture(scope="module")
def banking():
    """10 Banking77 labels, 5 test texts and 5 train examples each."""
    banking77 = dataset("banking77")
    categories = json.loads((banking77 / "categories.json").read_text(encoding="utf-8"))[:LABEL_COUNT]
    return {
        "labels": [(name, name.replace("_", " ")) for name in categories],
        "test": first_per_label(banking77 / "test.csv", categories, PER_LABEL),
        "memory": first_per_label(banking77 / "train.csv", categories, PER_LABEL),
    }


def _accuracy(teacher: EmbeddingTeacher, test: list[tuple[str, str]]) -> float:
    predictions = teacher.predict([text for text, _ in test])
    return sum(p.label == label for p, (_, label) in zip(predictions, test, strict=True)) / len(test)


@pytest.fixture(scope="module")
def zero_shot_accuracy(banking) -> float:
    return _accuracy(EmbeddingTeacher(banking["labels"]), banking["test"])


def test_zero_shot_is_far_above_chance(banking, zero_shot_accuracy):
    assert len(banking["test"]) == LABEL_COUNT * PER_LABEL
    assert zero_shot_accuracy >= 5 * CHANCE  # 0.80 when written


def test_five_shot_memory_does_not_hurt(banking, zero_shot_accuracy):
    accuracy = _accuracy(EmbeddingTeacher(banking["labels"], banking["memory"]), banking["test"])

    assert accuracy >= zero_shot_accuracy - 0.06  # 0.92 when written
    assert accuracy >= 5 * CHANCE


@pytest.mark.parametrize("with_memory", [False, True])
def test_confidence_is_the_top_probability(banking, with_memory):
    teacher = EmbeddingTeacher(banking["labels"], banking["memory"] if with_memory else ())

    for prediction in teacher.predict([text for text, _ in banking["test"][:10]]):
        assert set(prediction.scores) == {name for name, _ in banking["labels"]}
        assert sum(prediction.scores.values()) == pytest.approx(1.0)
        assert all(0.0 <= p <= 1.0 for p in prediction.scores.values())
        assert prediction.confidence == max(prediction.scores.values())
        assert prediction.scores[prediction.label] == prediction.confidence


def test_a_reviewed_example_pulls_its_own_text_to_its_label():
    labels = [("Billing", "Money questions"), ("Technical support", "Something is broken")]
    text = "Where do I find last month's receipt?"

    teacher = EmbeddingTeacher(labels, [(text, "Technical support")])

    assert teacher.predict([text])[0].label == "Technical support"


def test_memory_outside_the_label_set_is_ignored_and_the_cap_applies():
    labels = [("Billing", "Money questions"), ("Technical support", "Something is broken")]
    memory = [("a", "Billing"), ("b", "Unknown"), ("c", "Billing"), ("d", "Technical support")]

    teacher = EmbeddingTeacher(labels, memory, per_label_cap=1)

    assert teacher._memory.shape[0] == 2
    assert teacher._memory_labels.tolist() == [0, 1]


def test_empty_input_predicts_nothing():
    assert EmbeddingTeacher([("Billing", "")]).predict([]) == []


def test_importing_the_teacher_does_not_load_torch():
    # The whole teacher package (the offline teacher, the client, the jobs), with Django set
    # up as the web process and the worker have it.
    code = (
        "import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'distillapp.settings'); "
        "django.setup(); import annotation.teacher; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
