"""Corpus file formats: reading files row by row, and the CSV cell guard exports write.

Parsing is streaming and strict: every row either becomes a `Row` or a
`RowError` naming its line (an Excel sheet's row), so an import can report every bad
line (and import nothing) without ever holding the whole file in memory.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import BinaryIO

FORMATS = ("csv", "tsv", "jsonl", "txt", "xlsx")
# Every format some task type reads (CoNLL BIO: extraction; tasks.base.Task.import_formats).
ALL_FORMATS = (*FORMATS, "conll")
# What a format holds, for a project whose task type does not read it.
FORMAT_ABOUT = {"conll": "CoNLL files hold extraction spans"}
EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "txt",
    ".conll": "conll",
    ".bio": "conll",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
# Files people try that no format here reads: named plainly, with the way to a CSV.
OTHER_FILES = {
    ".xls": "an Excel 97–2003 workbook (.xls)",
    ".xlsb": "an Excel binary workbook (.xlsb)",
    ".ods": "an OpenDocument spreadsheet (.ods)",
    ".numbers": "a Numbers spreadsheet (.numbers)",
    ".doc": "a Word document (.doc)",
    ".docx": "a Word document (.docx)",
    ".odt": "an OpenDocument text (.odt)",
    ".rtf": "a rich-text document (.rtf)",
    ".pdf": "a PDF document",
    ".zip": "a ZIP archive",
    ".gz": "a gzip archive",
}
SAVE_AS_CSV = (
    "open it in Excel, LibreOffice or Numbers and save (or export) the sheet as “CSV UTF-8” "
    "(or as an Excel workbook, .xlsx), one example per row with a header row, then upload that"
)
# An answer file is parsed this many lines at a time (up to the next blank line where a
# record spans lines), so memory stays flat and progress moves however big the file.
ANSWER_CHUNK_LINES = 5000

# Columns an export writes for people and provenance; an import of that
# export skips them so a round trip gives back the same examples.
EXPORT_ONLY_FIELDS = frozenset(
    {
        "example_id",
        "label_state",
        "source",
        "is_gold",
        "gold_versions",
        "gold_label",
        "proposed_by",
        "proposed_label",
        "proposed_confidence",
        "reviews",
        "proposals",
        "provenance",
        "created_at",
    }
)


class CorpusFormatError(ValueError):
    """The file as a whole cannot be read (unknown format, bad header)."""


@dataclass(slots=True)
class Row:
    line: int
    text: str
    external_id: str = ""
    label: str = ""
    metadata: dict = field(default_factory=dict)
    hidden: dict = field(default_factory=dict)
    # The answer an answer file or a label column of answers gives (its task's shape); None: none.
    answer: object = None
    notes: dict | None = None  # how the task read the answer (Task.answer_note_names)


@dataclass(slots=True)
class RowError:
    line: int
    reason: str


@dataclass(slots=True)
class Columns:
    text: str = "text"
    label: str = ""
    id: str = "id"
    # Other columns kept as metadata: None keeps them all, () keeps none.
    keep: tuple[str, ...] | None = None
    # One column stored apart from the metadata, never shown to reviewers (a truth column).
    hidden: str = ""

    def keeps(self, name: str) -> bool:
        return self.keep is None or name in self.keep


def guess_format(file_name: str) -> str | None:
    return EXTENSION_FORMATS.get(PurePath(file_name).suffix.lower())


def formats_for(task) -> tuple[str, ...]:
    """The formats a project of this task imports."""
    return task.import_formats


def file_kind(fileobj: BinaryIO, file_name: str = "") -> tuple[str | None, str]:
    """What a file's bytes say it is, whatever its name: ("xlsx", "") for an Excel workbook,
    (None, "an Excel 97–2003 workbook (.xls)") for a binary file no format reads, (None, "")
    for anything else (text, read as its format says). The file is left at its start."""
    head = fileobj.read(8)
    fileobj.seek(0)
    about = ""
    if head.startswith(b"\xd0\xcf\x11\xe0"):  # OLE2: the old Office formats
        about = OTHER_FILES.get(PurePath(file_name).suffix.lower(), "an old-style Office file (.xls, .doc)")
    elif head.startswith(b"%PDF"):
        about = OTHER_FILES[".pdf"]
    elif head.startswith(b"\x1f\x8b"):
        about = OTHER_FILES[".gz"]
    elif head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(fileobj) as archive:
                names = set(archive.namelist())
                mimetype = archive.read("mimetype")[:100] if "mimetype" in names else b""
        except (zipfile.BadZipFile, OSError):
            names, mimetype = set(), b""
        finally:
            fileobj.seek(0)
        if "xl/workbook.xml" in names:
            return "xlsx", ""
        if "xl/workbook.bin" in names:
            about = OTHER_FILES[".xlsb"]
        elif "word/document.xml" in names:
            about = OTHER_FILES[".docx"]
        elif b"opendocument.spreadsheet" in mimetype:
            about = OTHER_FILES[".ods"]
        elif b"opendocument.text" in mimetype:
            about = OTHER_FILES[".odt"]
        else:
            about = OTHER_FILES.get(PurePath(file_name).suffix.lower(), OTHER_FILES[".zip"])
    return None, about


def other_file_about(file_name: str) -> str:
    """The plain name of a file kind no format reads, from its name ("" if not one of them)."""
    return OTHER_FILES.get(PurePath(file_name).suffix.lower(), "")


def cannot_import(file_name: str, about: str) -> str:
    """The error for a file no format reads (`about`: what it is), with the way to a CSV."""
    return f"{PurePath(file_name).name!r} is {about}, which cannot be imported; {SAVE_AS_CSV}."


class _LineReader:
    """Yields decoded lines of a binary file, remembering bad encodings.

    Each physical line is decoded on its own so a bad byte is reported with
    its line number; the line is then passed on with replacement characters
    so parsing can go on and find further errors.
    """

    def __init__(self, fileobj: BinaryIO):
        self.fileobj = fileobj
        self.bytes_read = 0
        self.line_number = 0
        self.encoding_errors: list[int] = []

    def __iter__(self) -> Iterator[str]:
        for raw in self.fileobj:
            self.line_number += 1
            self.bytes_read += len(raw)
            if self.line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.encoding_errors.append(self.line_number)
                yield raw.decode("utf-8", errors="replace")


def _encoding_errors(lines: _LineReader) -> Iterator[RowError]:
    while lines.encoding_errors:
        line = lines.encoding_errors.pop(0)
        yield RowError(line, "not valid UTF-8 text (save the file as UTF-8)")


def read_rows(
    fileobj: BinaryIO,
    *,
    fmt: str,
    columns: Columns,
    lines: _LineReader | _SheetReader | None = None,
    task=None,
) -> Iterator[Row | RowError]:
    """Parse a corpus file into rows; text limits and labels are checked later.

    With a `task` whose ``answer_formats`` hold `fmt` (extraction's JSONL spans, CoNLL), the
    task reads the rows and their answers (``Row.answer``), checked against the text but
    not yet against the categories.
    """
    lines = lines or line_reader(fileobj, fmt)
    if task is not None and fmt in task.answer_formats:
        yield from _read_answer_file(lines, fmt=fmt, columns=columns, task=task)
    elif fmt in ("csv", "tsv"):
        yield from _read_delimited(lines, delimiter="," if fmt == "csv" else "\t", columns=columns)
    elif fmt == "xlsx":
        sheet = lines if isinstance(lines, _SheetReader) else _SheetReader(fileobj)
        yield from _read_table(sheet.records(), kind="sheet", columns=columns, first="row 1")
    elif fmt == "jsonl":
        yield from _read_jsonl(lines, columns=columns)
    elif fmt == "txt":
        for text in lines:
            if lines.encoding_errors:
                yield from _encoding_errors(lines)
                continue
            text = text.rstrip("\r\n")
            if text.strip():
                yield Row(line=lines.line_number, text=text)
    else:
        raise CorpusFormatError(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")


def _read_answer_file(lines: _LineReader, *, fmt: str, columns: Columns, task) -> Iterator[Row | RowError]:
    """Rows of a file the task reads itself (``Task.read_answer_chunk``).

    Its readers take a whole text and are all or nothing; here they are given the file
    a chunk at a time (outside JSONL a chunk ends at a blank line, so no record is cut)
    and their line numbers are moved to the file's.
    """
    from tasks import AnswerFileError

    pending: list[RowError] = []
    chunk: list[str] = []
    first = 1

    def parse() -> Iterator[Row | RowError]:
        items: list[Row | RowError] = list(pending)
        pending.clear()
        try:
            found = task.read_answer_chunk(chunk, fmt=fmt, skip=EXPORT_ONLY_FIELDS)
        except AnswerFileError as exc:
            items += [RowError(first - 1 + line, reason) for line, reason in exc.errors]
        except RecursionError:
            items.append(RowError(first, "a value is nested too deeply to read"))
        else:
            items += [_answer_row(row, first - 1, columns) for row in found]
        yield from sorted(items, key=lambda item: item.line)

    for raw in lines:
        if not chunk:
            first = lines.line_number
        if lines.encoding_errors:
            pending += _encoding_errors(lines)
            if fmt == "jsonl":
                raw = ""  # reported once, as an encoding error
        chunk.append(raw)
        if len(chunk) >= ANSWER_CHUNK_LINES and (fmt == "jsonl" or not raw.strip()):
            yield from parse()
            chunk.clear()
    if chunk or pending:
        yield from parse()


def _answer_row(row, offset: int, columns: Columns) -> Row:
    metadata = dict(row.metadata or {})
    hidden = {}
    if columns.hidden and columns.hidden in metadata:
        hidden = {columns.hidden: metadata.pop(columns.hidden)}
    if columns.keep is not None:
        metadata = {key: value for key, value in metadata.items() if key in columns.keep}
    return Row(
        line=row.line + offset,
        text=row.text,
        external_id=row.external_id if columns.id else "",
        metadata=metadata,
        hidden=hidden,
        answer=row.answer,
        notes=row.notes,
    )


def line_reader(fileobj: BinaryIO, fmt: str = "") -> _LineReader | _SheetReader:
    """What `read_rows` reads the file through; its ``bytes_read`` tells the progress."""
    return _SheetReader(fileobj) if fmt == "xlsx" else _LineReader(fileobj)


class _SheetReader:
    """The rows of an Excel workbook's first sheet as text cells, numbered as the sheet
    numbers them. openpyxl's read-only mode streams the sheet, so memory stays flat."""

    def __init__(self, fileobj: BinaryIO):
        self.fileobj = fileobj
        self.bytes_read = 0
        self.encoding_errors: list[int] = []  # a workbook has no text encoding to get wrong
        self.sheet = ""
        self.sheet_count = 0

    def records(self) -> Iterator[tuple[int, list[str]] | RowError]:
        import openpyxl  # only an Excel import pays for it
        from openpyxl.utils import get_column_letter

        size = self.fileobj.seek(0, 2)
        self.fileobj.seek(0)
        try:
            workbook = openpyxl.load_workbook(self.fileobj, read_only=True, data_only=True)
        except Exception as exc:  # a zip that is no workbook, a broken part: the file as a whole
            raise CorpusFormatError(
                f"the file is not an Excel workbook that can be read ({exc}); {SAVE_AS_CSV}."
            ) from exc
        try:
            self.sheet_count = len(workbook.worksheets)
            if not self.sheet_count:
                return
            sheet = workbook.worksheets[0]
            self.sheet = sheet.title
            width = None
            last = sheet.max_row or 0
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                if last:
                    self.bytes_read = size * min(number, last) // last
                cells = [_cell_text(value) for value in values]
                while cells and cells[-1] == "":
                    cells.pop()
                if width is None:
                    width = len(cells)
                    yield number, cells
                    continue
                if not cells:
                    continue  # an empty row, as a blank line of a CSV
                if len(cells) > width:
                    yield RowError(
                        number,
                        f"has a value in column {get_column_letter(len(cells))} but the header row "
                        f"names only {width} column{'s' if width != 1 else ''}",
                    )
                    continue
                yield number, cells + [""] * (width - len(cells))
        finally:
            workbook.close()
            self.bytes_read = size


def _cell_text(value) -> str:
    """A cell as the sheet shows it: whole numbers without ".0", dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _read_delimited(lines: _LineReader, *, delimiter: str, columns: Columns) -> Iterator[Row | RowError]:
    # Fields may hold whole documents; the length rule is applied per row
    # with a clear message instead of csv's own "field larger than limit".
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    kind = "TSV" if delimiter == "\t" else "CSV"

    def records() -> Iterator[tuple[int, list[str]] | RowError]:
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RowError(1, f"the header cannot be read: {exc}")
            return
        yield from _encoding_errors(lines)
        yield 1, header
        previous_end = 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                yield from _encoding_errors(lines)
                return
            except csv.Error as exc:
                yield from _encoding_errors(lines)
                # The reader cannot resync after a broken quote; stop here.
                yield RowError(previous_end + 1, f"malformed {kind} ({exc})")
                return
            line = previous_end + 1
            previous_end = reader.line_num
            if lines.encoding_errors:
                yield from _encoding_errors(lines)
            if record and record != [""]:
                yield line, record

    yield from _read_table(records(), kind=kind, columns=columns)


def _read_table(
    records: Iterable[tuple[int, list[str]] | RowError], *, kind: str, columns: Columns, first: str = "line 1"
) -> Iterator[Row | RowError]:
    """Rows of a table whose first record is its header (CSV, TSV, an Excel sheet).

    `records` gives (line, cells) or the reader's own RowError; `first` names the header's
    place in messages ("line 1", "row 1").
    """
    header: list[str] | None = None
    for item in records:
        if isinstance(item, RowError):
            yield item
            continue
        line, record = item
        if header is None:
            header = [name.strip() for name in record]
            # This app's own CSV export: undo its formula guard (see neutralise_cell).
            is_export = {"example_id", "label_state"} <= set(header)
            indexes, extra = _header_columns(header, kind=kind, columns=columns, first=first)
            text_index, label_index, id_index, hidden_index = indexes
            continue
        if len(record) != len(header):
            yield RowError(line, f"has {len(record)} fields but the header has {len(header)} (check quoting)")
            continue
        if is_export:
            record = [restore_cell(cell) for cell in record]
        metadata: dict = {}
        for i, name in extra:
            if name == "metadata":
                metadata.update(_metadata_cell(record[i]))
            elif record[i] != "":
                metadata[name] = record[i]
        yield Row(
            line=line,
            text=record[text_index],
            external_id=record[id_index].strip() if id_index is not None else "",
            label=record[label_index].strip() if label_index is not None else "",
            metadata=metadata,
            hidden={columns.hidden: record[hidden_index]} if hidden_index is not None else {},
        )


def _header_columns(header: list[str], *, kind: str, columns: Columns, first: str):
    """The indexes of the text, label, id and hidden columns, and the other columns kept."""
    if columns.text not in header:
        raise CorpusFormatError(
            f"{first}: the {kind} header has no text column {columns.text!r} "
            f"(columns: {', '.join(header) or 'none'}); choose the text column."
        )
    if columns.label and columns.label not in header:
        raise CorpusFormatError(
            f"{first}: the {kind} header has no label column {columns.label!r} (columns: {', '.join(header)})."
        )
    if columns.hidden and columns.hidden not in header:
        raise CorpusFormatError(
            f"{first}: the {kind} header has no hidden column {columns.hidden!r} (columns: {', '.join(header)})."
        )
    missing = [name for name in columns.keep or () if name not in header]
    if missing:
        raise CorpusFormatError(
            f"{first}: the {kind} header has no column {', '.join(map(repr, missing))} to keep "
            f"(columns: {', '.join(header)})."
        )
    text_index = header.index(columns.text)
    label_index = header.index(columns.label) if columns.label else None
    id_index = header.index(columns.id) if columns.id and columns.id in header else None
    hidden_index = header.index(columns.hidden) if columns.hidden else None
    used = {text_index, label_index, id_index, hidden_index}
    extra = [
        (i, name)
        for i, name in enumerate(header)
        if i not in used and name not in EXPORT_ONLY_FIELDS and name and columns.keeps(name)
    ]
    return (text_index, label_index, id_index, hidden_index), extra


def _metadata_cell(cell: str) -> dict:
    if not cell.strip():
        return {}
    try:
        value = json.loads(cell)
    except (json.JSONDecodeError, RecursionError):
        return {"metadata": cell}
    return value if isinstance(value, dict) else {"metadata": value}


def _read_jsonl(lines: _LineReader, *, columns: Columns) -> Iterator[Row | RowError]:
    for raw in lines:
        line = lines.line_number
        had_encoding_error = bool(lines.encoding_errors)
        yield from _encoding_errors(lines)
        if had_encoding_error or not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield RowError(line, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:  # the parser's own limit: a bad row, not a failed import
            yield RowError(line, "not valid JSON (nested too deeply)")
            continue
        if not isinstance(obj, dict):
            yield RowError(line, "is not a JSON object")
            continue
        text = obj.get(columns.text)
        if text is None:
            yield RowError(line, f"has no {columns.text!r} field")
            continue
        if not isinstance(text, str):
            yield RowError(line, f"field {columns.text!r} is not a string")
            continue
        label = obj.get(columns.label) if columns.label else None
        if label is not None and not isinstance(label, str):
            yield RowError(line, f"field {columns.label!r} is not a string")
            continue
        external_id = obj.get(columns.id) if columns.id else None
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        skip = {columns.text, columns.label, columns.id, columns.hidden, "metadata"} | EXPORT_ONLY_FIELDS
        for key, value in obj.items():
            if key not in skip:
                metadata[key] = value
        if columns.keep is not None:
            metadata = {key: value for key, value in metadata.items() if key in columns.keep}
        hidden = {columns.hidden: obj[columns.hidden]} if columns.hidden and columns.hidden in obj else {}
        yield Row(
            line=line,
            text=text,
            external_id="" if external_id is None else str(external_id),
            label=(label or "").strip(),
            metadata=metadata,
            hidden=hidden,
        )


# --- the export's cell guard, undone on import ------------------------------------

# A cell a spreadsheet would read as a formula (=, +, -, @, or a leading tab or
# carriage return) is written behind a single quote (OWASP's advice for CSV
# injection). A cell that already starts with a quote gets one more, so the
# import of an export (told by its example_id and label_state columns) takes
# exactly one off and gets every cell back unchanged.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def neutralise_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def restore_cell(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_STARTS) else value
