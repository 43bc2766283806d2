from __future__ import annotations

from django.contrib import admin

from distillapp.models import own_fields_first
from training.models import Evaluation, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "project",
        "number",
        "status",
        "label_source",
        "device",
        "train_seconds",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "label_source", "project"]
    readonly_fields = own_fields_first(TrainingRun)

    def has_add_permission(self, request):
        return False  # launched from the project page or the projects' admin action


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ["project", "agent", "gold_set", "subject", "accuracy", "created_at"]
    list_filter = ["subject", "project"]
    readonly_fields = [f.name for f in Evaluation._meta.fields]

    def has_add_permission(self, request):
        return False
