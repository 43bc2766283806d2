"""Serving the student: model versions, tokens, confidence routing, monitoring and cost."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import os
import random
import secrets
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connections, transaction
from django.db.models import Avg, Count, Sum
from django.utils import timezone

from annotation.models import STUDENT_AGENT_PREFIX, Example, Project, Proposal
from tasks import measure as metrics_lib
from training.models import (
    ApiToken,
    DeploymentEvent,
    Evaluation,
    ModelVersion,
    PredictionLog,
    ServingConfig,
    TrainingRun,
    default_hyperparameters,
)


class ServingError(ValueError):
    """A serving request that cannot be carried out; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, *, code: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.status = status


logger = logging.getLogger(__name__)


def serving_config_for(project: Project) -> ServingConfig:
    config, _ = ServingConfig.objects.get_or_create(project=project)
    return config


# --- the request path's per-process cache ------------------------------------------------------------
# A serving process keeps each token it has seen, and each project's serving config and
# active version, for SERVING_CACHE_SECONDS: a prediction then makes no query of its own
# (its log row is written in the background, below). The process that promotes, rolls
# back, revokes or changes settings forgets at once; every other process notices within
# the TTL, without a restart. bench/README.md ("Serving") has what this saves.

_cache: dict[tuple, tuple[float, object]] = {}
_CACHE_MAX_ENTRIES = 10_000
_clock = time.monotonic  # the cache's clock (tests move it forward)


def _cached(key: tuple, load):
    ttl = settings.SERVING_CACHE_SECONDS
    if ttl <= 0:
        return load()
    now = _clock()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    value = load()
    if len(_cache) >= _CACHE_MAX_ENTRIES:
        _cache.clear()
    _cache[key] = (now + ttl, value)
    return value


def forget_cached() -> None:
    """Drop this process's cached tokens, configs and versions (after a change to any of them)."""
    _cache.clear()


def _forget_now_and_on_commit() -> None:
    # Now for this transaction's own reads, and again on commit, so a request that cached
    # the old state in between does not keep it.
    forget_cached()
    transaction.on_commit(forget_cached)


@dataclass(frozen=True)
class Live:
    """What the request path needs of a project: its serving config and active version."""

    config: ServingConfig
    version: ModelVersion | None


def live(project: Project) -> Live:
    def load() -> Live:
        return Live(config=serving_config_for(project), version=active_version(project))

    return _cached(("live", project.pk), load)


# --- writes kept off the request path: prediction logs and traffic examples --------------------------

# Rows buffered beyond this (the database has been unreachable for a long while) are dropped,
# loudly, rather than growing the process without bound.
_MAX_BUFFERED = 100_000


class _BackgroundWriter:
    """Buffers rows the request path produces and writes them from one background thread.

    With SERVING_LOG_FLUSH_SECONDS = 0 every `add` writes at once (the tests' setting).
    Each chunk is written in one transaction and leaves the buffer only once committed: a
    chunk that fails on a database error stays at the head of the buffer for the next
    flush, and is never written twice. Rows still buffered when the process exits normally
    are written by an atexit hook; a killed process loses at most one interval of them.
    """

    def __init__(self, name: str, write, *, chunk: int) -> None:
        self._name = name
        self._write = write  # writes one chunk (a list) in one transaction
        self._chunk = chunk
        self._rows: list = []
        self._lock = threading.Lock()  # guards _rows
        self._flushing = threading.Lock()  # one flush at a time: the thread's and the exit hook's
        self._wake = threading.Event()
        self._pid: int | None = None

    def add(self, rows: list) -> None:
        interval = settings.SERVING_LOG_FLUSH_SECONDS
        if interval <= 0:
            for start in range(0, len(rows), self._chunk):
                self._write(rows[start : start + self._chunk])
            return
        with self._lock:
            if len(self._rows) + len(rows) > _MAX_BUFFERED:
                logger.error(
                    "%s: %d rows buffered; dropping %d new ones", self._name, len(self._rows), len(rows)
                )
                return
            self._rows.extend(rows)
            if self._pid != os.getpid():  # first use in this process (gunicorn forks workers)
                self._pid = os.getpid()
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
            if len(self._rows) >= 500:
                self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write what is buffered; the number of rows written. Raises on a database error."""
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
            written = 0
            try:
                for start in range(0, len(rows), self._chunk):
                    self._write(rows[start : start + self._chunk])
                    written = start + len(rows[start : start + self._chunk])
            except (OperationalError, InterfaceError):
                # The database is away or busy: kept, in order, ahead of what arrived meanwhile.
                with self._lock:
                    self._rows[:0] = rows[written:]
                raise
            except Exception:
                # Not the database being away but the rows themselves: retrying would fail
                # forever and hold back every row behind them.
                logger.exception(
                    "%s: dropping %d rows that cannot be written", self._name, len(rows) - written
                )
                with self._lock:
                    self._rows[:0] = rows[written + self._chunk :]
                raise
            return written

    def _run(self) -> None:
        while True:
            self._wake.wait(settings.SERVING_LOG_FLUSH_SECONDS or 1.0)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a database hiccup must not kill the writer
                logger.exception("%s: writing failed; will retry", self._name)
            finally:
                # Closed after each write: an idle writer holds no connection (PostgreSQL
                # counts them; a test database cannot be dropped while one is open).
                connections.close_all()


def _write_logs(rows: list[PredictionLog]) -> None:
    PredictionLog.objects.bulk_create(rows)  # one statement: all or nothing


@dataclass(frozen=True)
class TrafficExample:
    """A served text kept for review, with the proposals that came with it (`Proposal` fields)."""

    project_id: int
    text: str
    proposals: tuple[dict, ...]


def _write_traffic(items: list[TrafficExample]) -> None:
    for item in items:
        try:
            with transaction.atomic():
                example = Example.objects.create(
                    project_id=item.project_id, text=item.text.strip(), source=Example.Source.TRAFFIC
                )
                for fields in item.proposals:
                    Proposal.objects.create(example=example, **fields)
                Example.objects.filter(pk=example.pk).sync_queue_fields()
        except IntegrityError:
            pass  # seen before (it is already in the project), or its project is gone


prediction_logs = _BackgroundWriter("prediction-log", _write_logs, chunk=500)
# One example per transaction: a retried chunk never stores a text twice, and one text's
# failure holds back no other.
traffic_examples = _BackgroundWriter("traffic-examples", _write_traffic, chunk=1)


@atexit.register
def _flush_at_exit() -> None:
    for writer in (traffic_examples, prediction_logs):
        try:
            writer.flush()
        except Exception:
            logger.exception("Writing buffered rows at exit failed")


# --- versions --------------------------------------------------------------------------------------


def threshold_recommendation(run: TrainingRun, target_accuracy: float) -> dict | None:
    """The run's latest gold sweep judged for this target (metrics.threshold_choice), or None
    if the run has no student evaluation."""
    evaluation = run.evaluations.filter(subject=Evaluation.Subject.STUDENT).order_by("-created_at").first()
    if evaluation is None:
        return None
    m = metrics_lib.with_intervals(evaluation.metrics)
    choice = metrics_lib.threshold_choice(
        m.get("coverage", []), target_accuracy, examples=m.get("examples") or 0
    )
    return {**choice, "gold_version": evaluation.gold_set.version, "examples": m.get("examples") or 0}


def recommended_threshold(run: TrainingRun, target_accuracy: float) -> float | None:
    """The lowest threshold whose gold accuracy is at least the target with 95 % confidence.

    None when there is none: no threshold reaches it, or the gold set is too small to tell.
    """
    choice = threshold_recommendation(run, target_accuracy)
    return choice["threshold"] if choice else None


def no_threshold_reason(choice: dict) -> str:
    """Why no threshold can be recommended, in a sentence for a lead."""
    row, target = choice["row"], choice["target"]
    if choice["status"] == "too_small":
        needed = (
            f" About {choice['gold_needed']:,} gold items would show it, if that accuracy held."
            if choice["gold_needed"]
            else ""
        )
        return (
            f"Gold v{choice['gold_version']} ({choice['examples']:,} items) is too small to show accuracy "
            f"{target:g}: at confidence ≥ {row['threshold']:g} the student is right on {row['correct']} of "
            f"{row['answered']}, but the 95 % interval reaches down to {row['low']:.3f}.{needed}"
        )
    if choice["status"] == "unreached":
        return (
            f"No confidence threshold reaches accuracy {target:g} on gold v{choice['gold_version']}: "
            f"the most accurate, ≥ {row['threshold']:g}, is right on {row['correct']} of {row['answered']} "
            f"({row['accuracy']:.3f})."
        )
    return f"The evaluation on gold v{choice['gold_version']} has no confidences to choose a threshold from."


@transaction.atomic
def version_promote(
    *,
    run: TrainingRun,
    user,
    threshold: float | None = None,
    note: str = "",
    runtime: str = ModelVersion.Runtime.TORCH,
) -> ModelVersion:
    """Put the run live; as `runtime="onnx-int8"` only once its int8 export passed the gold check."""
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise ServingError(f"Run {run.number} has not finished training.", code="not_trained")
    if not run.evaluations.filter(subject=Evaluation.Subject.STUDENT).exists():
        raise ServingError(
            f"Evaluate run {run.number} on a gold set before promoting it.", code="not_evaluated"
        )
    if runtime not in ModelVersion.Runtime.values:
        raise ServingError(f"Unknown runtime {runtime!r}.", code="bad_runtime")
    quantized = _quantized_for_promotion(run) if runtime == ModelVersion.Runtime.ONNX_INT8 else {}
    if threshold is None:
        choice = threshold_recommendation(run, serving_config_for(run.project).target_accuracy)
        if choice["threshold"] is None:
            raise ServingError(
                f"{no_threshold_reason(choice)} Enter a threshold to promote run {run.number} anyway.",
                code="no_recommended_threshold",
            )
        threshold = choice["threshold"]
    if not 0 <= threshold <= 1:
        raise ServingError("The threshold must be between 0 and 1.", code="bad_threshold")
    previous = ModelVersion.objects.select_for_update().filter(project=run.project, is_active=True).first()
    if previous:
        ModelVersion.objects.filter(pk=previous.pk).update(is_active=False)
    version = ModelVersion.objects.create(
        project=run.project,
        run=run,
        threshold=threshold,
        is_active=True,
        promoted_by=user,
        note=note,
        runtime=runtime,
        **quantized,
    )
    DeploymentEvent.objects.create(
        project=run.project,
        action=DeploymentEvent.Action.PROMOTE,
        version=version,
        previous=previous,
        user=user,
    )
    _forget_now_and_on_commit()
    return version


@transaction.atomic
def version_rollback(*, project: Project, user) -> ModelVersion:
    """Back to the version that was active before the current one."""
    current = ModelVersion.objects.select_for_update().filter(project=project, is_active=True).first()
    if current is None:
        raise ServingError("No model is active.", code="no_active_model")
    event = project.deployment_events.filter(version=current).order_by("-created_at").first()
    previous = event.previous if event else None
    if previous is None:
        raise ServingError("There is no earlier version to roll back to.", code="nothing_to_roll_back")
    ModelVersion.objects.filter(pk=current.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=previous.pk).update(is_active=True, promoted_at=timezone.now())
    previous.refresh_from_db()
    earlier = project.deployment_events.filter(version=previous).order_by("-created_at").first()
    DeploymentEvent.objects.create(
        project=project,
        action=DeploymentEvent.Action.ROLLBACK,
        version=previous,
        previous=earlier.previous if earlier else None,
        user=user,
    )
    _forget_now_and_on_commit()
    return previous


def active_version(project: Project) -> ModelVersion | None:
    return ModelVersion.objects.select_related("run").filter(project=project, is_active=True).first()


# --- int8 quantization -------------------------------------------------------------------------------

# The rule: an int8 model may serve only if its gold score (the task's headline:
# accuracy, or strict entity F1 for extraction) is within half a point of the run's own
# (fp32) score on the same gold set.
QUANTIZED_MAX_DROP = 0.005
# Requests are split into batches of texts with the same token length, at most this big
# (ml._same_length_batches: no padding; bench/README.md "Serving").
SERVING_BATCH_SIZE = 8


def onnx_dir_for(run: TrainingRun) -> Path:
    return Path(run.artifact_path) / "onnx-int8"


def quantized_may_activate(*, onnx_accuracy: float, fp32_accuracy: float) -> bool:
    # The tolerance absorbs float noise: k/n - m/n is not exact in binary.
    return fp32_accuracy - onnx_accuracy <= QUANTIZED_MAX_DROP + 1e-9


def onnx_prepare(*, run: TrainingRun, gold_version: int | None = None) -> dict:
    """Export the run to ONNX int8 and measure it against fp32 on the same frozen gold set.

    The gold set is the one of the run's latest student evaluation unless `gold_version`
    names another. Both models are scored here on the same texts with the same
    max_length. The measurement is kept beside the export (quantization.json), where
    promotion reads it.
    """
    from distillapp import ml

    if run.status != TrainingRun.Status.SUCCEEDED or not run.artifact_path:
        raise ServingError(f"Run {run.number} has no trained model to quantize.", code="not_trained")
    task = run.project.task
    evaluation = run.evaluations.filter(subject=Evaluation.Subject.STUDENT).order_by("-created_at").first()
    if gold_version is not None:
        gold = run.project.gold_sets.frozen_version(gold_version)
    else:
        gold = evaluation.gold_set if evaluation else None
    if gold is None:
        raise ServingError(
            f"Evaluate run {run.number} on a gold set before quantizing it.", code="not_evaluated"
        )
    items = list(gold.items.select_related("example").order_by("pk"))
    if not items:
        raise ServingError(f"Gold set v{gold.version} has no examples.", code="empty_gold")
    max_length = {**default_hyperparameters(), **run.hyperparameters}["max_length"]
    model_dir = Path(run.artifact_path) / "model"
    started = time.perf_counter()
    onnx_dir = task.student.export_onnx(model_dir, onnx_dir_for(run), max_length=max_length)
    export_seconds = time.perf_counter() - started
    # A gold item rejected as "no answer fits" has no answer to score against.
    labelled = [i for i in items if i.label is not None]
    if not labelled:
        raise ServingError(f"Gold set v{gold.version} has no labelled examples.", code="empty_gold")
    texts, golds = [i.example.text for i in labelled], [i.label for i in labelled]
    fp32, _ = task.student.predict(model_dir, texts, max_length=max_length)
    int8, _ = task.student.predict_onnx(onnx_dir, texts, max_length=max_length, batch_size=SERVING_BATCH_SIZE)
    fp32 = [task.student_answer(a, text=t) for a, t in zip(fp32, texts, strict=True)]
    int8 = [task.student_answer(a, text=t) for a, t in zip(int8, texts, strict=True)]
    # The task's headline score on gold (accuracy; strict entity micro-F1 for extraction),
    # kept under the names "accuracy" that promotion and the model version store.
    fp32_accuracy = task.metrics(golds, fp32, texts=texts)["score"] or 0.0
    onnx_accuracy = task.metrics(golds, int8, texts=texts)["score"] or 0.0
    result = {
        "gold_set": gold.pk,
        "gold_version": gold.version,
        "examples": len(labelled),
        "score_name": task.score_name,
        "fp32_accuracy": fp32_accuracy,
        "onnx_accuracy": onnx_accuracy,
        "agreement": sum(task.same(a, b) for a, b in zip(fp32, int8, strict=True)) / len(labelled),
        "may_activate": quantized_may_activate(onnx_accuracy=onnx_accuracy, fp32_accuracy=fp32_accuracy),
        "export_seconds": round(export_seconds, 1),
        "size_mb": round((onnx_dir / ml.ONNX_MODEL_FILE).stat().st_size / 1e6, 1),
        "measured_at": timezone.now().isoformat(),
    }
    (onnx_dir / "quantization.json").write_text(json.dumps(result, indent=1))
    return result


def onnx_measurement(run: TrainingRun) -> dict | None:
    """The last `onnx_prepare` of this run, or None if it was never quantized."""
    if not run.artifact_path:
        return None
    path = onnx_dir_for(run) / "quantization.json"
    if not path.is_file():
        return None
    measured = json.loads(path.read_text())
    # The rule is applied when read, so the page and promotion always agree with it.
    measured["may_activate"] = quantized_may_activate(
        onnx_accuracy=measured["onnx_accuracy"], fp32_accuracy=measured["fp32_accuracy"]
    )
    return measured


def _quantized_for_promotion(run: TrainingRun) -> dict:
    from distillapp import ml

    measured = onnx_measurement(run)
    if measured is None or not (onnx_dir_for(run) / ml.ONNX_MODEL_FILE).is_file():
        raise ServingError(f"Quantize run {run.number} (int8) before promoting it so.", code="not_quantized")
    onnx_accuracy, fp32_accuracy = measured["onnx_accuracy"], measured["fp32_accuracy"]
    if not quantized_may_activate(onnx_accuracy=onnx_accuracy, fp32_accuracy=fp32_accuracy):
        score = measured.get("score_name", "accuracy")
        raise ServingError(
            f"The int8 model of run {run.number} scores {onnx_accuracy:.1%} ({score}) on gold "
            f"v{measured['gold_version']}, more than {QUANTIZED_MAX_DROP * 100:g} points below the fp32 "
            f"model's {fp32_accuracy:.1%}: too inaccurate to serve.",
            code="quantized_too_inaccurate",
        )
    return {
        "onnx_path": str(onnx_dir_for(run)),
        "onnx_gold_accuracy": onnx_accuracy,
        "fp32_gold_accuracy": fp32_accuracy,
    }


# --- tokens ----------------------------------------------------------------------------------------


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_create(*, project: Project, user, name: str) -> tuple[ApiToken, str]:
    raw = "dst_" + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        project=project, name=name.strip() or "token", prefix=raw[:10], token_hash=_hash(raw), created_by=user
    )
    return token, raw


def token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    _forget_now_and_on_commit()


# How often a token's last_used_at is written: at most once a minute, not on every request.
TOKEN_TOUCH_SECONDS = 60


def token_check(authorization: str | None, *, project: Project | None = None) -> ApiToken:
    """The token of an `Authorization: Bearer ...` header, or a ServingError saying why not."""
    if not authorization or not authorization.startswith("Bearer "):
        raise ServingError(
            "Send the project's API token as 'Authorization: Bearer <token>'.", code="no_token", status=401
        )
    digest = _hash(authorization[7:].strip())
    token = _cached(("token", digest), lambda: _token_by_hash(digest))
    if token is None or not token.is_active:
        raise ServingError("This API token is not valid (wrong, or revoked).", code="bad_token", status=401)
    if project is not None and token.project_id != project.pk:
        raise ServingError("This API token belongs to another project.", code="wrong_project", status=403)
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= TOKEN_TOUCH_SECONDS:
        token.last_used_at = now
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def _token_by_hash(digest: str) -> ApiToken | None:
    return ApiToken.objects.select_related("project").filter(token_hash=digest).first()


# --- prediction --------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One served answer. `label` is the task's answer (a label name, a span set) or None,
    `student_label` the student's answer, whatever the route."""

    label: object | None
    confidence: float | None
    route: str
    model_version: str
    latency_ms: float
    student_label: object = ""
    teacher_cost_usd: Decimal = Decimal("0")
    teacher_tokens: tuple[int, int] = (0, 0)  # input, output: what the teacher's answer used

    def as_json(self, task, text: str) -> dict:
        return {
            **task.served(self.label, text=text),
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
    if len(texts) > config.max_batch:
        raise ServingError(
            f"{len(texts)} texts in one request; the limit is {config.max_batch}.",
            code="too_many_texts",
            status=413,
        )
    for index, text in enumerate(texts):
        if not text.strip():
            raise ServingError(f"Text {index} is empty.", code="empty_text")
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
    student = task.student
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
# A web process waits at most this long for its models before taking requests (gunicorn
# kills a worker that has not booted within its --timeout, 120 s in the serve command).
WARM_UP_SECONDS = 60.0


def warm_up(*, timeout: float = WARM_UP_SECONDS) -> list[str]:
    """Load the active model versions into this process before it takes requests.

    Without it each web process loads its model on its first request (about 4 s on a
    CPU), and that request's latency is logged with it. Bounded: the loading runs in a
    thread that this call waits on for at most `timeout` s; a load still running then
    carries on, and the first requests wait for it under ml's loader lock rather than
    starting their own. Never raises: a process that cannot warm up still serves, cold.
    Returns the names of the versions that are loaded.
    """
    warmed: list[str] = []

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
        except Exception:
            logger.exception("Warm-up failed; models load on their first request")
        finally:
            connections.close_all()  # this thread's own connection

    thread = threading.Thread(target=load, name="serving-warm-up", daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        logger.warning("Warm-up: still loading after %.0f s; serving meanwhile", timeout)
    else:
        logger.info("Warm-up: %d model(s) ready in %.1f s", len(warmed), time.perf_counter() - started)
    return list(warmed)


def predict_texts(
    *, project: Project, texts: list[str], endpoint: str = "predict", state: Live | None = None
) -> list[Answer]:
    """Answer each text from the student when confident, else from the fallback; log everything.

    `state` is the request path's cached config and version (`live()`); without it both
    are read from the database.
    """
    from annotation.labeling import teacher_answers
    from annotation.teacher import TeacherError

    state = state or Live(config=serving_config_for(project), version=active_version(project))
    config, version = state.config, state.version
    if version is None:
        raise ServingError(
            "No model is active for this project; a lead must promote a run.",
            code="no_active_model",
            status=503,
        )
    started = time.perf_counter()
    labels, confidences = student_predict(version, texts)
    student_ms = (time.perf_counter() - started) * 1000 / len(texts)
    answers = [
        Answer(
            label=label,
            confidence=conf,
            route="student",
            model_version=version.name,
            latency_ms=student_ms,
            student_label=label,
        )
        for label, conf in zip(labels, confidences, strict=True)
    ]
    unsure = [i for i, a in enumerate(answers) if a.confidence < version.threshold]
    teacher = {}
    if unsure and config.fallback == ServingConfig.Fallback.TEACHER:
        started = time.perf_counter()
        try:
            replies = teacher_answers(project, [texts[i] for i in unsure])
        except TeacherError as exc:
            # No usable key or address (an offline set-up): these texts go to review instead.
            logger.warning("Serving fallback: the teacher cannot be called: %s", exc)
            replies = [None] * len(unsure)
        teacher_ms = (time.perf_counter() - started) * 1000 / len(unsure)
        teacher = dict(zip(unsure, replies, strict=True))
    for i in unsure:
        answer = answers[i]
        reply = teacher.get(i)
        if reply is not None and reply.is_valid:
            answer.label, answer.confidence, answer.route = reply.value, reply.confidence, "teacher"
            answer.latency_ms += teacher_ms
            answer.teacher_cost_usd = reply.cost_usd
            answer.teacher_tokens = (reply.input_tokens, reply.output_tokens)
        else:
            answer.label, answer.route = None, "review"
            if reply is not None:
                answer.latency_ms += teacher_ms
        _keep_for_review(project, texts[i], version, answer, reply, config.traffic_sample_rate)
    task = project.task
    prediction_logs.add(
        [
            PredictionLog(
                project=project,
                version=version,
                route=a.route,
                # The answer's short form (a label; a span set's field counts, never the text's values).
                label=task.summary(a.label)[:100] if a.label is not None else "",
                student_label=task.summary(a.student_label)[:100],
                confidence=a.confidence,
                latency_ms=a.latency_ms,
                teacher_cost_usd=a.teacher_cost_usd,
                endpoint=endpoint,
            )
            for a in answers
        ]
    )
    return answers


def _keep_for_review(
    project, text: str, version: ModelVersion, answer: Answer, reply, sample_rate: float
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
            "value": answer.student_label,
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
    traffic_examples.add([TrafficExample(project_id=project.pk, text=text, proposals=tuple(proposals))])


# --- monitoring --------------------------------------------------------------------------------------


# Latency percentiles are computed from at most this many of the most recent calls.
_LATENCY_SAMPLE = 200_000


def latency_summary(values) -> dict:
    """The median, 95th and 99th percentile and count of some latencies (None each when empty)."""
    import numpy as np

    values = np.asarray(list(values), dtype=float)
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "n": 0}
    p50, p95, p99 = (float(v) for v in np.percentile(values, [50, 95, 99]))
    return {"p50": p50, "p95": p95, "p99": p99, "n": len(values)}


def monitoring(project: Project, *, days: int = 30) -> dict:
    since = timezone.now() - timezone.timedelta(days=days)
    logs = PredictionLog.objects.filter(project=project, created_at__gte=since)
    total = logs.count()
    per_day = list(
        logs.extra(select={"day": "date(created_at)"}).values("day").order_by("day").annotate(n=Count("pk"))
    )
    routes = dict(logs.values_list("route").order_by().annotate(n=Count("pk")))
    latencies: dict[str, list[float]] = {}
    confidences: list[float] = []
    for route, latency, confidence in logs.order_by("-pk").values_list("route", "latency_ms", "confidence")[
        :_LATENCY_SAMPLE
    ]:
        latencies.setdefault(route, []).append(latency)
        if confidence is not None and route == "student":
            confidences.append(confidence)
    histogram = [0] * 10
    for c in confidences:
        histogram[min(9, int(c * 10))] += 1
    predicted = dict(
        logs.exclude(student_label="").values_list("student_label").order_by().annotate(n=Count("pk"))
    )
    version = active_version(project)
    trained = (version.run.counts.get("per_label") if version else None) or {}
    # Drift compares categories: logged answers that are not one category name (an
    # extraction's "date ×1 · people ×1") have no place in it.
    names = set(project.task.names) | set(trained)
    predicted = {k: n for k, n in predicted.items() if k in names}
    labels = sorted(set(predicted) | set(trained))
    p_total, t_total = sum(predicted.values()) or 1, sum(trained.values()) or 1
    # Total variation distance between what the student predicts now and what it learned from.
    drift = (
        0.5 * sum(abs(predicted.get(k, 0) / p_total - trained.get(k, 0) / t_total) for k in labels)
        if predicted and trained
        else None
    )
    return {
        "days": days,
        "total": total,
        "per_day": [{"day": str(row["day"]), "n": row["n"]} for row in per_day],
        "routes": routes,
        "student_share": routes.get("student", 0) / total if total else None,
        "latency": {route: latency_summary(v) for route, v in sorted(latencies.items())},
        "confidence_histogram": histogram,
        "distribution": [
            {
                "label": k,
                "predicted": predicted.get(k, 0) / p_total if predicted else 0,
                "trained": trained.get(k, 0) / t_total if trained else 0,
            }
            for k in labels
        ],
        "drift": drift,
        "drift_warning": drift is not None and drift > DRIFT_WARNING,
    }


DRIFT_WARNING = 0.2


# --- cost ---------------------------------------------------------------------------------------------


def model_cost(
    month: float, *, D: Decimal, T: Decimal, H: Decimal, V: Decimal, f: Decimal, p: Decimal
) -> Decimal:
    return D + T + H * Decimal(str(month)) + V * f * p * Decimal(str(month))


def api_cost(month: float, *, V: Decimal, p: Decimal) -> Decimal:
    return V * p * Decimal(str(month))


def break_even_month(
    *, D: Decimal, T: Decimal, H: Decimal, V: Decimal, f: Decimal, p: Decimal
) -> float | None:
    """The month from which the model is cheaper: (D + T) / (V*p*(1-f) - H), or None if never."""
    monthly_saving = V * p * (1 - f) - H
    if monthly_saving <= 0:
        return None
    return float((D + T) / monthly_saving)


def cost_inputs(project: Project) -> dict:
    """Every input of the break-even, and whether the app measured it or a lead entered it."""
    config = serving_config_for(project)
    teacher = Proposal.objects.filter(example__project=project).exclude(
        agent__startswith=STUDENT_AGENT_PREFIX
    )
    data_cost = teacher.aggregate(s=Sum("cost_usd"))["s"] or Decimal("0")
    seconds = (
        project.training_runs.filter(train_seconds__isnull=False).aggregate(s=Sum("train_seconds"))["s"] or 0
    )
    training_cost = (Decimal(str(seconds)) / 3600 * config.compute_usd_per_hour).quantize(Decimal("0.0001"))
    paid = teacher.filter(cost_usd__gt=0)
    measured_price = paid.aggregate(a=Avg("cost_usd"))["a"]
    since = timezone.now() - timezone.timedelta(days=30)
    logs = PredictionLog.objects.filter(project=project, created_at__gte=since)
    calls = logs.count()
    fallback_calls = logs.exclude(route="student").count()
    version = active_version(project)
    if calls:
        f, f_source = Decimal(fallback_calls) / Decimal(calls), "measured from the last 30 days of traffic"
    elif version is not None:
        evaluation = version.run.evaluations.filter(subject="student").order_by("-created_at").first()
        covered = next(
            (
                row["coverage"]
                for row in (evaluation.metrics.get("coverage", []) if evaluation else [])
                if row["threshold"] >= version.threshold
            ),
            None,
        )
        f, f_source = (
            (Decimal(str(1 - covered)), "estimated from gold coverage at the threshold")
            if covered is not None
            else (Decimal("1"), "no traffic or evaluation yet")
        )
    else:
        f, f_source = Decimal("1"), "no model deployed"
    if config.monthly_volume:
        V, V_source = Decimal(config.monthly_volume), "entered"
    else:
        V, V_source = Decimal(calls) * Decimal(30) / Decimal(30), "measured: calls in the last 30 days"
    if config.api_price_per_call is not None:
        p, p_source = config.api_price_per_call, "entered"
    elif measured_price is not None:
        p, p_source = (
            Decimal(str(measured_price)).quantize(Decimal("0.000001")),
            f"measured: mean of {paid.count():,} teacher calls",
        )
    else:
        p, p_source = Decimal("0"), "unknown: no paid teacher call yet"
    # Medians and tails, not means: a process's first request (the model loading) or one
    # slow LLM call would pull a mean far from what a caller sees.
    latency = {
        "student": latency_summary(
            logs.filter(route="student")
            .order_by("-pk")
            .values_list("latency_ms", flat=True)[:_LATENCY_SAMPLE]
        ),
        "teacher": latency_summary(
            paid.exclude(latency_ms__isnull=True)
            .order_by("-pk")
            .values_list("latency_ms", flat=True)[:_LATENCY_SAMPLE]
        ),
    }
    return {
        "D": (data_cost, "measured: sum of teacher proposal costs"),
        "T": (
            training_cost,
            f"{seconds / 3600:.2f} h of measured training x entered ${config.compute_usd_per_hour}/h",
        ),
        "H": (config.hosting_usd_per_month, "entered"),
        "V": (V, V_source),
        "f": (f.quantize(Decimal("0.0001")), f_source),
        "p": (p, p_source),
        "latency": latency,
    }


# The chart spans at least this many months, more when the break-even comes later (up to the cap).
COST_CHART_MONTHS = 24
COST_CHART_MAX_MONTHS = 120


def cost_report(project: Project, *, months: int | None = None) -> dict:
    inputs = cost_inputs(project)
    values = {k: v[0] for k, v in inputs.items() if k != "latency"}
    even = break_even_month(**values)
    if months is None:
        # Long enough to show the break-even with some months after it.
        months = COST_CHART_MONTHS
        if even is not None and even * 1.25 > months:
            months = min(COST_CHART_MAX_MONTHS, math.ceil(even * 1.25 / 6) * 6)
    curve = [
        {
            "month": m,
            "model": float(model_cost(m, **values)),
            "api": float(api_cost(m, V=values["V"], p=values["p"])),
        }
        for m in range(months + 1)
    ]
    return {
        "inputs": inputs,
        "values": values,
        "curve": curve,
        "break_even_month": even,
        "chart": _chart(
            curve,
            break_even=even,
            break_even_cost=float(api_cost(even, V=values["V"], p=values["p"])) if even is not None else None,
        ),
    }


def nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step for a chart axis (1, 2 or 5 times a power of ten), about `ticks` over span."""
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _money(value: float) -> str:
    if value >= 1_000_000:
        return f"${value / 1_000_000:g}M"
    if value >= 1000:
        return f"${value / 1000:g}k"
    return f"${value:g}" if value >= 1 or value == 0 else f"${value:.2g}"


def _chart(
    curve: list[dict],
    *,
    break_even: float | None = None,
    break_even_cost: float | None = None,
    width: int = 640,
    height: int = 260,
) -> dict:
    """The cost chart's SVG coordinates: both curves, ticks on both axes, the break-even mark."""
    peak = max([0.01] + [max(row["model"], row["api"]) for row in curve])
    step = nice_step(peak)
    top = math.ceil(peak / step - 1e-9) * step
    last = curve[-1]["month"] or 1

    def x(month: float) -> float:
        return round(month / last * width, 1)

    def y(value: float) -> float:
        return round(height - value / top * height, 1)

    def points(key: str) -> str:
        return " ".join(f"{x(row['month'])},{y(row[key])}" for row in curve)

    month_step = next(m for m in (1, 2, 3, 6, 12, 24) if last / m <= 12)
    mark = None
    if break_even is not None and break_even <= last:
        mark = {
            "x": x(break_even),
            "y": y(break_even_cost or 0),
            "label": f"break-even: month {break_even:.1f}",
            # The label sits on the side of the line with room for it.
            "anchor": "start" if break_even < last * 0.6 else "end",
            "label_x": x(break_even) + (8 if break_even < last * 0.6 else -8),
        }
    return {
        "model": points("model"),
        "api": points("api"),
        "top": top,
        "width": width,
        "height": height,
        "months": last,
        "y_ticks": [{"y": y(i * step), "label": _money(i * step)} for i in range(round(top / step) + 1)],
        "x_ticks": [{"x": x(m), "label": str(m)} for m in range(0, last + 1, month_step)],
        "break_even": mark,
    }
