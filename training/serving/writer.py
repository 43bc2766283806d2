"""Writes kept off the request path: prediction logs and traffic examples, from background threads."""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connections, transaction

from annotation import review
from annotation.models import Example, Proposal, content_hash
from training.models import PredictionLog

logger = logging.getLogger(__name__)

# Rows buffered beyond this (the database has been unreachable for a long while) are dropped,
# loudly, rather than growing the process without bound.
_MAX_BUFFERED = 100_000


class _BackgroundWriter:
    """Buffers rows the request path produces and writes them from one background thread.

    With SERVING_LOG_FLUSH_SECONDS = 0 every `add` writes at once (the tests' setting).
    Each chunk is written in one transaction and leaves the buffer only once committed: a
    chunk that fails on a database error stays at the head of the buffer for the next
    flush, and is never written twice. Rows still buffered when the process exits normally
    are written by an atexit hook; a killed process loses what it had not written: one
    interval's rows while the writer keeps up (traffic examples: ~700 a second written in
    bulk), its whole backlog when it does not (bench/README.md "Fault bench").
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
    # One transaction a chunk, its rows in bulk: a statement for the texts already stored, one
    # for the new examples, one for their proposals, one queue-key sync (a text at a time, a
    # savepoint and five statements each, the writer fell behind ~60 unsure texts a second
    # and a killed process lost its backlog: bench/README.md "Fault bench").
    try:
        with transaction.atomic():
            stored = _store_traffic(items)
    except IntegrityError:
        # Another process stored one of these texts meanwhile (or a project is gone): one
        # savepoint a text, so each text seen before skips alone.
        with transaction.atomic():
            stored = _store_traffic_one_by_one(items)
    now = time.monotonic()
    for project_id in stored:
        # The new texts are embedded by a worker for "more like this" (never in its request),
        # asked at most once per INTAKE_INDEX_EVERY by this process: the writer keeps up.
        if now - _index_asked.get(project_id, -math.inf) >= review.INTAKE_INDEX_EVERY.total_seconds():
            _index_asked[project_id] = now
            review.similarity_index_start(project_id=project_id, unless_ran_within=review.INTAKE_INDEX_EVERY)


def _store_traffic(items: list[TrafficExample]) -> set[int]:
    """The texts not yet in their projects, with their proposals, in bulk; their project ids."""
    fresh: dict[tuple[int, str], tuple[str, TrafficExample]] = {}
    for item in items:
        text = item.text.strip()
        fresh.setdefault((item.project_id, content_hash(text)), (text, item))
    seen = Example.objects.filter(
        project_id__in={project for project, _ in fresh}, content_hash__in={digest for _, digest in fresh}
    ).values_list("project_id", "content_hash")
    for key in seen:
        fresh.pop(key, None)
    examples = Example.objects.bulk_create(
        Example(project_id=project, text=text, content_hash=digest, source=Example.Source.TRAFFIC)
        for (project, digest), (text, _) in fresh.items()
    )
    Proposal.objects.bulk_create(
        Proposal(example=example, **fields)
        for example, (_, item) in zip(examples, fresh.values(), strict=True)
        for fields in item.proposals
    )
    Example.objects.filter(pk__in=[example.pk for example in examples]).sync_queue_fields()
    return {project for project, _ in fresh}


def _store_traffic_one_by_one(items: list[TrafficExample]) -> set[int]:
    stored = set()
    for item in items:
        try:
            with transaction.atomic():
                example = Example.objects.create(
                    project_id=item.project_id, text=item.text.strip(), source=Example.Source.TRAFFIC
                )
                for fields in item.proposals:
                    Proposal.objects.create(example=example, **fields)
                Example.objects.filter(pk=example.pk).sync_queue_fields()
            stored.add(item.project_id)
        except IntegrityError:
            pass  # seen before (it is already in the project), or its project is gone
    return stored


_index_asked: dict[int, float] = {}  # project id -> when this process last asked for its index


prediction_logs = _BackgroundWriter("prediction-log", _write_logs, chunk=500)
# A chunk is one transaction: one that fails is rolled back whole and retried, and the
# unique (project, text) constraint keeps a retried text from being stored twice.
traffic_examples = _BackgroundWriter("traffic-examples", _write_traffic, chunk=50)


@atexit.register
def _flush_at_exit() -> None:
    for writer in (traffic_examples, prediction_logs):
        try:
            writer.flush()
        except Exception:
            logger.exception("Writing buffered rows at exit failed")
