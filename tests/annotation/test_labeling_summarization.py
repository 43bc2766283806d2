"""Teacher labelling of a summarisation project: summaries through the labelling job against a
local OpenAI-compatible server (log-prob and self-consistency confidence, invalid answers
recorded as errors), and the offline extractive baseline."""

from __future__ import annotations

import json

import pytest

from annotation import projects, teacher
from annotation.models import Example, LabelingJob, Proposal, TeacherConfig
from tests.fake_openai import FakeOpenAI, FakeReply

pytestmark = pytest.mark.django_db(transaction=True)

CALLS = {
    "Agent: Hello.\nCustomer: Parcel 771 is late.\nAgent: It arrives Friday.": "Parcel 771 is late; it arrives Friday.",
    "Agent: Hi.\nCustomer: I was charged $20 twice.\nAgent: I refunded $20.": "A $20 double charge was refunded.",
}


def text_of(request) -> str:
    for message in reversed(request.messages):
        if message["role"] == "user" and message["content"] in CALLS:
            return message["content"]
    return ""


def responder(request) -> FakeReply:
    return FakeReply(content=json.dumps({"summary": CALLS.get(text_of(request), "")}))


@pytest.fixture
def calls(lead):
    project = projects.project_create(
        name="Calls",
        slug="calls",
        user=lead,
        task_type="summarization",
        task_options={"target_unit": "words", "target_length": 12, "style": "For the billing team."},
    )
    for text in CALLS:
        Example.objects.create(project=project, text=text)
    return project


@pytest.fixture
def llm(monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeOpenAI(responder) as server:
        yield server


def use_llm(project, server, **fields) -> TeacherConfig:
    config = teacher.teacher_config_for(project)
    config.provider = TeacherConfig.Provider.OPENAI
    config.model = "gpt-test"
    config.base_url = server.base_url
    config.api_key_env = "FAKE_LLM_KEY"
    for name, value in fields.items():
        setattr(config, name, value)
    config.save()
    return config


def run_job(project, **kwargs) -> LabelingJob:
    job = teacher.labeling_job_create(project=project, user=None, selection="unlabelled", **kwargs)
    assert teacher.labeling_job_claim(job.pk)
    return teacher.labeling_job_run(job=job)


def test_llm_job_stores_summaries_with_logprob_confidence_and_the_prompt_asks_for_the_target(calls, llm):
    config = use_llm(calls, llm)
    assert config.max_tokens == 300  # a summary's answer budget
    job = run_job(calls)
    assert (job.status, job.done, job.failed) == (LabelingJob.Status.SUCCEEDED, 2, 0)
    for proposal in Proposal.objects.select_related("example"):
        assert proposal.value == {"summary": CALLS[proposal.example.text]} and proposal.error == ""
        assert proposal.confidence_method == "logprobs" and 0 < proposal.confidence <= 1
        assert proposal.cost_usd > 0
    request = llm.requests[0]
    assert request.body["response_format"]["json_schema"]["name"] == "summarization"
    system = request.messages[0]["content"]
    assert "at most 12 words" in system and "For the billing team." in system
    assert Example.objects.get(text__contains="771").teacher_label == "Parcel 771 is late; it arrives Friday."


@pytest.mark.parametrize(
    "content, why",
    [
        ('{"summary": "   "}', "the summary is empty"),
        ('{"label": "x"}', 'no "summary" field'),
        ("not json {", "not valid JSON"),
    ],
)
def test_an_invalid_answer_is_an_error_never_a_summary(calls, llm, content, why):
    use_llm(calls, llm)
    target = next(iter(CALLS))
    llm.responder = lambda req: FakeReply(content=content) if text_of(req) == target else responder(req)
    job = run_job(calls)
    assert (job.done, job.failed) == (1, 1)
    errors = Proposal.objects.filter(example__text=target)
    assert errors.count() == 2 and all(p.value is None and why in p.error for p in errors)
    assert Example.objects.with_current_label().get(text=target).label_state == "unlabelled"


def test_self_consistency_keeps_the_central_sample_and_scores_agreement(calls, llm):
    use_llm(calls, llm, use_logprobs=False, self_consistency_samples=3)
    samples = [
        "Parcel 771 is late; it arrives Friday.",
        "Parcel 771 is late and arrives on Friday.",
        "Nothing.",
    ]
    llm.responder = lambda req: FakeReply(n_contents=[json.dumps({"summary": s}) for s in samples])
    run_job(calls)
    proposal = Proposal.objects.filter(example__text__contains="771").get()
    assert proposal.value["summary"] in samples[:2]
    assert proposal.confidence_method == "self_consistency" and 0.1 < proposal.confidence < 0.9


def test_the_offline_teacher_copies_the_central_turns_without_a_key(calls):
    config = teacher.teacher_config_for(calls)
    assert config.provider == TeacherConfig.Provider.EMBEDDING  # no key: the offline teacher
    job = run_job(calls)
    assert (job.status, job.done, job.failed) == (LabelingJob.Status.SUCCEEDED, 2, 0)
    for proposal in Proposal.objects.select_related("example"):
        assert "extractive-centroid-minilm" in proposal.agent
        lines = [line for line in proposal.value["summary"].split("\n") if line.strip()]
        assert lines and all(line.strip() in proposal.example.text for line in lines)
        assert 0 <= proposal.confidence <= 1
