"""What every part of serving shares: its error, and a project's serving config."""

from __future__ import annotations

from annotation.models import Project
from training.models import ServingConfig

# A chat request carries one text to classify plus whatever prompt the client used to send
# its LLM, which is read no further: a body past this is refused before it is parsed (the API
# answers it, the OpenAPI document states it).
DROP_IN_MAX_BODY_BYTES = 1024 * 1024


class ServingError(ValueError):
    """A serving request that cannot be carried out; `status` is the HTTP status to answer with,
    `headers` any the answer needs (Retry-After), `extra` top-level keys beside the error."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int = 400,
        headers: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.status = status
        self.headers = headers or {}
        self.extra = extra or {}


def serving_config_for(project: Project) -> ServingConfig:
    config, _ = ServingConfig.objects.get_or_create(project=project)
    return config
