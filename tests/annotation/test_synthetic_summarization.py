"""Synthetic summarisation examples: the teacher LLM (a local OpenAI-compatible server) writes
texts about the lead's topics with their summaries; a summary naming what its text lacks is
refused with the reason; the offline teacher refuses to write at all."""

from __future__ import annotations

import json

import pytest

from annotation import projects, teacher
from annotation.forms import SyntheticForm
from annotation.models import Example, SyntheticJob
from annotation.teacher.service import LabelingError
from tests.fake_openai import FakeOpenAI, FakeReply

pytestmark = pytest.mark.django_db(transaction=True)

WRITTEN = [
    {
        "text": "Customer: My parcel 771 is late.\nAgent: It arrives Friday.",
        "summary": "Parcel 771 is late; it arrives Friday.",
    },
    {
        "text": "Customer: Where is my order?\nAgent: It left the depot today.",
        "summary": "Order 9918 left the depot on Monday.",
    },
    {"text": "", "summary": "Nothing."},
]


@pytest.fixture
def calls(lead):
    return projects.project_create(
        name="Calls",
        slug="calls",
        user=lead,
        task_type="summarization",
        task_options={"target_length": 1, "style": "Name the outcome."},
    )


@pytest.fixture
def llm(calls, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeOpenAI(lambda request: FakeReply(content=json.dumps({"examples": WRITTEN}))) as server:
        config = teacher.teacher_config_for(calls)
        config.provider, config.model, config.base_url, config.api_key_env = (
            "openai",
            "gpt-test",
            server.base_url,
            "FAKE_LLM_KEY",
        )
        config.save()
        yield server


def test_writes_texts_with_summaries_about_the_leads_topics(calls, llm):
    job = teacher.synthetic_job_create(project=calls, user=None, labels=["a late parcel"], per_label=1)
    assert teacher.synthetic_job_claim(job.pk)
    job = teacher.synthetic_job_run(job=job)
    assert job.status == SyntheticJob.Status.SUCCEEDED, job.error
    made = Example.objects.get(project=calls, source="synthetic")
    assert made.text == WRITTEN[0]["text"] and made.metadata["label"] == "a late parcel"
    assert made.proposals.get().value == {"summary": "Parcel 771 is late; it arrives Friday."}
    reasons = " ".join(bad["reason"] for bad in job.invalid_examples)
    assert "'9918'" in reasons and "not in its text" in reasons
    system = llm.requests[0].messages[0]["content"]
    assert "'a late parcel'" in system and "at most 1 sentence" in system and "Name the outcome." in system
    schema = json.dumps(llm.requests[0].body["response_format"])
    assert '"summary"' in schema


def test_topics_are_named_by_the_lead_and_the_offline_teacher_refuses(calls):
    form = SyntheticForm(
        {
            "labels": "a late parcel\n\na double charge\n",
            "per_label": 5,
            "min_words": 5,
            "max_words": 60,
            "noise": "light",
            "difficulty": "mixed",
            "near_duplicate_threshold": 0.92,
        },
        project=calls,
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["labels"] == ["a late parcel", "a double charge"]
    with pytest.raises(LabelingError, match="offline teacher cannot write"):
        teacher.synthetic_job_create(project=calls, user=None, labels=["a late parcel"])
