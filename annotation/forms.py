from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.utils.text import slugify

from annotation import corpus, teacher
from annotation.models import (
    RESERVED_KEYS,
    LabelingJob,
    Membership,
    Project,
    PromptVersion,
    SyntheticJob,
    TeacherConfig,
)
from tasks import OptionField, task_choices, task_class


def option_form_field(option: OptionField, *, attrs: dict | None = None) -> forms.Field:
    """The form field of one of a task type's project settings (tasks.base.OptionField)."""
    common = {"label": option.label, "help_text": option.help, "initial": option.default}
    if option.kind == "int":
        return forms.IntegerField(
            min_value=option.min_value,
            max_value=option.max_value,
            widget=forms.NumberInput(attrs=attrs),
            **common,
        )
    if option.kind == "choice":
        return forms.ChoiceField(choices=option.choices, widget=forms.Select(attrs=attrs), **common)
    return forms.CharField(
        required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 3, **(attrs or {})}), **common
    )


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=80, required=False, help_text="Used in URLs and the API; made from the name if empty."
    )
    task_type = forms.ChoiceField(
        choices=task_choices,  # every registered task type (tasks.TASK_TYPES)
        initial="classification",
        label="Task",
        help_text=(
            "Classification: one label per text. Extraction: fields marked as spans in the text "
            "(dates, amounts, names). Summarisation: a short summary of each text, written to a "
            "target length. It cannot be changed later."
        ),
    )
    guidelines = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        required=False,
        help_text="Markdown. Shown to reviewers beside every example.",
    )
    labels = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "Billing: charges, invoices, refunds"}),
        required=False,
        help_text="One label (for extraction: one field) per line, as “Name: description”.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Each task type's own settings, shown (static/js/project_form.js) only while that type
        # is chosen; the labels box hides for a type without categories.
        self.fields["task_type"].widget.attrs["data-no-labels"] = " ".join(
            t for t, _ in task_choices() if not task_class(t).uses_categories
        )
        for task_type, _ in task_choices():
            for option in task_class(task_type).option_fields:
                self.fields[f"{task_type}__{option.name}"] = option_form_field(
                    option, attrs={"data-task-type": task_type}
                )
                self.fields[f"{task_type}__{option.name}"].required = False

    def clean(self):
        data = super().clean()
        if data.get("name") and not data.get("slug"):
            data["slug"] = slugify(data["name"])[:80]
        if data.get("slug") and Project.objects.filter(slug=data["slug"]).exists():
            self.add_error("slug", "A project with this slug exists; choose another.")
        task_type = data.get("task_type")
        if task_type:
            task = task_class(task_type)
            data["task_options"] = {
                o.name: data.get(f"{task_type}__{o.name}")
                for o in task.option_fields
                if data.get(f"{task_type}__{o.name}") not in (None, "")
            }
        return data

    def clean_labels(self) -> list[tuple[str, str]]:
        labels, seen = [], set()
        for number, line in enumerate(self.cleaned_data["labels"].splitlines(), 1):
            if not line.strip():
                continue
            name, _, description = line.partition(":")
            name = name.strip()
            if not name or len(name) > 100:
                raise forms.ValidationError(f"Line {number}: a label needs a name of 1-100 characters.")
            if name in seen:
                raise forms.ValidationError(f"Line {number}: the label {name!r} is listed twice.")
            seen.add(name)
            labels.append((name, description.strip()))
        return labels


class ProjectSettingsForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = [
            "name",
            "guidelines",
            "review_order",
            "review_budget",
            "review_budget_hours",
            "refresh_every",
            "audit_share",
        ]
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 12})}
        labels = {
            "review_order": "Review order",
            "review_budget": "Review budget (items)",
            "review_budget_hours": "or (reviewer hours)",
            "refresh_every": "Refresh the queue every (verdicts)",
            "audit_share": "Random audit share",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from annotation.review import STRATEGIES

        self.fields["review_order"] = forms.ChoiceField(
            choices=list(STRATEGIES.items()),
            label="Review order",
            help_text=(
                "What reviewers see first until they choose another order. Where review pays most: "
                "lowest teacher confidence first until the label-error flags are measured to cover "
                "most of the teacher's errors (against the random audit), then the labels training "
                "would keep, least certain first, since pruning already leaves out the flagged ones."
            ),
        )
        self.fields["audit_share"].min_value = 0
        self.fields["audit_share"].max_value = 1
        # The project's task type's own settings (a summary's target length and style).
        task = task_class(self.instance.task_type)
        for option in task.option_fields:
            field = self.fields[f"option__{option.name}"] = option_form_field(option)
            field.initial = (self.instance.task_options or {}).get(option.name, option.default)
            field.required = option.kind != "text"

    def save(self, commit: bool = True):
        project = super().save(commit=False)
        options = dict(project.task_options or {})
        for option in task_class(project.task_type).option_fields:
            options[option.name] = self.cleaned_data.get(f"option__{option.name}")
        project.task_options = options
        project.forget_task()
        if commit:
            project.save()
        return project

    def clean_review_budget_hours(self) -> float | None:
        hours = self.cleaned_data["review_budget_hours"]
        if hours is not None and not 0 < hours <= 100_000:
            raise forms.ValidationError(
                "A number of hours above 0 (1.5: an hour and a half), or empty for none."
            )
        return hours

    def clean_audit_share(self) -> float:
        share = self.cleaned_data["audit_share"]
        if not 0 <= share <= 1:
            raise forms.ValidationError("A share between 0 and 1 (0.1: one card in ten).")
        return share


class LabelForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    key = forms.CharField(max_length=1, required=False, help_text="One key; empty picks the next free one.")
    order = forms.IntegerField(min_value=0, required=False)

    def clean_key(self) -> str:
        key = self.cleaned_data["key"].strip().lower()
        if key in RESERVED_KEYS:
            raise forms.ValidationError(
                f"{key!r} is kept for review actions ({', '.join(sorted(RESERVED_KEYS))})."
            )
        return key


class MembershipForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.REVIEWER)


FORMAT_CHOICES = [("", "From the file name")] + [(f, f.upper()) for f in corpus.FORMATS]
FORMAT_NAMES = {"conll": "CoNLL BIO (token, tab, tag)"}


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
    file = forms.FileField(help_text="CSV, TSV, JSONL or TXT (one example per line), UTF-8.")
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

    def __init__(self, *args, project: Project | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.task = task = project.task if project is not None else None
        if task is None:
            return
        # What the task reads: its formats, and where a file's answers are.
        self.fields["format"].choices = [("", "From the file name")] + [
            (f, FORMAT_NAMES.get(f, f.upper())) for f in corpus.formats_for(task)
        ]
        if task.import_help:
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
        if upload.size > settings.IMPORT_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {settings.IMPORT_MAX_UPLOAD_BYTES:,}."
            )
        return upload

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload and not data.get("format") and corpus.guess_format(upload.name) is None:
            self.add_error("format", "Cannot tell the format from the file name; choose one.")
        gold = data.get("gold") or ""
        fmt = data.get("format") or (corpus.guess_format(upload.name) if upload else None)
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


class TeacherConfigForm(forms.ModelForm):
    class Meta:
        model = TeacherConfig
        fields = [
            "provider",
            "model",
            "base_url",
            "api_key_env",
            "temperature",
            "max_tokens",
            "price_input_per_mtok",
            "price_output_per_mtok",
            "concurrency",
            "requests_per_minute",
            "timeout_seconds",
            "max_attempts",
            "structured_output",
            "use_logprobs",
            "self_consistency_samples",
        ]
        labels = {
            "base_url": "Base URL",
            "api_key_env": "API key variable",
            "price_input_per_mtok": "Price in (USD per million tokens)",
            "price_output_per_mtok": "Price out (USD per million tokens)",
            "timeout_seconds": "Timeout (seconds)",
            "self_consistency_samples": "Self-consistency samples",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Only what the operator allows (DISTILL_TEACHER_API_KEY_VARS / _BASE_URLS) can be
        # chosen: a free-text name or address would let a lead send any server secret anywhere.
        current = self.instance
        key_choices = [(name, name) for name in teacher.allowed_api_key_vars()]
        if current.api_key_env and current.api_key_env not in dict(key_choices):
            key_choices.append((current.api_key_env, f"{current.api_key_env} (no longer allowed)"))
        self.fields["api_key_env"] = forms.ChoiceField(
            choices=key_choices,
            label="API key variable",
            help_text="Environment variables the operator allows for teacher keys; the key itself is never shown.",
        )
        url_choices = [("", "Server default (OPENAI_BASE_URL, else OpenAI)")]
        url_choices += [(url, url) for url in teacher.allowed_base_urls()]
        if current.base_url and current.base_url.rstrip("/") not in dict(url_choices):
            url_choices.append((current.base_url, f"{current.base_url} (no longer allowed)"))
        self.fields["base_url"] = forms.ChoiceField(
            choices=url_choices,
            required=False,
            label="Base URL",
            help_text="Endpoints the operator allows (DISTILL_TEACHER_BASE_URLS).",
        )
        # The offline choice names the teacher the project's task type gets.
        task = current.project.task if current.project_id else None
        if task is not None and task.offline_teacher_name:
            offline = f"Offline {task.offline_teacher_name} teacher (no API key)"
            self.fields["provider"].choices = [
                (value, offline if value == TeacherConfig.Provider.EMBEDDING else name)
                for value, name in self.fields["provider"].choices
            ]

    def clean(self):
        data = super().clean()
        problem = teacher.credentials_problem(
            api_key_env=data.get("api_key_env") or "", base_url=data.get("base_url") or ""
        )
        if problem:
            raise forms.ValidationError(problem)
        return data

    def clean_concurrency(self) -> int:
        value = self.cleaned_data["concurrency"]
        if not 1 <= value <= 256:
            raise forms.ValidationError("Between 1 and 256.")
        return value

    def clean_max_attempts(self) -> int:
        value = self.cleaned_data["max_attempts"]
        if not 1 <= value <= 20:
            raise forms.ValidationError("Between 1 and 20.")
        return value

    def clean_temperature(self) -> float:
        value = self.cleaned_data["temperature"]
        if not 0 <= value <= 2:
            raise forms.ValidationError("Between 0 and 2.")
        return value


class PromptForm(forms.Form):
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))
    few_shot = forms.ChoiceField(choices=PromptVersion.FewShot.choices, label="Few-shot examples")
    few_shot_k = forms.IntegerField(min_value=1, max_value=50, label="How many examples")
    few_shot_per_label = forms.IntegerField(min_value=1, max_value=20, label="At most per label")
    fixed_examples = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "Billing: I was charged twice"}),
        required=False,
        help_text="For the fixed strategy: one per line, “Label: text”, or a JSON object with the "
        "text and the answer as the teacher writes it: "
        '{"text": "I was charged twice", "label": "Billing"}.',
    )

    def __init__(self, *args, task=None, example_line: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        if task is not None and task.label_column != "category":
            # An answer that is not one label name: fixed examples are JSON lines, shown with
            # one of this project's own answers as the teacher writes it.
            self.fields["few_shot_per_label"].label = "At most per answer shape"
            self.fields["fixed_examples"].help_text = (
                "For the fixed strategy: one JSON object per line, the text and the answer as the "
                "teacher writes it (the placeholder shows one of this project's answers)."
            )
            self.fields["fixed_examples"].widget.attrs["placeholder"] = (
                example_line or '{"text": "...", <the answer\'s keys>}'
            )

    def clean_fixed_examples(self) -> list[dict]:
        """``[{"label", "text"}]`` from "Label: text" lines, ``[{"text", "reply"}]`` from JSON lines;
        the teacher's task checks the answers when the prompt is saved."""
        examples = []
        for number, line in enumerate(self.cleaned_data["fixed_examples"].splitlines(), 1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise forms.ValidationError(f"Line {number}: not valid JSON ({exc.msg}).") from None
                text = obj.pop("text", None) if isinstance(obj, dict) else None
                if not isinstance(text, str) or not text.strip() or not obj:
                    raise forms.ValidationError(
                        f"Line {number}: write a JSON object with the text and the answer, "
                        '{"text": "...", <the answer as the teacher writes it>}.'
                    )
                examples.append({"text": text.strip(), "reply": obj})
                continue
            label, sep, text = line.partition(":")
            if not sep or not text.strip():
                raise forms.ValidationError(f"Line {number}: write “Label: text” or a JSON object.")
            examples.append({"label": label.strip(), "text": text.strip()})
        return examples


class LabelingForm(forms.Form):
    selection = forms.ChoiceField(
        choices=LabelingJob.Selection.choices, initial=LabelingJob.Selection.UNLABELLED
    )
    sample_size = forms.IntegerField(min_value=1, required=False, help_text="For a random sample.")
    search = forms.CharField(max_length=200, required=False, help_text="For a text search.")
    provider = forms.ChoiceField(
        choices=[("", "The project's teacher")] + list(TeacherConfig.Provider.choices), required=False
    )

    def clean(self):
        data = super().clean()
        if data.get("selection") == LabelingJob.Selection.SAMPLE and not data.get("sample_size"):
            self.add_error("sample_size", "Give the sample size.")
        if data.get("selection") == LabelingJob.Selection.SEARCH and not (data.get("search") or "").strip():
            self.add_error("search", "Give the text to search for.")
        return data


class SyntheticForm(forms.Form):
    labels = forms.MultipleChoiceField(
        choices=[], required=False, widget=forms.CheckboxSelectMultiple, help_text="None ticked: every label."
    )
    per_label = forms.IntegerField(min_value=1, max_value=1000, initial=20, label="Examples per label")
    personas = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        help_text="Who writes the texts, one per line. Empty: a built-in mix.",
    )
    tones = forms.CharField(required=False, help_text="Comma-separated, e.g. polite, angry, confused.")
    min_words = forms.IntegerField(min_value=1, max_value=2000, initial=5)
    max_words = forms.IntegerField(min_value=1, max_value=2000, initial=60)
    noise = forms.ChoiceField(choices=SyntheticJob.Noise.choices, initial=SyntheticJob.Noise.LIGHT)
    difficulty = forms.ChoiceField(
        choices=SyntheticJob.Difficulty.choices, initial=SyntheticJob.Difficulty.MIXED
    )
    seed_with_real = forms.BooleanField(
        required=False, initial=True, label="Show the LLM a few real texts for style"
    )
    near_duplicate_threshold = forms.FloatField(min_value=0.5, max_value=1.0, initial=0.92)

    def __init__(self, *args, project=None, **kwargs):
        super().__init__(*args, **kwargs)
        if project is not None and not project.task.uses_categories:
            # No categories: the lead names the topics the texts are about.
            noun = project.task.category_noun
            self.fields["labels"] = forms.CharField(
                widget=forms.Textarea(attrs={"rows": 3, "placeholder": "a late parcel\na double charge"}),
                label=f"{noun.capitalize()}s",
                help_text=f"What the texts are about, one {noun} per line.",
            )
            self.fields["per_label"].label = f"Examples per {noun}"
        elif project is not None:
            self.fields["labels"].choices = [(n, n) for n in project.labels.values_list("name", flat=True)]
            # The unit each call writes for: a label, or an extraction field (the texts hold
            # a value of it, and of any other field they happen to mention).
            noun = project.task.category_noun
            self.fields["labels"].label = f"{noun.capitalize()}s"
            self.fields["labels"].help_text = f"None ticked: every {noun}."
            self.fields["per_label"].label = f"Examples per {noun}"

    def clean(self):
        data = super().clean()
        if data.get("min_words") and data.get("max_words") and data["min_words"] > data["max_words"]:
            self.add_error("max_words", "Must be at least the minimum.")
        if isinstance(data.get("labels"), str):  # topics, one per line
            data["labels"] = [t.strip() for t in data["labels"].splitlines() if t.strip()]
        data["personas"] = [p.strip() for p in (data.get("personas") or "").splitlines() if p.strip()]
        data["tones"] = [t.strip() for t in (data.get("tones") or "").split(",") if t.strip()]
        return data
