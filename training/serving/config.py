"""What every part of serving shares: its error, and a project's serving config."""

from __future__ import annotations

from annotation.models import Project
from training.models import ServingConfig


class ServingError(ValueError):
    """A serving request that cannot be carried out; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, *, code: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.status = status


def serving_config_for(project: Project) -> ServingConfig:
    config, _ = ServingConfig.objects.get_or_create(project=project)
    return config
