"""What every registered task type must provide, checked over the registry (tasks.TASK_TYPES).

A new task type adds its sample below (the test that every type has one fails until it
does) and then passes the same checks as the others: answer validation, the teacher's
schema and parser, file round trips, agreement, metrics, the served shape against its
OpenAPI schema, the drop-in content and the card and evaluation templates.
"""

from __future__ import annotations

import json

import jsonschema_rs
import pytest
from django.template.loader import get_template

from tasks import TASK_TYPES, AnswerError, Category, task_choices, task_class, task_for

TEXT_A = "Ana called on 12 May: her card was charged twice for order 4417, $42.50 each."
TEXT_B = "Table for 4 on Friday at 19:30, name Tom Weiss."

# type -> (categories, [(text, a valid answer)], an answer that is not valid)
SAMPLES = {
    "classification": (
        [Category("Billing"), Category("Bookings")],
        [(TEXT_A, "Billing"), (TEXT_B, "Bookings")],
        "Weather",
    ),
    "extraction": (
        [Category("date"), Category("people")],
        [
            (TEXT_A, {"spans": [{"start": 14, "end": 20, "field": "date"}]}),
            (TEXT_B, {"spans": [{"start": 10, "end": 11, "field": "people"}]}),
        ],
        {"spans": [{"start": 0, "end": 500, "field": "date"}]},
    ),
    "summarization": (
        [],
        [
            (TEXT_A, {"summary": "Ana was charged twice for order 4417."}),
            (TEXT_B, {"summary": "Tom Weiss booked a table for 4 on Friday."}),
        ],
        {"summary": "   "},
    ),
}

TYPES = [name for name, _ in task_choices()]


def sample(task_type: str):
    categories, answers, invalid = SAMPLES[task_type]
    return task_for(task_type, categories), answers, invalid


def test_every_registered_type_has_a_sample_here():
    assert set(SAMPLES) == set(TASK_TYPES)


def test_project_task_type_choices_come_from_the_registry():
    from annotation.models import Project

    field = Project._meta.get_field("task_type")
    assert [value for value, _ in field.choices] == list(TASK_TYPES)


@pytest.mark.parametrize("task_type", TYPES)
def test_answers_validate_and_bad_ones_are_refused(task_type):
    task, answers, invalid = sample(task_type)
    for text, answer in answers:
        normal = task.validate(answer, text=text)
        assert task.validate(normal, text=text) == normal
        assert task.same(normal, normal)
        assert isinstance(task.summary(normal, text=text), str) and task.summary(normal, text=text)
    with pytest.raises(AnswerError):
        task.validate(invalid, text=answers[0][0])


@pytest.mark.parametrize("task_type", TYPES)
def test_the_teacher_schema_and_parser_agree(task_type):
    task, answers, _ = sample(task_type)
    schema = task.response_format()
    assert schema["type"] == "json_schema" and schema["json_schema"]["schema"]["type"] == "object"
    validator = jsonschema_rs.validator_for(schema["json_schema"]["schema"])
    assert task.prompt_block().strip()
    for text, answer in answers:
        reply = task.example_reply(task.validate(answer, text=text), text=text)
        assert validator.is_valid(json.loads(reply)), reply
        parsed, error = task.parse_teacher(reply, text=text)
        assert error == "" and task.same(parsed, task.validate(answer, text=text))
    parsed, error = task.parse_teacher("not json at all", text=answers[0][0])
    assert parsed is None and error


@pytest.mark.parametrize("task_type", TYPES)
def test_a_file_gives_back_the_answers_an_export_wrote(task_type):
    task, answers, _ = sample(task_type)
    for text, answer in answers:
        answer = task.validate(answer, text=text)
        if task.label_column == "category":
            assert task.file_label(answer) in task.names
        elif task.label_column == "answer":
            assert task.same(task.column_answer(task.file_label(answer), text=text), answer)
        else:
            record = {"text": text, "label": answer, "example_id": 1}
            line = json.dumps(task.file_record(record))
            rows = task.read_answer_chunk([line], fmt=task.answer_formats[0], skip={"example_id"})
            assert len(rows) == 1 and task.same(task.validate(rows[0].answer, text=text), answer)
    assert set(task.export_formats) >= {"jsonl"}
    assert set(task.import_formats) >= {"csv", "jsonl"}


@pytest.mark.parametrize("task_type", TYPES)
def test_agreement_and_metrics_are_perfect_on_identical_answers(task_type):
    task, answers, _ = sample(task_type)
    texts = [text for text, _ in answers]
    normal = [task.validate(a, text=t) for t, a in answers]
    agreement = task.agreement(list(zip(normal, normal, strict=True)), texts=texts)
    assert isinstance(agreement, dict) and agreement
    metrics = task.metrics(normal, normal, texts=texts, confidences=[0.9, 0.8])
    assert metrics["score"] == pytest.approx(1.0)
    assert all(task.is_right(a, a) for a in normal)
    assert not task.is_right(normal[0], None)
    assert metrics["coverage"], "every task sweeps coverage by confidence"
    worse = task.metrics(normal, [None, normal[1]], texts=texts, confidences=[None, 0.8])
    assert worse["score"] < 1.0


def json_schema(openapi: object) -> object:
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable`` becomes a type that admits null."""
    if isinstance(openapi, dict):
        out = {k: json_schema(v) for k, v in openapi.items() if k != "nullable"}
        if openapi.get("nullable"):
            out["type"] = [openapi["type"], "null"]
        return out
    if isinstance(openapi, list):
        return [json_schema(v) for v in openapi]
    return openapi


@pytest.mark.parametrize("task_type", TYPES)
def test_the_served_shape_matches_its_openapi_schema(task_type):
    task, answers, _ = sample(task_type)
    properties = task_class(task_type).served_schema()
    schema = json_schema({"type": "object", "properties": properties, "required": list(properties)})
    validator = jsonschema_rs.validator_for(schema)
    for text, answer in answers:
        served = task.served(task.validate(answer, text=text), text=text)
        assert set(served) == set(properties) and validator.is_valid(served), served
        assert isinstance(task.drop_in_content(task.validate(answer, text=text), text=text), str)
    unsure = task.served(None, text=answers[0][0])
    assert validator.is_valid(unsure) and set(unsure) == set(properties)
    assert all(p.get("description") for p in properties.values())
    from training.openapi import document

    schemas = document()["components"]["schemas"]
    own = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas["Prediction"]["oneOf"]]
    mine = [name for name in own if set(properties) <= set(schemas[name]["properties"])]
    assert len(mine) == 1 and set(schemas[mine[0]]["required"]) >= set(properties)


@pytest.mark.parametrize("task_type", TYPES)
def test_the_task_has_its_templates(task_type):
    task = task_class(task_type)
    for name in (task.card_template, task.evaluation_template, task.agreement_template):
        assert get_template(name)
    for partial in ("blind", "adjudicate", "keys", "blind_help", "scripts"):
        assert get_template(f"{task.card_template}#{partial}")


@pytest.mark.parametrize("task_type", TYPES)
def test_options_have_defaults_and_reach_the_task(task_type):
    cls = task_class(task_type)
    categories, _, _ = SAMPLES[task_type]
    defaults = cls(categories).options
    assert set(defaults) == {o.name for o in cls.option_fields}
    for option in cls.option_fields:
        if option.kind == "int":
            changed = cls(categories, {option.name: (option.default or 0) + 1})
            assert changed.options[option.name] == (option.default or 0) + 1
    assert cls(categories, {"not-an-option": 1}).options == defaults


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    from distillapp import ml

    return ml.make_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


@pytest.mark.parametrize("task_type", TYPES)
def test_the_fine_tuned_student_trains_and_predicts_answers_the_task_accepts(task_type, tiny_base, tmp_path):
    from distillapp import ml

    task, answers, _ = sample(task_type)
    texts = [text for text, _ in answers] * 4
    labels = [task.validate(answer, text=text) for text, answer in answers] * 4
    student = task.student
    student.train(
        texts=texts,
        answers=labels,
        names=task.training_names(labels),
        base_model=tiny_base,
        output_dir=tmp_path / "model",
        hyperparameters=ml.Hyperparameters(epochs=1, batch_size=4, max_length=32),
        validation=(texts[:2], labels[:2]),
        **task.student_options(),
        # A task that masks (noise handling "mask") takes the parts its quality run flags.
        **({"ignore": [[[0, 1]]] * len(texts)} if task.masks_label_noise else {}),
    )
    predicted, confidences = student.predict(tmp_path / "model", texts[:2], max_length=32)
    assert len(predicted) == len(confidences) == 2
    for text, value, confidence in zip(texts[:2], predicted, confidences, strict=True):
        answer = task.student_answer(value, text=text)
        task.validate(answer, text=text)  # raises AnswerError if the student's answer does not fit
        assert 0.0 <= confidence <= 1.0
        assert set(task.served(answer, text=text)) == set(task_class(task_type).served_schema())
