"""The teacher boundary against a local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal

import pytest

from annotation.teacher import client
from tasks import Category, task_for
from tests.fake_openai import (
    FakeOpenAI,
    FakeReply,
    answer_with,
    malformed_then,
    rate_limited_then,
    server_error_then,
)

LABELS = ["Billing", "Technical support", "Other"]
TASK = task_for("classification", [Category(name=name) for name in LABELS])
TRUTH = {"I was charged twice": "Billing", "The app crashes": "Technical support"}


def make_teacher(server: FakeOpenAI, monkeypatch, **overrides) -> client.OpenAITeacher:
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    settings = client.TeacherSettings(
        model="gpt-test",
        base_url=server.base_url,
        api_key_env="FAKE_LLM_KEY",
        price_input_per_mtok=Decimal("0.15"),
        price_output_per_mtok=Decimal("0.60"),
        **overrides,
    )
    return client.OpenAITeacher(settings, TASK)


def ask(t: client.OpenAITeacher, text: str) -> list[client.TeacherAnswer]:
    async def go():
        try:
            return await t.ask(client.render_messages(system_prompt="Label it.", text=text, task=TASK))
        finally:
            await t.close()

    return asyncio.run(go())


def test_correct_answer_with_tokens_cost_and_logprob_confidence(monkeypatch):
    with FakeOpenAI(answer_with(TRUTH)) as server:
        server.responder = lambda req: FakeReply(
            content=json.dumps({"label": TRUTH[req.text]}),
            prompt_tokens=1000,
            completion_tokens=10,
            logprobs=[('{"label": "', -0.001), ("Bill", -0.2), ("ing", -0.1), ('"}', -0.001)],
        )
        [answer] = ask(make_teacher(server, monkeypatch), "I was charged twice")
        request = server.requests[0].body
    assert answer.value == "Billing" and answer.error == ""
    assert answer.confidence == pytest.approx(math.exp(-0.3))
    assert answer.confidence_method == "logprobs"
    assert (answer.input_tokens, answer.output_tokens) == (1000, 10)
    assert answer.cost_usd == Decimal("0.000156")  # 1000 * 0.15/1M + 10 * 0.60/1M
    assert request["logprobs"] is True
    assert request["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == LABELS
    assert request["messages"][-1] == {"role": "user", "content": "I was charged twice"}


def test_no_logprobs_means_no_confidence(monkeypatch):
    with FakeOpenAI(answer_with(TRUTH)) as server:
        [answer] = ask(make_teacher(server, monkeypatch, use_logprobs=False), "The app crashes")
        assert "logprobs" not in server.requests[0].body
    assert answer.value == "Technical support"
    assert answer.confidence is None and answer.confidence_method == ""


def test_self_consistency_vote_share(monkeypatch):
    votes = [json.dumps({"label": v}) for v in ["Billing", "Billing", "Other", "Billing", "nonsense"]]
    with FakeOpenAI(lambda req: FakeReply(n_contents=votes)) as server:
        [answer] = ask(make_teacher(server, monkeypatch, self_consistency_samples=5), "x")
        body = server.requests[0].body
    assert body["n"] == 5 and body["temperature"] >= 0.7
    assert answer.value == "Billing"
    assert answer.confidence == pytest.approx(3 / 5)
    assert answer.confidence_method == "self_consistency"


def test_429_is_retried_honouring_retry_after(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(seconds):
        slept.append(seconds)

    with FakeOpenAI(rate_limited_then(answer_with(TRUTH), times=2, retry_after="7")) as server:
        t = make_teacher(server, monkeypatch)
        t._sleep = fake_sleep
        [answer] = ask(t, "I was charged twice")
        assert server.calls == 3
    assert answer.value == "Billing" and answer.attempts == 3
    assert len(slept) == 2 and all(7 <= s < 7.2 for s in slept)


def test_server_errors_are_retried_with_backoff(monkeypatch):
    with FakeOpenAI(server_error_then(answer_with(TRUTH), times=2)) as server:
        [answer] = ask(make_teacher(server, monkeypatch), "The app crashes")
        assert server.calls == 3
    assert answer.value == "Technical support"


def test_gives_up_after_max_attempts_and_records_the_error(monkeypatch):
    with FakeOpenAI(server_error_then(answer_with(TRUTH), times=10)) as server:
        [answer] = ask(make_teacher(server, monkeypatch, max_attempts=2), "The app crashes")
        assert server.calls == 2
    assert answer.value is None
    assert answer.error.startswith("gave up after 2 tries: HTTP 500")


def test_client_errors_are_not_retried(monkeypatch):
    with FakeOpenAI(lambda req: FakeReply(status=400, content="bad model")) as server:
        [answer] = ask(make_teacher(server, monkeypatch), "x")
        assert server.calls == 1
    assert answer.value is None and "refused the request (400)" in answer.error


def repaired_by(bad_content: str):
    """A bad first answer; the repair request (which quotes the text earlier) gets the right one."""

    def responder(req):
        if "That answer was invalid" in req.text:
            return FakeReply(content=json.dumps({"label": TRUTH[req.body["messages"][-3]["content"]]}))
        return FakeReply(content=bad_content)

    return responder


@pytest.mark.parametrize(
    ("responder", "reason"),
    [
        (repaired_by("this is not json {"), "not valid JSON"),
        (repaired_by('{"label": "Nonsense"}'), "label 'Nonsense' is not one of the project's labels"),
        (repaired_by(""), "empty answer"),
    ],
)
def test_invalid_answer_is_an_error_then_repaired_once(monkeypatch, responder, reason):
    with FakeOpenAI(responder) as server:
        first, second = ask(make_teacher(server, monkeypatch), "I was charged twice")
        repair = server.requests[1].body["messages"]
    assert first.value is None and reason in first.error and first.input_tokens > 0
    assert second.value == "Billing" and second.error == ""
    assert "That answer was invalid" in repair[-1]["content"]


def test_garbage_body_is_retried(monkeypatch):
    calls = []

    def responder(req):
        calls.append(1)
        if len(calls) == 1:
            return FakeReply(raw_body="<html>oops</html>")
        return answer_with(TRUTH)(req)

    with FakeOpenAI(responder) as server:
        [answer] = ask(make_teacher(server, monkeypatch), "I was charged twice")
        assert server.calls == 2
    assert answer.value == "Billing"


def test_json_that_is_not_a_completion_is_unreadable_never_a_label(monkeypatch):
    with FakeOpenAI(lambda req: FakeReply(raw_body='{"id": "x", "object": "chat.completion"}')) as server:
        [answer] = ask(make_teacher(server, monkeypatch, max_attempts=2), "I was charged twice")
        assert server.calls == 2
    assert answer.value is None and answer.confidence is None
    assert answer.error.startswith("gave up after 2 tries: unreadable response")


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(client.TeacherError, match="set the environment variable OPENAI_API_KEY"):
        client.OpenAITeacher(client.TeacherSettings(model="m", api_key_env="OPENAI_API_KEY"), TASK)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"label": "Billing"}', ("Billing", "")),
        ('```json\n{"label": "Other"}\n```', ("Other", "")),
        ("", (None, "empty answer")),
        ('{"labels": "Billing"}', (None, 'answer has no "label" field')),
        ('{"label": "billing"}', (None, "label 'billing' is not one of the project's labels")),
        ('{"label": ""}', (None, "answer has an empty label")),
    ],
)
def test_parse_label_is_strict(content, expected):
    value, error = TASK.parse_teacher(content)
    assert value == expected[0]
    assert error.startswith(expected[1])


def test_logprob_confidence_ignores_json_punctuation_and_refuses_mismatch():
    content = '{"label": "Technical support"}'
    tokens = [
        ('{"', -0.5),
        ("label", -0.5),
        ('": "', -0.5),
        ("Technical", -0.1),
        (" support", -0.2),
        ('"}', -0.5),
    ]
    assert TASK.logprob_confidence(content, "Technical support", tokens) == pytest.approx(math.exp(-0.3))
    assert TASK.logprob_confidence(content, "Technical support", tokens[:-1]) is None
    assert TASK.logprob_confidence(content, "Technical support", []) is None


def test_rate_limiter_spaces_requests():
    limiter = client.RateLimiter(requests_per_minute=600)  # one every 0.1 s

    async def go():
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(4):
            await limiter.wait()
        return loop.time() - start

    assert asyncio.run(go()) == pytest.approx(0.3, abs=0.08)


def test_concurrency_is_the_callers_to_bound(monkeypatch):
    """Calls run in parallel: 16 calls of 0.2 s finish in far less than 3.2 s."""
    import time

    with FakeOpenAI(lambda req: FakeReply(content='{"label": "Other"}', delay=0.2)) as server:
        t = make_teacher(server, monkeypatch)

        async def go():
            try:
                return await asyncio.gather(
                    *(
                        t.ask(client.render_messages(system_prompt="s", text=f"t{i}", task=TASK))
                        for i in range(16)
                    )
                )
            finally:
                await t.close()

        start = time.perf_counter()
        answers = asyncio.run(go())
        elapsed = time.perf_counter() - start
        assert server.max_concurrency >= 12
    assert all(a[0].value == "Other" for a in answers)
    assert elapsed < 1.5


def test_answer_still_invalid_after_repair_stays_an_error(monkeypatch):
    with FakeOpenAI(malformed_then(answer_with(TRUTH), times=5)) as server:
        answers = ask(make_teacher(server, monkeypatch), "I was charged twice")
        assert server.calls == 2  # one repair, not more
    assert [a.value for a in answers] == [None, None]
    assert all("not valid JSON" in a.error for a in answers)
