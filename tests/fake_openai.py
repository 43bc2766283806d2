"""A local OpenAI-compatible HTTP server that stands in for an LLM provider.

Tests and the benchmark point the real ``openai`` client at it, so everything
from the client's HTTP stack inward runs for real::

    with FakeOpenAI(answer_with({"refund please": "Billing"})) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")
        ...
        assert server.calls == 1

What each request gets is decided by ``server.responder``, a callable taking a
:class:`FakeRequest` and returning a :class:`FakeReply`. The helpers at the
bottom build common responders (fixed answers, latency, rate limits, server
errors, malformed or out-of-set answers).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FakeOpenAI",
    "FakeReply",
    "FakeRequest",
    "Responder",
    "answer_with",
    "malformed_then",
    "out_of_set_then",
    "rate_limited_then",
    "server_error_then",
    "slow",
]

MALFORMED_CONTENT = "this is not json {"


@dataclass
class FakeRequest:
    """One POST /v1/chat/completions as the fake saw it.

    ``headers`` has lower-cased names. ``text`` is the content of the last user
    message. ``attempt`` is 1 the first time this server (since its last
    ``reset()``) sees that ``text``, 2 the second time, and so on.
    """

    body: dict
    headers: dict
    text: str
    attempt: int

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def messages(self) -> list[dict]:
        return list(self.body.get("messages") or [])


@dataclass
class FakeReply:
    """What to answer. Status 200 gives a chat.completion; anything else an OpenAI-style error.

    ``content`` is the assistant message (for errors: the error message).
    ``delay`` seconds are slept in the handler thread before answering.
    ``headers`` are added to the response (e.g. ``{"Retry-After": "1"}``).
    ``prompt_tokens``/``completion_tokens`` override the usage estimate.
    ``logprobs`` are (token, logprob) pairs; when the request asks for logprobs
    and this is None, they are generated with logprob -0.01 per ~4-char token.
    ``raw_body`` is sent verbatim instead of any JSON (a broken provider), still
    as application/json unless ``headers`` sets another Content-Type.
    ``n_contents`` gives one choice per entry when the request has n > 1.
    """

    status: int = 200
    content: str | None = None
    delay: float = 0.0
    headers: dict = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    logprobs: list[tuple[str, float]] | None = None
    raw_body: str | None = None
    n_contents: list[str] | None = None


Responder = Callable[[FakeRequest], FakeReply]


def _default_responder(request: FakeRequest) -> FakeReply:
    return FakeReply(content="OK")


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # 64 concurrent connections with room to spare
    allow_reuse_address = True

    fake: FakeOpenAI

    def handle_error(self, request, client_address):
        # A client hanging up mid-keep-alive (or close() cutting it) is normal; anything else is worth a traceback.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out in separate writes; without this each answer
    # waits ~40 ms for the client's delayed ACK (Nagle), skewing timings.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    sys_version = ""
    timeout = 60  # idle keep-alive connections end after a minute

    server: _Server

    # -- plumbing

    def setup(self):
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format, *args):  # noqa: A002 - silence the default request logging
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self, status: int, body: bytes | str, headers: dict | None = None, content_type="application/json"
    ):
        if isinstance(body, str):
            body = body.encode("utf-8")
        extra = {str(name): str(value) for name, value in (headers or {}).items()}
        own = {name.lower() for name in extra}
        self.send_response(status)
        if "content-type" not in own:  # a reply's headers may override it
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if "x-request-id" not in own:
            self.send_header("x-request-id", "req_" + uuid.uuid4().hex[:24])
        for name, value in extra.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status: int, payload: Any, headers: dict | None = None):
        self._send(status, json.dumps(payload), headers)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    # -- verbs

    def do_GET(self):
        path = self._path()
        fake = self.server.fake
        if path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [_model_entry(m) for m in fake.models]})
        elif path.startswith("/v1/models/"):
            self._send_json(200, _model_entry(path.removeprefix("/v1/models/")))
        else:
            self._send_json(404, _error_body(404, f"Unknown path {path!r}"))

    def do_POST(self):
        body = self._read_body()
        path = self._path()
        if path != "/v1/chat/completions":
            self._send_json(404, _error_body(404, f"Unknown path {path!r}"))
            return
        try:
            payload = json.loads(body or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._send_json(400, _error_body(400, f"Could not parse the JSON body: {exc}"))
            return
        self.server.fake._handle_chat(self, payload)


def _model_entry(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "fake-openai"}


_ERROR_KINDS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_body(status: int, message: str | None = None) -> dict:
    kind, code = _ERROR_KINDS.get(
        status, ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    )
    if message is None:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = f"HTTP {status}"
        if status == 429:
            message = "Rate limit reached for requests. Please try again later."
        elif status >= 500:
            message = "The server had an error while processing your request."
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def last_user_text(body: dict) -> str:
    """The content of the last user message of a chat request ('' if there is none)."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def estimate_prompt_tokens(body: dict) -> int:
    chars = sum(
        len(_content_text(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict)
    )
    return chars // 4 + 1


def split_tokens(text: str, size: int = 4) -> list[str]:
    """Split text into ~size-character pseudo tokens that join back to the text."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def _logprobs_block(pairs: list[tuple[str, float]], top_n: int) -> dict:
    entries = []
    for token, logprob in pairs:
        entry = {"token": token, "logprob": float(logprob), "bytes": list(token.encode("utf-8"))}
        entry["top_logprobs"] = [dict(entry)] if top_n > 0 else []
        entries.append(entry)
    return {"content": entries, "refusal": None}


class FakeOpenAI:
    """An OpenAI-compatible chat completions server on 127.0.0.1, in a background thread.

    Use as a context manager (or call ``close()``). ``base_url`` is what the
    ``openai`` client's ``base_url`` should be. Set ``responder`` at any time.

    Recorded: ``requests`` (list of FakeRequest), ``calls`` (count),
    ``max_concurrency`` (peak of chat requests in the handler at once, delay
    included), ``errors`` (exceptions the responder raised; each answered 500).
    """

    def __init__(self, responder: Responder | None = None, *, models: list[str] | None = None):
        self.responder: Responder = responder or _default_responder
        self.models: list[str] = list(models or ["gpt-4o-mini", "fake-model"])
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.requests: list[FakeRequest] = []
        self.errors: list[BaseException] = []
        self.calls = 0
        self.max_concurrency = 0
        self._in_flight = 0
        self._attempts: dict[str, int] = {}

        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self.port: int = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        self._closed = False

    # -- lifecycle

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wake handler threads parked on idle keep-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forget recorded requests, counts, peak concurrency and per-text attempts."""
        with self._lock:
            self.requests.clear()
            self.errors.clear()
            self.calls = 0
            self.max_concurrency = self._in_flight
            self._attempts.clear()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def texts(self) -> list[str]:
        """The classified text of every recorded request, in arrival order."""
        with self._lock:
            return [r.text for r in self.requests]

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- the endpoint

    def _handle_chat(self, handler: _Handler, body: dict) -> None:
        text = last_user_text(body)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.calls += 1
            attempt = self._attempts.get(text, 0) + 1
            self._attempts[text] = attempt
            request = FakeRequest(body=body, headers=headers, text=text, attempt=attempt)
            self.requests.append(request)
            self._in_flight += 1
            self.max_concurrency = max(self.max_concurrency, self._in_flight)
        try:
            if body.get("stream"):
                reply = FakeReply(status=400, content="stream=true is not supported by the fake server")
            else:
                try:
                    reply = self.responder(request)
                except Exception as exc:  # surfaced to the test through .errors
                    with self._lock:
                        self.errors.append(exc)
                    reply = FakeReply(status=500, content=f"fake responder raised {exc!r}")
            if reply.delay > 0:
                time.sleep(reply.delay)
        finally:
            # Before the answer goes out: once the client has it, the request
            # is over, so a reset() right after sees nothing in flight.
            with self._lock:
                self._in_flight -= 1
        self._answer(handler, body, reply)

    def _answer(self, handler: _Handler, body: dict, reply: FakeReply) -> None:
        if reply.raw_body is not None:
            handler._send(reply.status, reply.raw_body, reply.headers)
            return
        if reply.status != 200:
            handler._send_json(reply.status, _error_body(reply.status, reply.content), reply.headers)
            return
        handler._send_json(200, self._completion(body, reply), reply.headers)

    def _completion(self, body: dict, reply: FakeReply) -> dict:
        n = int(body.get("n") or 1)
        if n > 1 and reply.n_contents is not None:
            contents = list(reply.n_contents)
        else:
            contents = [reply.content if reply.content is not None else ""] * max(n, 1)
        want_logprobs = bool(body.get("logprobs"))
        top_n = int(body.get("top_logprobs") or 0)
        choices = []
        for index, content in enumerate(contents):
            logprobs = None
            if want_logprobs:
                pairs = reply.logprobs
                if pairs is None:
                    pairs = [(token, -0.01) for token in split_tokens(content)]
                logprobs = _logprobs_block(pairs, top_n)
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                }
            )
        prompt_tokens = (
            reply.prompt_tokens if reply.prompt_tokens is not None else estimate_prompt_tokens(body)
        )
        if reply.completion_tokens is not None:
            completion_tokens = reply.completion_tokens
        else:
            completion_tokens = sum(len(c) // 4 + 1 for c in contents)
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "fake-model",
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }


# --------------------------------------------------------------------------- responders


def _label_content(label: str, as_json_key: str | None) -> str:
    return label if as_json_key is None else json.dumps({as_json_key: label})


def answer_with(
    mapping: dict[str, str] | Callable[[str], str], *, as_json_key: str | None = "label"
) -> Responder:
    """Answer each text with its label, as ``{"label": ...}`` JSON (or the bare label when as_json_key is None).

    With a dict, the text is looked up exactly, then stripped, then by the
    longest key contained in the text (for prompts that wrap the text); a text
    found no way gets the dict's first value.
    """
    if callable(mapping):
        lookup = mapping
    else:
        table = dict(mapping)
        if not table:
            raise ValueError("answer_with needs at least one entry")
        fallback = next(iter(table.values()))
        by_length = sorted(table, key=len, reverse=True)

        def lookup(text: str) -> str:
            if text in table:
                return table[text]
            stripped = text.strip()
            if stripped in table:
                return table[stripped]
            for key in by_length:
                if key and key in text:
                    return table[key]
            return fallback

    def responder(request: FakeRequest) -> FakeReply:
        return FakeReply(content=_label_content(lookup(request.text), as_json_key))

    return responder


def slow(responder: Responder, seconds: float) -> Responder:
    """Add ``seconds`` of latency to every reply."""

    def wrapped(request: FakeRequest) -> FakeReply:
        reply = responder(request)
        return dataclasses.replace(reply, delay=reply.delay + seconds)

    return wrapped


def rate_limited_then(responder: Responder, times: int = 2, retry_after: str = "1") -> Responder:
    """429 with Retry-After for the first ``times`` attempts at each text, then ``responder``."""

    def wrapped(request: FakeRequest) -> FakeReply:
        if request.attempt <= times:
            return FakeReply(status=429, headers={"Retry-After": str(retry_after)})
        return responder(request)

    return wrapped


def server_error_then(responder: Responder, times: int = 1) -> Responder:
    """500 for the first ``times`` attempts at each text, then ``responder``."""

    def wrapped(request: FakeRequest) -> FakeReply:
        if request.attempt <= times:
            return FakeReply(status=500)
        return responder(request)

    return wrapped


def malformed_then(responder: Responder, times: int = 1) -> Responder:
    """Content that is not JSON for the first ``times`` attempts at each text, then ``responder``."""

    def wrapped(request: FakeRequest) -> FakeReply:
        if request.attempt <= times:
            return FakeReply(content=MALFORMED_CONTENT)
        return responder(request)

    return wrapped


def out_of_set_then(
    responder: Responder, label: str = "Nonsense", times: int = 1, *, as_json_key: str | None = "label"
) -> Responder:
    """A label outside the label set for the first ``times`` attempts at each text, then ``responder``."""

    def wrapped(request: FakeRequest) -> FakeReply:
        if request.attempt <= times:
            return FakeReply(content=_label_content(label, as_json_key))
        return responder(request)

    return wrapped
