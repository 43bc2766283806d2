"""Corpus import: stream a file into a staging table, then move it in one go.

Rows are parsed and checked one by one and written to a temporary staging
table (COPY on PostgreSQL, batched inserts on SQLite). Nothing touches the
project's tables until the whole file has been read without error; then one
transaction moves the staged rows in (deduplicated against the file and the
project) and adds the file's labels: proposals by a named agent (another
system's predictions) or reviews by the importing lead (verified labels),
and, when asked, gold items (candidates to label blind, or a frozen version
a lead attests). So a malformed file imports nothing, a killed import leaves nothing behind (the staging table dies with
its connection), and memory stays flat whatever the file size.

`import_batch_create` checks what the file's labels mean and records the file (an upload
is copied into the data directory); `import_batch_start` runs it at once or queues it.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.corpus.answers import MAX_NEW_LABELS, FileAnswers, make_gold
from annotation.corpus.answers import create_labels as new_labels_create
from annotation.corpus.formats import (
    ALL_FORMATS,
    FORMAT_ABOUT,
    Columns,
    CorpusFormatError,
    RowError,
    cannot_import,
    file_kind,
    formats_for,
    guess_format,
    line_reader,
    other_file_about,
    read_rows,
)
from annotation.corpus.staging import STAGE_BATCH_ROWS, Stage, check_row, staged_row
from annotation.models import (
    IMPORT_AGENT,
    ImportBatch,
    Membership,
    Project,
    forget_decided,
)
from annotation.projects import ServiceError
from distillapp import jobs

# What a file's label column means (ImportBatch.options["label_meaning"]).
LABELS_PREDICTIONS = "predictions"  # another system's answers: proposals by a named agent
LABELS_VERIFIED = "verified"  # checked by people: reviews by the importing lead
# Where the file's examples go (options["gold"]): "" is the ordinary corpus.
GOLD_CANDIDATES = "candidates"  # the draft gold set, to be labelled blind by two reviewers
GOLD_ATTESTED = "attested"  # a new frozen gold version whose labels a lead attests
MAX_REPORTED_ERRORS = 50
PROGRESS_EVERY_SECONDS = 0.5
T = TypeVar("T")


@dataclass
class _Outcome:
    rows_read: int = 0
    rows_valid: int = 0
    errors: list[RowError] = field(default_factory=list)
    invalid: int = 0
    new_labels: dict[str, int] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)  # how the task read the answers

    def fail(self, line: int, reason: str) -> None:
        self.invalid += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(RowError(line, reason))


# --- recording, starting and running an import -------------------------------------


def import_batch_create(
    *,
    project: Project,
    user,
    file_name: str,
    fileobj: BinaryIO | None = None,
    path: Path | None = None,
    fmt: str | None = None,
    text_column: str = "text",
    label_column: str = "",
    id_column: str = "id",
    create_labels: bool = False,
    label_meaning: str = LABELS_PREDICTIONS,
    label_agent: str = "",
    keep_columns: list[str] | None = None,
    hidden_column: str = "",
    gold: str = "",
) -> ImportBatch:
    """Record an import; an uploaded file is copied into the data directory.

    `fileobj` is an upload (copied so a worker can read it later); `path` is
    a file on this machine, read where it lies.

    `label_meaning` says what the label column is: another system's
    predictions (proposals by the agent ``import:<label_agent>``, or ``import``)
    or labels people verified (reviews by `user`, who must lead the project).
    `keep_columns` names the other columns kept as metadata (None: all);
    `hidden_column` is stored apart and never shown to reviewers. `gold` puts
    the file's examples into the draft gold set as candidates, or (attested)
    straight into a new frozen version with the file's labels.
    """
    fmt = fmt or guess_format(file_name)
    kind, about = _file_kind(fileobj=fileobj, path=path, file_name=file_name)
    about = about or ("" if fmt else other_file_about(file_name))
    if about:
        raise ServiceError(cannot_import(file_name, about))
    if kind:
        fmt = kind  # the bytes are a workbook, whatever the name or the chosen format say
    task = project.task
    formats = formats_for(task)
    if fmt in ALL_FORMATS and fmt not in formats:
        raise ServiceError(
            f"{FORMAT_ABOUT.get(fmt, f'{fmt} files are not read here')}; a {task.title.lower()} project "
            f"reads {', '.join(formats)}."
        )
    if fmt not in formats:
        raise ServiceError(f"Cannot tell the format of {file_name!r}; choose one of: {', '.join(formats)}.")
    label_column, hidden_column = label_column.strip(), hidden_column.strip()
    text_column, id_column = text_column.strip() or "text", id_column.strip()
    if not task.label_column:
        _check_answer_file_options(
            task=task,
            fmt=fmt,
            text_column=text_column,
            label_column=label_column,
            id_column=id_column,
            hidden_column=hidden_column,
            keep_columns=keep_columns,
        )
    options = _import_label_options(
        project=project,
        user=user,
        label_column=label_column,
        label_meaning=label_meaning,
        label_agent=label_agent,
        gold=gold,
        answer_file=fmt in task.answer_formats,
    )
    if hidden_column and hidden_column in {text_column, label_column, id_column}:
        raise ServiceError(f"The hidden column {hidden_column!r} is already the text, label or id column.")
    if fmt == "txt" and (hidden_column or label_column or keep_columns):
        raise ServiceError("A TXT file has no columns; use CSV, TSV or JSONL for labels and other columns.")
    digest = hashlib.sha256()
    if fileobj is not None:
        upload_dir = Path(settings.UPLOAD_DIR)
        upload_dir.mkdir(parents=True, exist_ok=True)
        target = upload_dir / f"{uuid.uuid4().hex}.{fmt}"
        with open(target, "wb") as out:
            while chunk := fileobj.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
    elif path is not None:
        target = Path(path).resolve()
        with open(target, "rb") as source:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
    else:
        raise ServiceError("No file given.")
    return ImportBatch.objects.create(
        project=project,
        file_name=Path(file_name).name[:255],
        file_path=str(target),
        format=fmt,
        sha256=digest.hexdigest(),
        size_bytes=target.stat().st_size,
        options={
            "text_column": text_column,
            "label_column": label_column,
            "id_column": id_column,
            "create_labels": create_labels,
            "keep_columns": [c.strip() for c in keep_columns if c.strip()]
            if keep_columns is not None
            else None,
            "hidden_column": hidden_column,
            **options,
        },
        created_by=user,
    )


def _file_kind(*, fileobj: BinaryIO | None, path: Path | None, file_name: str) -> tuple[str | None, str]:
    if fileobj is not None:
        return file_kind(fileobj, file_name)
    if path is not None and Path(path).is_file():
        with open(path, "rb") as source:
            return file_kind(source, file_name)
    return None, ""


def _check_answer_file_options(
    *,
    task,
    fmt: str,
    text_column: str,
    label_column: str,
    id_column: str,
    hidden_column: str,
    keep_columns: list[str] | None,
) -> None:
    """A task without a label column reads its answers from the file itself (extraction:
    JSONL spans or a fields object, CoNLL tags)."""
    kind = task.title.lower()
    if label_column:
        raise ServiceError(
            f"An {kind} file carries its answers as {task.answer_files_about}, not in a label "
            "column; leave the label column empty."
        )
    if fmt == "conll" and (hidden_column or keep_columns or text_column != "text"):
        raise ServiceError("A CoNLL file has only tokens and tags; it has no columns to choose.")
    if fmt == "jsonl" and text_column != "text":
        raise ServiceError(f'An {kind} JSONL file holds its text in "text" (its answers point into it).')
    if fmt == "jsonl" and id_column not in ("", "id"):
        raise ServiceError(f'An {kind} JSONL file holds its ids in "id".')


def _import_label_options(
    *,
    project: Project,
    user,
    label_column: str,
    label_meaning: str,
    label_agent: str,
    gold: str,
    answer_file: bool = False,
) -> dict:
    """What the file's labels mean and where its examples go, checked before anything is read.

    An answer file (`answer_file`: extraction's JSONL, CoNLL) carries its answers as a label
    column would.
    """
    if label_meaning not in (LABELS_PREDICTIONS, LABELS_VERIFIED):
        raise ServiceError(f"Unknown label meaning {label_meaning!r}; use predictions or verified.")
    if gold not in ("", GOLD_CANDIDATES, GOLD_ATTESTED):
        raise ServiceError(f"Unknown gold choice {gold!r}; use candidates or attested.")
    label_column = label_column or ("answers" if answer_file else "")
    if gold == GOLD_ATTESTED:
        if not label_column:
            task = project.task
            raise ServiceError(
                f"An attested gold file of an {task.title.lower()} project is "
                f"{' or '.join(task.answer_formats)} with its answers."
                if not task.label_column
                else "An attested gold file needs its label column."
            )
        label_meaning = LABELS_VERIFIED
    if gold == GOLD_CANDIDATES and label_column and label_meaning == LABELS_VERIFIED:
        raise ServiceError(
            "Gold candidates are labelled blind by two reviewers, so their labels cannot be verified "
            "already; attest the file as a gold version instead, or import the labels as predictions."
        )
    if (label_column and label_meaning == LABELS_VERIFIED) or gold == GOLD_ATTESTED:
        # Verified labels are reviews in someone's name, and only a lead may vouch for them.
        if user is None or project.role_of(user) != Membership.Role.LEAD:
            raise ServiceError("Only a lead of the project can import labels as verified (name the user).")
    agent = IMPORT_AGENT
    name = label_agent.strip()
    if name:
        if len(name) > 100 or not all(c.isalnum() or c in "-_.@ " for c in name):
            raise ServiceError(
                "The predicting system's name takes letters, digits, spaces and - _ . @ (at most 100)."
            )
        agent = f"{IMPORT_AGENT}:{name}"
    meaning = label_meaning if label_column else ""
    return {
        "label_meaning": meaning,
        "label_agent": agent if meaning == LABELS_PREDICTIONS else "",
        "gold": gold,
    }


def import_batch_start(*, batch: ImportBatch, inline: bool | None = None) -> ImportBatch:
    """Run a batch now (small files) or queue it on the "default" queue."""
    if inline is None:
        inline = batch.size_bytes <= settings.IMPORT_INLINE_MAX_BYTES
    if inline:
        if import_batch_claim(batch.pk):
            import_batch_run(batch=batch)
        batch.refresh_from_db()
        return batch

    def forget_upload() -> None:
        # Nothing will read the uploaded copy now: do not leave it in the data directory.
        if batch.file_path:
            Path(batch.file_path).unlink(missing_ok=True)

    jobs.enqueue(ImportBatch, batch.pk, note="; nothing was imported", on_failed=forget_upload)
    # Outside a transaction the enqueue (or its failure) has happened already: the caller
    # must see a failed row as failed, not say "importing".
    batch.refresh_from_db()
    return batch


def import_batch_claim(batch_id: int) -> bool:
    """Take a batch for this process; a killed run's batch can be taken again."""
    # A conditional update, so two workers never import the same batch; a taken-over
    # batch starts from the first row (its staging table died with its connection).
    claimed = jobs.claim(ImportBatch, batch_id)
    if claimed:
        ImportBatch.objects.filter(pk=batch_id).update(started_at=timezone.now(), error="")
    return claimed


def import_batch_run(*, batch: ImportBatch) -> ImportBatch:
    """Import a claimed batch's file; record the outcome on the batch row."""
    try:
        with jobs.running(
            ImportBatch,
            batch.pk,
            reason=lambda exc: f"The import stopped with an internal error: {exc}. Nothing was imported.",
        ):
            _run(batch)
    finally:
        _remove_uploaded_copy(batch)
    batch.refresh_from_db()
    if batch.status == ImportBatch.Status.SUCCEEDED and batch.rows_created:
        from annotation.review import similarity_index_start

        # "More like this" reads vectors only: a worker embeds the new texts now.
        similarity_index_start(project_id=batch.project_id)
    return batch


def _remove_uploaded_copy(batch: ImportBatch) -> None:
    path = Path(batch.file_path) if batch.file_path else None
    if path and path.parent == Path(settings.UPLOAD_DIR) and path.exists():
        batch.refresh_from_db(fields=["status"])
        if batch.is_finished:
            path.unlink()


def _run(batch: ImportBatch) -> None:
    project = batch.project
    options = batch.options or {}
    keep = options.get("keep_columns")
    columns = Columns(
        text=options.get("text_column") or "text",
        label=options.get("label_column") or "",
        id=options.get("id_column") or "id",
        keep=tuple(keep) if keep is not None else None,
        hidden=options.get("hidden_column") or "",
    )
    create_labels = bool(options.get("create_labels"))
    verified = options.get("label_meaning") == LABELS_VERIFIED
    gold = options.get("gold") or ""
    known_labels = set(project.labels.values_list("name", flat=True))
    max_chars = settings.IMPORT_MAX_TEXT_CHARS
    outcome = _Outcome()
    last_progress = time.monotonic()
    # Rows carry answers the task checks (not label names) where the task reads the file
    # itself (extraction's JSONL spans, CoNLL) or its label column holds answers (summaries).
    # Primed with the reviewed answers: where a fields object's repeated value sits.
    task = project.primed()
    answer_file = batch.format in task.answer_formats
    column_answers = bool(columns.label) and task.label_column == "answer"
    answers = (
        FileAnswers(task, set(known_labels), create_labels, outcome.new_labels)
        if answer_file or column_answers
        else None
    )

    def checked(fileobj, lines) -> Iterator[list[tuple]]:
        """The file's rows, read and checked, as staging rows in lots of STAGE_BATCH_ROWS;
        once a row is invalid, empty lots (reading on only to report errors)."""
        lot: list[tuple] = []
        read = 0
        try:
            for item in read_rows(fileobj, fmt=batch.format, columns=columns, lines=lines, task=task):
                read += 1
                if read % STAGE_BATCH_ROWS == 0:
                    yield lot
                    lot = []
                if isinstance(item, RowError):
                    outcome.rows_read += 1
                    outcome.fail(item.line, item.reason)
                    continue
                outcome.rows_read += 1
                if column_answers:
                    item.answer, item.label = item.label or None, ""
                reason = check_row(item, max_chars=max_chars)
                if answers is not None:
                    if reason is None and gold == GOLD_ATTESTED and item.answer is None:
                        reason = (
                            f"has no {task.answer_noun}; every row of an attested gold file needs "
                            "its verified answer"
                        )
                    if reason is None and item.answer is not None:
                        reason = answers.check(item)
                elif reason is None and gold == GOLD_ATTESTED and not item.label:
                    reason = "has no label; every row of an attested gold file needs its verified label"
                if reason is None and item.label and item.label not in known_labels:
                    if create_labels:
                        outcome.new_labels.setdefault(item.label, item.line)
                        if len(outcome.new_labels) > MAX_NEW_LABELS:
                            reason = (
                                f"more than {MAX_NEW_LABELS} different labels; is the label column right?"
                            )
                    else:
                        reason = (
                            f"unknown label {item.label!r} (the project's labels: "
                            f"{', '.join(sorted(known_labels)) or 'none yet'}; "
                            "allow creating labels to add it)"
                        )
                if reason:
                    outcome.fail(item.line, reason)
                    continue
                outcome.rows_valid += 1
                if item.notes:
                    outcome.notes.update(item.notes)
                if outcome.invalid:
                    continue  # the file is rejected; keep reading only to report errors
                lot.append(staged_row(item, task=answers.task) if answers is not None else staged_row(item))
        except CorpusFormatError as exc:
            outcome.fail(1, re.sub(r"^(line|row) 1: ", "", str(exc)))
        yield lot

    with (
        open(batch.file_path, "rb") as fileobj,
        Stage(project_id=project.pk, json_answers=answers is not None) as stage,
    ):
        lines = line_reader(fileobj, batch.format)
        # A side thread reads and checks the file while this one stages what it read: the
        # database copies and deduplicates one lot while Python reads the next.
        for lot in _read_ahead(checked(fileobj, lines)):
            if time.monotonic() - last_progress > PROGRESS_EVERY_SECONDS:
                _report_progress(batch, outcome, lines.bytes_read)
                last_progress = time.monotonic()
            if lot and not outcome.invalid:
                stage.add(lot)
        # An Excel import names the sheet it read, so "row 7" points into the right one.
        sheet = (
            {"sheet": lines.sheet, "sheet_count": lines.sheet_count} if getattr(lines, "sheet", "") else {}
        )

        if outcome.invalid:
            _record_failure(batch, outcome, options={**options, **sheet})
            return
        _report_progress(batch, outcome, lines.bytes_read)
        # The moves below write inside one transaction, invisible to the page;
        # the job's heartbeat (distillapp.jobs.heartbeat) beats on meanwhile.
        with transaction.atomic():
            stage.finish()
            labels_created = new_labels_create(project, outcome.new_labels, colours=answers is not None)
            reviews = bool(columns.label or answer_file) and verified
            with stage.keys_checked_here(
                batch_id=batch.pk, reviewer_id=batch.created_by_id if reviews else None
            ):
                created = stage.insert_examples(
                    project_id=project.pk, batch_id=batch.pk, verified=verified, is_gold=bool(gold)
                )
                answered = 0
                if reviews:
                    answered = stage.insert_reviews(
                        project_id=project.pk, batch_id=batch.pk, reviewer_id=batch.created_by_id
                    )
                elif columns.label or answer_file:
                    answered = stage.insert_proposals(
                        project_id=project.pk,
                        batch_id=batch.pk,
                        agent=options.get("label_agent") or IMPORT_AGENT,
                    )
            if reviews:
                forget_decided([project.pk])  # verified labels arrive decided
            gold_report = {}
            if gold:
                gold_report = make_gold(
                    batch, stage.file_examples(project_id=project.pk), attested=gold == GOLD_ATTESTED
                )
            notes = {"answer_notes": dict(outcome.notes)} if outcome.notes else {}
            ImportBatch.objects.filter(pk=batch.pk).update(
                options={**options, **sheet, **gold_report, **notes},
                status=ImportBatch.Status.SUCCEEDED,
                rows_read=outcome.rows_read,
                rows_created=created,
                rows_duplicate=outcome.rows_valid - created,
                rows_invalid=0,
                labels_created=labels_created,
                proposals_created=answered,
                bytes_done=lines.bytes_read,
                error="",
                error_report=[],
                finished_at=timezone.now(),
                heartbeat_at=timezone.now(),
            )


def _read_ahead(items: Iterator[T], ahead: int = 2) -> Iterator[T]:
    """What `items` yields, produced by a side thread at most `ahead` items in advance.

    The consumer's database calls release the GIL while they wait, so the producer's Python
    runs meanwhile. Its exception is raised here; stopping early stops it.
    """
    handoff: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    end = object()

    def hand(item, error=None) -> bool:
        while not stop.is_set():
            try:
                handoff.put((item, error), timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand(item):
                    return
            hand(end)
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer
            hand(end, exc)

    thread = threading.Thread(target=produce, name="import-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _report_progress(batch: ImportBatch, outcome: _Outcome, bytes_read: int) -> None:
    # Plain autocommit updates: the page polling this row sees them at once.
    ImportBatch.objects.filter(pk=batch.pk).update(
        rows_read=outcome.rows_read,
        rows_invalid=outcome.invalid,
        bytes_done=bytes_read,
        heartbeat_at=timezone.now(),
    )


def _record_failure(batch: ImportBatch, outcome: _Outcome, *, options: dict) -> None:
    shown = len(outcome.errors)
    more = f" The first {shown} are listed." if outcome.invalid > shown else ""
    ImportBatch.objects.filter(pk=batch.pk).update(
        options=options,
        status=ImportBatch.Status.FAILED,
        rows_read=outcome.rows_read,
        rows_created=0,
        rows_duplicate=0,
        rows_invalid=outcome.invalid,
        error=(
            f"{outcome.invalid:,} invalid row{'s' if outcome.invalid != 1 else ''}: "
            f"nothing was imported. Fix the file and upload it again.{more}"
        ),
        error_report=[{"line": e.line, "reason": e.reason} for e in outcome.errors],
        finished_at=timezone.now(),
    )
