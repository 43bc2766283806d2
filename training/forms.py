from __future__ import annotations

from django import forms

from training.models import TrainingRun, default_hyperparameters

DEFAULTS = default_hyperparameters()


class LaunchForm(forms.Form):
    label_source = forms.ChoiceField(
        choices=TrainingRun.LabelSource.choices, initial=TrainingRun.LabelSource.ALL_CURRENT
    )
    teacher_min_confidence = forms.FloatField(
        min_value=0, max_value=1, initial=0.0, label="Teacher confidence at least"
    )
    include_synthetic = forms.BooleanField(required=False, label="Also learn from synthetic examples")
    base_model = forms.ChoiceField(
        choices=(),
        required=False,
        help_text="Others are added by the operator (DISTILL_STUDENT_BASE_MODELS).",
    )
    epochs = forms.FloatField(min_value=0.1, max_value=100, initial=DEFAULTS["epochs"])
    learning_rate = forms.FloatField(min_value=1e-7, max_value=1, initial=DEFAULTS["learning_rate"])
    batch_size = forms.IntegerField(min_value=1, max_value=1024, initial=DEFAULTS["batch_size"])
    max_length = forms.IntegerField(
        min_value=8, max_value=512, initial=DEFAULTS["max_length"], help_text="Tokens per text."
    )
    seed = forms.IntegerField(initial=DEFAULTS["seed"])
    warmup_ratio = forms.FloatField(min_value=0, max_value=0.99, initial=DEFAULTS["warmup_ratio"])
    validation_fraction = forms.FloatField(
        min_value=0, max_value=0.5, initial=DEFAULTS["validation_fraction"]
    )
    class_weighting = forms.BooleanField(required=False, help_text="Weight rare labels up in the loss.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from training.services import base_model_choices

        self.fields["base_model"].choices = [("", "Bundled MiniLM-L6 (default)")] + [
            (name, name) for name in base_model_choices()
        ]

    def hyperparameters(self) -> dict:
        keys = [
            "epochs",
            "learning_rate",
            "batch_size",
            "max_length",
            "seed",
            "warmup_ratio",
            "validation_fraction",
            "class_weighting",
        ]
        return {k: self.cleaned_data[k] for k in keys}


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
    run = forms.IntegerField(min_value=1, label="Run number")
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
        from training.models import ServingConfig

        model = ServingConfig
        fields = [
            "fallback",
            "target_accuracy",
            "max_batch",
            "max_text_chars",
            "traffic_sample_rate",
            "drop_in_message",
            "hosting_usd_per_month",
            "compute_usd_per_hour",
            "monthly_volume",
            "api_price_per_call",
        ]
        # Written out: the generated ones read "Hosting usd per month", "Api price per call".
        labels = {
            "fallback": "When the student is unsure",
            "target_accuracy": "Target accuracy",
            "max_batch": "Texts per request, at most",
            "max_text_chars": "Characters per text, at most",
            "traffic_sample_rate": "Unsure texts kept for review (share, 0–1)",
            "drop_in_message": "Drop-in: the message to classify",
            "hosting_usd_per_month": "Hosting (USD per month)",
            "compute_usd_per_hour": "Training compute (USD per hour)",
            "monthly_volume": "Calls per month",
            "api_price_per_call": "API price per call (USD)",
        }
        help_texts = {
            "target_accuracy": (
                "The recommended threshold is the lowest whose gold accuracy reaches this "
                "with 95 % confidence."
            ),
            "traffic_sample_rate": "1 keeps every text the student was unsure of; 0 keeps none.",
        }
