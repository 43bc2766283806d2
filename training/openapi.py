"""The OpenAPI 3 document of the token APIs (training/api.py), written by hand.

tests/training/test_openapi.py keeps it in step with the code: every API route is
described, and schemathesis fuzzes each operation against it.
"""

from __future__ import annotations

import json

from django.conf import settings

from training.models import MAX_BATCH_LIMIT, ServingConfig
from training.serving.config import DROP_IN_MAX_BODY_BYTES

# The defaults; each project's serving settings may change them.
MAX_BATCH = ServingConfig._meta.get_field("max_batch").default
MAX_TEXT_CHARS = ServingConfig._meta.get_field("max_text_chars").default
REQUESTS_PER_MINUTE = ServingConfig._meta.get_field("requests_per_minute").default

ERROR_CODES = {
    400: "bad_json, bad_request, no_texts, bad_texts, empty_text, bad_messages, no_user_message, "
    "stream_unsupported",
    401: "no_token, bad_token",
    404: "no_project, not_found",
    405: "method_not_allowed",
    413: "body_too_large, too_many_texts, text_too_long",
    415: "unsupported_media_type",
    422: "student_unsure",
    429: "rate_limit_exceeded",
    503: "no_active_model",
}
STATUS_TEXT = {
    200: "The answer.",
    400: "The request is malformed.",
    401: "No API token, or not a valid one (wrong or revoked).",
    404: "No such project for this token (the same answer whether the project does not exist or is "
    "another's), or no such operation.",
    405: "Another HTTP method is needed.",
    413: "Too much: the body, the number of texts or a text's length is over a limit.",
    415: "The body is not declared as application/json.",
    422: "The student is unsure of the text and no fallback answered it (the review fallback, a "
    "teacher that cannot be reached, or the month's fallback budget spent); the text is kept for "
    "review. The default answer of the drop-in when unsure (the project's serving settings may "
    "choose an abstain content or the student's guess instead): OpenAI's clients raise it "
    "(openai.UnprocessableEntityError) without retrying, so the client's own fallback can catch it. "
    'Beside "error", "distill" holds the route, confidence and model version.',
    429: f"The token has made more requests this minute than the project allows per token (default "
    f"{REQUESTS_PER_MINUTE:,}); Retry-After says in how many seconds the minute ends.",
    503: "No model is active for this project yet: a lead must promote a run.",
}


def _error_response(status: int) -> dict:
    return {
        "description": f"{STATUS_TEXT[status]} Codes: {ERROR_CODES[status]}.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _errors(*statuses: int) -> dict:
    return {str(status): _error_response(status) for status in statuses}


def _json_body(schema_name: str, example: dict) -> dict:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{schema_name}"},
                "example": example,
            }
        },
    }


def _ok(schema_name: str, description: str, headers: dict | None = None) -> dict:
    response = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


NULLABLE_NUMBER = {"type": "number", "nullable": True}

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": "string", "nullable": True},
                    "code": {"type": "string"},
                },
            }
        },
    },
    "PredictRequest": {
        "type": "object",
        "required": ["texts"],
        "properties": {
            "texts": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
                "description": f"At most {MAX_BATCH} texts of at most {MAX_TEXT_CHARS:,} characters each "
                f"(the project's serving settings can change both; never more than {MAX_BATCH_LIMIT} texts).",
            }
        },
    },
    "PredictResponse": {
        "type": "object",
        "required": ["predictions"],
        "properties": {
            "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
        },
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "description": "system, developer, user, assistant, tool."},
            "content": {
                "description": "A string, or a list of content parts whose text parts are joined. Only the "
                "user message that is classified is read."
            },
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["messages"],
        "description": "An OpenAI chat completion request. Only the text of the last user message is "
        "used (the project's serving settings may say the first); model, n, max_tokens, temperature "
        "and every other message are ignored.",
        "properties": {
            "model": {"type": "string", "description": "Ignored: the project's model answers."},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/ChatMessage"},
            },
            "response_format": {
                "type": "object",
                "nullable": True,
                "properties": {"type": {"type": "string", "enum": ["text", "json_object", "json_schema"]}},
                "description": 'Classification: json_object or json_schema makes the answer {"label": ...}; '
                "else the bare label. Extraction: always the fields object as a JSON string.",
            },
            "stream": {
                "type": "boolean",
                "nullable": True,
                "description": "true is refused: the drop-in does not stream.",
            },
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices", "usage", "distill"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "system_fingerprint": {"type": "string"},
            "choices": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {
                            "type": "object",
                            "required": ["role", "content"],
                            "properties": {
                                "role": {"type": "string", "enum": ["assistant"]},
                                "content": {
                                    "type": "string",
                                    "description": "Classification: the label, or "
                                    '{"label": ...} as JSON when response_format asks for JSON. '
                                    "Extraction: the fields object as a JSON string, whatever was "
                                    'asked: {"date": "12 May", "people": ["4"], "name": null} (a '
                                    "field that takes one value maps to a string or null, one that "
                                    "takes many to a list). When unsure with the abstain setting: "
                                    "the lead's abstain text, exactly as written.",
                                },
                            },
                        },
                        "finish_reason": {"type": "string"},
                    },
                },
            },
            "usage": {
                "type": "object",
                "description": "Tokens bought from the teacher LLM for this answer (0 when the student answered).",
                "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "completion_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"},
                },
            },
            "distill": {
                "type": "object",
                "required": ["route", "unsure", "confidence", "model_version"],
                "properties": {
                    "route": {"type": "string", "enum": ["student", "teacher", "review"]},
                    "unsure": {
                        "type": "boolean",
                        "description": "true: below the threshold with no teacher answer, the text kept "
                        "for review; the content is the lead's abstain text, or the student's own "
                        "guess when the project chose it (by default such a text gets a 422 instead).",
                    },
                    "confidence": NULLABLE_NUMBER,
                    "model_version": {"type": "string"},
                },
            },
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object", "created", "owned_by"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"type": "string", "enum": ["model"]},
                        "created": {"type": "integer"},
                        "owned_by": {"type": "string"},
                    },
                },
            },
        },
    },
}

_ROUTE_HEADERS = {
    "X-Distill-Route": {"description": "student, teacher or review.", "schema": {"type": "string"}},
    "X-Distill-Unsure": {
        "description": "1 when the student was unsure and no fallback answered (the text is kept for review).",
        "schema": {"type": "string", "enum": ["0", "1"]},
    },
}

PATHS = {
    "/api/v1/projects/{slug}/predict": {
        "post": {
            "operationId": "predict",
            "summary": "Label texts",
            "description": "The student labels each text. A text below the active version's confidence "
            "threshold takes the project's fallback: the teacher's answer (route teacher, while the "
            "project's monthly fallback budget lasts), or null and the review queue (route review).",
            "parameters": [
                {
                    "name": "slug",
                    "in": "path",
                    "required": True,
                    "description": "The project's slug; the token must belong to it (else 404).",
                    "schema": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
                }
            ],
            "requestBody": _json_body(
                "PredictRequest", {"texts": ["I was charged twice", "The app crashes"]}
            ),
            "responses": {
                "200": _ok("PredictResponse", "One prediction per text, in order."),
                **_errors(400, 401, 404, 405, 413, 415, 429, 503),
            },
        }
    },
    "/v1/chat/completions": {
        "post": {
            "operationId": "chatCompletions",
            "summary": "OpenAI-compatible drop-in",
            "description": "Point an OpenAI client's base_url at /v1 with the project's token. The text of "
            "the last user message is labelled by the student; below the threshold it takes the project's "
            "fallback, like the prediction API: the teacher, asked with the project's own model, prompt "
            "and limits (nothing else from the request reaches it). When no fallback answers (a review "
            "fallback, a teacher that cannot be reached, the month's fallback budget spent) the text is "
            "kept for review and the answer is the project's choice: by default a 422 error with code "
            "student_unsure, which the client's own fallback catches; or a normal completion whose content "
            "is the lead's abstain text, or the student's low-confidence guess (both marked "
            "X-Distill-Unsure: 1). For an extraction project the content is the fields object as a JSON "
            "string.",
            "requestBody": _json_body(
                "ChatCompletionRequest",
                {"model": "any", "messages": [{"role": "user", "content": "I was charged twice"}]},
            ),
            "responses": {
                "200": _ok("ChatCompletion", "A chat completion whose content is the label.", _ROUTE_HEADERS),
                **_errors(400, 401, 405, 413, 415, 422, 429, 503),
            },
        }
    },
    "/v1/models": {
        "get": {
            "operationId": "listModels",
            "summary": "The served model",
            "description": "The project's active version in OpenAI's list shape; empty when none is active.",
            "responses": {"200": _ok("ModelList", "The served model."), **_errors(401, 405, 429)},
        }
    },
}


def prediction_schemas() -> dict:
    """One prediction schema per registered task type (its fields from ``Task.served_schema``,
    then the routing fields every answer has), and ``Prediction``: one of them."""
    from tasks import task_choices, task_class

    common = {
        "confidence": NULLABLE_NUMBER,
        "route": {"type": "string", "enum": ["student", "teacher", "review"]},
        "model_version": {"type": "string"},
        "latency_ms": {"type": "number"},
    }
    schemas, refs = {}, []
    for task_type, title in task_choices():
        fields = task_class(task_type).served_schema()
        name = f"{title.replace(' ', '')}Prediction"
        schemas[name] = {
            "type": "object",
            "description": f"One text's answer in a {title.lower()} project.",
            "required": [*fields, *common],
            "properties": {**fields, **common},
        }
        refs.append({"$ref": f"#/components/schemas/{name}"})
    schemas["Prediction"] = {
        "oneOf": refs,
        "description": "One text's answer: the fields of the project's task type, then how it was answered.",
    }
    return schemas


def document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "distillapp API",
            "version": "1",
            "description": "The prediction API and the OpenAI-compatible drop-in of a distillapp project. "
            "Authenticate with a project token from the project's Deploy page: "
            "'Authorization: Bearer dst_...'. Every answer is JSON; errors are "
            '{"error": {"message", "type", "param", "code"}}. Bodies must be application/json, at most '
            f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes (the drop-in: {DROP_IN_MAX_BODY_BYTES:,}).",
        },
        "servers": [{"url": "/"}],
        "security": [{"token": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {**SCHEMAS, **prediction_schemas()},
        },
    }


def operations() -> list[dict]:
    """The operations flattened for the docs page, each with its example body and responses."""
    found = []
    for path, methods in PATHS.items():
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            found.append(
                {
                    "id": operation["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": operation["summary"],
                    "description": operation["description"],
                    "parameters": operation.get("parameters", []),
                    "example": json.dumps(body["example"], indent=2) if "example" in body else "",
                    "responses": [
                        {"status": status, "description": response["description"]}
                        for status, response in operation["responses"].items()
                    ],
                }
            )
    return found
