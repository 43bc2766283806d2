"""Teacher labelling jobs end to end, against a local OpenAI-compatible server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from annotation import teacher
from annotation.models import Example, LabelingJob, LabelingJobItem, PromptVersion, Proposal, TeacherConfig
from annotation.teacher import labeling
from distillapp import jobs
from tests.fake_openai import FakeOpenAI, FakeReply, answer_with, slow

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]

TICKETS = {
    "I was charged twice this month": "Billing",
    "Refund my last invoice please": "Billing",
    "The app crashes when I open a board": "Technical support",
    "Login fails with error 500": "Technical support",
    "Do you offer a student discount?": "Other",
    "Great product, thanks!": "Other",
}


@pytest.fixture
def llm(monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeOpenAI(answer_with(TICKETS)) as server:
        yield server


@pytest.fixture
def tickets(project):
    return [Example.objects.create(project=project, text=t) for t in TICKETS]


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


def run_job(project, user=None, **kwargs) -> LabelingJob:
    job = teacher.labeling_job_create(
        project=project, user=user, selection=kwargs.pop("selection", "unlabelled"), **kwargs
    )
    assert teacher.labeling_job_claim(job.pk)
    return teacher.labeling_job_run(job=job)


def test_job_labels_every_example_once_with_cost_and_tokens(project, tickets, llm):
    use_llm(project, llm)
    job = run_job(project)
    assert job.status == LabelingJob.Status.SUCCEEDED
    assert (job.total, job.done, job.failed, job.cached) == (6, 6, 0, 0)
    proposals = Proposal.objects.filter(labeling_job=job)
    assert {(p.example.text, p.value) for p in proposals} == set(TICKETS.items())
    assert {p.agent for p in proposals} == {"teacher:gpt-test:prompt-v1"}
    assert all(p.prompt_version.version == 1 and p.confidence_method == "logprobs" for p in proposals)
    assert all(0 < p.confidence <= 1 for p in proposals)
    totals = proposals.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"))
    assert (job.input_tokens, job.output_tokens, job.cost_usd) == (totals["i"], totals["o"], totals["c"])
    assert job.cost_usd > 0
    assert llm.calls == 6
    labelled = Example.objects.for_project(project).with_current_label()
    assert {e.text: e.current_label for e in labelled} == TICKETS


def test_identical_requests_come_from_the_cache_at_no_cost(project, tickets, llm):
    use_llm(project, llm)
    first = run_job(project)
    calls = llm.calls
    again = run_job(project, selection="search", search="a")  # every text has an "a"
    assert (again.done, again.cached, again.cost_usd) == (0, 6, Decimal("0"))
    assert llm.calls == calls
    assert Proposal.objects.count() == 6  # nothing stored twice
    assert set(again.items.values_list("proposal", flat=True)) == set(
        Proposal.objects.filter(labeling_job=first).values_list("pk", flat=True)
    )


def test_invalid_answers_are_errors_not_labels(project, tickets, llm):
    use_llm(project, llm)
    bad = "Great product, thanks!"
    good = answer_with(TICKETS)
    llm.responder = lambda req: (
        FakeReply(content='{"label": "Praise"}') if bad in str(req.body["messages"]) else good(req)
    )
    job = run_job(project)
    assert (job.done, job.failed) == (5, 1)
    errors = Proposal.objects.filter(example__text=bad)
    assert errors.count() == 2  # the answer and its one repair
    assert all(p.value is None and "not one of the project's labels" in p.error for p in errors)
    assert all(p.cache_key == "" for p in errors)  # an error never answers from the cache
    assert Example.objects.with_current_label().get(text=bad).label_state == "unlabelled"


def test_concurrency_limit_is_honoured(project, llm):
    for i in range(12):
        Example.objects.create(project=project, text=f"ticket number {i}")
    use_llm(project, llm, concurrency=3)
    llm.responder = slow(lambda req: FakeReply(content='{"label": "Other"}'), 0.1)
    job = run_job(project)
    assert job.done == 12
    assert llm.max_concurrency == 3


def test_cancel_stops_a_running_job_and_keeps_what_it_has(project, llm):
    for i in range(40):
        Example.objects.create(project=project, text=f"ticket number {i}")
    use_llm(project, llm, concurrency=2)
    llm.responder = slow(lambda req: FakeReply(content='{"label": "Other"}'), 0.1)
    job = teacher.labeling_job_create(project=project, user=None, selection="unlabelled")
    assert teacher.labeling_job_claim(job.pk)
    runner = threading.Thread(target=lambda: teacher.labeling_job_run(job=job))
    runner.start()
    deadline = time.monotonic() + 20
    while LabelingJob.objects.get(pk=job.pk).done < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    jobs.cancel(LabelingJob, job.pk)
    runner.join(timeout=20)
    job.refresh_from_db()
    assert job.status == LabelingJob.Status.CANCELLED
    assert 4 <= job.done < 40
    assert Proposal.objects.filter(labeling_job=job).count() == job.done


def test_cancel_before_start(project, tickets, llm):
    use_llm(project, llm)
    job = teacher.labeling_job_create(project=project, user=None, selection="unlabelled")
    jobs.cancel(LabelingJob, job.pk)
    job.refresh_from_db()
    assert job.status == LabelingJob.Status.CANCELLED
    assert not teacher.labeling_job_claim(job.pk)


def database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD'] or ''}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def start_worker() -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url()}
    return subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "llm", "--burst"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )


def test_killed_worker_resumes_and_labels_each_example_exactly_once(project, llm, queues):
    for i in range(30):
        Example.objects.create(project=project, text=f"ticket number {i}")
    use_llm(project, llm, concurrency=2)
    llm.responder = slow(
        lambda req: FakeReply(content='{"label": "Other"}', prompt_tokens=100, completion_tokens=5), 0.1
    )
    with transaction.atomic():
        job = teacher.labeling_job_create(project=project, user=None, selection="unlabelled")
        teacher.labeling_job_start(job=job)

    worker = start_worker()
    try:
        deadline = time.monotonic() + 60
        while LabelingJob.objects.get(pk=job.pk).done < 6:
            assert worker.poll() is None, "the worker stopped early"
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.05)
    finally:
        # Kill the worker and its work horse (rq puts the horse in a session of
        # its own; the row names it) mid-job, as a crash or the OOM killer would.
        horse = int(LabelingJob.objects.get(pk=job.pk).worker.rpartition(":")[2])
        os.kill(horse, signal.SIGKILL)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    killed = LabelingJob.objects.get(pk=job.pk)
    assert killed.status == LabelingJob.Status.RUNNING and killed.done < 30

    # A new worker sees the dead one's job and takes it up again.
    restarted = start_worker()
    assert restarted.wait(timeout=120) == 0
    job.refresh_from_db()
    assert job.status == LabelingJob.Status.SUCCEEDED, job.error
    assert (job.done, job.failed, job.total) == (30, 0, 30)
    per_example = Proposal.objects.filter(labeling_job=job).values("example").annotate(n=Sum(1))
    assert Proposal.objects.filter(labeling_job=job).count() == 30
    assert all(row["n"] == 1 for row in per_example)
    assert job.cost_usd == Proposal.objects.filter(labeling_job=job).aggregate(c=Sum("cost_usd"))["c"]
    assert job.input_tokens == 30 * 100
    assert not LabelingJobItem.objects.filter(job=job, status="pending").exists()


def test_embedding_teacher_job_needs_no_key(project, tickets):
    job = run_job(project, provider="embedding")
    assert job.status == LabelingJob.Status.SUCCEEDED and job.done == 6
    proposals = Proposal.objects.filter(labeling_job=job)
    assert {p.agent for p in proposals} == {"teacher:embedding-minilm:prompt-v1"}
    assert all(p.confidence_method == "softmax" and 0 < p.confidence <= 1 for p in proposals)
    assert all(p.cost_usd == 0 for p in proposals)
    assert {p.value for p in proposals} <= {"Billing", "Technical support", "Other"}


def test_openai_teacher_without_key_is_refused(project, tickets, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    config = teacher.teacher_config_for(project)
    config.provider = "openai"
    config.save()
    with pytest.raises(teacher.LabelingError, match="No API key"):
        teacher.labeling_job_create(project=project, user=None, selection="unlabelled")


def test_estimate_uses_measured_tokens_once_there_are_some(project, tickets, llm):
    use_llm(project, llm)
    before = teacher.labeling_estimate(project=project, selection="unlabelled")
    assert before["basis"] == "estimated" and before["examples"] == 6
    llm.responder = lambda req: FakeReply(
        content='{"label": "Other"}', prompt_tokens=2000, completion_tokens=10
    )
    run_job(project, selection="sample", sample_size=2)
    after = teacher.labeling_estimate(project=project, selection="unlabelled")
    assert after["basis"] == "measured" and after["examples"] == 4
    assert after["input_tokens"] == 4 * 2000
    assert Decimal(after["cost_usd"]) == Decimal("0.001224")  # 8000*0.15/1M + 40*0.60/1M


def test_prompt_versions_are_immutable_once_used(project, tickets, llm, lead):
    use_llm(project, llm)
    v1 = teacher.prompt_version_current(project)
    edited = teacher.prompt_version_update(
        project=project,
        user=lead,
        instructions="Be careful.",
        few_shot="none",
        few_shot_k=8,
        few_shot_per_label=2,
        fixed_examples=[],
    )
    assert edited.pk == v1.pk and edited.instructions == "Be careful."  # unused: edited in place
    run_job(project, selection="sample", sample_size=1)
    v2 = teacher.prompt_version_update(
        project=project,
        user=lead,
        instructions="Be very careful.",
        few_shot="fixed",
        few_shot_k=8,
        few_shot_per_label=2,
        fixed_examples=[{"label": "Billing", "text": "refund pls"}],
    )
    assert v2.version == 2
    assert PromptVersion.objects.get(pk=v1.pk).instructions == "Be careful."
    # A label change reaches an unused version in place, and makes a new one once used.
    project.labels.create(name="Shipping", key="9", order=9)
    current = teacher.prompt_version_current(project)
    assert current.version == 2 and "Shipping" in current.label_names
    run_job(project, selection="sample", sample_size=1)
    project.labels.create(name="Returns", key="8", order=10)
    assert teacher.prompt_version_current(project).version == 3
    assert "Returns" not in PromptVersion.objects.get(project=project, version=2).label_names


def test_fixed_few_shot_examples_are_sent(project, tickets, llm, lead):
    use_llm(project, llm)
    teacher.prompt_version_update(
        project=project,
        user=lead,
        instructions="Label it.",
        few_shot="fixed",
        few_shot_k=8,
        few_shot_per_label=2,
        fixed_examples=[{"label": "Billing", "text": "refund pls"}],
    )
    run_job(project, selection="sample", sample_size=1)
    messages = llm.requests[0].body["messages"]
    assert messages[1:3] == [
        {"role": "user", "content": "refund pls"},
        {"role": "assistant", "content": '{"label": "Billing"}'},
    ]


def test_similar_few_shot_picks_reviewed_examples_with_a_per_label_cap(project, llm, lead, reviewer):
    from annotation.models import Review

    reviewed = {
        "charged twice on my card": "Billing",
        "double charge on invoice": "Billing",
        "billing charged me twice again": "Billing",
        "app crashes on startup": "Technical support",
    }
    for text, label in reviewed.items():
        example = Example.objects.create(project=project, text=text)
        Review.objects.create(example=example, reviewer=reviewer, verdict="correct", value=label)
    Example.objects.create(project=project, text="I was charged twice this month")
    use_llm(project, llm)
    teacher.prompt_version_update(
        project=project,
        user=lead,
        instructions="Label it.",
        few_shot="similar",
        few_shot_k=3,
        few_shot_per_label=2,
        fixed_examples=[],
    )
    run_job(project)
    shots = [m["content"] for m in llm.requests[0].body["messages"][1:-1] if m["role"] == "user"]
    assert len(shots) == 3
    billing = [s for s in shots if reviewed[s] == "Billing"]
    assert len(billing) == 2  # the cap, although three Billing examples are closer
    assert "app crashes on startup" in shots


def test_requeue_interrupted_finds_a_dead_workers_job(project, tickets, queues):
    from distillapp.worker import requeue_interrupted

    job = teacher.labeling_job_create(
        project=project, user=None, selection="unlabelled", provider="embedding"
    )
    LabelingJob.objects.filter(pk=job.pk).update(status="running", worker="nohost-anywhere:1")
    assert requeue_interrupted() == []  # another host's worker, heartbeat fresh enough: leave it
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    LabelingJob.objects.filter(pk=job.pk).update(
        worker=jobs.this_worker().rsplit(":", 1)[0] + ":" + dead.stdout.strip()
    )
    assert requeue_interrupted() == [f"annotation.LabelingJob {job.pk}"]
    assert [j.args for j in queues["llm"].jobs] == [(job.pk,)]


def test_label_command_waits_with_progress(project, tickets, capsys):
    call_command("label", "--project", project.slug, "--teacher", "embedding", "--wait")
    out = capsys.readouterr().out
    assert "6 labelled, 0 failed" in out
    assert "0 + 0 tokens, $0.0000." in out  # not Decimal's "$0E-8"
    assert Proposal.objects.filter(agent="teacher:embedding-minilm:prompt-v1").count() == 6


def test_label_command_queues_by_default(project, tickets, queues, capsys):
    call_command("label", "--project", project.slug, "--teacher", "embedding", "--sample", "2")
    assert "Queued on the llm queue" in capsys.readouterr().out
    job = LabelingJob.objects.get()
    assert job.selection == "sample" and job.sample_size == 2
    assert [j.args for j in queues["llm"].jobs] == [(job.pk,)]


# --- pages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method"),
    [("teacher-settings", "get"), ("labeling-estimate", "post"), ("labeling-start", "post")],
)
def test_teacher_pages_are_for_leads(project, reviewer_client, outsider_client, name, method):
    url = reverse(f"annotation:{name}", args=[project.slug])
    assert getattr(reviewer_client, method)(url).status_code == 403
    assert getattr(outsider_client, method)(url).status_code == 404


def test_cancel_view_permissions(project, reviewer_client, outsider_client, lead_client):
    job = teacher.labeling_job_create(
        project=project, user=None, selection="unlabelled", provider="embedding"
    )
    url = reverse("annotation:job-cancel", args=[project.slug, "labelingjob", job.pk])
    assert reviewer_client.post(url).status_code == 403
    assert outsider_client.post(url).status_code == 404
    assert lead_client.get(url).status_code == 405
    lead_client.post(url)
    assert LabelingJob.objects.get(pk=job.pk).status == "cancelled"


def test_estimate_then_confirm_queues_a_job(project, tickets, lead_client, queues, llm):
    use_llm(project, llm)
    page = lead_client.post(
        reverse("annotation:labeling-estimate", args=[project.slug]), {"selection": "unlabelled"}
    )
    html = page.content.decode()
    assert "Label 6 examples?" in html and "gpt-test" in html and "$0.00" in html
    assert not LabelingJob.objects.exists()  # nothing runs before the lead confirms
    response = lead_client.post(
        reverse("annotation:labeling-start", args=[project.slug]), {"selection": "unlabelled"}, follow=True
    )
    job = LabelingJob.objects.get()
    assert [j.args for j in queues["llm"].jobs] == [(job.pk,)]
    assert f'data-job="{job.pk}"' in response.content.decode()


def test_teacher_settings_save_creates_prompt_versions(project, lead_client, tickets, llm):
    url = reverse("annotation:teacher-settings", args=[project.slug])
    assert "What the teacher sees" in lead_client.get(url).content.decode()
    form = {
        "teacher-provider": "openai",
        "teacher-model": "gpt-4o-mini",
        "teacher-base_url": llm.base_url,
        "teacher-api_key_env": "FAKE_LLM_KEY",
        "teacher-temperature": "0",
        "teacher-max_tokens": "32",
        "teacher-price_input_per_mtok": "0.15",
        "teacher-price_output_per_mtok": "0.6",
        "teacher-concurrency": "4",
        "teacher-requests_per_minute": "0",
        "teacher-timeout_seconds": "30",
        "teacher-max_attempts": "3",
        "teacher-structured_output": "on",
        "teacher-use_logprobs": "on",
        "teacher-self_consistency_samples": "0",
        "prompt-instructions": "Route the ticket.",
        "prompt-few_shot": "none",
        "prompt-few_shot_k": "8",
        "prompt-few_shot_per_label": "2",
        "prompt-fixed_examples": "",
    }
    lead_client.post(url, form)
    config = TeacherConfig.objects.get(project=project)
    assert (config.provider, config.concurrency) == ("openai", 4)
    assert PromptVersion.objects.get(project=project).instructions == "Route the ticket."
    run_job(project, selection="sample", sample_size=1)
    form["prompt-instructions"] = "Route the ticket carefully."
    response = lead_client.post(url, form, follow=True)
    assert "a new prompt version" in response.content.decode()
    assert list(PromptVersion.objects.filter(project=project).values_list("version", flat=True)) == [2, 1]


def test_embedding_job_reports_progress_as_answers_arrive(project, monkeypatch):
    for i in range(70):
        Example.objects.create(project=project, text=f"my invoice number {i} is wrong")
    seen = []
    write = labeling._write

    def spy(job, results, agent):
        write(job, results, agent)
        seen.append(LabelingJob.objects.get(pk=job.pk).done)

    monkeypatch.setattr(labeling, "_write", spy)
    job = run_job(project, provider="embedding")
    assert job.done == 70
    # Written a few dozen at a time, so the page counts up instead of jumping 0 -> 70.
    assert seen == [32, 64, 70]


def test_labelling_page_says_the_job_is_starting_before_the_first_answer(project, lead_client, tickets):
    job = teacher.labeling_job_create(
        project=project, user=None, selection="unlabelled", provider="embedding"
    )
    # Held by this (live) process, so the page's recovery of dead workers' jobs leaves it be.
    LabelingJob.objects.filter(pk=job.pk).update(
        status=LabelingJob.Status.RUNNING, total=6, worker=jobs.this_worker(), heartbeat_at=timezone.now()
    )
    page = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert "starting: loading the teacher, 6 to label" in page
    LabelingJob.objects.filter(pk=job.pk).update(done=2)
    page = lead_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert "2 / 6" in page


@pytest.mark.parametrize("few_shot", ["none", "fixed", "similar"])
def test_embedding_teacher_follows_the_prompts_few_shot_setting(project, lead, few_shot, monkeypatch):
    from tasks.classification.offline import EmbeddingPrediction, EmbeddingTeacher

    teacher.prompt_version_update(
        project=project,
        user=lead,
        instructions="Classify the ticket.",
        few_shot=few_shot,
        few_shot_k=3,
        few_shot_per_label=2,
        fixed_examples=[{"label": "Billing", "text": "charged twice"}],
    )
    reviewed = [("app crashes", "Technical support"), ("refund me", "Billing"), ("hello", "Other")]
    monkeypatch.setattr(labeling, "reviewed_memory", lambda project: reviewed)
    made = {}

    class Recorder(EmbeddingTeacher):
        def __init__(self, labels, memory=(), **kwargs):
            made.update(memory=list(memory), k=kwargs.get("k"))

        def predict(self, texts):
            return [EmbeddingPrediction("Other", 0.5, {}) for _ in texts]

    monkeypatch.setattr("tasks.classification.offline.EmbeddingTeacher", Recorder)
    Example.objects.create(project=project, text="where is my invoice")
    run_job(project, provider="embedding")
    expected = {
        "none": ([], 1),
        "fixed": ([("charged twice", "Billing")], 1),
        "similar": (reviewed, 3),
    }[few_shot]
    assert (made["memory"], made["k"]) == expected


def test_teacher_page_disables_writing_for_the_offline_teacher(project, lead_client):
    page = lead_client.get(reverse("annotation:teacher-settings", args=[project.slug])).content.decode()
    assert 'type="submit" disabled title="The offline teacher cannot write text">Write examples' in page
    assert 'data-field="embedding-few-shot"' in page and "zero-shot" in page
