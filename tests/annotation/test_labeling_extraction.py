"""Teacher labelling of an extraction project: span answers through the labelling job,
against a local OpenAI-compatible server, and the offline dictionary teacher."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from django.db.models import Count, Sum
from django.test import Client
from django.urls import reverse

from annotation import projects, teacher
from annotation.models import Example, LabelingJob, Membership, Proposal, Review, TeacherConfig
from annotation.teacher import labeling
from distillapp import jobs
from tests.fake_openai import FakeOpenAI, FakeReply

pytestmark = pytest.mark.django_db(transaction=True)

BOOKINGS = {
    "A table in Paris for 4 at 7pm": [("city", "Paris"), ("people", "4"), ("time", "7pm")],
    "Book Lisbon for 3 at 8pm": [("city", "Lisbon"), ("people", "3"), ("time", "8pm")],
    "Two of us in Rome tonight": [("city", "Rome")],
    "hello there": [],
}


def text_of(request) -> str:
    """The text being answered: the last user message that is one of the texts (a repair
    request comes after it)."""
    for message in reversed(request.messages):
        if message["role"] == "user" and message["content"] in BOOKINGS:
            return message["content"]
    return ""


def reply_for(text: str, table=BOOKINGS) -> str:
    return json.dumps({"entities": [{"field": f, "text": v} for f, v in table.get(text, [])]})


def spans_of(text: str, pairs) -> dict:
    spans = []
    for field, value in pairs:
        start = text.index(value)
        spans.append({"start": start, "end": start + len(value), "field": field})
    return {"spans": sorted(spans, key=lambda s: (s["start"], s["end"], s["field"]))}


def without_confidence(value: dict) -> dict:
    """The answer's spans as (start, end, field), the teacher's per-span confidences left out."""
    return {"spans": [{k: s[k] for k in ("start", "end", "field")} for s in value["spans"]]}


def responder(request) -> FakeReply:
    return FakeReply(content=reply_for(text_of(request)))


@pytest.fixture
def xproject(lead, reviewer):
    project = projects.project_create(
        name="Bookings",
        slug="bookings",
        user=lead,
        task_type="extraction",
        labels=[("city", "the city"), ("people", "how many people"), ("time", "when")],
    )
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    return project


@pytest.fixture
def bookings(xproject):
    return [Example.objects.create(project=xproject, text=t) for t in BOOKINGS]


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
    job = teacher.labeling_job_create(
        project=project, user=None, selection=kwargs.pop("selection", "unlabelled"), **kwargs
    )
    assert teacher.labeling_job_claim(job.pk)
    return teacher.labeling_job_run(job=job)


def test_llm_job_stores_span_answers_with_cost_tokens_and_queue_keys(xproject, bookings, llm):
    config = use_llm(xproject, llm)
    assert config.max_tokens == 512  # an extraction project's answer budget
    job = run_job(xproject)
    assert job.status == LabelingJob.Status.SUCCEEDED
    assert (job.total, job.done, job.failed, job.cached) == (4, 4, 0, 0)
    proposals = Proposal.objects.filter(labeling_job=job).select_related("example")
    task = xproject.task
    for p in proposals:
        assert without_confidence(p.value) == spans_of(p.example.text, BOOKINGS[p.example.text])
        assert p.agent == "teacher:gpt-test:prompt-v1" and p.error == ""
        assert p.confidence_method == "logprobs" and 0 < p.confidence <= 1
        # Each span has its own confidence; the text's is the least sure decision.
        assert all(0 < s["confidence"] <= 1 for s in p.value["spans"])
        assert p.confidence <= min((s["confidence"] for s in p.value["spans"]), default=1)
        assert p.input_tokens > 0 and p.output_tokens > 0 and p.cost_usd > 0
    assert job.cost_usd == proposals.aggregate(c=Sum("cost_usd"))["c"]
    assert job.input_tokens == proposals.aggregate(t=Sum("input_tokens"))["t"]
    # The system prompt is the extraction one, with the task's schema.
    request = llm.requests[0]
    assert request.body["response_format"]["json_schema"]["name"] == "extraction"
    assert request.messages[0]["content"].startswith("You extract fields")
    assert request.body["max_tokens"] == 512
    # The review queue's keys are the task's summary of the answer.
    paris = Example.objects.get(text="A table in Paris for 4 at 7pm")
    assert paris.teacher_label == "city: Paris · people: 4 · time: 7pm"
    assert Example.objects.get(text="hello there").teacher_label == "(no fields)"
    assert task.same(
        Example.objects.with_current_label().get(pk=paris.pk).current_label, paris.proposals.get().value
    )


@pytest.mark.parametrize(
    "bad, why",
    [
        ({"entities": [{"field": "city", "text": "Madrid"}]}, "'Madrid' (city) is not in the text"),
        ({"entities": [{"field": "dish", "text": "Paris"}]}, "unknown field 'dish'"),
        ("this is not json {", "not valid JSON"),
    ],
)
def test_an_invalid_answer_is_an_error_never_a_span(xproject, bookings, llm, bad, why):
    use_llm(xproject, llm)
    target = "A table in Paris for 4 at 7pm"
    content = bad if isinstance(bad, str) else json.dumps(bad)
    llm.responder = lambda req: FakeReply(content=content) if text_of(req) == target else responder(req)
    job = run_job(xproject)
    assert (job.done, job.failed) == (3, 1)
    errors = Proposal.objects.filter(example__text=target)
    assert errors.count() == 2  # the answer and its one repair
    assert all(p.value is None and why in p.error and p.cache_key == "" for p in errors)
    # The repair request names the problem and asks for the entities again.
    repair = [
        r
        for r in llm.requests
        if r.messages[-1]["role"] == "user" and r.messages[-1]["content"] not in BOOKINGS
    ]
    assert len(repair) == 1 and why in repair[0].messages[-1]["content"]
    assert '"entities"' in repair[0].messages[-1]["content"]
    assert Example.objects.with_current_label().get(text=target).label_state == "unlabelled"
    assert Example.objects.get(text=target).teacher_label == ""


def test_a_repaired_answer_is_kept(xproject, bookings, llm):
    use_llm(xproject, llm)
    target = "Book Lisbon for 3 at 8pm"
    llm.responder = lambda req: (
        FakeReply(content='{"entities": [{"field": "city", "text": "Porto"}]}')
        if text_of(req) == target and req.messages[-1]["content"] == target
        else responder(req)
    )
    job = run_job(xproject)
    assert (job.done, job.failed) == (4, 0)
    first, second = Proposal.objects.filter(example__text=target).order_by("pk")
    assert first.value is None and "'Porto' (city) is not in the text" in first.error
    assert without_confidence(second.value) == spans_of(target, BOOKINGS[target]) and second.error == ""


def test_self_consistency_votes_over_span_sets(xproject, llm):
    text = "A table in Paris for 4 at 7pm"
    Example.objects.create(project=xproject, text=text)
    use_llm(xproject, llm, use_logprobs=False, self_consistency_samples=3)
    other = json.dumps({"entities": [{"field": "city", "text": "Paris"}]})
    # The same span set written in another order counts as the same answer.
    reordered = json.dumps({"entities": [{"field": f, "text": v} for f, v in reversed(BOOKINGS[text])]})
    llm.responder = lambda req: FakeReply(n_contents=[reply_for(text), other, reordered])
    run_job(xproject)
    proposal = Proposal.objects.get(example__text=text)
    assert without_confidence(proposal.value) == spans_of(text, BOOKINGS[text])
    assert proposal.confidence_method == "self_consistency"
    # Each span's confidence is the share of the samples holding it.
    assert [(text[s["start"] : s["end"]], s["confidence"]) for s in proposal.value["spans"]] == [
        ("Paris", 1.0),
        ("4", pytest.approx(2 / 3)),
        ("7pm", pytest.approx(2 / 3)),
    ]
    assert proposal.confidence == pytest.approx(2 / 3)
    assert llm.requests[0].body["n"] == 3


def test_no_logprobs_and_no_samples_means_no_confidence(xproject, bookings, llm):
    use_llm(xproject, llm, use_logprobs=False)
    run_job(xproject)
    assert set(Proposal.objects.values_list("confidence", "confidence_method")) == {(None, "")}


def test_identical_requests_come_from_the_cache(xproject, bookings, llm):
    use_llm(xproject, llm)
    run_job(xproject)
    calls = llm.calls
    again = run_job(xproject, selection="search", search="o")  # every text has an "o"
    assert (again.done, again.cached, again.cost_usd) == (0, 4, Decimal("0"))
    assert llm.calls == calls and Proposal.objects.count() == 4


@pytest.fixture
def killed_at_the_third_write(xproject, llm, monkeypatch):
    """44 bookings, the teacher at concurrency 2, and a worker that dies at its third write.
    Yields the real `_write`, to put back for the resumed run."""
    for i in range(40):
        BOOKINGS[f"Lunch in Paris for {i}"] = [("city", "Paris"), ("people", str(i))]
    for text in BOOKINGS:
        Example.objects.create(project=xproject, text=text)
    use_llm(xproject, llm, concurrency=2)
    write, writes = labeling._write, []

    def dying(job, results, agent, *task):
        writes.append(len(results))
        if len(writes) > 2:
            raise RuntimeError("worker killed")
        write(job, results, agent, *task)

    monkeypatch.setattr(labeling, "_write", dying)
    yield write
    for i in range(40):
        BOOKINGS.pop(f"Lunch in Paris for {i}", None)


def test_a_failed_job_resumes_without_labelling_anything_twice(
    xproject, llm, queues, monkeypatch, killed_at_the_third_write
):
    write = killed_at_the_third_write
    job = teacher.labeling_job_create(project=xproject, user=None, selection="unlabelled")
    assert teacher.labeling_job_claim(job.pk)
    with pytest.raises(RuntimeError):
        teacher.labeling_job_run(job=job)
    job.refresh_from_db()
    assert job.status == LabelingJob.Status.FAILED and 0 < job.done < 44
    done_before = job.done
    llm.reset()

    monkeypatch.setattr(labeling, "_write", write)
    assert jobs.resume(LabelingJob, job.pk)
    assert teacher.labeling_job_claim(job.pk)
    job = teacher.labeling_job_run(job=job)
    assert job.status == LabelingJob.Status.SUCCEEDED
    assert (job.total, job.done, job.failed) == (44, 44, 0)
    per_example = Proposal.objects.values("example").annotate(n=Count("pk"))
    assert len(per_example) == 44 and {row["n"] for row in per_example} == {1}
    assert job.cost_usd == Proposal.objects.aggregate(c=Sum("cost_usd"))["c"]
    # Only texts still pending were asked again, each once (fewer: the first run's unwritten
    # answers come from the journal, the test below).
    assert llm.calls <= 44 - done_before


def test_answers_received_but_not_written_when_the_worker_died_are_not_paid_for_again(
    xproject, llm, queues, monkeypatch, killed_at_the_third_write
):
    """A worker killed between the teacher's answers and their write: the resumed job takes
    those answers from the journal (issue #23: no LLM call is paid twice)."""
    write = killed_at_the_third_write
    ask, answered, asked_again = labeling.teacher_boundary.OpenAITeacher.ask, [], []

    async def recording(self, messages):
        answers = await ask(self, messages)
        answered.append(messages[-1]["content"])  # received (and paid) by this run
        return answers

    monkeypatch.setattr(labeling.teacher_boundary.OpenAITeacher, "ask", recording)
    job = teacher.labeling_job_create(project=xproject, user=None, selection="unlabelled")
    assert teacher.labeling_job_claim(job.pk)
    with pytest.raises(RuntimeError):
        teacher.labeling_job_run(job=job)
    job.refresh_from_db()
    received = set(answered)
    assert len(received) > job.done  # answers came back that were never written

    async def asking(self, messages):
        asked_again.append(messages[-1]["content"])
        return await ask(self, messages)

    monkeypatch.setattr(labeling.teacher_boundary.OpenAITeacher, "ask", asking)
    monkeypatch.setattr(labeling, "_write", write)
    assert jobs.resume(LabelingJob, job.pk)
    assert teacher.labeling_job_claim(job.pk)
    job = teacher.labeling_job_run(job=job)
    assert (job.status, job.done, job.failed) == (LabelingJob.Status.SUCCEEDED, 44, 0)
    assert not received & set(asked_again)  # nothing the first run received is asked again
    assert len(asked_again) == 44 - len(received)
    assert job.cost_usd == Proposal.objects.aggregate(c=Sum("cost_usd"))["c"]
    assert job.input_tokens == sum(Proposal.objects.values_list("input_tokens", flat=True))


def test_fixed_few_shot_examples_are_json_lines_checked_against_the_text(
    xproject, lead, bookings, llm, lead_client
):
    use_llm(xproject, llm)
    line = json.dumps(
        {
            "text": "Dinner in Oslo at 9pm",
            "entities": [{"field": "city", "text": "Oslo"}, {"field": "time", "text": "9pm"}],
        }
    )
    response = lead_client.post(
        reverse("annotation:teacher-settings", args=[xproject.slug]),
        {
            **teacher_form_data(xproject),
            "prompt-instructions": "Extract the booking.",
            "prompt-few_shot": "fixed",
            "prompt-few_shot_k": "3",
            "prompt-few_shot_per_label": "2",
            "prompt-fixed_examples": line,
        },
    )
    assert response.status_code == 302
    prompt = teacher.prompt_version_current(xproject)
    assert prompt.fixed_examples == [
        {
            "text": "Dinner in Oslo at 9pm",
            "label": {
                "spans": [
                    {"start": 10, "end": 14, "field": "city"},
                    {"start": 18, "end": 21, "field": "time"},
                ]
            },
        }
    ]
    run_job(xproject)
    messages = llm.requests[0].messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2]["content"]) == json.loads(
        line.replace('"text": "Dinner in Oslo at 9pm", ', "")
    )
    # The page shows the saved example as the same kind of line.
    page = lead_client.get(reverse("annotation:teacher-settings", args=[xproject.slug])).content.decode()
    assert "Dinner in Oslo at 9pm" in page and "&quot;entities&quot;" in page

    # A value that is not in the example's text is refused, and nothing is saved.
    with pytest.raises(teacher.LabelingError, match="Fixed example 1: 'Rome' \\(city\\) is not in the text"):
        teacher.prompt_version_update(
            project=xproject,
            user=lead,
            instructions="x",
            few_shot="fixed",
            few_shot_k=3,
            few_shot_per_label=2,
            fixed_examples=[
                {"text": "Dinner in Oslo", "reply": {"entities": [{"field": "city", "text": "Rome"}]}}
            ],
        )


def teacher_form_data(project) -> dict:
    config = teacher.teacher_config_for(project)
    data = {
        f"teacher-{name}": getattr(config, name)
        for name in (
            "provider",
            "model",
            "base_url",
            "api_key_env",
            "temperature",
            "max_tokens",
            "price_input_per_mtok",
            "price_output_per_mtok",
            "concurrency",
            "requests_per_minute",
            "timeout_seconds",
            "max_attempts",
            "self_consistency_samples",
        )
    }
    data.update({"teacher-structured_output": "on", "teacher-use_logprobs": "on"})
    return data


def review(example, user, value) -> Review:
    return Review.objects.create(
        example=example, reviewer=user, kind=Review.Kind.REVIEW, verdict=Review.Verdict.CORRECT, value=value
    )


def test_similar_few_shot_picks_reviewed_span_answers(xproject, reviewer, llm):
    seen = "Dinner in Oslo for 2 at 9pm"
    review(
        Example.objects.create(project=xproject, text=seen),
        reviewer,
        spans_of(seen, [("city", "Oslo"), ("people", "2")]),
    )
    target = Example.objects.create(project=xproject, text="A table in Paris for 4 at 7pm")
    use_llm(xproject, llm)
    teacher.prompt_version_update(
        project=xproject,
        user=None,
        instructions="",
        few_shot="similar",
        few_shot_k=2,
        few_shot_per_label=2,
        fixed_examples=[],
    )
    run_job(xproject, selection="search", search="Paris")
    messages = llm.requests[0].messages
    assert messages[1]["content"] == seen
    assert json.loads(messages[2]["content"]) == {
        "entities": [{"field": "city", "text": "Oslo"}, {"field": "people", "text": "2"}]
    }
    assert without_confidence(target.proposals.get().value) == spans_of(target.text, BOOKINGS[target.text])


def test_offline_dictionary_teacher_labels_from_reviewed_values(xproject, reviewer, lead_client):
    for text in ["Paris for 4 at 7pm", "lisbon at 8pm", "Rome please"]:
        example = Example.objects.create(project=xproject, text=text)
        pairs = [
            (f, v)
            for f, v in [
                ("city", "Paris"),
                ("city", "lisbon"),
                ("city", "Rome"),
                ("people", "4"),
                ("time", "7pm"),
                ("time", "8pm"),
            ]
            if v in text
        ]
        review(example, reviewer, spans_of(text, pairs))
    new = Example.objects.create(project=xproject, text="LISBON for 4 at 7PM, not 14")
    config = teacher.teacher_config_for(xproject)
    assert config.provider == TeacherConfig.Provider.EMBEDDING  # the offline default
    job = run_job(xproject)
    assert job.status == LabelingJob.Status.SUCCEEDED and job.done == 1
    proposal = new.proposals.get()
    # #24: named by what it learnt from (3 reviewed texts), like a prompt version.
    assert re.fullmatch(r"teacher:dictionary\.mem3-[0-9a-f]{6}:prompt-v1", proposal.agent), proposal.agent
    assert proposal.confidence_method == "dictionary" and 0 <= proposal.confidence <= 1
    assert proposal.cost_usd == 0
    assert proposal.value == spans_of(new.text, [("city", "LISBON"), ("people", "4"), ("time", "7PM")])
    assert Example.objects.get(pk=new.pk).teacher_label == "city: LISBON · people: 4 · time: 7PM"
    # The serving fallback asks the same teacher.
    (answer,) = teacher.teacher_answers(xproject, ["Rome at 8pm"])
    assert answer.is_valid and answer.agent == proposal.agent
    assert answer.value == spans_of("Rome at 8pm", [("city", "Rome"), ("time", "8pm")])
    # One more review: its answers may change, so it is another teacher, under another name.
    oslo = Example.objects.create(project=xproject, text="Oslo tonight")
    review(oslo, reviewer, spans_of(oslo.text, [("city", "Oslo")]))
    (later,) = teacher.teacher_answers(xproject, ["Oslo at 8pm"])
    assert later.agent.startswith("teacher:dictionary.mem4-") and later.agent != proposal.agent
    assert later.value == spans_of("Oslo at 8pm", [("city", "Oslo"), ("time", "8pm")])
    # The teacher page says which offline teacher the project gets, and that it cannot write text.
    page = lead_client.get(reverse("annotation:teacher-settings", args=[xproject.slug])).content.decode()
    assert 'data-field="offline-teacher"' in page and "offline dictionary teacher" in page
    assert 'data-field="offline-few-shot"' in page
    assert "Offline dictionary teacher (no API key)" in page
    assert "the offline dictionary teacher cannot write text" in page


def test_queue_keys_compare_span_sets_with_the_student(xproject):
    text = "A table in Paris for 4 at 7pm"
    example = Example.objects.create(project=xproject, text=text)
    right = spans_of(text, BOOKINGS[text])
    Proposal.objects.create(
        example=example, agent="student:run-1", value=spans_of(text, [("city", "Paris")]), confidence=0.6
    )
    Example.objects.filter(pk=example.pk).sync_queue_fields()
    # A new teacher answer that differs from the student's (F1 below 1) is a disagreement.
    Example.objects.note_teacher_answers({example.pk: (right, 0.9)})
    example.refresh_from_db()
    assert (example.teacher_label, example.student_label) == (
        "city: Paris · people: 4 · time: 7pm",
        "city: Paris",
    )
    assert example.is_disagreement is True and example.teacher_confidence == 0.9
    # The student's same spans (in another order) agree.
    Proposal.objects.create(
        example=example, agent="student:run-2", value={"spans": right["spans"][::-1]}, confidence=0.8
    )
    Example.objects.note_teacher_answers({example.pk: (right, 0.9)})
    assert Example.objects.get(pk=example.pk).is_disagreement is False
    # Re-deriving everything from the proposals gives the same keys.
    Proposal.objects.create(example=example, agent="teacher:m:prompt-v1", value=right, confidence=0.9)
    Example.objects.filter(pk=example.pk).sync_queue_fields()
    example.refresh_from_db()
    assert example.is_disagreement is False and example.student_label == "city: Paris · people: 4 · time: 7pm"


def test_label_command_names_the_offline_teacher_of_an_extraction_project(xproject, reviewer):
    """#24: `label --teacher embedding` ran the dictionary teacher on an extraction project
    without saying so."""
    import io

    from django.core.management import call_command

    example = Example.objects.create(project=xproject, text="Paris for 4")
    review(example, reviewer, spans_of(example.text, [("city", "Paris"), ("people", "4")]))
    Example.objects.create(project=xproject, text="paris at 9")
    for name in ("embedding", "offline"):
        out = io.StringIO()
        call_command("label", "--project", xproject.slug, "--teacher", name, "--wait", stdout=out)
        assert "the offline dictionary teacher" in out.getvalue() and "embedding" not in out.getvalue()
    agents = set(Proposal.objects.filter(example__project=xproject).values_list("agent", flat=True))
    assert len(agents) == 1 and agents.pop().startswith("teacher:dictionary.mem1-")


RECEIPT = "Burger 12.50 Subtotal 12.50 Total 12.50"
#          0         1         2         3
#          0123456789012345678901234567890123456789


def test_the_teacher_places_a_repeated_total_where_reviewed_totals_sit_and_counts_it(lead, reviewer, llm):
    """A total the receipt holds three times: with reviewed receipts the teacher's one total
    goes after "Total", the job counts the placement, and the card comes first in the queue."""
    project = projects.project_create(
        name="Receipts",
        slug="receipts",
        user=lead,
        task_type="extraction",
        labels=[("total", "The sum paid")],
    )
    for text, start in [("Fries 3.00 Total 3.00", 17), ("Soup 4.10 Tax 0.40 Total 4.50", 25)]:
        example = Example.objects.create(project=project, text=text)
        value = text[start:].split()[0]
        review(example, reviewer, {"spans": [{"start": start, "end": start + len(value), "field": "total"}]})
    receipt = Example.objects.create(project=project, text=RECEIPT)
    plain = Example.objects.create(project=project, text="Coffee Total 2.00")
    table = {RECEIPT: [("total", "12.50")], "Coffee Total 2.00": [("total", "2.00")]}
    with FakeOpenAI(
        lambda request: FakeReply(content=reply_for(request.messages[-1]["content"], table))
    ) as server:
        use_llm(project, server)
        job = run_job(project)
    assert job.status == LabelingJob.Status.SUCCEEDED
    answer = Proposal.objects.get(example=receipt, labeling_job=job).value
    assert [(s["start"], s["end"]) for s in answer["spans"]] == [(34, 39)]  # after "Total", not the burger
    assert job.answer_notes == {"ambiguous": 1, "by_context": 1, "first": 0}
    receipt.refresh_from_db()
    plain.refresh_from_db()
    assert receipt.risk > plain.risk  # an ambiguous placement is reviewed first
    page = Client()
    page.force_login(lead)
    html = page.get(reverse("annotation:teacher-settings", args=[project.slug])).content.decode()
    assert 'data-metric="ambiguous-placements"' in html and 'data-field="by-context">1<' in html
