from __future__ import annotations

from django.contrib import admin, messages

from annotation.admin import ProjectAdmin
from distillapp.models import own_fields_first
from training.models import Evaluation, EvaluationJob, ExportJob, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "project",
        "number",
        "status",
        "label_source",
        "device",
        "train_time",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "label_source", "project"]
    # train_seconds is a float measured to the microsecond: shown rounded (67.8 s, not 67.78919281600008).
    readonly_fields = [
        "train_time" if name == "train_seconds" else name for name in own_fields_first(TrainingRun)
    ]
    exclude = ["train_seconds"]  # shown as train_time; never edited here

    @admin.display(description="Train time", ordering="train_seconds")
    def train_time(self, run: TrainingRun) -> str:
        return "—" if run.train_seconds is None else f"{run.train_seconds:,.1f} s"

    def has_add_permission(self, request):
        return False  # launched from the project page or the projects' admin action


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ["project", "agent", "gold_set", "subject", "accuracy", "created_at"]
    list_filter = ["subject", "project"]
    readonly_fields = [f.name for f in Evaluation._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(EvaluationJob)
class EvaluationJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "project", "run", "gold_version", "status", "result", "created_by", "created_at"]
    list_filter = ["status", "project"]
    readonly_fields = own_fields_first(EvaluationJob)

    def has_add_permission(self, request):
        return False  # started from the run page


@admin.register(ExportJob)
class ExportJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "project", "run", "gold_version", "status", "created_by", "created_at"]
    list_filter = ["status", "project"]
    readonly_fields = own_fields_first(ExportJob)

    def has_add_permission(self, request):
        return False  # started from the deploy page


@admin.action(description="Launch training run (the launch form's recommended settings)")
def launch_training_run(modeladmin, request, queryset):
    from django.db import transaction

    from training import services

    for project in queryset:
        try:
            with transaction.atomic():
                # Leads only: run_create refuses anyone else, superusers included as leads.
                # The launch form's recommendation (label source, noise handling, smoothing),
                # not bare defaults: one function decides both.
                run = services.run_create(
                    project=project, user=request.user, **services.recommended_run(project)
                )
                services.run_start(run=run)
        except services.TrainingError as exc:
            modeladmin.message_user(request, f"{project}: {exc}", level=messages.ERROR)
        else:
            hp = run.hyperparameters
            settings = (
                f"{run.get_label_source_display().lower()}, noise handling {hp.get('noise_handling', 'none')}"
            )
            if "label_smoothing" in hp:
                settings += f", label smoothing {hp['label_smoothing']}"
            modeladmin.message_user(
                request,
                f"{project}: run {run.number} queued with the launch form's recommended settings ({settings}).",
                level=messages.SUCCESS,
            )


# The projects' admin belongs to annotation; the action that trains is this app's to add.
ProjectAdmin.actions = [*ProjectAdmin.actions, launch_training_run]
