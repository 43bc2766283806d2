from __future__ import annotations

import pytest

from distillapp import ml
from training.models import Evaluation, TrainingRun


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory):
    """An untrained tiny BERT classifier saved as a run's artifacts (root/model)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from distillapp import ml

    root = tmp_path_factory.mktemp("tiny-run")
    tokenizer = AutoTokenizer.from_pretrained(ml.default_base_model())
    labels = ["Billing", "Technical support", "Other"]
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    BertForSequenceClassification(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root


def make_run(project, artifacts, *, number: int = 1, evaluated: bool = True) -> TrainingRun:
    run = TrainingRun.objects.create(
        project=project,
        number=number,
        status="succeeded",
        artifact_path=str(artifacts),
        counts={"per_label": {"Billing": 5, "Technical support": 3, "Other": 2}},
        train_seconds=1800,
    )
    if evaluated:
        from annotation.models import GoldSet

        gold = GoldSet.objects.filter(project=project).first() or GoldSet.objects.create(
            project=project, version=1
        )
        Evaluation.objects.create(
            project=project,
            run=run,
            gold_set=gold,
            subject="student",
            agent=run.agent,
            metrics={
                "accuracy": 0.9,
                # Large enough that 0.5's interval (0.96 of 3,000) clears the 0.95 target.
                "examples": 5000,
                "with_confidence": 5000,
                "coverage": [
                    {"threshold": 0.3, "coverage": 1.0, "accuracy": 0.9},
                    {"threshold": 0.5, "coverage": 0.6, "accuracy": 0.96},
                    {"threshold": 0.7, "coverage": 0.2, "accuracy": 1.0},
                ],
            },
        )
    return run


@pytest.fixture(scope="session")
def tiny_base_path(tmp_path_factory) -> str:
    return ml.make_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture
def tiny_base(tiny_base_path, settings) -> str:
    """The tiny model, on the operator's list of base models (as a deployment would add it)."""
    settings.STUDENT_BASE_MODELS = [tiny_base_path]
    return tiny_base_path
