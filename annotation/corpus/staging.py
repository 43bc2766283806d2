"""The import's staging: a per-connection temporary table holding one file's checked rows,
and the SQL that moves them into the project in one transaction (annotation.corpus.importing
streams the file in and decides when)."""

from __future__ import annotations

import json

from django.db import connection
from django.utils import timezone

from annotation.corpus.formats import Row
from annotation.models import IMPORT_AGENT, Example, ReviewState

STAGE_BATCH_ROWS = 5000


class Stage:
    """A per-connection temporary table holding one file's valid rows.

    Its label column holds a label name, or with `json_answers` (rows with answers) each
    row's answer as JSON text, and then a summary column its queue key (the task's
    summary, worked out while staging); an empty label means the row has no answer.
    """

    def __init__(self, *, json_answers: bool = False) -> None:
        self.vendor = connection.vendor
        self.cursor = connection.cursor()
        self.json_answers = json_answers

    def _answer_json(self) -> str:
        """SQL for the staged answer as a JSON value (the label is a JSON string)."""
        if self.json_answers:
            return "CAST(s.label AS jsonb)" if self.vendor == "postgresql" else "json(s.label)"
        return "to_jsonb(s.label)" if self.vendor == "postgresql" else "json_quote(s.label)"

    def __enter__(self) -> Stage:
        self._drop()
        summary = ", summary text" if self.json_answers else ""
        if self.vendor == "postgresql":
            # COPY cannot skip duplicates, so rows land here first and are
            # deduplicated into import_rows by finish().
            self.cursor.execute(
                "CREATE TEMP TABLE import_stage (line integer, hash text, text text, "
                f"external_id text, label text, metadata jsonb, hidden jsonb{summary})"
            )
        else:
            self.cursor.execute(
                "CREATE TEMP TABLE import_rows (hash text PRIMARY KEY, line integer, text text, "
                f"external_id text, label text, metadata text, hidden text{summary})"
            )
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._drop()
        finally:
            self.cursor.close()

    def _drop(self) -> None:
        self.cursor.execute("DROP TABLE IF EXISTS import_stage")
        self.cursor.execute("DROP TABLE IF EXISTS import_rows")

    def add(self, rows: list[tuple]) -> None:
        columns = "line, hash, text, external_id, label, metadata, hidden"
        values = "%s, %s, %s, %s, %s, %s, %s"
        if self.json_answers:
            columns, values = columns + ", summary", values + ", %s"
        if self.vendor == "postgresql":
            with self.cursor.copy(f"COPY import_stage ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            # The first occurrence of a text in the file wins.
            self.cursor.executemany(f"INSERT OR IGNORE INTO import_rows ({columns}) VALUES ({values})", rows)

    def finish(self) -> None:
        """Deduplicate the staged rows; runs inside the final transaction."""
        if self.vendor == "postgresql":
            # Sorting and hash-joining a million staged rows in memory instead
            # of spilling to disk (or looking rows up one by one) halves the
            # final phase; LOCAL ends with the transaction.
            self.cursor.execute("SET LOCAL work_mem = '256MB'")
            self.cursor.execute(
                "CREATE TEMP TABLE import_rows AS SELECT DISTINCT ON (hash) * FROM import_stage "
                "ORDER BY hash, line"
            )
            self.cursor.execute("DROP TABLE import_stage")
            self.cursor.execute("CREATE INDEX ON import_rows (hash)")
            self.cursor.execute("ANALYZE import_rows")

    def insert_examples(self, *, project_id: int, batch_id: int, verified: bool, is_gold: bool) -> int:
        """Move the staged rows in; returns how many were new to the project."""
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        false = False if self.vendor == "postgresql" else 0
        gold = (True if self.vendor == "postgresql" else 1) if is_gold else false
        rank = "random()" if self.vendor == "postgresql" else "abs(random()) / 9223372036854775807.0"
        # The queue fields follow sync_queue_fields(): a new example's only
        # answer is the imported label. Predictions are proposals, so the label
        # is the teacher label; verified labels are reviews, so the example is
        # reviewed and has no teacher label.
        # A JSON answer's teacher label is its summary, as sync_queue_fields() writes it.
        if verified:
            state = f"CASE WHEN label <> '' THEN '{ReviewState.REVIEWED}' ELSE '{ReviewState.UNREVIEWED}' END"
            teacher = "''"
        else:
            state, teacher = f"'{ReviewState.UNREVIEWED}'", "summary" if self.json_answers else "label"
        # "WHERE true" lets SQLite tell the upsert clause from a join.
        self.cursor.execute(
            f"""
            INSERT INTO {Example._meta.db_table}
                (project_id, text, metadata, hidden_metadata, external_id, source, import_batch_id,
                 content_hash, is_gold, created_at, review_state, teacher_label,
                 teacher_confidence, student_label, student_confidence, is_disagreement,
                 quality_score, queue_rank)
            SELECT %s, text, metadata, hidden, external_id, %s, %s, hash, %s, %s, {state}, {teacher},
                   NULL, '', NULL, %s, NULL, {rank}
            FROM import_rows WHERE true ORDER BY line
            ON CONFLICT (project_id, content_hash) DO NOTHING
            """,
            [project_id, Example.Source.IMPORTED, batch_id, gold, now, false],
        )
        return self.cursor.rowcount

    def insert_reviews(self, *, project_id: int, batch_id: int, reviewer_id: int) -> int:
        """Verified labels: one review by the importing lead per new example with a label."""
        from annotation.models import Review

        now = connection.ops.adapt_datetimefield_value(timezone.now())
        true = True if self.vendor == "postgresql" else 1
        as_json = self._answer_json()
        # Bulk, so they never count as a reviewer's throughput nor come back on undo.
        self.cursor.execute(
            f"""
            INSERT INTO {Review._meta.db_table}
                (example_id, reviewer_id, proposal_id, kind, verdict, value, seconds_spent,
                 is_bulk, created_at)
            SELECT e.id, %s, NULL, %s, %s, {as_json}, NULL, %s, %s
            FROM {Example._meta.db_table} e JOIN import_rows s ON s.hash = e.content_hash
            WHERE e.project_id = %s AND e.import_batch_id = %s AND s.label <> ''
            ORDER BY e.id
            """,
            [reviewer_id, Review.Kind.REVIEW, Review.Verdict.CORRECT, true, now, project_id, batch_id],
        )
        return self.cursor.rowcount

    def file_examples(self, *, project_id: int) -> list[tuple[int, object]]:
        """(example id, the file's answer) for every example the file names, new or already there."""
        self.cursor.execute(
            f"""
            SELECT e.id, s.label
            FROM {Example._meta.db_table} e JOIN import_rows s ON s.hash = e.content_hash
            WHERE e.project_id = %s AND e.source <> %s
            ORDER BY s.line
            """,
            [project_id, Example.Source.SYNTHETIC],
        )
        if self.json_answers:
            return [(pk, json.loads(label) if label else None) for pk, label in self.cursor.fetchall()]
        return list(self.cursor.fetchall())

    def insert_proposals(self, *, project_id: int, batch_id: int, agent: str = IMPORT_AGENT) -> int:
        from annotation.models import Proposal

        now = connection.ops.adapt_datetimefield_value(timezone.now())
        as_json = self._answer_json()
        self.cursor.execute(
            f"""
            INSERT INTO {Proposal._meta.db_table}
                (example_id, agent, value, confidence, raw_response, input_tokens,
                 output_tokens, cost_usd, latency_ms, error, confidence_method, cache_key,
                 created_at)
            SELECT e.id, %s, {as_json}, NULL, '', 0, 0, 0, NULL, '', '', '', %s
            FROM {Example._meta.db_table} e JOIN import_rows s ON s.hash = e.content_hash
            WHERE e.project_id = %s AND e.import_batch_id = %s AND s.label <> ''
            ORDER BY e.id
            """,
            [agent, now, project_id, batch_id],
        )
        return self.cursor.rowcount


def check_row(row: Row, *, max_chars: int) -> str | None:
    if "\x00" in row.text:
        return "text contains a NUL character"
    if not row.text.strip():
        return "text is empty"
    if len(row.text) > max_chars:
        return (
            f"text is {len(row.text):,} characters, over the limit of {max_chars:,} (IMPORT_MAX_TEXT_CHARS)"
        )
    if len(row.external_id) > 255:
        return "id is longer than 255 characters"
    if len(row.label) > 100:
        return "label is longer than 100 characters"
    return None


def staged_row(row: Row, *, task=None) -> tuple:
    """A staging row; with a task (rows with answers), the answer as JSON and its summary follow."""
    from annotation.models import content_hash

    text = row.text.strip()
    staged = (
        row.line,
        content_hash(text),
        text,
        row.external_id,
        row.label,
        json.dumps(row.metadata, ensure_ascii=False),
        json.dumps(row.hidden, ensure_ascii=False),
    )
    if task is None:
        return staged
    if row.answer is None:
        return (*staged[:4], "", *staged[5:], "")
    # The example keeps the text stripped; an answer that points into it moves with it.
    answer = task.shift_answer(row.answer, len(row.text) - len(row.text.lstrip()))
    return (
        *staged[:4],
        json.dumps(answer, ensure_ascii=False),
        *staged[5:],
        task.summary(answer, text=text)[:100],
    )
