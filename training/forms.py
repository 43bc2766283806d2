from __future__ import annotations

from django import forms

from training.models import MAX_BATCH_LIMIT, ServingConfig, TrainingRun, default_hyperparameters
from training.services.dataset import NOISE_HANDLING

DEFAULTS = default_hyperparameters()


# The shared wording; a task type says what its own students do (Task.student_about).
KIND_HELP = {
    TrainingRun.Kind.FINETUNE: (
        "Adapts the whole base model: the better choice for long texts and for answers that hinge on "
        "wording; minutes to an hour on a CPU."
    ),
    TrainingRun.Kind.QUICK: (
        "Embeds each text once with the frozen base model and fits a logistic regression: seconds to "
        "a minute. Use it to seed, to order review and to compare label sources."
    ),
    TrainingRun.Kind.ENSEMBLE: (
        "Averages a fine-tune's and a quick student's probabilities, with the weight chosen on their "
        "validation split."
    ),
}


def _only(*kinds: str) -> dict:
    # The launch form shows a field only for the run kinds that use it (runs.html's script).
    return {"data-kinds": " ".join(kinds)}


class LaunchForm(forms.Form):
    kind = forms.ChoiceField(
        choices=TrainingRun.Kind.choices,
        initial=TrainingRun.Kind.FINETUNE,
        label="Kind of student",
        widget=forms.RadioSelect,
    )
    first_member = forms.ChoiceField(
        choices=(), required=False, label="Average run", widget=forms.Select(attrs=_only("ensemble"))
    )
    second_member = forms.ChoiceField(
        choices=(), required=False, label="with run", widget=forms.Select(attrs=_only("ensemble"))
    )
    label_source = forms.ChoiceField(
        choices=TrainingRun.LabelSource.choices, initial=TrainingRun.LabelSource.ALL_CURRENT
    )
    teacher_min_confidence = forms.FloatField(
        min_value=0, max_value=1, initial=0.0, label="Teacher confidence at least"
    )
    include_synthetic = forms.BooleanField(required=False, label="Also learn from synthetic examples")
    noise_handling = forms.ChoiceField(
        choices=list(NOISE_HANDLING.items()),
        initial="none",
        required=False,
        label="Unreviewed labels",
        help_text="Reviewed labels always count in full. Pruning and masking use the latest label-quality run.",
    )
    base_model = forms.ChoiceField(
        choices=(),
        required=False,
        help_text="Others are added by the operator (DISTILL_STUDENT_BASE_MODELS).",
    )
    epochs = forms.FloatField(min_value=0.1, max_value=100, initial=DEFAULTS["epochs"])
    learning_rate = forms.FloatField(min_value=1e-7, max_value=1, initial=DEFAULTS["learning_rate"])
    batch_size = forms.IntegerField(min_value=1, max_value=1024, initial=DEFAULTS["batch_size"])
    max_length = forms.IntegerField(
        min_value=8,
        max_value=512,
        initial=DEFAULTS["max_length"],
        label="Tokens per text, at most",
        help_text="Longer texts are cut.",
    )
    seed = forms.IntegerField(initial=DEFAULTS["seed"], help_text="The same seed and data give the same run.")
    warmup_ratio = forms.FloatField(
        min_value=0,
        max_value=0.99,
        initial=DEFAULTS["warmup_ratio"],
        label="Warm-up share",
        help_text="The share of steps over which the learning rate rises to its value.",
    )
    validation_fraction = forms.FloatField(
        min_value=0,
        max_value=0.5,
        initial=DEFAULTS["validation_fraction"],
        label="Held-out share",
        help_text="The share of the training set kept apart to check the run as it trains.",
    )
    class_weighting = forms.BooleanField(required=False, help_text="Weight rare labels up in the loss.")
    case_feature = forms.BooleanField(
        required=False,
        label="Mark capitals",
        help_text=(
            "The bundled MiniLM is uncased: this gives it back which words start with a capital, often "
            "the only sign of a name in noisy text."
        ),
    )
    label_smoothing = forms.FloatField(
        min_value=0,
        max_value=0.5,
        required=False,
        label="Label smoothing",
        help_text=(
            "Share of each label spread over the others, so a wrong teacher label pulls less; "
            "recommended when teacher labels are trained on (see the recommendation above)."
        ),
    )
    C = forms.FloatField(
        min_value=1e-4,
        max_value=1e4,
        required=False,
        label="Regularisation C",
        help_text="Larger fits the labels more closely, smaller generalises more.",
        widget=forms.NumberInput(attrs=_only("quick")),
    )

    # Which fields each run kind uses; the others are hidden for it and ignored.
    KIND_FIELDS = {
        # The quick student embeds at its own 128 tokens, the length the base model was trained on.
        "finetune": {
            "epochs",
            "learning_rate",
            "batch_size",
            "warmup_ratio",
            "max_length",
            "case_feature",
            "label_smoothing",
        },
        "quick": {"C"},
    }
    SHARED_FIELDS = (
        "noise_handling",
        "label_source",
        "teacher_min_confidence",
        "include_synthetic",
        "base_model",
        "seed",
        "validation_fraction",
        "class_weighting",
    )

    def __init__(self, *args, project=None, advice: dict | None = None, times: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        from training.services import (
            base_model_choices,
            default_ensemble_members,
            ensemble_candidates,
            run_defaults,
        )

        self.fields["base_model"].choices = [("", "Bundled MiniLM-L6 (default)")] + [
            (name, name) for name in base_model_choices()
        ]
        for names in self.KIND_FIELDS.values():
            for name in names - {"C", "case_feature", "label_smoothing"}:
                self.fields[name].widget.attrs.update(_only("finetune"))
        self.fields["case_feature"].widget.attrs.update(_only("finetune"))
        self.fields["label_smoothing"].widget.attrs.update(_only("finetune"))
        for name in self.SHARED_FIELDS:
            self.fields[name].widget.attrs.update(_only("finetune", "quick"))
        if project is None:
            return
        task = project.task
        if not task.handles_label_noise:
            del self.fields["noise_handling"]
        elif not task.masks_label_noise:
            self.fields["noise_handling"].choices = [
                (name, text) for name, text in NOISE_HANDLING.items() if "mask" not in name
            ]
        if "case_feature" not in run_defaults(task):  # a task whose student has no use for capitals
            del self.fields["case_feature"]
        if "label_smoothing" not in run_defaults(task):  # a task whose student has no smoothing
            del self.fields["label_smoothing"]
        for name in task.unused_training_fields:
            self.fields.pop(name, None)
        for name, text in task.training_field_help.items():
            if name in self.fields:
                self.fields[name].help_text = text
        if "class_weighting" in self.fields and "class_weighting" not in task.training_field_help:
            self.fields["class_weighting"].help_text = f"Weight rare {task.category_noun}s up in the loss."
        kinds = [k for k in TrainingRun.Kind if k in task.student_kinds]
        self.fields["kind"].choices = [(k.value, k.label) for k in kinds]
        # The task may say what its kinds are and which this server can train (its base models).
        # Each with how long it would take on this data with the defaults (the view measures it).
        self.kind_help = {
            k.value: (
                task.student_about(k.value, base_model_choices()) or KIND_HELP[k],
                (times or {}).get(k.value),
            )
            for k in kinds
        }
        for name, value in run_defaults(task).items():
            if name in self.fields:
                self.fields[name].initial = value
        quick_defaults = run_defaults(task, "quick") if "quick" in task.student_kinds else {}
        self.fields["C"].initial = quick_defaults.get("C")
        if advice:  # the measured recommendation (training.services.recommended_run) is the default
            from training.services import recommended_run

            recommended = recommended_run(project, advice=advice)
            self.fields["label_source"].initial = recommended["label_source"]
            self.fields["teacher_min_confidence"].initial = recommended["teacher_min_confidence"]
            for name, value in recommended["hyperparameters"].items():
                if name in self.fields:
                    self.fields[name].initial = value
        if "ensemble" in task.student_kinds:
            candidates = ensemble_candidates(project)
            choices = [
                (str(r.number), f"Run {r.number} ({r.get_kind_display().split(' (')[0].lower()})")
                for r in candidates
            ]
            self.fields["first_member"].choices = choices
            self.fields["second_member"].choices = choices
            chosen = default_ensemble_members(project)
            if chosen:
                self.fields["first_member"].initial = str(chosen[0].number)
                self.fields["second_member"].initial = str(chosen[1].number)
            elif len(candidates) >= 2:
                self.fields["first_member"].initial = str(candidates[0].number)
                self.fields["second_member"].initial = str(candidates[1].number)

    @classmethod
    def described(cls, kind: str, hyperparameters: dict) -> list[tuple[str, str]]:
        """A run's settings as the launch form names them, only those its kind uses (a quick
        run has no epochs or learning rate), for the run page."""
        used = {"seed", "validation_fraction", "class_weighting", "noise_handling"} | cls.KIND_FIELDS.get(
            kind, set()
        )
        rows = []
        for name, value in hyperparameters.items():
            if name not in used:
                continue
            field = cls.base_fields[name]
            label = field.label or name.replace("_", " ").capitalize()
            if isinstance(value, bool):
                shown = "yes" if value else "no"
            elif name in ("validation_fraction", "warmup_ratio", "label_smoothing"):
                shown = f"{float(value) * 100:g} %"
            elif name == "noise_handling":
                shown = str(NOISE_HANDLING.get(value, value))
            else:
                shown = f"{value:g}" if isinstance(value, float) else str(value)
            rows.append((label, shown))
        return rows

    def hyperparameters(self) -> dict:
        kind = self.cleaned_data["kind"]
        keys = {"seed", "validation_fraction", "class_weighting", "noise_handling"} | self.KIND_FIELDS.get(
            kind, set()
        )
        return {k: self.cleaned_data[k] for k in sorted(keys) if self.cleaned_data.get(k) not in (None, "")}

    def member_numbers(self) -> list[int]:
        return [
            int(self.cleaned_data[n]) for n in ("first_member", "second_member") if self.cleaned_data.get(n)
        ]


class EvaluateForm(forms.Form):
    gold = forms.IntegerField(
        min_value=1, required=False, label="Gold version", help_text="Empty: the latest frozen one."
    )
    target_accuracy = forms.FloatField(min_value=0.5, max_value=1.0, initial=0.95)

    def __init__(self, *args, task=None, **kwargs):
        super().__init__(*args, **kwargs)
        if task is not None:  # "Target accuracy", or "Target exact match" for span answers
            self.fields["target_accuracy"].label = f"Target {task.right_name}"


class PromoteForm(forms.Form):
    run = forms.IntegerField(
        min_value=1, label="Run", error_messages={"required": "Choose the run to promote in the list."}
    )
    threshold = forms.FloatField(
        min_value=0,
        max_value=1,
        required=False,
        help_text="Empty: the recommended one (its gold accuracy reaches the target with 95 % confidence).",
    )


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, initial="production")


class ServingConfigForm(forms.ModelForm):
    class Meta:
        model = ServingConfig
        fields = [
            "fallback",
            "target_accuracy",
            "max_batch",
            "max_text_chars",
            "traffic_sample_rate",
            "drop_in_message",
            "drop_in_unsure",
            "drop_in_abstain_content",
            "requests_per_minute",
            "monthly_fallback_budget_usd",
            "hosting_usd_per_month",
            "compute_usd_per_hour",
            "monthly_volume",
            "api_price_per_call",
            "review_usd_per_hour",
        ]
        # Written out: the generated ones read "Hosting usd per month", "Api price per call".
        labels = {
            "fallback": "When the student is unsure",
            "target_accuracy": "Target accuracy",
            "max_batch": "Texts per request, at most",
            "max_text_chars": "Characters per text, at most",
            "traffic_sample_rate": "Unsure texts kept for review (share, 0–1)",
            "drop_in_message": "Drop-in: the message to classify",
            "drop_in_unsure": "Drop-in: when the student is unsure and no fallback answered",
            "drop_in_abstain_content": "Drop-in: abstain text",
            "requests_per_minute": "Requests per minute, per token",
            "monthly_fallback_budget_usd": "Teacher fallback budget (USD per month)",
            "hosting_usd_per_month": "Hosting (USD per month)",
            "compute_usd_per_hour": "Training compute (USD per hour)",
            "monthly_volume": "Calls per month",
            "api_price_per_call": "API price per call (USD)",
            "review_usd_per_hour": "Expert review (USD per hour)",
        }
        help_texts = {
            "target_accuracy": (
                "The recommended threshold is the lowest whose gold accuracy reaches this "
                "with 95 % confidence."
            ),
            "traffic_sample_rate": "1 keeps every text the student was unsure of; 0 keeps none.",
            "max_batch": f"At most {MAX_BATCH_LIMIT}.",
        }

    def __init__(self, *args, task=None, **kwargs):
        super().__init__(*args, **kwargs)
        if task is not None:  # "Target accuracy", or "Target exact match" for span answers
            self.fields["target_accuracy"].label = f"Target {task.right_name}"
            self.fields["target_accuracy"].help_text = (
                f"The share of the student's answers that must be right ({task.right_name}): the recommended "
                f"threshold is the lowest whose {task.right_name} on gold reaches this with 95 % confidence; "
                "below it, texts go to the fallback."
            )

    def clean(self) -> dict:
        data = super().clean()
        unsure = data.get("drop_in_unsure")
        if (
            unsure == ServingConfig.DropInUnsure.ABSTAIN
            and not (data.get("drop_in_abstain_content") or "").strip()
        ):
            self.add_error("drop_in_abstain_content", "Write the text the drop-in answers when it abstains.")
        return data
