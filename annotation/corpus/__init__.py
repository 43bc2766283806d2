"""The corpus: examples in and out of a project as files.

`formats` reads corpus files row by row (CSV, TSV, Excel, JSONL, TXT, CoNLL); `importing`
records an import, stages its rows and moves them in as one transaction (as a job);
`exporting` chooses examples and writes them with their provenance. This package
re-exports their public names, so callers write `from annotation import corpus`. A test
or bench that replaces a name must replace it in the module that looks it up
(`annotation.corpus.importing`, ...).
"""

from __future__ import annotations

from annotation.corpus.exporting import (
    EXPORT_CONTENT_TYPES,
    examples_for_export,
    export_records,
    gold_left_out,
    iter_export,
    write_export,
)
from annotation.corpus.formats import (
    ALL_FORMATS,
    FORMATS,
    cannot_import,
    formats_for,
    guess_format,
    other_file_about,
)
from annotation.corpus.importing import (
    GOLD_ATTESTED,
    LABELS_PREDICTIONS,
    LABELS_VERIFIED,
    import_batch_claim,
    import_batch_create,
    import_batch_run,
    import_batch_start,
)

__all__ = [
    "ALL_FORMATS",
    "EXPORT_CONTENT_TYPES",
    "FORMATS",
    "GOLD_ATTESTED",
    "LABELS_PREDICTIONS",
    "LABELS_VERIFIED",
    "cannot_import",
    "examples_for_export",
    "gold_left_out",
    "export_records",
    "formats_for",
    "guess_format",
    "other_file_about",
    "import_batch_claim",
    "import_batch_create",
    "import_batch_run",
    "import_batch_start",
    "iter_export",
    "write_export",
]
