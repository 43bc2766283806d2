from __future__ import annotations

from django.contrib import admin

from annotation.models import (
    Example,
    GoldSet,
    GoldSetItem,
    ImportBatch,
    Label,
    LabelingJob,
    Membership,
    Project,
    PromptVersion,
    Proposal,
    Review,
    SyntheticJob,
    TeacherConfig,
)
from distillapp.models import own_fields_first


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


class LabelInline(admin.TabularInline):
    model = Label
    extra = 1
    fields = ["name", "description", "key", "order"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "task_type", "created_by", "created_at"]
    list_filter = ["task_type"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_by", "created_at", "updated_at"]
    inlines = [LabelInline, MembershipInline]
    # The training app adds "Launch training run" (training/admin.py): annotation never imports training.
    actions: list = []

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__name"]
    autocomplete_fields = ["user", "project"]
    readonly_fields = ["created_at"]


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "key", "order"]
    list_filter = ["project"]
    search_fields = ["name", "description"]


@admin.register(ImportBatch)
class ImportBatchAdmin(admin.ModelAdmin):
    list_display = [
        "file_name",
        "project",
        "format",
        "status",
        "rows_read",
        "rows_created",
        "rows_duplicate",
        "rows_invalid",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "format", "project"]
    search_fields = ["file_name", "sha256"]
    readonly_fields = [f.name for f in ImportBatch._meta.fields]

    def has_add_permission(self, request):
        return False  # batches are made by uploads and the import command


@admin.register(Example)
class ExampleAdmin(admin.ModelAdmin):
    list_display = ["pk", "short_text", "project", "source", "is_gold", "external_id", "created_at"]
    list_filter = ["source", "is_gold", "project"]
    search_fields = ["text", "external_id", "content_hash"]
    readonly_fields = ["content_hash", "import_batch", "created_at"]
    list_select_related = ["project"]
    show_full_result_count = False  # COUNT(*) on millions of rows is slow

    @admin.display(description="text")
    def short_text(self, obj: Example) -> str:
        return obj.text[:90]


@admin.register(Proposal)
class ProposalAdmin(admin.ModelAdmin):
    list_display = ["pk", "example_id", "agent", "value", "confidence", "cost_usd", "error", "created_at"]
    list_filter = ["agent", "example__project"]
    search_fields = ["agent", "example__text"]
    readonly_fields = [f.name for f in Proposal._meta.fields]
    show_full_result_count = False


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["pk", "example_id", "reviewer", "kind", "verdict", "value", "is_bulk", "created_at"]
    list_filter = ["kind", "verdict", "is_bulk", "example__project"]
    search_fields = ["reviewer__username", "example__text"]
    readonly_fields = [f.name for f in Review._meta.fields]
    show_full_result_count = False


class GoldSetItemInline(admin.TabularInline):
    model = GoldSetItem
    extra = 0
    raw_id_fields = ["example"]

    def has_change_permission(self, request, obj=None):
        return obj is None or not obj.is_frozen

    def has_add_permission(self, request, obj=None):
        return obj is None or not obj.is_frozen

    def has_delete_permission(self, request, obj=None):
        return obj is None or not obj.is_frozen


@admin.register(GoldSet)
class GoldSetAdmin(admin.ModelAdmin):
    list_display = ["project", "version", "frozen_at", "frozen_by", "created_at"]
    list_filter = ["project"]
    readonly_fields = ["frozen_at", "frozen_by", "created_at"]
    inlines = [GoldSetItemInline]


@admin.register(TeacherConfig)
class TeacherConfigAdmin(admin.ModelAdmin):
    list_display = ["project", "provider", "model", "concurrency", "requests_per_minute", "updated_at"]
    list_filter = ["provider"]
    search_fields = ["project__name", "model"]


@admin.register(PromptVersion)
class PromptVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "version", "few_shot", "created_by", "created_at"]
    list_filter = ["project", "few_shot"]
    readonly_fields = ["created_by", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        # A version with answers is history: show it, never edit it.
        if obj is not None and obj.is_used:
            return [f.name for f in PromptVersion._meta.fields]
        return self.readonly_fields


@admin.register(LabelingJob)
class LabelingJobAdmin(admin.ModelAdmin):
    list_display = [
        "pk",
        "project",
        "status",
        "selection",
        "total",
        "done",
        "failed",
        "cached",
        "cost_usd",
        "created_at",
    ]
    list_filter = ["status", "selection", "project"]
    readonly_fields = own_fields_first(LabelingJob)

    def has_add_permission(self, request):
        return False


@admin.register(SyntheticJob)
class SyntheticJobAdmin(admin.ModelAdmin):
    list_display = [
        "pk",
        "project",
        "status",
        "requested",
        "created",
        "exact_duplicates",
        "near_duplicates",
        "invalid",
        "cost_usd",
    ]
    list_filter = ["status", "project"]
    readonly_fields = own_fields_first(SyntheticJob)

    def has_add_permission(self, request):
        return False
