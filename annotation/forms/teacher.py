"""Teacher forms: the teacher's settings, the prompt, a labelling run and synthetic data."""

from __future__ import annotations

import json

from django import forms

from annotation import teacher
from annotation.models import (
    LabelingJob,
    PromptVersion,
    SyntheticJob,
    TeacherConfig,
)


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

    def __init__(self, *args, task=None, **kwargs):
        super().__init__(*args, **kwargs)
        if task is not None and task.offline_teacher_name:  # the task's own offline teacher, by name
            self.fields["provider"].choices = [
                (
                    value,
                    f"Offline {task.offline_teacher_name} teacher (no API key)"
                    if value == TeacherConfig.Provider.EMBEDDING
                    else name,
                )
                for value, name in self.fields["provider"].choices
            ]

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
