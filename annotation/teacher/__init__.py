"""The teacher: the model that proposes answers, and the jobs that ask it.

`client` is the LLM boundary (the only module that imports `openai`); `service` holds the
teacher's settings, prompt versions, few-shot memory and `teacher_answers`, the one call
serving makes; `labeling` runs labelling jobs, `synthetic` synthetic-data jobs, and
`embedding` picks what the offline teacher (no API key) learns from. This package
re-exports their public names, so callers write `from annotation import teacher`. A test
or bench that replaces a name must replace it in the module that looks it up
(`annotation.teacher.labeling`, ...).
"""

from __future__ import annotations

from annotation.teacher.client import (
    OpenAITeacher,
    TeacherError,
    TeacherSettings,
    allowed_api_key_vars,
    allowed_base_urls,
    credentials_problem,
    render_system_prompt,
)
from annotation.teacher.labeling import (
    labeling_estimate,
    labeling_job_claim,
    labeling_job_create,
    labeling_job_run,
    labeling_job_start,
    run_with_heartbeat,
)
from annotation.teacher.service import (
    LabelingError,
    fixed_example_line,
    prompt_version_current,
    prompt_version_update,
    reviewed_example_line,
    teacher_answers,
    teacher_config_for,
    teacher_settings,
)
from annotation.teacher.synthetic import (
    synthetic_job_claim,
    synthetic_job_create,
    synthetic_job_run,
    synthetic_job_start,
)

__all__ = [
    "LabelingError",
    "OpenAITeacher",
    "TeacherError",
    "TeacherSettings",
    "allowed_api_key_vars",
    "allowed_base_urls",
    "credentials_problem",
    "fixed_example_line",
    "labeling_estimate",
    "labeling_job_claim",
    "labeling_job_create",
    "labeling_job_run",
    "labeling_job_start",
    "prompt_version_current",
    "prompt_version_update",
    "render_system_prompt",
    "reviewed_example_line",
    "run_with_heartbeat",
    "synthetic_job_claim",
    "synthetic_job_create",
    "synthetic_job_run",
    "synthetic_job_start",
    "teacher_answers",
    "teacher_config_for",
    "teacher_settings",
]
