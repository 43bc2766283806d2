"""The import's staging: a per-connection temporary table holding one file's checked rows,
and the SQL that moves them into the project in one transaction (annotation.corpus.importing
streams the file in and decides when)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from annotation.corpus.formats import Row
from annotation.models import (
    IMPORT_AGENT,
    Example,
    ImportBatch,
    Project,
    Proposal,
    Review,
    ReviewState,
    content_hash,
)

STAGE_BATCH_ROWS = 5000
SETTLE_ROWS = 200_000  # staged rows deduplicated at a time on PostgreSQL (Stage._settle)
# json.dumps(value, ensure_ascii=False) builds a new encoder on every call: a third of the
# staging time per row, when most rows' metadata is empty.
_to_json = json.JSONEncoder(ensure_ascii=False).encode


def _json_object(value: dict) -> str:
    return _to_json(value) if value else "{}"


# The foreign keys the moves write, each of which holds by construction: the project and the
# batch (locked), an example inserted in the same transaction, the importing lead (locked), or
# NULL (the teacher's prompt version and job, a reviewed proposal). Stage.keys_checked_here.
_KEYS_VOUCHED = {
    Example._meta.db_table: {"project_id", "import_batch_id"},
    Proposal._meta.db_table: {"example_id", "prompt_version_id", "labeling_job_id"},
    Review._meta.db_table: {"example_id", "reviewer_id", "proposal_id"},
}


class Stage:
    """A per-connection temporary table holding one file's valid rows.

    Its label column holds a label name, or with `json_answers` (rows with answers) each
    row's answer as JSON text, and then a summary column its queue key (the task's
    summary, worked out while staging); an empty label means the row has no answer.

    On PostgreSQL rows are copied into `import_stage`, and every SETTLE_ROWS of them are
    settled into `import_rows`: the first row of each text, with its example's id (the
    project's example with that text, or `new`: the next value of the examples' sequence,
    in file order). The import reads the file on while the database settles (two cores),
    and the moves then write examples, proposals and reviews straight from import_rows.
    """

    def __init__(self, *, project_id: int, json_answers: bool = False) -> None:
        self.vendor = connection.vendor
        self.cursor = connection.cursor()
        self.project_id = project_id
        self.json_answers = json_answers
        self.unsettled = 0

    def _answer_json(self) -> str:
        """SQL for the staged answer as a JSON value (the label is a JSON string)."""
        if self.json_answers:
            return "CAST(s.label AS jsonb)" if self.vendor == "postgresql" else "json(s.label)"
        return "to_jsonb(s.label)" if self.vendor == "postgresql" else "json_quote(s.label)"

    def __enter__(self) -> Stage:
        self._drop()
        summary = ", summary text, risk double precision" if self.json_answers else ""
        if self.vendor == "postgresql":
            # COPY cannot skip duplicates, so rows land in import_stage first. Hashes compare
            # bytewise (C): the database's collation would compare them character by character.
            row = (
                'line integer, hash text COLLATE "C", text text, external_id text, label text, '
                f"metadata jsonb, hidden jsonb{summary}"
            )
            self.cursor.execute(f"CREATE TEMP TABLE import_stage ({row})")
            self.cursor.execute(f"CREATE TEMP TABLE import_rows (id bigint, new boolean, {row})")
            self.cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [Example._meta.db_table])
            self.sequence = self.cursor.fetchone()[0]
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
            columns, values = columns + ", summary, risk", values + ", %s, %s"
        if self.vendor != "postgresql":
            # The first occurrence of a text in the file wins.
            self.cursor.executemany(f"INSERT OR IGNORE INTO import_rows ({columns}) VALUES ({values})", rows)
            return
        with self.cursor.copy(f"COPY import_stage ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        self.unsettled += len(rows)
        if self.unsettled >= SETTLE_ROWS:
            with transaction.atomic():
                self._settle()

    def _settle(self) -> None:
        """Move the first row of each new text from import_stage into import_rows, with its id."""
        # The hash joins in memory instead of spilling to disk; LOCAL ends with the transaction.
        self.cursor.execute("SET LOCAL work_mem = '256MB'")
        # A row is the first of its text unless an earlier line has the same hash, in this
        # lot or settled before (hash anti joins). nextval() in the select list runs after
        # the sort, so ids follow the file's lines.
        self.cursor.execute(
            f"""
            INSERT INTO import_rows
            SELECT CASE WHEN e.id IS NULL THEN nextval(%s::regclass) ELSE e.id END, e.id IS NULL, d.*
            FROM import_stage d
            LEFT JOIN {Example._meta.db_table} e
                ON e.project_id = %s AND e.content_hash = d.hash COLLATE "default"
            WHERE NOT EXISTS (SELECT FROM import_stage f WHERE f.hash = d.hash AND f.line < d.line)
                AND NOT EXISTS (SELECT FROM import_rows r WHERE r.hash = d.hash)
            ORDER BY d.line
            """,
            [self.sequence, self.project_id],
        )
        self.cursor.execute("TRUNCATE import_stage")
        self.unsettled = 0

    def finish(self) -> None:
        """Settle the last staged rows; runs inside the final transaction."""
        if self.vendor != "postgresql":
            return
        if self.unsettled:
            self._settle()
        self.cursor.execute("DROP TABLE import_stage")
        self.cursor.execute("ANALYZE import_rows")

    @contextmanager
    def keys_checked_here(self, *, batch_id: int, reviewer_id: int | None = None) -> Iterator[None]:
        """The moves inside, without PostgreSQL's per-row foreign-key checks where none can fail.

        Django's foreign keys are checked at COMMIT, once per written row and key: five
        checks (and a row lock on each new example) per imported row with a proposal. Every
        key the moves write is one of the rows locked here (the project, the batch, the
        importing lead: the locks those checks would take), an example this transaction
        inserts, or NULL (`_KEYS_VOUCHED`). So where the role may set
        session_replication_role (a superuser, or GRANT SET on PostgreSQL 15+) and the
        tables carry no other trigger or foreign key, row triggers are off for the moves
        alone; elsewhere (SQLite included) the database checks every row as before.
        """
        if self.vendor != "postgresql" or not self._keys_vouched():
            yield
            return
        locked = [(Project._meta.db_table, self.project_id), (ImportBatch._meta.db_table, batch_id)]
        if reviewer_id is not None:
            locked.append((get_user_model()._meta.db_table, reviewer_id))
        for table, pk in locked:
            self.cursor.execute(f"SELECT FROM {table} WHERE id = %s FOR KEY SHARE", [pk])
            if not self.cursor.rowcount:
                raise IntegrityError(f"{table} {pk} no longer exists")
        try:
            with transaction.atomic():  # a savepoint: a role without the right fails here alone
                self.cursor.execute("SET LOCAL session_replication_role = replica")
            unchecked = True
        except DatabaseError:
            unchecked = False
        yield
        if unchecked:
            self.cursor.execute("SET LOCAL session_replication_role = origin")

    def _keys_vouched(self) -> bool:
        """Is every trigger on the tables the moves write a foreign-key check in `_KEYS_VOUCHED`
        (or the referenced side of one, which fires on updates and deletes only)?"""
        self.cursor.execute(
            """
            SELECT t.tgrelid::regclass::text, c.contype, c.conrelid = t.tgrelid,
                   ARRAY(SELECT attname::text FROM pg_attribute
                         WHERE attrelid = c.conrelid AND attnum = ANY (c.conkey))
            FROM pg_trigger t LEFT JOIN pg_constraint c ON c.oid = t.tgconstraint
            WHERE t.tgrelid = ANY (%s::text[]::regclass[])
            """,
            [list(_KEYS_VOUCHED)],
        )
        return all(
            kind == "f" and (not own or (len(columns) == 1 and columns[0] in _KEYS_VOUCHED[table]))
            for table, kind, own, columns in self.cursor.fetchall()
        )

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
        # A proposed answer's review risk needs no student (an ambiguous placement: Task.review_risk).
        risk = "CASE WHEN label <> '' THEN risk ELSE 0 END" if self.json_answers and not verified else "0"
        columns = """project_id, text, metadata, hidden_metadata, external_id, source, import_batch_id,
                 content_hash, is_gold, created_at, review_state, teacher_label,
                 teacher_confidence, student_label, student_confidence, is_disagreement,
                 risk, quality_score, queue_rank"""
        values = f"""%s, text, metadata, hidden, external_id, %s, %s, hash, %s, %s, {state}, {teacher},
                   NULL, '', NULL, %s, {risk}, NULL, {rank}"""
        params = [project_id, Example.Source.IMPORTED, batch_id, gold, now, false]
        table = Example._meta.db_table
        if self.vendor != "postgresql":
            # "WHERE true" lets SQLite tell the upsert clause from a join.
            self.cursor.execute(
                f"""
                INSERT INTO {table} ({columns})
                SELECT {values} FROM import_rows WHERE true ORDER BY line
                ON CONFLICT (project_id, content_hash) DO NOTHING
                """,
                params,
            )
            return self.cursor.rowcount
        # Settling left out the texts the project had, so a plain insert is enough: no
        # conflict check per row (ON CONFLICT probes the unique index once more for each).
        # The rows were written in id order, so they go in in that order without a sort.
        insert = f"INSERT INTO {table} (id, {columns}) SELECT id, {values} FROM import_rows WHERE new"
        try:
            with transaction.atomic():  # a savepoint
                self.cursor.execute(insert, params)
                return self.cursor.rowcount
        except IntegrityError:
            pass
        # Another writer added one of these texts since they settled: skip what is there now, and
        # let the file's row name that example (file_examples()).
        self.cursor.execute(
            f"""
            WITH added AS ({insert} ON CONFLICT (project_id, content_hash) DO NOTHING RETURNING id)
            UPDATE import_rows s SET new = false
            WHERE s.new AND NOT EXISTS (SELECT 1 FROM added WHERE added.id = s.id)
            """,
            params,
        )
        self.cursor.execute(
            f"""
            UPDATE import_rows s SET id = e.id FROM {table} e
            WHERE NOT s.new AND e.project_id = %s AND e.content_hash = s.hash COLLATE "default"
                AND e.id <> s.id
            """,
            [project_id],
        )
        self.cursor.execute("SELECT count(*) FROM import_rows WHERE new")
        return self.cursor.fetchone()[0]

    def insert_reviews(self, *, project_id: int, batch_id: int, reviewer_id: int) -> int:
        """Verified labels: one review by the importing lead per new example with a label."""
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        true = True if self.vendor == "postgresql" else 1
        as_json = self._answer_json()
        # Bulk, so they never count as a reviewer's throughput nor come back on undo.
        self.cursor.execute(
            f"""
            INSERT INTO {Review._meta.db_table}
                (example_id, reviewer_id, proposal_id, kind, verdict, value, seconds_spent,
                 is_bulk, is_import, created_at)
            SELECT {self._new_rows("%s, NULL, %s, %s, " + as_json + ", NULL, %s, %s, %s")}
            """,
            [
                reviewer_id,
                Review.Kind.REVIEW,
                Review.Verdict.CORRECT,
                true,
                true,
                now,
                *self._new_params(project_id, batch_id),
            ],
        )
        return self.cursor.rowcount

    def _new_rows(self, values: str) -> str:
        """FROM and WHERE for one row per new example with an answer: `e.id, <values>` by id.

        On PostgreSQL the staged rows carry their example's id (Stage._settle); elsewhere the
        examples this batch created are joined back by their text's hash.
        """
        if self.vendor == "postgresql":
            # Written in id order (_settle): no sort needed.
            return f"s.id, {values} FROM import_rows s WHERE s.new AND s.label <> ''"
        return (
            f"e.id, {values} FROM {Example._meta.db_table} e JOIN import_rows s ON s.hash = e.content_hash "
            "WHERE e.project_id = %s AND e.import_batch_id = %s AND s.label <> '' ORDER BY e.id"
        )

    def _new_params(self, project_id: int, batch_id: int) -> list:
        return [] if self.vendor == "postgresql" else [project_id, batch_id]

    def file_examples(self, *, project_id: int) -> list[tuple[int, object]]:
        """(example id, the file's answer) for every example the file names, new or already there."""
        join = "s.id = e.id" if self.vendor == "postgresql" else "s.hash = e.content_hash"
        self.cursor.execute(
            f"""
            SELECT e.id, s.label
            FROM {Example._meta.db_table} e JOIN import_rows s ON {join}
            WHERE e.project_id = %s AND e.source <> %s
            ORDER BY s.line
            """,
            [project_id, Example.Source.SYNTHETIC],
        )
        if self.json_answers:
            return [(pk, json.loads(label) if label else None) for pk, label in self.cursor.fetchall()]
        return list(self.cursor.fetchall())

    def insert_proposals(self, *, project_id: int, batch_id: int, agent: str = IMPORT_AGENT) -> int:
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        as_json = self._answer_json()
        self.cursor.execute(
            f"""
            INSERT INTO {Proposal._meta.db_table}
                (example_id, agent, value, confidence, raw_response, input_tokens,
                 output_tokens, cost_usd, latency_ms, error, confidence_method, cache_key,
                 created_at)
            SELECT {self._new_rows("%s, " + as_json + ", NULL, '', 0, 0, 0, NULL, '', '', '', %s")}
            """,
            [agent, now, *self._new_params(project_id, batch_id)],
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
    """A staging row; with a task (rows with answers), the answer as JSON, its summary and its
    review risk with no student yet follow."""
    text = row.text.strip()
    staged = (
        row.line,
        content_hash(text),
        text,
        row.external_id,
        row.label,
        _json_object(row.metadata),
        _json_object(row.hidden),
    )
    if task is None:
        return staged
    if row.answer is None:
        return (*staged[:4], "", *staged[5:], "", None)
    # The example keeps the text stripped; an answer that points into it moves with it.
    answer = task.shift_answer(row.answer, len(row.text) - len(row.text.lstrip()))
    return (
        *staged[:4],
        _to_json(answer),
        *staged[5:],
        task.summary(answer, text=text)[:100],
        float(task.review_risk(answer, None, text=text)),
    )
