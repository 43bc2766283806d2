"""The fake provider, driven through the real openai client over HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest

from tests.fake_openai import (
    MALFORMED_CONTENT,
    FakeOpenAI,
    FakeReply,
    FakeRequest,
    answer_with,
    malformed_then,
    out_of_set_then,
    rate_limited_then,
    server_error_then,
    slow,
)

LABELS = {"refund my order": "Billing", "app crashes on start": "Technical support", "hello": "Other"}
MODEL = "gpt-4o-mini"


@pytest.fixture
def server():
    with FakeOpenAI(answer_with(LABELS)) as fake:
        yield fake


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=10) as c:
        yield c


def ask(client, text: str, **extra):
    return client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Classify the ticket."},
            {"role": "user", "content": "an earlier message"},
            {"role": "assistant", "content": '{"label": "Other"}'},
            {"role": "user", "content": text},
        ],
        **extra,
    )


def test_correct_answer_with_usage(server, client):
    completion = ask(client, "refund my order")

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert json.loads(choice.message.content) == {"label": "Billing"}
    assert choice.finish_reason == "stop"
    assert choice.logprobs is None
    usage = completion.usage
    prompt_chars = len("Classify the ticket.") + len("an earlier message") + len('{"label": "Other"}') + 15
    assert usage.prompt_tokens == prompt_chars // 4 + 1
    assert usage.completion_tokens == len('{"label": "Billing"}') // 4 + 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    assert server.calls == 1
    (request,) = server.requests
    assert request.text == "refund my order"
    assert request.attempt == 1
    assert request.body["model"] == MODEL
    assert request.headers["authorization"] == "Bearer test"


def test_lookup_rules_and_bare_labels(server, client):
    assert json.loads(ask(client, "  hello \n").choices[0].message.content) == {"label": "Other"}
    wrapped = "Ticket:\n<<<app crashes on start>>>\nAnswer with JSON."
    assert json.loads(ask(client, wrapped).choices[0].message.content)["label"] == "Technical support"
    assert json.loads(ask(client, "never seen").choices[0].message.content)["label"] == "Billing"

    server.responder = answer_with(str.upper, as_json_key=None)
    assert ask(client, "shout").choices[0].message.content == "SHOUT"


def test_explicit_usage_and_content_parts(server, client):
    server.responder = lambda request: FakeReply(content="x", prompt_tokens=100, completion_tokens=7)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": "part one"}]}]
    )
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (100, 7)
    assert completion.usage.total_tokens == 107
    assert server.requests[0].text == "part one"


def test_logprobs_when_requested(server, client):
    completion = ask(client, "app crashes on start", logprobs=True)
    content = completion.choices[0].message.content
    tokens = completion.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == content
    assert all(t.logprob == pytest.approx(-0.01) for t in tokens)
    assert all(bytes(t.bytes) == t.token.encode() for t in tokens)

    completion = ask(client, "hello", logprobs=True, top_logprobs=3)
    first = completion.choices[0].logprobs.content[0]
    assert first.top_logprobs[0].token == first.token

    server.responder = lambda request: FakeReply(content="Billing", logprobs=[("Bill", -0.7), ("ing", -0.2)])
    tokens = ask(client, "hello", logprobs=True).choices[0].logprobs.content
    assert [(t.token, t.logprob) for t in tokens] == [("Bill", -0.7), ("ing", -0.2)]


def test_response_format_json_schema_is_accepted(server, client):
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(set(LABELS.values()))}},
        "required": ["label"],
        "additionalProperties": False,
    }
    completion = ask(
        client,
        "refund my order",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "label", "schema": schema, "strict": True},
        },
        temperature=0,
        seed=1,
    )
    assert json.loads(completion.choices[0].message.content) == {"label": "Billing"}
    assert server.requests[0].body["response_format"]["type"] == "json_schema"


def test_rate_limit_raises_with_retry_after_then_succeeds(server, client):
    server.responder = rate_limited_then(answer_with(LABELS), times=2, retry_after="3")
    for attempt in (1, 2):
        with pytest.raises(openai.RateLimitError) as info:
            ask(client, "hello")
        assert info.value.status_code == 429
        assert info.value.response.headers["retry-after"] == "3"
        assert info.value.code == "rate_limit_exceeded"
        assert server.requests[-1].attempt == attempt
    assert json.loads(ask(client, "hello").choices[0].message.content) == {"label": "Other"}
    # Attempts are counted per text.
    with pytest.raises(openai.RateLimitError):
        ask(client, "refund my order")


def test_client_retries_honour_retry_after(server):
    server.responder = rate_limited_then(answer_with(LABELS), times=1, retry_after="0")
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=2, timeout=10) as retrying:
        completion = ask(retrying, "hello")
    assert json.loads(completion.choices[0].message.content) == {"label": "Other"}
    assert [r.attempt for r in server.requests] == [1, 2]


def test_server_error_then_success(server, client):
    server.responder = server_error_then(answer_with(LABELS))
    with pytest.raises(openai.InternalServerError) as info:
        ask(client, "hello")
    assert info.value.status_code == 500
    assert ask(client, "hello").choices[0].message.content == '{"label": "Other"}'


def test_custom_error_status_and_responder_exception(server, client):
    server.responder = lambda request: FakeReply(status=400, content="bad schema")
    with pytest.raises(openai.BadRequestError, match="bad schema"):
        ask(client, "hello")

    def broken(request: FakeRequest) -> FakeReply:
        raise RuntimeError("boom")

    server.responder = broken
    with pytest.raises(openai.InternalServerError):
        ask(client, "hello")
    assert isinstance(server.errors[0], RuntimeError)


def test_raw_body_garbage(server, client):
    # 200 that claims JSON but is not: the openai client lets the decode error through.
    server.responder = lambda request: FakeReply(raw_body="<html>502 Bad Gateway</html>")
    with pytest.raises(json.JSONDecodeError):
        ask(client, "hello")

    # Truncated JSON.
    server.responder = lambda request: FakeReply(raw_body='{"id": "chatcmpl-1", "choices": [')
    with pytest.raises(ValueError):
        ask(client, "hello")

    # A non-JSON content type: the lenient client hands back the text instead of a completion.
    server.responder = lambda request: FakeReply(
        raw_body="<html>oops</html>", headers={"Content-Type": "text/html"}
    )
    assert ask(client, "hello") == "<html>oops</html>"

    server.responder = lambda request: FakeReply(status=502, raw_body="upstream exploded")
    with pytest.raises(openai.APIStatusError) as info:
        ask(client, "hello")
    assert info.value.status_code == 502
    assert info.value.response.text == "upstream exploded"


def test_malformed_and_out_of_set_then_valid(server, client):
    server.responder = malformed_then(
        out_of_set_then(answer_with(LABELS), label="Nonsense", times=2), times=1
    )
    assert ask(client, "hello").choices[0].message.content == MALFORMED_CONTENT
    # attempt 2: still within out_of_set's 2 attempts
    assert json.loads(ask(client, "hello").choices[0].message.content) == {"label": "Nonsense"}
    assert json.loads(ask(client, "hello").choices[0].message.content) == {"label": "Other"}


def test_n_choices(server, client):
    completion = ask(client, "refund my order", n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {'{"label": "Billing"}'}

    server.responder = lambda request: FakeReply(n_contents=["A", "B", "C"])
    completion = ask(client, "hello", n=3, logprobs=True)
    assert [c.message.content for c in completion.choices] == ["A", "B", "C"]
    assert [c.logprobs.content[0].token for c in completion.choices] == ["A", "B", "C"]
    assert completion.usage.completion_tokens == 3


def test_concurrency_with_async_client(server):
    server.responder = slow(answer_with(LABELS), 0.2)
    texts = [f"ticket {i}" for i in range(16)]

    async def main():
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as aclient:
            return await asyncio.gather(
                *(
                    aclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
                    for text in texts
                )
            )

    started = time.perf_counter()
    results = asyncio.run(main())
    elapsed = time.perf_counter() - started

    assert len(results) == 16
    assert all(json.loads(r.choices[0].message.content) == {"label": "Billing"} for r in results)
    assert server.calls == 16
    assert sorted(server.texts) == sorted(texts)
    assert server.max_concurrency >= 12
    assert elapsed < 16 * 0.2 / 2


def test_keep_alive_reuses_connection(server):
    seen = []
    with httpx.Client(
        event_hooks={"request": [lambda r: seen.append(r.extensions)]},
    ) as http:
        first = http.post(
            server.base_url + "/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "a"}]},
        )
        second = http.post(
            server.base_url + "/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "b"}]},
        )
        assert first.status_code == second.status_code == 200
        assert first.http_version == "HTTP/1.1"
        assert "close" not in first.headers.get("connection", "")
        pool = http._transport._pool
        assert len(pool.connections) == 1
        assert int(first.headers["content-length"]) == len(first.content)


def test_threaded_sync_clients_and_reset(server, client):
    results = []

    def work(i):
        results.append(ask(client, f"thread {i}").choices[0].message.content)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and server.calls == 8

    server.reset()
    assert server.calls == 0 and server.requests == [] and server.max_concurrency == 0
    ask(client, "thread 0")
    assert server.requests[0].attempt == 1


def test_models_and_unknown_paths(server, client):
    assert {m.id for m in client.models.list()} >= {"gpt-4o-mini"}
    response = httpx.post(server.base_url + "/nope", json={})
    assert response.status_code == 404
    assert "error" in response.json()
    response = httpx.post(server.base_url + "/chat/completions", content=b"{not json")
    assert response.status_code == 400


def test_close_releases_port_and_idle_connections():
    fake = FakeOpenAI()
    http = httpx.Client()
    assert (
        http.post(fake.base_url + "/chat/completions", json={"messages": []}).json()["choices"][0]["message"][
            "content"
        ]
        == "OK"
    )
    started = time.perf_counter()
    fake.close()
    fake.close()  # idempotent
    assert time.perf_counter() - started < 2
    with pytest.raises(httpx.TransportError):
        httpx.post(fake.base_url + "/chat/completions", json={"messages": []}, timeout=2)
    http.close()
