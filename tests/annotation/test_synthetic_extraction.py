"""Synthetic extraction examples: the teacher LLM (a local OpenAI-compatible server) writes
texts with their field values; the app locates each value, refuses an example whose value
is not in its text, drops near duplicates and keeps every synthetic text out of gold."""

from __future__ import annotations

import json
import re

import pytest
from django.db.models import Sum
from django.urls import reverse

from annotation import projects, teacher
from annotation.models import (
    Example,
    GoldSet,
    GoldSetItem,
    Proposal,
    SyntheticGoldError,
    SyntheticJob,
)
from annotation.teacher import synthetic
from distillapp import jobs
from tests.annotation.test_teacher_placement import RECEIPT, receipts  # noqa: F401  (a fixture)
from tests.fake_openai import FakeOpenAI, FakeReply

pytestmark = pytest.mark.django_db(transaction=True)

PARIS = "Book a table in Paris for 4 people at 7pm"
LISBON = "Dinner in Lisbon tomorrow for two of us"


def item(text: str, *entities: tuple[str, str]) -> dict:
    return {"text": text, "entities": [{"field": f, "text": v} for f, v in entities]}


WRITTEN = {
    "city": [
        item(PARIS, ("city", "Paris"), ("people", "4"), ("time", "7pm")),
        item("A quiet table in Madrid, please", ("city", "Barcelona")),  # value not in its text
        item(PARIS + " please", ("city", "Paris"), ("people", "4"), ("time", "7pm")),  # near duplicate
        item(LISBON, ("city", "Lisbon")),
        item("Could I get a table at 8pm?", ("time", "8pm")),  # holds no city
    ],
    "people": [
        item("We are 6 for lunch on Sunday", ("people", "6")),
        item("Table for 3 in Rome at noon", ("city", "Rome"), ("people", "3"), ("time", "noon")),
        item("A booking for ten", ("people", "10")),  # value not in its text
    ],
}


def field_asked(request) -> str:
    system = request.messages[0]["content"]
    return re.search(r"each hold a value of the field '(\w+)'", system).group(1)


def responder(request) -> FakeReply:
    return FakeReply(
        content=json.dumps({"examples": WRITTEN[field_asked(request)]}),
        prompt_tokens=400,
        completion_tokens=150,
    )


@pytest.fixture
def xproject(lead, reviewer):
    return projects.project_create(
        name="Bookings",
        slug="bookings",
        user=lead,
        task_type="extraction",
        labels=[("city", "the city"), ("people", "how many people"), ("time", "when")],
    )


@pytest.fixture
def llm(xproject, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeOpenAI(responder) as server:
        config = teacher.teacher_config_for(xproject)
        config.provider, config.model, config.base_url, config.api_key_env = (
            "openai",
            "gpt-test",
            server.base_url,
            "FAKE_LLM_KEY",
        )
        config.save()
        yield server


def run(project, **kwargs) -> SyntheticJob:
    job = teacher.synthetic_job_create(project=project, user=None, **kwargs)
    assert teacher.synthetic_job_claim(job.pk)
    return teacher.synthetic_job_run(job=job)


def shown(example: Example) -> list[tuple[str, str]]:
    value = example.proposals.get().value
    return [(s["field"], example.text[s["start"] : s["end"]]) for s in value["spans"]]


def test_writes_texts_with_located_spans_refusing_values_not_in_the_text(xproject, llm):
    job = run(xproject, labels=["city"], per_label=2, near_duplicate_threshold=0.9)
    assert job.status == SyntheticJob.Status.SUCCEEDED and job.error == ""
    made = {e.text: e for e in Example.objects.filter(project=xproject, source="synthetic")}
    assert set(made) == {PARIS, LISBON}
    assert shown(made[PARIS]) == [("city", "Paris"), ("people", "4"), ("time", "7pm")]
    assert shown(made[LISBON]) == [("city", "Lisbon")]
    paris = made[PARIS]
    proposal = paris.proposals.get()
    assert proposal.agent == "teacher:gpt-test:synthetic" and proposal.error == ""
    assert xproject.task.validate(proposal.value, text=PARIS) == proposal.value
    assert json.loads(proposal.raw_response) == WRITTEN["city"][0]
    assert paris.metadata["label"] == "city" and {"persona", "tone", "difficulty"} <= set(paris.metadata)
    # The queue's keys come from the proposal, as for any teacher answer.
    assert Example.objects.get(pk=paris.pk).teacher_label == "city: Paris · people: 4 · time: 7pm"

    # The two refused examples are counted with their reasons and never stored.
    assert (job.generated, job.created, job.requested) == (5, 2, 2)
    assert job.invalid == 2 and job.near_duplicates == 1 and job.failed_calls == 0
    reasons = {bad["reason"] for bad in job.invalid_examples}
    assert reasons == {
        "'Barcelona' (city) is not in the text",
        "it holds no value of 'city', the field it was written for",
    }
    assert all(bad["label"] == "city" for bad in job.invalid_examples)
    assert not Example.objects.filter(text__contains="Madrid").exists()
    assert not Example.objects.filter(text__contains="8pm").exists()

    # One call, priced once and spread over what it kept.
    assert llm.calls == 1 and job.input_tokens == 400
    spent = Proposal.objects.filter(example__source="synthetic").aggregate(c=Sum("cost_usd"))["c"]
    assert spent == job.cost_usd


def test_the_writer_is_asked_for_texts_with_their_values_in_the_examples_schema(xproject, llm):
    Example.objects.create(project=xproject, text="Any table in Oslo tonight?")
    run(
        xproject,
        labels=["people"],
        per_label=2,
        personas=["a pirate"],
        tones=["furious"],
        min_words=3,
        max_words=12,
        noise="heavy",
        difficulty="hard",
    )
    request = llm.requests[0]
    system = request.messages[0]["content"]
    assert "each hold a value of the field 'people' (how many people)" in system
    assert "written by a pirate, in a furious tone, 3 to 12 words long" in system
    assert "typos" in system and "near-misses" in system
    assert "Copy each value exactly as it is written in the text" in system
    assert "- city (any number of values): the city" in system  # every field, to list all values
    assert "Any table in Oslo tonight?" in system  # a real text, for style
    schema = request.body["response_format"]["json_schema"]
    assert schema["name"] == "examples"
    one = schema["schema"]["properties"]["examples"]["items"]
    assert one["required"] == ["text", "entities"]
    assert one["properties"]["entities"]["items"]["properties"]["field"]["enum"] == ["city", "people", "time"]
    # No logprobs are asked for writing.
    assert "logprobs" not in request.body


def test_synthetic_texts_never_enter_gold_and_gold_never_seeds_the_writer(xproject, llm):
    gold_text = "Our gold booking: table in Nice for 5"
    gold = GoldSet.objects.create(project=xproject, version=1)
    GoldSetItem.objects.create(
        gold_set=gold, example=Example.objects.create(project=xproject, text=gold_text)
    )
    Example.objects.create(project=xproject, text="Lunch for 2 in Porto")
    for _ in range(2):
        run(xproject, labels=["people"], per_label=1)
    assert all(gold_text not in r.messages[0]["content"] for r in llm.requests)
    example = Example.objects.filter(project=xproject, source="synthetic").first()
    with pytest.raises(SyntheticGoldError):
        GoldSetItem.objects.create(gold_set=gold, example=example)


def test_a_killed_job_resumes_per_field_without_extra_examples(xproject, llm, monkeypatch):
    store = synthetic._store

    def killed_after_the_first_call(job, task, calls, results, pool, agent):
        store(job, task, calls[:1], results[:1], pool, agent)
        raise RuntimeError("worker killed")

    monkeypatch.setattr(synthetic, "_store", killed_after_the_first_call)
    job = teacher.synthetic_job_create(project=xproject, user=None, labels=["city", "people"], per_label=2)
    assert teacher.synthetic_job_claim(job.pk)
    with pytest.raises(RuntimeError):
        teacher.synthetic_job_run(job=job)
    job.refresh_from_db()
    assert job.status == SyntheticJob.Status.FAILED and job.created == 2
    calls_before = llm.calls

    monkeypatch.setattr(synthetic, "_store", store)
    assert jobs.resume(SyntheticJob, job.pk) and teacher.synthetic_job_claim(job.pk)
    job = teacher.synthetic_job_run(job=job)
    assert job.status == SyntheticJob.Status.SUCCEEDED and job.created == job.requested == 4
    made = Example.objects.filter(project=xproject, source="synthetic")
    assert sorted(made.values_list("metadata__label", flat=True)) == ["city", "city", "people", "people"]
    # Only the field still short was asked again; each stored call is counted once.
    assert llm.calls == calls_before + 1
    assert job.input_tokens == 400 * 2
    assert job.cost_usd == Proposal.objects.filter(example__in=made).aggregate(c=Sum("cost_usd"))["c"]


def test_unknown_fields_are_refused_by_name(xproject, llm):
    with pytest.raises(teacher.LabelingError, match="Unknown fields: venue"):
        teacher.synthetic_job_create(project=xproject, user=None, labels=["venue"])


def test_the_page_offers_fields_and_the_start_view_queues(xproject, lead_client, queues, llm):
    page = lead_client.get(reverse("annotation:teacher-settings", args=[xproject.slug])).content.decode()
    assert 'data-field="synthetic-about"' in page and "writes new texts per field" in page
    assert "Examples per field" in page and "None ticked: every field." in page
    assert all(f'name="labels" value="{name}"' in page for name in ("city", "people", "time"))
    response = lead_client.post(
        reverse("annotation:synthetic-start", args=[xproject.slug]),
        {
            "labels": ["city"],
            "per_label": 2,
            "min_words": 3,
            "max_words": 20,
            "noise": "light",
            "difficulty": "mixed",
            "near_duplicate_threshold": 0.9,
        },
    )
    assert response.status_code == 302
    job = SyntheticJob.objects.get()
    assert (job.labels, job.requested) == (["city"], 2)
    assert [j.args for j in queues["llm"].jobs] == [(job.pk,)]

    # The project page shows what was refused, and why.
    assert teacher.synthetic_job_claim(job.pk)
    teacher.synthetic_job_run(job=job)
    detail = lead_client.get(reverse("annotation:project-detail", args=[xproject.slug])).content.decode()
    assert "2 per field" in detail
    assert "&#x27;Barcelona&#x27; (city) is not in the text" in detail


def test_a_value_written_twice_sits_where_reviewed_spans_put_its_field(request, monkeypatch):
    """#26: the writer lists a receipt's total once where the text holds it twice; reviewed
    receipts say a total follows "Total", so the span is the second "12.50", not the burger's
    (the first, unprimed), and the example comes early in review (an ambiguous placement)."""
    project = request.getfixturevalue("receipts")
    written = [item(RECEIPT, ("total", "12.50")), item("Coffee, Total 2.00", ("total", "2.00"))]
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeOpenAI(lambda request: FakeReply(content=json.dumps({"examples": written}))) as server:
        config = teacher.teacher_config_for(project)
        config.provider, config.model, config.base_url, config.api_key_env = (
            "openai",
            "gpt-test",
            server.base_url,
            "FAKE_LLM_KEY",
        )
        config.save()
        job = run(project, labels=["total"], per_label=2, near_duplicate_threshold=0.999)
    assert job.status == SyntheticJob.Status.SUCCEEDED and job.created == 2
    made = {e.text: e for e in Example.objects.filter(project=project, source="synthetic")}
    spans = made[RECEIPT].proposals.get().value["spans"]
    assert [(s["start"], s["end"]) for s in spans] == [(RECEIPT.rindex("12.50"), len(RECEIPT))]
    assert made[RECEIPT].risk > made["Coffee, Total 2.00"].risk
    # The job counts its placements as a labelling job does, and the project page says so.
    assert job.answer_notes == {"ambiguous": 1, "by_context": 1, "first": 0}
    detail = request.getfixturevalue("lead_client").get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    row = detail[detail.index(f'data-synthetic-job="{job.pk}"') :]
    assert 'data-metric="ambiguous-placements"' in row[: row.index("</tr>")]
