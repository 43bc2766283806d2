"""The ONNX Runtime int8 export: predictions, the gold-accuracy gate, the API and the deploy page."""

from __future__ import annotations

import json
import shutil

import pytest
from django.urls import reverse

from annotation.models import Example, GoldSet, GoldSetItem
from distillapp import ml
from tasks.classification import student as classification_student
from tests.training.conftest import make_run
from tests.training.test_serving import call
from training import jobs, serving
from training.models import ModelVersion

pytestmark = pytest.mark.django_db

TEXTS = [
    "I was charged twice for my subscription",
    "the app crashes when I log in",
    "where is your office?",
    "refund please",
    "error 500 on the export page, again and again and again",
]
GOLD = ["Billing", "Technical support", "Other", "Billing", "Technical support"]


@pytest.fixture
def artifacts(tiny_classifier, tmp_path):
    """A private copy of the tiny run's artifacts: each test writes its own export."""
    return shutil.copytree(tiny_classifier, tmp_path / "run")


@pytest.fixture
def run(project, lead, artifacts):
    gold = GoldSet.objects.create(project=project, version=1)
    for text, label in zip(TEXTS, GOLD, strict=True):
        GoldSetItem.objects.create(
            gold_set=gold, example=Example.objects.create(project=project, text=text), answer=label
        )
    gold.freeze(user=lead)
    return make_run(project, artifacts)  # its student evaluation is on this gold set


def force_measurement(run, *, onnx: float, fp32: float) -> None:
    path = serving.onnx_dir_for(run) / "quantization.json"
    measured = json.loads(path.read_text())
    path.write_text(json.dumps({**measured, "onnx_accuracy": onnx, "fp32_accuracy": fp32}))


def test_int8_predictions_match_fp32_loosely(artifacts, tmp_path):
    out = classification_student.export_onnx(artifacts / "model", tmp_path / "int8", max_length=64)
    assert (out / ml.ONNX_MODEL_FILE).is_file() and (out / "tokenizer.json").is_file()
    fp32_labels, fp32_conf = classification_student.predict(artifacts / "model", TEXTS, max_length=64)
    # Batches of 1, 2 and all texts: the graph's batch and sequence axes are dynamic.
    for batch_size in (1, 2, 64):
        labels, conf = classification_student.predict_onnx(out, TEXTS, max_length=64, batch_size=batch_size)
        assert len(labels) == len(conf) == len(TEXTS)
        assert set(labels) <= {"Billing", "Technical support", "Other"}
        # A random tiny model is nearly uniform, so an int8 rounding may flip a close call.
        assert sum(a == b for a, b in zip(labels, fp32_labels, strict=True)) >= len(TEXTS) - 1
        assert conf == pytest.approx(fp32_conf, abs=0.05)
        assert all(0 < c <= 1 for c in conf)
    assert classification_student.predict_onnx(out, [], max_length=64) == ([], [])


def test_prepare_measures_both_models_on_the_runs_gold_set(run):
    result = serving.onnx_prepare(run=run)
    fp32, _ = classification_student.predict(f"{run.artifact_path}/model", TEXTS, max_length=64)
    int8, _ = classification_student.predict_onnx(serving.onnx_dir_for(run), TEXTS, max_length=64)
    assert result["gold_version"] == 1 and result["examples"] == len(TEXTS)
    assert result["fp32_accuracy"] == sum(p == g for p, g in zip(fp32, GOLD, strict=True)) / len(GOLD)
    assert result["onnx_accuracy"] == sum(p == g for p, g in zip(int8, GOLD, strict=True)) / len(GOLD)
    assert result["may_activate"] == (result["fp32_accuracy"] - result["onnx_accuracy"] <= 0.005)
    assert serving.onnx_measurement(run) == result


def test_prepare_needs_an_evaluated_run(project, artifacts):
    run = make_run(project, artifacts, evaluated=False)
    with pytest.raises(serving.ServingError) as refused:
        serving.onnx_prepare(run=run)
    assert refused.value.code == "not_evaluated"
    assert serving.onnx_measurement(run) is None


def test_int8_promotion_is_gated_by_gold_accuracy(run, lead):
    with pytest.raises(serving.ServingError) as refused:
        serving.version_promote(run=run, user=lead, runtime="onnx-int8")
    assert refused.value.code == "not_quantized"
    serving.onnx_prepare(run=run)

    force_measurement(run, onnx=0.894, fp32=0.9)  # 0.6 points worse
    with pytest.raises(serving.ServingError) as refused:
        serving.version_promote(run=run, user=lead, runtime="onnx-int8")
    assert refused.value.code == "quantized_too_inaccurate" and "89.4%" in str(refused.value)
    assert not ModelVersion.objects.exists()

    force_measurement(run, onnx=0.895, fp32=0.9)  # exactly 0.5 points: allowed
    version = serving.version_promote(run=run, user=lead, runtime="onnx-int8")
    assert (version.runtime, version.onnx_gold_accuracy, version.fp32_gold_accuracy) == (
        "onnx-int8",
        0.895,
        0.9,
    )
    assert version.onnx_path == str(serving.onnx_dir_for(run)) and version.is_active

    force_measurement(run, onnx=0.93, fp32=0.9)  # better than fp32 is fine too
    assert serving.version_promote(run=run, user=lead, runtime="onnx-int8").is_active
    # fp32 promotion does not care about the int8 measurement.
    force_measurement(run, onnx=0.1, fp32=0.9)
    assert serving.version_promote(run=run, user=lead).runtime == "torch"
    with pytest.raises(serving.ServingError) as refused:
        serving.version_promote(run=run, user=lead, runtime="tensorrt")
    assert refused.value.code == "bad_runtime"


def test_the_api_answers_through_the_int8_runtime(project, run, lead, monkeypatch):
    serving.onnx_prepare(run=run)
    force_measurement(run, onnx=0.9, fp32=0.9)
    version = serving.version_promote(run=run, user=lead, threshold=0.0, runtime="onnx-int8")
    _, raw = serving.token_create(project=project, user=lead, name="ci")
    expected, confidences = classification_student.predict_onnx(version.onnx_path, TEXTS[:2], max_length=64)

    def no_torch(*args, **kwargs):
        raise AssertionError("the torch model must not serve an int8 version")

    monkeypatch.setattr(classification_student, "predict", no_torch)
    status, body = call(raw, project.slug, {"texts": TEXTS[:2]})
    assert status == 200
    assert [a["label"] for a in body["predictions"]] == expected
    assert [a["confidence"] for a in body["predictions"]] == [round(c, 4) for c in confidences]
    assert {a["model_version"] for a in body["predictions"]} == {"run-1@0.00+int8"}
    assert {a["route"] for a in body["predictions"]} == {"student"}


def test_deploy_page_quantizes_shows_and_promotes_as_int8(
    project, run, lead_client, reviewer_client, outsider_client, client
):
    url = reverse("training:deploy", args=[project.slug])
    page = lead_client.get(url).content.decode()
    assert "Quantize (int8)" in page and 'value="onnx-int8"' in page
    # Only a lead may quantize; outsiders do not see the project; anonymous users log in.
    assert reviewer_client.post(url, {"quantize": run.number}).status_code == 403
    assert outsider_client.post(url, {"quantize": run.number}).status_code == 404
    assert client.post(url, {"quantize": run.number}).status_code == 302
    assert serving.onnx_measurement(run) is None

    lead_client.post(url, {"quantize": run.number})
    assert serving.onnx_measurement(run) is None  # a worker exports and measures it
    jobs.run_export_job(run.export_jobs.get().pk)
    page = lead_client.get(url).content.decode()
    measured = serving.onnx_measurement(run)
    assert measured is not None and "Quantize again" in page
    assert f"{measured['onnx_accuracy']:.3f}" in page and f"{measured['fp32_accuracy']:.3f}" in page
    assert ("may be activated" if measured["may_activate"] else "too inaccurate") in page
    assert lead_client.post(url, {"quantize": "99"}).status_code == 404

    promote = reverse("training:promote", args=[project.slug])
    force_measurement(run, onnx=0.8, fp32=0.9)
    page = lead_client.post(
        promote, {"run": run.number, "threshold": "0.5", "runtime": "onnx-int8"}, follow=True
    ).content.decode()
    assert "too inaccurate" in page and not ModelVersion.objects.exists()
    force_measurement(run, onnx=0.9, fp32=0.9)
    page = lead_client.post(
        promote, {"run": run.number, "threshold": "0.5", "runtime": "onnx-int8"}, follow=True
    ).content.decode()
    assert ModelVersion.objects.get(is_active=True).runtime == "onnx-int8"
    assert 'data-runtime="onnx-int8"' in page and "(int8)" in page
