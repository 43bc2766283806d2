"""Project forms: creating a project with its task type's own settings, settings, labels, members."""

from __future__ import annotations

from django import forms
from django.utils.text import slugify

from annotation.models import (
    RESERVED_KEYS,
    Membership,
    Project,
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


class InvitationForm(forms.Form):
    username = forms.CharField(
        max_length=150,
        label="New user name",
        help_text="Letters, digits and @ . + - _ only. They choose their own password from the link.",
    )
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.REVIEWER)
