"""Serving an extraction student: the predict API's spans and fields, routing by the text's
confidence, traffic into review, the drop-in's fields JSON, and the int8 gate on strict F1."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal

import pytest
from django.test import Client

from annotation.models import Example, GoldSet, GoldSetItem, Label, Project, Proposal, Review, TeacherConfig
from annotation.teacher import service, teacher_config_for
from tasks.extraction import student as extraction_student
from tests.conftest import make_project
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.training.conftest import make_run
from tests.training.test_extraction_training import FIELDS, bookings
from tests.training.test_serving import call, keep_every_unsure_text
from training import serving
from training.models import ModelVersion, PredictionLog, ServingConfig

pytestmark = pytest.mark.django_db

TEXTS = [
    "Table for 4 on Friday at 7:30pm, name Carla.",
    "Could we book for two tomorrow at 8? It's Okafor.",
]


@pytest.fixture(scope="session")
def tiny_extractor(tmp_path_factory):
    """An untrained tiny BERT token classifier over the booking fields, saved as a run's artifacts."""
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    from distillapp import ml

    root = tmp_path_factory.mktemp("tiny-extraction-run")
    tokenizer = AutoTokenizer.from_pretrained(ml.default_base_model())
    labels = extraction_student.bio_labels([name for name, _ in FIELDS])
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    import torch

    torch.manual_seed(0)  # the same random weights every run: the test must not depend on luck
    BertForTokenClassification(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root


@pytest.fixture
def extraction(lead, reviewer):
    project = make_project(lead=lead, reviewer=reviewer, slug="bookings", labels=FIELDS)
    project.task_type = "extraction"
    project.save(update_fields=["task_type"])
    Label.objects.filter(project=project, name="name").update(allows_many=False)
    project.forget_task()
    return project


@pytest.fixture
def artifacts(tiny_extractor, tmp_path):
    return shutil.copytree(tiny_extractor, tmp_path / "run")


def promote(project, lead, artifacts, *, threshold: float) -> tuple[ModelVersion, str]:
    keep_every_unsure_text(project)
    version = serving.version_promote(run=make_run(project, artifacts), user=lead, threshold=threshold)
    return version, serving.token_create(project=project, user=lead, name="ci")[1]


def use_fallback(project, fallback: str) -> None:
    config = serving.serving_config_for(project)
    config.fallback = fallback
    config.save()


def assert_served_spans(prediction: dict, text: str) -> None:
    assert set(prediction) >= {"spans", "fields", "confidence", "route", "model_version", "latency_ms"}
    for span in prediction["spans"]:
        assert set(span) == {"field", "start", "end", "text", "confidence"}
        assert span["text"] == text[span["start"] : span["end"]] and 0 <= span["confidence"] <= 1
    fields = prediction["fields"]
    assert set(fields) == {"date", "time", "people", "name"}
    assert fields["name"] is None or isinstance(fields["name"], str)  # takes one value
    assert all(isinstance(fields[f], list) for f in ("date", "time", "people"))
    assert sum(len(fields[f]) for f in ("date", "time", "people")) + (fields["name"] is not None) == len(
        prediction["spans"]
    )


def test_the_predict_api_answers_spans_fields_and_the_texts_confidence(extraction, lead, artifacts):
    version, token = promote(extraction, lead, artifacts, threshold=0.0)  # always sure enough
    status, body = call(token, extraction.slug, {"texts": TEXTS})
    assert status == 200, body
    predictions = body["predictions"]
    assert len(predictions) == 2
    for prediction, text in zip(predictions, TEXTS, strict=True):
        assert prediction["route"] == "student" and prediction["model_version"] == version.name
        assert 0 <= prediction["confidence"] <= 1
        assert_served_spans(prediction, text)
    # The text's confidence is its least sure decision: never above a span's.
    for prediction in predictions:
        assert all(prediction["confidence"] <= s["confidence"] + 1e-4 for s in prediction["spans"])
    # Logs keep the answer's field counts, never the values read from the customer's text.
    logs = list(PredictionLog.objects.order_by("pk"))
    assert [log.route for log in logs] == ["student", "student"]
    task = extraction.task
    for log, prediction in zip(logs, predictions, strict=True):
        assert log.answer_summary == task.summary({"spans": prediction["spans"]})
        # Field names and counts only ("time ×1 · date ×2"), whatever the spans' texts are.
        names = set(extraction.labels.values_list("name", flat=True))
        parts = (
            [part.rsplit(" ×", 1) for part in log.answer_summary.split(" · ")] if prediction["spans"] else []
        )
        assert all(name in names and count.isdigit() for name, count in parts), log.answer_summary


def test_an_unsure_text_goes_to_review_with_the_students_spans(extraction, lead, artifacts):
    # Threshold 1.0: the untrained student is never that sure.
    _, token = promote(extraction, lead, artifacts, threshold=1.0)
    use_fallback(extraction, ServingConfig.Fallback.REVIEW)
    status, body = call(token, extraction.slug, {"texts": TEXTS[:1]})
    assert status == 200, body
    [prediction] = body["predictions"]
    assert prediction["route"] == "review" and prediction["spans"] is None and prediction["fields"] is None
    assert prediction["confidence"] < 1.0
    example = Example.objects.get(text=TEXTS[0].strip())
    assert example.source == Example.Source.TRAFFIC
    proposal = example.proposals.get(agent="student:run-1")
    extraction.task.validate(proposal.value, text=example.text)  # a span set review can accept
    assert proposal.confidence is None  # the routed answer was not the student's


def test_the_drop_in_answers_the_fields_object(extraction, lead, artifacts):
    _, token = promote(extraction, lead, artifacts, threshold=0.0)
    _, body = call(token, extraction.slug, {"texts": TEXTS[:1]})
    expected = body["predictions"][0]["fields"]
    response = Client().post(
        "/v1/chat/completions",
        data=json.dumps({"model": "whatever", "messages": [{"role": "user", "content": TEXTS[0]}]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.content[:300]
    completion = response.json()
    assert json.loads(completion["choices"][0]["message"]["content"]) == expected
    assert completion["distill"]["route"] == "student" and response["X-Distill-Unsure"] == "0"


def test_an_unsure_text_takes_the_teachers_spans(extraction, lead, artifacts, monkeypatch, settings):
    _, token = promote(extraction, lead, artifacts, threshold=1.0)
    text = TEXTS[0]
    reply = FakeReply(
        content=json.dumps(
            {"entities": [{"field": "people", "text": "4"}, {"field": "date", "text": "Friday"}]}
        ),
        prompt_tokens=300,
        completion_tokens=20,
    )
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeOpenAI(lambda request: reply) as server:
        settings.TEACHER_API_KEY_VARS = ["FAKE_LLM_KEY"]
        settings.TEACHER_BASE_URLS = [server.base_url]
        teacher = teacher_config_for(extraction)
        teacher.provider = TeacherConfig.Provider.OPENAI
        teacher.model = "gpt-4o-mini"
        teacher.base_url = server.base_url
        teacher.api_key_env = "FAKE_LLM_KEY"
        teacher.price_input_per_mtok = Decimal("0.15")
        teacher.price_output_per_mtok = Decimal("0.60")
        teacher.save()
        use_fallback(extraction, ServingConfig.Fallback.TEACHER)
        status, body = call(token, extraction.slug, {"texts": [text]})
        response = Client().post(
            "/v1/chat/completions",
            data=json.dumps({"messages": [{"role": "user", "content": TEXTS[1]}]}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert status == 200, body
    [prediction] = body["predictions"]
    assert prediction["route"] == "teacher"
    assert [(s["field"], s["text"]) for s in prediction["spans"]] == [("people", "4"), ("date", "Friday")]
    assert prediction["fields"] == {"date": ["Friday"], "time": [], "people": ["4"], "name": None}
    # The drop-in's second text holds neither value: the teacher's answer is invalid, so the
    # drop-in answers unsure, by default an error the client's fallback catches.
    assert response.status_code == 422, response.content[:300]
    assert response["X-Distill-Unsure"] == "1"
    assert response.json()["error"]["code"] == "student_unsure"
    assert Proposal.objects.filter(agent__startswith="teacher:gpt-4o-mini", error="").count() == 1


ROOM = "Room 4, a table for 4 on Friday."


def test_the_teachers_repeated_value_sits_where_reviewed_spans_put_its_field(
    extraction, lead, reviewer, artifacts, monkeypatch, settings
):
    """#26: the fallback's teacher names "4" once in a text that holds it twice; reviewed
    answers say a party size follows "table for", so it is the second "4", not the room's
    (the first, unprimed). The primed task is kept; a new review reaches it after the recheck
    interval."""
    for text in ("A table for 2 at noon", "Lunch, table for 6 please"):
        example = Example.objects.create(project=extraction, text=text)
        start = text.index(" for ") + 5
        people = {"spans": [{"start": start, "end": start + 1, "field": "people"}]}
        Review.objects.create(
            example=example, reviewer=reviewer, kind="review", verdict="correct", value=people
        )
    _, token = promote(extraction, lead, artifacts, threshold=1.0)
    primings = []
    prime = Project.primed
    monkeypatch.setattr(Project, "primed", lambda self, task=None: primings.append(1) or prime(self, task))
    reply = FakeReply(
        content=json.dumps(
            {"entities": [{"field": "people", "text": "4"}, {"field": "date", "text": "Friday"}]}
        )
    )
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeOpenAI(lambda request: reply) as server:
        teacher = teacher_config_for(extraction)
        teacher.provider, teacher.model = TeacherConfig.Provider.OPENAI, "gpt-4o-mini"
        teacher.base_url, teacher.api_key_env = server.base_url, "FAKE_LLM_KEY"
        teacher.save()
        use_fallback(extraction, ServingConfig.Fallback.TEACHER)
        bodies = [call(token, extraction.slug, {"texts": [ROOM]})[1] for _ in range(2)]
        for body in bodies:
            [prediction] = body["predictions"]
            assert prediction["route"] == "teacher"
            spans = [(s["field"], s["start"]) for s in prediction["spans"]]
            assert spans == [("people", ROOM.rindex("4")), ("date", ROOM.index("Friday"))]
        assert len(primings) == 1  # the second request reused it
        example = Example.objects.create(project=extraction, text="Table for 3, Sunday")
        three = {"spans": [{"start": 10, "end": 11, "field": "people"}]}
        Review.objects.create(
            example=example, reviewer=reviewer, kind="review", verdict="correct", value=three
        )
        call(token, extraction.slug, {"texts": [ROOM]})
        assert len(primings) == 1  # asked again only after a while
        later = service._clock() + service.PRIMED_RECHECK_SECONDS
        monkeypatch.setattr(service, "_clock", lambda: later)
        call(token, extraction.slug, {"texts": [ROOM]})
        assert len(primings) == 2  # a new review: read again
        call(token, extraction.slug, {"texts": [ROOM]})
        assert len(primings) == 2
    # The kept text carries the teacher's placement and comes early in review (ambiguous).
    kept = Example.objects.get(text=ROOM)
    proposal = kept.proposals.get(agent__startswith="teacher:")
    assert [s["start"] for s in proposal.value["spans"] if s["field"] == "people"] == [ROOM.rindex("4")]
    assert kept.risk > 0


@pytest.mark.parametrize(
    ("unsure", "status"),
    [("error", 422), ("abstain", 200), ("guess", 200)],
)
def test_the_drop_in_answers_an_unsure_text_as_the_lead_chose(extraction, lead, artifacts, unsure, status):
    """#24 for extraction: the default is the error; an abstain content is given as written
    ("{}" parses as no fields); the guess is the student's fields object as a JSON string."""
    _, token = promote(extraction, lead, artifacts, threshold=1.0)
    config = serving.serving_config_for(extraction)
    config.drop_in_unsure, config.drop_in_abstain_content = unsure, "{}"
    config.save()
    response = Client().post(
        "/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": TEXTS[0]}]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == status, response.content[:300]
    assert response["X-Distill-Unsure"] == "1"
    if unsure == "error":
        assert response.json()["error"]["code"] == "student_unsure"
        return
    content = json.loads(response.json()["choices"][0]["message"]["content"])
    assert content == {} if unsure == "abstain" else set(content) == {"date", "time", "people", "name"}


def test_the_int8_gate_compares_strict_f1(extraction, lead, artifacts):
    gold = GoldSet.objects.create(project=extraction, version=1)
    for text, answer in bookings(6):
        example = Example.objects.create(project=extraction, text=text)
        GoldSetItem.objects.create(gold_set=gold, example=example, answer=answer)
    gold.freeze(user=lead)
    run = make_run(extraction, artifacts)
    result = serving.onnx_prepare(run=run)
    assert result["score_name"] == "strict F1" and result["examples"] == 6
    # Both numbers are the task's headline on gold: strict entity micro-F1.
    task = extraction.task
    texts = [t for t, _ in bookings(6)]
    fp32, _ = serving.student_predict(ModelVersion(project=extraction, run=run), texts)
    assert result["fp32_accuracy"] == task.metrics([a for _, a in bookings(6)], fp32, texts=texts)["score"]
    assert 0 <= result["onnx_accuracy"] <= 1 and 0 <= result["agreement"] <= 1

    path = serving.onnx_dir_for(run) / "quantization.json"
    measured = json.loads(path.read_text())
    path.write_text(json.dumps({**measured, "fp32_accuracy": 0.80, "onnx_accuracy": 0.79}))
    with pytest.raises(serving.ServingError, match=r"strict F1.*more than 0.5 points"):
        serving.version_promote(run=run, user=lead, threshold=0.0, runtime="onnx-int8")
    path.write_text(json.dumps({**measured, "fp32_accuracy": 0.80, "onnx_accuracy": 0.796}))
    version = serving.version_promote(run=run, user=lead, threshold=0.0, runtime="onnx-int8")
    token = serving.token_create(project=extraction, user=lead, name="ci")[1]
    status, body = call(token, extraction.slug, {"texts": TEXTS})
    assert status == 200 and version.runtime == "onnx-int8"
    for prediction, text in zip(body["predictions"], TEXTS, strict=True):
        assert prediction["route"] == "student"
        assert_served_spans(prediction, text)
