"""Synthetic examples written by the teacher LLM (a local OpenAI-compatible server)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.urls import reverse

from annotation import teacher
from annotation.models import Example, GoldSet, GoldSetItem, Proposal, SyntheticGoldError, SyntheticJob
from tests.fake_openai import FakeOpenAI, FakeReply

pytestmark = pytest.mark.django_db(transaction=True)

WRITTEN = {
    "Billing": [
        "Why was my card charged twice for the March invoice?",
        "Please refund the extra seat you billed me for last month.",
        "why was my card charged TWICE for the march invoice?",  # exact duplicate of the first
        "Why was my credit card charged twice for the March invoice??",  # near duplicate
        "Can I get a VAT receipt for the annual plan payment?",
    ],
    "Technical support": [
        "The board view stays blank after the latest update.",
        "Login with Google SSO loops back to the sign-in page.",
        "Exports to CSV fail with error 502 every time.",
    ],
}


def responder(req):
    system = req.body["messages"][0]["content"]
    label = next(name for name in WRITTEN if f"belong to the label {name!r}" in system)
    return FakeReply(
        content=json.dumps({"examples": WRITTEN[label]}), prompt_tokens=400, completion_tokens=120
    )


@pytest.fixture
def llm(project, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeOpenAI(responder) as server:
        config = teacher.teacher_config_for(project)
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


def test_writes_examples_per_label_dropping_duplicates(project, llm):
    Example.objects.create(project=project, text="Exports to CSV fail with error 502 every time.")
    job = run(project, labels=["Billing", "Technical support"], per_label=3, near_duplicate_threshold=0.9)
    assert job.status == SyntheticJob.Status.SUCCEEDED
    made = Example.objects.filter(project=project, source="synthetic")
    by_label = {label: sorted(e.text for e in made if e.metadata["label"] == label) for label in WRITTEN}
    assert by_label["Billing"] == sorted(
        [WRITTEN["Billing"][0], WRITTEN["Billing"][1], WRITTEN["Billing"][4]]
    )
    # One text of the second label was already in the project: only two are new.
    assert len(by_label["Technical support"]) == 2
    assert job.exact_duplicates >= 2 and job.near_duplicates >= 1
    assert job.created == 5 and job.requested == 6
    assert "1 examples short" in job.error
    for example in made:
        proposal = example.proposals.get()
        assert (proposal.agent, proposal.value) == ("teacher:gpt-test:synthetic", example.metadata["label"])
        assert {"persona", "tone", "difficulty"} <= set(example.metadata)
    assert job.cost_usd > 0 and job.input_tokens == 400 * llm.calls
    spent = Proposal.objects.filter(example__in=made).aggregate(c=Sum("cost_usd"))["c"]
    assert Decimal("0") < spent <= job.cost_usd


def test_prompt_carries_the_diversity_controls(project, llm):
    Example.objects.create(project=project, text="My invoice shows the wrong company name")
    run(
        project,
        labels=["Billing"],
        per_label=2,
        personas=["a pirate"],
        tones=["furious"],
        min_words=3,
        max_words=9,
        noise="heavy",
        difficulty="hard",
    )
    system = llm.requests[0].body["messages"][0]["content"]
    assert "written by a pirate, in a furious tone, 3 to 9 words long" in system
    assert "typos" in system and "near-misses" in system
    assert "My invoice shows the wrong company name" in system  # seeded with a real text
    assert llm.requests[0].body["response_format"]["json_schema"]["name"] == "examples"


def test_gold_texts_never_seed_the_writer(project, llm):
    """Repro (#12): seeds were drawn from every real text, gold items included."""
    gold_text = "My gold invoice shows the wrong company name"
    example = Example.objects.create(project=project, text=gold_text)
    gold = GoldSet.objects.create(project=project, version=1)
    GoldSetItem.objects.create(gold_set=gold, example=example)
    Example.objects.create(project=project, text="Where do I change my billing address")
    for _ in range(3):  # seeds are sampled: every draw must leave gold out
        run(project, labels=["Billing"], per_label=1)
    systems = [req.body["messages"][0]["content"] for req in llm.requests]
    assert systems and all(gold_text not in system for system in systems)
    assert any("Where do I change my billing address" in system for system in systems)


def test_embedding_teacher_cannot_write(project):
    with pytest.raises(teacher.LabelingError, match="needs an LLM teacher"):
        teacher.synthetic_job_create(project=project, user=None)


def test_synthetic_examples_never_enter_a_gold_set(project, llm):
    run(project, labels=["Billing"], per_label=1)
    example = Example.objects.get(project=project, source="synthetic")
    gold = GoldSet.objects.create(project=project, version=1)
    with pytest.raises(SyntheticGoldError):
        GoldSetItem.objects.create(gold_set=gold, example=example, answer="Billing")


def test_failed_calls_are_counted(project, llm):
    llm.responder = lambda req: FakeReply(content="not json")
    job = run(project, labels=["Billing"], per_label=2)
    assert job.created == 0 and job.failed_calls >= 1
    assert not Example.objects.filter(project=project, source="synthetic").exists()


def test_start_view_is_for_leads_and_queues(project, lead_client, reviewer_client, queues, llm):
    url = reverse("annotation:synthetic-start", args=[project.slug])
    assert reviewer_client.post(url, {"per_label": 2}).status_code == 403
    lead_client.post(
        url,
        {
            "per_label": 2,
            "min_words": 3,
            "max_words": 20,
            "noise": "light",
            "difficulty": "mixed",
            "near_duplicate_threshold": 0.92,
        },
    )
    job = SyntheticJob.objects.get()
    assert job.requested == 2 * project.labels.count()
    assert [j.args for j in queues["llm"].jobs] == [(job.pk,)]
