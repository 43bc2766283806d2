"""The prediction API and the OpenAI-compatible drop-in, authenticated by project tokens."""

from __future__ import annotations

import json
import time
import uuid

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from annotation import teacher as teacher_boundary
from annotation.labeling import prompt_version_current, teacher_config_for, teacher_settings
from annotation.models import Example, Project, Proposal, content_hash
from training import serving
from training.models import PredictionLog


def _error(exc: serving.ServingError) -> JsonResponse:
    return JsonResponse({"error": {"code": exc.code, "message": str(exc)}}, status=exc.status)


def _json_body(request: HttpRequest) -> dict:
    try:
        body = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        raise serving.ServingError("The body is not valid JSON.", code="bad_json") from None
    if not isinstance(body, dict):
        raise serving.ServingError("The body must be a JSON object.", code="bad_json")
    return body


@csrf_exempt  # token-authenticated API, no cookies involved
def predict(request: HttpRequest, slug: str) -> JsonResponse:
    """POST /api/v1/projects/<slug>/predict {"texts": [...]}: label, confidence, route for each."""
    try:
        if request.method != "POST":
            raise serving.ServingError("Use POST.", code="method_not_allowed", status=405)
        token = serving.token_check(request.headers.get("Authorization"))
        project = token.project
        if project.slug != slug:
            if not Project.objects.filter(slug=slug).exists():
                raise serving.ServingError(f"No project {slug!r}.", code="no_project", status=404)
            raise serving.ServingError(
                "This API token belongs to another project.", code="wrong_project", status=403
            )
        body = _json_body(request)
        state = serving.live(project)
        texts = serving.validate_texts(body.get("texts"), state.config)
        answers = serving.predict_texts(project=project, texts=texts, state=state)
    except serving.ServingError as exc:
        return _error(exc)
    return JsonResponse({"predictions": [a.as_json() for a in answers]})


def _chat_text(body: dict, where: str) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise serving.ServingError("'messages' must be a non-empty list.", code="bad_messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise serving.ServingError("There is no user message to classify.", code="no_user_message")
    content = (users[0] if where == "first_user" else users[-1]).get("content")
    if isinstance(content, list):  # content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise serving.ServingError("The user message has no text.", code="no_user_message")
    return content


def _completion(body: dict, label: str, version_name: str) -> dict:
    wants_json = (
        isinstance(body.get("response_format"), dict) and body["response_format"].get("type") != "text"
    )
    content = json.dumps({"label": label}) if wants_json else label
    return {
        "id": f"chatcmpl-distill-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": f"distill:{version_name}",
        "system_fingerprint": f"distill-{version_name}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        # The student ran here: no tokens were bought.
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


@csrf_exempt
def chat_completions(request: HttpRequest) -> HttpResponse:
    """POST /v1/chat/completions: the student answers when sure, else the request goes to the LLM."""
    try:
        if request.method != "POST":
            raise serving.ServingError("Use POST.", code="method_not_allowed", status=405)
        token = serving.token_check(request.headers.get("Authorization"))
        project = token.project
        state = serving.live(project)
        config = state.config
        body = _json_body(request)
        if body.get("stream"):
            raise serving.ServingError(
                "Streaming is not supported by the drop-in.", code="stream_unsupported"
            )
        text = serving.validate_texts([_chat_text(body, config.drop_in_message)], config)[0]
        version = state.version
        if version is None:
            raise serving.ServingError(
                "No model is active for this project.", code="no_active_model", status=503
            )
        started = time.perf_counter()
        [label], [confidence] = serving.student_predict(version, [text])
        student_ms = (time.perf_counter() - started) * 1000
        if confidence >= version.threshold:
            serving.prediction_logs.add(
                [
                    PredictionLog(
                        project=project,
                        version=version,
                        route="student",
                        label=label,
                        student_label=label,
                        confidence=confidence,
                        latency_ms=student_ms,
                        endpoint="chat",
                    )
                ]
            )
            return JsonResponse(_completion(body, label, version.name))
        teacher = teacher_config_for(project)
        if teacher.provider != "openai":
            raise serving.ServingError(
                "The student is not confident and no LLM is configured to forward to.",
                code="no_upstream",
                status=503,
            )
        labels = prompt_version_current(project).label_names
        try:
            status, raw, answer = teacher_boundary.forward_chat_completion(
                teacher_settings(teacher), body, labels
            )
        except teacher_boundary.TeacherError as exc:
            raise serving.ServingError(str(exc), code="no_upstream", status=503) from None
    except serving.ServingError as exc:
        return _error(exc)
    _record_forwarded(project, version, text, label, confidence, answer, student_ms)
    # The LLM's own answer, byte for byte.
    return HttpResponse(raw, status=status, content_type="application/json")


def _record_forwarded(project, version, text, student_label, student_confidence, answer, student_ms) -> None:
    """The forwarded pair becomes training data: a traffic example with the teacher's proposal."""
    from django.db import IntegrityError, transaction

    serving.prediction_logs.add(
        [
            PredictionLog(
                project=project,
                version=version,
                route="teacher",
                label=answer.value or "",
                student_label=student_label,
                confidence=answer.confidence,
                latency_ms=student_ms + answer.latency_ms,
                teacher_cost_usd=answer.cost_usd,
                endpoint="chat",
            )
        ]
    )
    try:
        with transaction.atomic():
            example = Example.objects.create(
                project=project, text=text.strip(), source=Example.Source.TRAFFIC
            )
    except IntegrityError:
        example = Example.objects.get(project=project, content_hash=content_hash(text.strip()))
    Proposal.objects.create(
        example=example,
        agent=version.run.agent,
        value=student_label,
        confidence=student_confidence,
        confidence_method="softmax",
    )
    Proposal.objects.create(
        example=example,
        agent=f"teacher:{teacher_config_for(project).model}:drop-in",
        value=answer.value,
        raw_response=answer.raw_response[:10000],
        input_tokens=answer.input_tokens,
        output_tokens=answer.output_tokens,
        cost_usd=answer.cost_usd,
        latency_ms=answer.latency_ms,
        error=answer.error[:2000],
    )
    Example.objects.filter(pk=example.pk).sync_queue_fields()
