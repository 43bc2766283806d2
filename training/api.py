"""The prediction API and the OpenAI-compatible drop-in, authenticated by project tokens.

Both answer JSON only, errors included, in OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`), so an OpenAI client reads ours too.

The drop-in takes one thing from a chat request: the text to classify (or to extract
fields from; the answer is then the fields object as JSON). Everything else a
client sends (model, n, max_tokens, its own system prompt) is ignored: an unsure text
takes the project's fallback exactly as on the prediction API (`serving.predict_texts`),
so the teacher is asked with the project's model, prompt and limits, and billed for
what it used. A text that no fallback answered gets the project's unsure answer: by
default an error (422 student_unsure) that the client's own fallback catches, never a
guess it would take for an answer (README "Serving the student").

Every request with a valid token is first counted against the token's limit per minute
(`serving.rate_check`).
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from annotation.models import Project
from distillapp.views import API_PATH_PREFIXES, is_outage
from training import openapi, serving
from training.models import ModelVersion, ServingConfig
from training.serving.config import DROP_IN_MAX_BODY_BYTES

logger = logging.getLogger(__name__)

_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    422: "unsure_error",
    429: "rate_limit_error",
}


def error_response(
    message: str, *, code: str, status: int, headers: dict | None = None, extra: dict | None = None
) -> JsonResponse:
    kind = "server_error" if status >= 500 else _ERROR_TYPES.get(status, "invalid_request_error")
    return JsonResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}, **(extra or {})},
        status=status,
        headers=headers,
    )


def json_api(method: str) -> Callable:
    """A token API view: CSRF-exempt (no cookies involved), one method, every failure as JSON."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method != method:
                return error_response(
                    f"Use {method}.", code="method_not_allowed", status=405, headers={"Allow": method}
                )
            try:
                return view(request, *args, **kwargs)
            except serving.ServingError as exc:
                return error_response(
                    str(exc), code=exc.code, status=exc.status, headers=exc.headers, extra=exc.extra
                )
            except Exception as exc:
                if is_outage(exc):
                    raise  # distillapp.middleware.OutageMiddleware answers 503 in this shape
                # Logged with its traceback; the client still gets JSON it can read, not a page.
                logger.exception("API request failed: %s %s", request.method, request.path)
                return error_response(
                    "The server failed on this request; the error has been logged.",
                    code="internal_error",
                    status=500,
                )

        return wrapped

    return decorate


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: JSON under the API's paths, the site's page everywhere else."""
    if request.path.startswith(API_PATH_PREFIXES):
        return error_response(f"There is no API operation at {request.path}.", code="not_found", status=404)
    return defaults.page_not_found(request, exception)


def _too_big(size: int, limit: int) -> serving.ServingError:
    return serving.ServingError(
        f"The body has {size:,} bytes; the limit is {limit:,}.", code="body_too_large", status=413
    )


def _json_body(request: HttpRequest, *, max_bytes: int) -> dict:
    if (request.content_type or "").lower() != "application/json":
        raise serving.ServingError(
            f"Send the body as JSON with 'Content-Type: application/json' (not {request.content_type!r}).",
            code="unsupported_media_type",
            status=415,
        )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes:
        raise _too_big(declared, max_bytes)
    try:
        raw = request.body
    except RequestDataTooBig:  # past Django's DATA_UPLOAD_MAX_MEMORY_SIZE
        raise _too_big(declared, max_bytes) from None
    if len(raw) > max_bytes:
        raise _too_big(len(raw), max_bytes)
    try:
        body = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise serving.ServingError("The body is not valid JSON.", code="bad_json") from None
    if not isinstance(body, dict):
        raise serving.ServingError("The body must be a JSON object.", code="bad_json")
    return body


def _checked_texts(texts, config: ServingConfig) -> list[str]:
    texts = serving.validate_texts(texts, config)
    # A lead may raise the project's own limit, never past the server's: a served text
    # that is kept becomes an example like an imported one.
    limit = settings.IMPORT_MAX_TEXT_CHARS
    for index, text in enumerate(texts):
        if len(text) > limit:
            raise serving.ServingError(
                f"Text {index} has {len(text):,} characters; this server's limit is {limit:,}.",
                code="text_too_long",
                status=413,
            )
    return texts


def _token_project(request: HttpRequest) -> tuple[Project, serving.Live]:
    """The token's project and its live state, once the token's request has been counted."""
    token = serving.token_check(request.headers.get("Authorization"))
    state = serving.live(token.project)
    serving.rate_check(token=token, config=state.config)
    return token.project, state


@json_api("POST")
def predict(request: HttpRequest, slug: str) -> JsonResponse:
    """POST /api/v1/projects/<slug>/predict {"texts": [...]}: for each text the task's answer (a
    label; an extraction's spans and fields object), its confidence, route and model version."""
    project, state = _token_project(request)
    if project.slug != slug:
        # The same answer whether the slug is unknown or another project's: a token tells its
        # holder nothing about which other projects exist.
        raise serving.ServingError(f"This token has no project {slug!r}.", code="no_project", status=404)
    body = _json_body(request, max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE or DROP_IN_MAX_BODY_BYTES)
    texts = _checked_texts(body.get("texts"), state.config)
    answers = serving.predict_texts(project=project, texts=texts, state=state)
    task = project.task
    return JsonResponse({"predictions": [a.as_json(task, t) for a, t in zip(answers, texts, strict=True)]})


# --- the OpenAI-compatible drop-in -------------------------------------------------------------------


def _model_id(version: ModelVersion) -> str:
    return f"distill:{version.name}"


RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def _chat_text(body: dict, where: str) -> str:
    """The text to classify; the rest of the request is checked for shape, then ignored."""

    def bad(message: str, code: str = "bad_request") -> serving.ServingError:
        return serving.ServingError(message, code=code)

    if "model" in body and not isinstance(body["model"], str):
        raise bad("'model' must be a string.")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise bad("'stream' must be true or false.")
    if body.get("stream"):
        raise bad("Streaming is not supported by the drop-in.", "stream_unsupported")
    response_format = body.get("response_format")
    if response_format is not None and not (
        isinstance(response_format, dict) and response_format.get("type", "text") in RESPONSE_FORMATS
    ):
        raise bad(f"'response_format' must be an object whose type is one of {', '.join(RESPONSE_FORMATS)}.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list.", "bad_messages")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise bad("Each message must be an object with a 'role'.", "bad_messages")
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise bad("There is no user message to classify.", "no_user_message")
    content = (users[0] if where == "first_user" else users[-1]).get("content")
    if isinstance(content, list):  # content parts: their text
        content = " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    if not isinstance(content, str) or not content.strip():
        raise bad("The user message has no text.", "no_user_message")
    return content


def _distill_fields(answer: serving.RoutedAnswer) -> dict:
    return {
        "route": answer.route,
        "unsure": answer.route == "review",
        "confidence": None if answer.confidence is None else round(answer.confidence, 4),
        "model_version": answer.model_version,
    }


def _completion(body: dict, answer: serving.RoutedAnswer, *, task, text: str, config: ServingConfig) -> dict:
    response_format = body.get("response_format")
    wants_json = isinstance(response_format, dict) and response_format.get("type") in RESPONSE_FORMATS[1:]
    if answer.route != "review":
        content = task.drop_in_content(answer.value, text=text, wants_json=wants_json)
    elif config.drop_in_unsure == ServingConfig.DropInUnsure.ABSTAIN:
        content = config.drop_in_abstain_content  # as the lead wrote it, whatever was asked
    else:  # the lead chose the student's guess, marked unsure (header and field)
        content = task.drop_in_content(answer.student_value, text=text, wants_json=wants_json)
    input_tokens, output_tokens = answer.teacher_tokens
    return {
        "id": f"chatcmpl-distill-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": f"distill:{answer.model_version}",
        "system_fingerprint": f"distill-{answer.model_version}",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    # A label, {"label": ...} when JSON is asked for; an extraction's fields object.
                    "content": content,
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        # The tokens bought from the teacher for this answer: none when the student answered.
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
        "distill": _distill_fields(answer),
    }


@json_api("POST")
def chat_completions(request: HttpRequest) -> JsonResponse:
    """POST /v1/chat/completions: the student answers when sure, else the project's fallback."""
    project, state = _token_project(request)
    body = _json_body(request, max_bytes=DROP_IN_MAX_BODY_BYTES)
    texts = _checked_texts([_chat_text(body, state.config.drop_in_message)], state.config)
    [answer] = serving.predict_texts(project=project, texts=texts, endpoint="chat", state=state)
    unsure = answer.route == "review"
    headers = {"X-Distill-Route": answer.route, "X-Distill-Unsure": "1" if unsure else "0"}
    if unsure and state.config.drop_in_unsure == ServingConfig.DropInUnsure.ERROR:
        raise serving.ServingError(
            "The model is not sure of this text and no fallback answered it (the text is kept for "
            "review): use your own fallback.",
            code="student_unsure",
            status=422,
            # 422 is not retried by OpenAI's clients; this says so to any other client too.
            headers={**headers, "X-Should-Retry": "false"},
            extra={"distill": _distill_fields(answer)},
        )
    return JsonResponse(
        _completion(body, answer, task=project.task, text=texts[0], config=state.config), headers=headers
    )


@json_api("GET")
def models(request: HttpRequest) -> JsonResponse:
    """GET /v1/models: the project's served model, in OpenAI's list shape (empty when none is active)."""
    project, state = _token_project(request)
    version = state.version
    data = []
    if version is not None:
        data.append(
            {
                "id": _model_id(version),
                "object": "model",
                "created": int(version.promoted_at.timestamp()),
                "owned_by": f"distillapp:{project.slug}",
            }
        )
    return JsonResponse({"object": "list", "data": data})


# --- the document ----------------------------------------------------------------------------------


@json_api("GET")
def openapi_json(request: HttpRequest) -> JsonResponse:
    """GET /api/openapi.json: the OpenAPI 3 document of both APIs."""
    return JsonResponse(openapi.document())


def api_docs(request: HttpRequest) -> HttpResponse:
    """GET /api/docs: the operations of the document, readable, with a form to try each."""
    return render(request, "training/api_docs.html", {"operations": openapi.operations()})
