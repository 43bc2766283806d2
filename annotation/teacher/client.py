"""The teacher LLM boundary: the only module that imports `openai`.

It turns a prompt version and a text into chat messages, calls any
OpenAI-compatible endpoint with bounded retries and a rate limit, parses the
answer strictly, and measures confidence honestly (token log-probabilities,
or self-consistency votes, or nothing). Everything it returns is a plain
dataclass; it never touches the database.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from tasks.base import Answer, Task, json_answer

# Classification's; each task type has its own (Task.default_instructions).
DEFAULT_INSTRUCTIONS = Task.default_instructions
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0


@dataclass(frozen=True)
class TeacherSettings:
    """What a call needs from the project's TeacherConfig, as plain values."""

    model: str
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 64
    price_input_per_mtok: Decimal = Decimal("0")
    price_output_per_mtok: Decimal = Decimal("0")
    concurrency: int = 8
    requests_per_minute: int = 0
    timeout_seconds: float = 30.0
    max_attempts: int = 5
    structured_output: bool = True
    use_logprobs: bool = True
    self_consistency_samples: int = 0

    def cost_usd(self, input_tokens: int, output_tokens: int) -> Decimal:
        cost = (
            input_tokens * self.price_input_per_mtok + output_tokens * self.price_output_per_mtok
        ) / 1_000_000
        # 8 decimals: a cheap call costs millionths of a dollar; rounding each
        # to 6 would under-count a whole job's bill.
        return Decimal(cost).quantize(Decimal("0.00000001"))

    def request_params(self) -> dict:
        """The parameters that change an answer, for the cache key."""
        return {
            "model": self.model,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "structured_output": self.structured_output,
            "logprobs": self.use_logprobs,
            "samples": self.self_consistency_samples,
        }


@dataclass
class TeacherAnswer:
    value: Answer | None  # the task's answer: a label name, an extraction {"spans": [...]}
    confidence: float | None = None
    confidence_method: str = ""
    raw_response: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal("0")
    latency_ms: int = 0
    error: str = ""
    attempts: int = 0
    agent: str = ""

    @property
    def is_valid(self) -> bool:
        return self.value is not None and not self.error


class TeacherError(Exception):
    """A call that failed for good (not retryable, or out of tries)."""


# --- prompts -----------------------------------------------------------------------------


def render_system_prompt(*, instructions: str, guidelines: str, task: Task) -> str:
    """Instructions, guidelines, then the task's categories and answer format."""
    lines = [instructions.strip() or task.default_instructions]
    if guidelines.strip():
        lines += ["", "Guidelines:", guidelines.strip()]
    lines += ["", task.prompt_block()]
    return "\n".join(lines)


def render_messages(
    *, system_prompt: str, text: str, task: Task, few_shot: list[tuple[str, object]] = ()
) -> list[dict[str, str]]:
    """System prompt, few-shot pairs (text, answer), then the text as the last user message."""
    messages = [{"role": "system", "content": system_prompt}]
    for example_text, answer in few_shot:
        messages.append({"role": "user", "content": example_text})
        messages.append({"role": "assistant", "content": task.example_reply(answer, text=example_text)})
    messages.append({"role": "user", "content": text})
    return messages


def cache_key(*, settings: TeacherSettings, prompt_version_id: int, messages: list[dict]) -> str:
    payload = json.dumps(
        {"params": settings.request_params(), "prompt_version": prompt_version_id, "messages": messages},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def repair_messages(messages: list[dict], bad_content: str | None, reason: str, task: Task) -> list[dict]:
    return [
        *messages,
        {"role": "assistant", "content": bad_content or ""},
        {"role": "user", "content": task.repair_request(reason)},
    ]


# --- synthetic examples --------------------------------------------------------------------


def generation_format(item_schema: dict) -> dict:
    """The reply's schema: ``{"examples": [<item>, ...]}``, an item as the task defines it."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "examples",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"examples": {"type": "array", "items": item_schema}},
                "required": ["examples"],
                "additionalProperties": False,
            },
        },
    }


NOISE_HINTS = {
    "none": "Write clean, correctly spelled text.",
    "light": "Add a few realistic typos, missing punctuation or casual abbreviations.",
    "heavy": "Write the way hurried people type: typos, no capitals, run-on sentences, stray characters.",
}


@dataclass
class Generated:
    items: list  # the reply's examples as written (the task reads each one)
    error: str = ""
    raw_response: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal("0")
    latency_ms: int = 0


def render_generation_messages(
    *,
    task_prompt: str,
    guidelines: str,
    count: int,
    persona: str,
    tone: str,
    min_words: int,
    max_words: int,
    noise: str,
    seeds: list[str],
) -> list[dict[str, str]]:
    """The task's part (what to write, for which category, in what shape), then the style,
    the guidelines and a few real texts for style."""
    lines = [
        task_prompt.strip(),
        f"Each text is written by {persona}, in a {tone} tone, {min_words} to {max_words} words long.",
        NOISE_HINTS.get(noise, NOISE_HINTS["none"]),
    ]
    if guidelines.strip():
        lines += ["Guidelines of the task:", guidelines.strip()]
    if seeds:
        lines += ["Real texts from this task, for style only (do not copy them):"]
        lines += [f"- {seed[:500]}" for seed in seeds]
    lines += ['Answer with a JSON object and nothing else: {"examples": [<example>, ...]}.']
    return [
        {"role": "system", "content": "\n".join(lines)},
        {"role": "user", "content": f"Write {count} examples."},
    ]


def parse_generated(content: str | None) -> tuple[list, str]:
    """The reply's list of examples, each as written (the task checks them one by one)."""
    obj, error = json_answer(content)
    if error:
        return [], error
    examples = obj.get("examples") if isinstance(obj, dict) else None
    if not isinstance(examples, list):
        return [], 'answer has no "examples" list'
    if not examples:
        return [], "answer has no examples"
    return examples, ""


# --- calls -----------------------------------------------------------------------------------


class RateLimiter:
    """Spaces request starts evenly to stay under a requests-per-minute limit."""

    def __init__(self, requests_per_minute: int):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


def retry_after_seconds(headers) -> float | None:
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return float(milliseconds) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def backoff_seconds(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(BACKOFF_CAP_SECONDS * 4, retry_after) + random.uniform(0, 0.1)
    base = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    return base / 2 + random.uniform(0, base / 2)  # "equal jitter"


@dataclass
class _RawReply:
    contents: list[str | None]
    tokens: list[tuple[str, float]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    raw: str = ""


def allowed_api_key_vars() -> list[str]:
    from django.conf import settings as django_settings

    return list(django_settings.TEACHER_API_KEY_VARS)


def allowed_base_urls() -> list[str]:
    from django.conf import settings as django_settings

    return list(django_settings.TEACHER_BASE_URLS)


def credentials_problem(*, api_key_env: str, base_url: str) -> str:
    """Why these settings may not be used for a call ("" when they may).

    Only names and addresses on the operator's allow-lists pass: a lead's free
    text must never pick which server secret is sent, or where.
    """
    if api_key_env and api_key_env not in allowed_api_key_vars():
        return (
            f"The API key variable {api_key_env!r} is not allowed on this server; "
            f"the operator allows: {', '.join(allowed_api_key_vars()) or 'none'} (DISTILL_TEACHER_API_KEY_VARS)."
        )
    if base_url and base_url.rstrip("/") not in allowed_base_urls():
        return (
            f"The base URL {base_url!r} is not allowed on this server; ask the operator to add it to "
            "DISTILL_TEACHER_BASE_URLS (allowed now: " + (", ".join(allowed_base_urls()) or "none") + ")."
        )
    return ""


def client_credentials(settings: TeacherSettings) -> tuple[str, str | None]:
    """The API key and base URL a call uses, checked against the operator's allow-lists."""
    problem = credentials_problem(api_key_env=settings.api_key_env, base_url=settings.base_url)
    if problem:
        raise TeacherError(problem)
    api_key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
    base_url = settings.base_url.rstrip("/") or os.environ.get("OPENAI_BASE_URL") or None
    if not api_key and base_url is None:
        raise TeacherError(
            f"No API key: set the environment variable {settings.api_key_env or 'OPENAI_API_KEY'} "
            "in the server's environment (or use the offline embedding teacher)."
        )
    return api_key, base_url


class OpenAITeacher:
    """Answers texts for the project's task through an OpenAI-compatible chat completions API."""

    def __init__(self, settings: TeacherSettings, task: Task | None, *, sleep=asyncio.sleep):
        import openai

        api_key, base_url = client_credentials(settings)
        self.settings = settings
        self.task = task
        self.limiter = RateLimiter(settings.requests_per_minute)
        self._sleep = sleep
        self._openai = openai
        # The SDK's own retries are off: ours honour Retry-After and count tries.
        self.client = openai.AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url,
            max_retries=0,
            timeout=settings.timeout_seconds,
        )

    async def close(self) -> None:
        await self.client.close()

    async def ask(self, messages: list[dict]) -> list[TeacherAnswer]:
        """One answer, plus a repaired second one when the first is invalid.

        The text answered is the last user message (render_messages puts it there).
        """
        text = messages[-1]["content"]
        first = await self._answer(messages, text)
        if first.is_valid or first.attempts == 0:  # a valid answer, or no answer at all
            return [first]
        second = await self._answer(
            repair_messages(messages, first.raw_response, first.error, self.task), text
        )
        return [first, second]

    async def _answer(self, messages: list[dict], text: str) -> TeacherAnswer:
        samples = self.settings.self_consistency_samples
        started = time.perf_counter()
        try:
            reply, attempts = await self._call(messages, samples=samples if samples >= 2 else 1)
        except TeacherError as exc:
            return TeacherAnswer(
                value=None, error=str(exc), latency_ms=int((time.perf_counter() - started) * 1000)
            )
        answer = TeacherAnswer(
            value=None,
            raw_response=reply.raw,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost_usd=self.settings.cost_usd(reply.input_tokens, reply.output_tokens),
            latency_ms=int((time.perf_counter() - started) * 1000),
            attempts=attempts,
        )
        if samples >= 2:
            # Vote over the answers' canonical JSON, so any task's answers can be counted.
            parsed = [self.task.parse_teacher(c, text=text) for c in reply.contents]
            valid = {json.dumps(v, sort_keys=True): v for v, _ in parsed if v is not None}
            votes = Counter(json.dumps(v, sort_keys=True) for v, _ in parsed if v is not None)
            if not votes:
                answer.error = parsed[0][1]
                return answer
            key, _count = votes.most_common(1)[0]
            # The task says how sure the samples are of the answer (and of each of its
            # spans, for extraction): for a label, the share that chose it.
            answer.value, answer.confidence = self.task.consistency_answer(valid[key], [v for v, _ in parsed])
            answer.confidence_method = "self_consistency"
            return answer
        content = reply.contents[0]
        answer.value, answer.error = self.task.parse_teacher(content, text=text)
        if answer.value is not None:
            answer.value, answer.confidence = self.task.logprob_answer(
                content, answer.value, reply.tokens, text=text
            )
            answer.confidence_method = "logprobs" if answer.confidence is not None else ""
        return answer

    async def generate(
        self, messages: list[dict], *, item_schema: dict, temperature: float = 1.0, max_tokens: int = 2000
    ) -> Generated:
        """New examples, asked for as {"examples": [<item>, ...]} (synthetic data)."""
        started = time.perf_counter()
        try:
            reply, attempts = await self._call(
                messages,
                samples=1,
                schema=generation_format(item_schema),
                temperature=temperature,
                max_tokens=max_tokens,
            )
        except TeacherError as exc:
            return Generated(items=[], error=str(exc), latency_ms=int((time.perf_counter() - started) * 1000))
        items, error = parse_generated(reply.contents[0])
        return Generated(
            items=items,
            error=error,
            raw_response=reply.raw,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost_usd=self.settings.cost_usd(reply.input_tokens, reply.output_tokens),
            latency_ms=int((time.perf_counter() - started) * 1000),
        )

    async def _call(
        self,
        messages: list[dict],
        *,
        samples: int,
        schema: dict | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> tuple[_RawReply, int]:
        import httpx

        openai = self._openai
        s = self.settings
        temperature = s.temperature if temperature is None else temperature
        params: dict = {
            "model": s.model,
            "messages": messages,
            "max_tokens": max_tokens or s.max_tokens,
            "temperature": max(temperature, 0.7) if samples > 1 else temperature,
        }
        if samples > 1:
            params["n"] = samples
        elif s.use_logprobs and schema is None:
            params["logprobs"] = True
        if s.structured_output:
            params["response_format"] = schema or self.task.response_format()
        last_error = ""
        for attempt in range(1, s.max_attempts + 1):
            await self.limiter.wait()
            try:
                # The SDK's transport and error types, without its request transform and
                # response model: both are CPU that the event loop shares with every other
                # call in flight (bench/README.md, "Teacher"). The body is plain JSON already.
                response = await self.client.post("/chat/completions", body=params, cast_to=httpx.Response)
                reply = self._reply(json.loads(response.content))
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                last_error, retry_after = f"{type(exc).__name__}: {exc}", None
            except openai.APIStatusError as exc:
                if exc.status_code not in RETRYABLE_STATUS:
                    raise TeacherError(
                        f"the API refused the request ({exc.status_code}): {exc.message}"
                    ) from None
                last_error = f"HTTP {exc.status_code}: {exc.message}"
                retry_after = retry_after_seconds(exc.response.headers)
            except (openai.APIError, ValueError) as exc:
                # The SDK raises a bare JSONDecodeError for a 200 whose body is not JSON.
                last_error, retry_after = f"unreadable response ({type(exc).__name__}: {exc})", None
            else:
                if reply is not None:
                    return reply, attempt
                last_error, retry_after = f"unreadable response: {response.text[:200]!r}", None
            if attempt < s.max_attempts:
                await self._sleep(backoff_seconds(attempt, retry_after))
        raise TeacherError(f"gave up after {s.max_attempts} tries: {last_error}")

    @staticmethod
    def _reply(data) -> _RawReply | None:
        """The parts of a chat completion body we use, or None when it is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            return None
        choices = [c if isinstance(c, dict) else {} for c in data["choices"]]

        def content(choice: dict) -> str | None:
            message = choice.get("message")
            value = message.get("content") if isinstance(message, dict) else None
            return value if isinstance(value, str) else None

        tokens: list[tuple[str, float]] = []
        logprobs = choices[0].get("logprobs") if choices else None
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            tokens = [
                (t["token"], float(t["logprob"]))
                for t in logprobs["content"]
                if isinstance(t, dict) and isinstance(t.get("token"), str) and t.get("logprob") is not None
            ]
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        contents = [content(c) for c in choices]
        return _RawReply(
            contents=contents or [None],
            tokens=tokens,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            raw=(contents[0] or "") if len(contents) == 1 else json.dumps(contents),
        )
