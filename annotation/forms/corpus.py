"""Corpus forms: import, export and the gold draw."""

from __future__ import annotations

from django import forms
from django.conf import settings

from annotation import corpus
from annotation.models import (
    Project,
)

FORMAT_NAMES = {"conll": "CoNLL BIO (token, tab, tag)", "xlsx": "Excel workbook (.xlsx, first sheet)"}
FORMAT_CHOICES = [("", "From the file name")] + [(f, FORMAT_NAMES.get(f, f.upper())) for f in corpus.FORMATS]


LABEL_MEANING_CHOICES = [
    ("", "Say what the labels are…"),
    ("verified", "Verified human labels (recorded as my reviews)"),
    ("predictions", "Another system's predictions (proposals to review)"),
]
GOLD_CHOICES = [
    ("", "Into the corpus (review and training)"),
    ("candidates", "As gold candidates, labelled blind by two reviewers"),
    ("attested", "As a frozen gold version: I attest the labels are verified"),
]


class ImportForm(forms.Form):
    file = forms.FileField(
        help_text="CSV, TSV, Excel (.xlsx: the first sheet, a header row like CSV's), JSONL or TXT "
        "(one example per line), UTF-8."
    )
    format = forms.ChoiceField(choices=FORMAT_CHOICES, required=False)
    text_column = forms.CharField(max_length=100, initial="text", required=False)
    label_column = forms.CharField(max_length=100, required=False, help_text="Optional: existing labels.")
    label_meaning = forms.ChoiceField(
        choices=LABEL_MEANING_CHOICES,
        required=False,
        label="The labels are",
        help_text="Verified labels count as reviewed and teach the teacher's few-shot memory; "
        "predictions are proposals by the system named below, never counted as the teacher.",
    )
    label_agent = forms.CharField(
        max_length=100,
        required=False,
        label="Predicting system",
        help_text="For predictions: a name, e.g. “crm-rules”; they are recorded as “import:crm-rules”.",
    )
    id_column = forms.CharField(max_length=100, initial="id", required=False)
    keep_columns = forms.CharField(
        max_length=1000,
        required=False,
        label="Other columns to keep",
        help_text="Comma-separated; kept as metadata shown to reviewers. Empty: every other column.",
    )
    keep_no_columns = forms.BooleanField(required=False, label="Keep no other columns")
    hidden_column = forms.CharField(
        max_length=100,
        required=False,
        label="Hidden column",
        help_text="Optional: a column (e.g. a truth column) stored but never shown to reviewers nor exported.",
    )
    gold = forms.ChoiceField(choices=GOLD_CHOICES, required=False, label="Import")
    create_labels = forms.BooleanField(
        required=False, help_text="Add labels found in the file that the project does not have."
    )

    MAIN_FIELDS = ("file", "gold", "format", "text_column", "label_column", "label_meaning", "label_agent")

    def __init__(self, *args, project: Project | None = None, held_name: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        # The file of a failed try, kept on the server (a browser cannot keep a chosen file):
        # leaving the file empty imports it again.
        self.held_name = held_name
        if held_name:
            self.fields["file"].required = False
            self.fields["file"].help_text = (
                f"Kept from your last try: “{held_name}”. Leave this empty to import it again with the "
                "settings below, or choose another file."
            )
        self.task = task = project.task if project is not None else None
        if task is None:
            return
        # What the task reads: its formats, and where a file's answers are.
        self.fields["format"].choices = [("", "From the file name")] + [
            (f, FORMAT_NAMES.get(f, f.upper())) for f in corpus.formats_for(task)
        ]
        if task.import_help and not held_name:
            self.fields["file"].help_text = task.import_help
        self.fields["label_meaning"].label = f"The {task.answer_noun} are"
        if not task.label_column:  # the file carries its answers itself (extraction's JSONL, CoNLL)
            del self.fields["label_column"]
        elif task.label_column == "answer":
            self.fields["label_column"].label = f"{task.answer_noun.capitalize()} column"
            self.fields["label_column"].help_text = f"Optional: existing {task.answer_noun}, one per row."
        if not task.uses_categories:
            del self.fields["create_labels"]
        else:
            self.fields[
                "create_labels"
            ].help_text = f"Add {task.category_noun}s found in the file that the project lacks."

    def main_fields(self) -> list:
        return [self[name] for name in self.MAIN_FIELDS if name in self.fields]

    def more_fields(self) -> list:
        return [field for field in self if field.name not in self.MAIN_FIELDS]

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload and upload.size > settings.IMPORT_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {settings.IMPORT_MAX_UPLOAD_BYTES:,}."
            )
        return upload

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        name = upload.name if upload else self.held_name
        if name and not data.get("format") and corpus.guess_format(name) is None:
            about = corpus.other_file_about(name)  # .xls, .ods, .docx: say what to do instead
            if about:
                self.add_error("file", corpus.cannot_import(name, about))
            else:
                self.add_error("format", "Cannot tell the format from the file name; choose one.")
        gold = data.get("gold") or ""
        fmt = data.get("format") or (corpus.guess_format(name) if name else None)
        if self.task is not None and not self.task.label_column:
            self._clean_answer_file(data, fmt, gold)
        elif gold == "attested":
            data["label_meaning"] = "verified"
            if not (data.get("label_column") or "").strip():
                self.add_error("label_column", "An attested gold file needs its label column.")
        elif (data.get("label_column") or "").strip() and not data.get("label_meaning"):
            # Unstated, imported labels were once taken for the teacher's; the lead says which they are.
            self.add_error(
                "label_meaning", "Say whether the labels are verified or another system's predictions."
            )
        if data.get("keep_no_columns"):
            data["keep_columns"] = []
        else:
            names = [c.strip() for c in (data.get("keep_columns") or "").split(",") if c.strip()]
            data["keep_columns"] = names or None
        return data

    def _clean_answer_file(self, data: dict, fmt: str | None, gold: str) -> None:
        data["label_column"] = ""
        task = self.task
        if gold == "attested":
            data["label_meaning"] = "verified"
            if fmt not in task.answer_formats:
                self.add_error(
                    "gold", f"An attested gold file gives its answers as {task.answer_files_about}."
                )
        elif fmt in task.answer_formats and fmt != "jsonl" and not data.get("label_meaning"):
            # A file of this format always carries answers (CoNLL); the lead says what they are.
            self.add_error(
                "label_meaning",
                f"Say whether the {task.answer_noun} are verified or another system's predictions.",
            )


def recommended_gold_size(available: int) -> int:
    """A first gold draw: a tenth of the real examples, at least 20 (fewer makes every metric a
    guess) and at most 400 (an accuracy of 0.9 then has a 95 % interval of about ±3 points); never
    the whole corpus, since every drawn example leaves training for good."""
    if available <= 1:
        return max(available, 1)
    return max(1, min(400, max(20, round(available * 0.1)), available // 2))


class GoldDrawForm(forms.Form):
    """How many gold candidates to draw, and from which examples."""

    size = forms.IntegerField(min_value=1, max_value=100_000, label="Draw")
    source = forms.ChoiceField(label="from", choices=[("all", "the whole project")])
    stratified = forms.BooleanField(required=False, label="stratified by proposed label")

    def __init__(self, *args, project=None, available: int = 200, **kwargs):
        self.recommended = recommended_gold_size(available)
        kwargs.setdefault("initial", {"size": self.recommended})
        super().__init__(*args, **kwargs)
        if project is not None and not project.task.uses_categories:
            del self.fields["stratified"]  # no categories to stratify by
        elif project is not None:
            # "label" for classification, "fields" for extraction (the set a text holds).
            noun = project.task.category_noun
            self.fields["stratified"].label = (
                f"stratified by proposed {noun}" if noun == "label" else f"stratified by the proposed {noun}s"
            )
            batches = project.import_batches.filter(status="succeeded", rows_created__gt=0).order_by("-pk")
            self.fields["source"].choices = [
                ("all", "the whole project"),
                ("filter", "the examples my review filter shows"),
            ] + [
                (f"batch:{b.pk}", f"import {b.file_name} ({b.created_at:%Y-%m-%d}, {b.rows_created:,} new)")
                for b in batches[:50]
            ]

    def clean_source(self) -> dict:
        """{"import_batch_id": ...} or {"use_filter": True} or {}."""
        value = self.cleaned_data["source"]
        if value.startswith("batch:"):
            return {"import_batch_id": int(value.removeprefix("batch:"))}
        return {"use_filter": True} if value == "filter" else {}


EXPORT_FORMAT_NAMES = {"jsonl": "JSONL", "csv": "CSV", "conll": "CoNLL BIO (labelled texts only)"}


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=[("jsonl", "JSONL"), ("csv", "CSV")], required=False)
    scope = forms.ChoiceField(
        choices=[
            ("all", "Everything but gold"),
            ("reviewed", "Reviewed examples (no gold)"),
            ("gold", "A gold set version"),
        ],
        required=False,
        help_text="Gold examples leave only in a gold set version's export.",
    )
    gold = forms.IntegerField(
        min_value=1, required=False, label="Gold version", help_text="Empty: the latest frozen version."
    )

    def __init__(self, *args, project: Project | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # The formats the project's task exports (CoNLL only for extraction); JSONL, which
        # carries the provenance, first and the default.
        formats = project.task.export_formats if project is not None else ("jsonl", "csv")
        self.formats = sorted(formats, key=lambda f: f != "jsonl")
        self.fields["format"].choices = [(f, EXPORT_FORMAT_NAMES.get(f, f.upper())) for f in self.formats]

    def clean(self):
        data = super().clean()
        data["format"] = data.get("format") or self.formats[0]
        data["scope"] = data.get("scope") or "all"
        return data
