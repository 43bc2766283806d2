"""The request path: validate texts, answer from the student or the fallback, log, keep for review."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.db import connections

from annotation.models import Project
from training.models import (
    MAX_BATCH_LIMIT,
    ModelVersion,
    PredictionLog,
    ServingConfig,
    default_hyperparameters,
)
from training.serving import limits, writer
from training.serving.cache import cached
from training.serving.config import ServingError, serving_config_for
from training.serving.versions import SERVING_BATCH_SIZE, active_version
from training.serving.writer import TrafficExample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Live:
    """What the request path needs of a project: its serving config and active version."""

    config: ServingConfig
    version: ModelVersion | None


def live(project: Project) -> Live:
    def load() -> Live:
        return Live(config=serving_config_for(project), version=active_version(project))

    return cached(("live", project.pk), load)


@dataclass
class RoutedAnswer:
    """One served answer. `value` is the task's answer (a label name, a span set) or None,
    `student_value` the student's answer, whatever the route."""

    value: object | None
    confidence: float | None
    route: str
    model_version: str
    latency_ms: float
    student_value: object = ""
    teacher_cost_usd: Decimal = Decimal("0")
    teacher_tokens: tuple[int, int] = (0, 0)  # input, output: what the teacher's answer used

    def as_json(self, task, text: str) -> dict:
        return {
            **task.served(self.value, text=text),
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "route": self.route,
            "model_version": self.model_version,
            "latency_ms": round(self.latency_ms, 2),
        }


def validate_texts(texts, config: ServingConfig) -> list[str]:
    if not isinstance(texts, list) or not texts:
        raise ServingError('Send {"texts": ["...", ...]} with at least one text.', code="no_texts")
    if not all(isinstance(t, str) for t in texts):
        raise ServingError("Every item of 'texts' must be a string.", code="bad_texts")
    limit = min(config.max_batch, MAX_BATCH_LIMIT)  # a row saved before the bound keeps to it too
    if len(texts) > limit:
        raise ServingError(
            f"{len(texts)} texts in one request; the limit is {limit}.",
            code="too_many_texts",
            status=413,
        )
    for index, text in enumerate(texts):
        if not text.strip():
            raise ServingError(f"Text {index} is empty.", code="empty_text")
        if "\x00" in text:  # PostgreSQL cannot store it (a summary or a kept text would hold it)
            raise ServingError(f"Text {index} contains a NUL character (\\u0000).", code="bad_texts")
        if len(text) > config.max_text_chars:
            raise ServingError(
                f"Text {index} has {len(text)} characters; the limit is {config.max_text_chars}.",
                code="text_too_long",
                status=413,
            )
    return texts


def student_predict(version: ModelVersion, texts: list[str]) -> tuple[list, list[float]]:
    """The version's answers (made valid by the task: one value for a field that takes one)."""
    task = version.project.task
    student = task.student_for(version.run.kind)
    max_length = {**default_hyperparameters(), **version.run.hyperparameters}["max_length"]
    if version.runtime == ModelVersion.Runtime.ONNX_INT8:
        answers, confidences = student.predict_onnx(
            version.onnx_path, texts, max_length=max_length, batch_size=SERVING_BATCH_SIZE
        )
    else:
        answers, confidences = student.predict(
            Path(version.run.artifact_path) / "model",
            texts,
            max_length=max_length,
            batch_size=SERVING_BATCH_SIZE,
        )
    return [task.student_answer(a, text=t) for a, t in zip(answers, texts, strict=True)], confidences


# A process keeps this many models loaded (ml's caches); warming more would evict the first.
WARM_UP_MAX_VERSIONS = 4
# `warm_up` waits at most this long for the models (a command or a test; the web server's
# processes do not wait at all, see `warm_up_start`).
WARM_UP_SECONDS = 60.0


def warm_up_start() -> tuple[threading.Thread, list[str]]:
    """Start loading the active model versions in a background thread, and return at once.

    The web server calls it as each process starts (distillapp/gunicorn_config.py), so pages
    answer at once while the models load beside them; without it a process loads a model
    on its first prediction (about 4-6 s on a CPU). A prediction that comes during the load
    waits for it under ml's loader lock instead of loading its own copy, and is logged as a
    cold start; once the warm-up is done, none is. Never raises: a process that cannot warm
    up still serves, cold. Returns the thread and the list it fills with the names of the
    versions loaded.
    """
    warmed: list[str] = []
    began = time.perf_counter()

    def load() -> None:
        try:
            versions = list(
                ModelVersion.objects.select_related("run")
                .filter(is_active=True)
                .order_by("-promoted_at")[:WARM_UP_MAX_VERSIONS]
            )
            for version in versions:
                started = time.perf_counter()
                try:
                    student_predict(version, ["warm-up"])  # loads it, and runs it once
                except Exception:
                    logger.exception(
                        "Warm-up: could not load %s of project %s", version.name, version.project_id
                    )
                    continue
                warmed.append(version.name)
                logger.info(
                    "Warm-up: %s of project %s is loaded (%.1f s)",
                    version.name,
                    version.project_id,
                    time.perf_counter() - started,
                )
            logger.info("Warm-up: %d model(s) ready in %.1f s", len(warmed), time.perf_counter() - began)
        except Exception:
            logger.exception("Warm-up failed; models load on their first request")
        finally:
            connections.close_all()  # this thread's own connection

    thread = threading.Thread(target=load, name="serving-warm-up", daemon=True)
    thread.start()
    return thread, warmed


def warm_up(*, timeout: float = WARM_UP_SECONDS) -> list[str]:
    """`warm_up_start`, waiting for it at most `timeout` s; the names of the versions loaded
    by then (a load still running carries on)."""
    thread, warmed = warm_up_start()
    thread.join(timeout)
    if thread.is_alive():
        logger.warning("Warm-up: still loading after %.0f s; serving meanwhile", timeout)
    return list(warmed)


def predict_texts(
    *, project: Project, texts: list[str], endpoint: str = "predict", state: Live | None = None
) -> list[RoutedAnswer]:
    """Answer each text from the student when confident, else from the fallback; log everything.

    `state` is the request path's cached config and version (`live()`); without it both
    are read from the database.
    """
    from annotation.teacher import TeacherError, teacher_answers

    state = state or Live(config=serving_config_for(project), version=active_version(project))
    config, version = state.config, state.version
    if version is None:
        raise ServingError(
            "No model is active for this project; a lead must promote a run.",
            code="no_active_model",
            status=503,
        )
    from distillapp import ml

    loads = ml.model_loads()
    started = time.perf_counter()
    labels, confidences = student_predict(version, texts)
    # A model was loaded meanwhile (by this request, or by the warm-up it waited for): its
    # latency is the load's, and the log row says so (Monitor leaves it out).
    is_cold_start = ml.model_loads() != loads
    student_ms = (time.perf_counter() - started) * 1000 / len(texts)
    answers = [
        RoutedAnswer(
            value=label,
            confidence=conf,
            route="student",
            model_version=version.name,
            latency_ms=student_ms,
            student_value=label,
        )
        for label, conf in zip(labels, confidences, strict=True)
    ]
    unsure = [i for i, a in enumerate(answers) if a.confidence < version.threshold]
    teacher = {}
    if (
        unsure
        and config.fallback == ServingConfig.Fallback.TEACHER
        # Past the month's budget these texts go to review (the deploy page says so).
        and not limits.fallback_budget_spent(project, config)
    ):
        started = time.perf_counter()
        try:
            replies = teacher_answers(project, [texts[i] for i in unsure])
        except TeacherError as exc:
            # No usable key or address (an offline set-up): these texts go to review instead.
            logger.warning("Serving fallback: the teacher cannot be called: %s", exc)
            replies = [None] * len(unsure)
        teacher_ms = (time.perf_counter() - started) * 1000 / len(unsure)
        teacher = dict(zip(unsure, replies, strict=True))
        limits.fallback_spend_add(
            project=project, cost_usd=sum((r.cost_usd for r in replies if r is not None), Decimal("0"))
        )
    for i in unsure:
        answer = answers[i]
        reply = teacher.get(i)
        if reply is not None and reply.is_valid:
            answer.value, answer.confidence, answer.route = reply.value, reply.confidence, "teacher"
            answer.latency_ms += teacher_ms
            answer.teacher_cost_usd = reply.cost_usd
            answer.teacher_tokens = (reply.input_tokens, reply.output_tokens)
        else:
            answer.value, answer.route = None, "review"
            if reply is not None:
                answer.latency_ms += teacher_ms
                # An answer that could not be used was paid for all the same (the budget counts it).
                answer.teacher_cost_usd = reply.cost_usd
        _keep_for_review(project, texts[i], version, answer, reply, config.traffic_sample_rate)
    task = project.task
    writer.prediction_logs.add(
        [
            PredictionLog(
                project=project,
                version=version,
                route=a.route,
                # The answer's short form (a label; a span set's field counts, never the text's values).
                answer_summary=task.summary(a.value)[:100] if a.value is not None else "",
                student_answer_summary=task.summary(a.student_value)[:100],
                confidence=a.confidence,
                latency_ms=a.latency_ms,
                teacher_cost_usd=a.teacher_cost_usd,
                endpoint=endpoint,
                is_cold_start=is_cold_start,
            )
            for a in answers
        ]
    )
    return answers


def _keep_for_review(
    project, text: str, version: ModelVersion, answer: RoutedAnswer, reply, sample_rate: float
) -> None:
    """A low-confidence text joins the project as traffic (once), with both proposals.

    Queued for the background writer: storing it (an example, two proposals and the
    queue fields) is a few writes per text, too slow to make the caller wait for.
    """
    if random.random() >= sample_rate:
        return
    proposals = [
        {
            "agent": version.run.agent,
            "value": answer.student_value,
            "confidence": answer.confidence if answer.route == "student" else None,
            "confidence_method": "softmax",
        }
    ]
    if reply is not None:
        proposals.append(
            {
                "agent": reply.agent,
                "value": reply.value if reply.is_valid else None,
                "confidence": reply.confidence if reply.is_valid else None,
                "confidence_method": reply.confidence_method if reply.is_valid else "",
                "raw_response": reply.raw_response[:10000],
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
                "cost_usd": reply.cost_usd,
                "latency_ms": reply.latency_ms,
                "error": reply.error[:2000],
            }
        )
    writer.traffic_examples.add(
        [TrafficExample(project_id=project.pk, text=text, proposals=tuple(proposals))]
    )
