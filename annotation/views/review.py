"""The review queue and the gold set pages."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation import review
from annotation.forms import GoldDrawForm
from annotation.models import (
    Example,
    GoldSet,
    Membership,
    Project,
    ReviewClaim,
)
from annotation.views._common import (
    _project_for_lead,
    _project_for_member,
)
from distillapp import rows

# --- review queue -------------------------------------------------------------------------------


REMAINING_CAP = 1000


def _queue_filter(request: HttpRequest, project: Project) -> review.QueueFilter:
    """The reviewer's queue settings: from the query string when given, else the session."""
    key = f"review:{project.pk}"
    saved = request.session.get(key, {})
    if "strategy" in request.GET:
        saved = {
            "strategy": request.GET.get("strategy")
            if request.GET.get("strategy") in review.STRATEGIES
            else "confidence",
            "label": request.GET.get("label", ""),
            "source": request.GET.get("source", ""),
            "min_confidence": _float_or_none(request.GET.get("min")),
            "max_confidence": _float_or_none(request.GET.get("max")),
            "search": request.GET.get("q", "").strip(),
        }
        request.session[key] = saved
        request.session[f"{key}:skipped"] = []
    return review.QueueFilter(**saved, skipped=request.session.get(f"{key}:skipped", []))


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _card_context(
    request: HttpRequest, project: Project, role: str, example: Example | None, filters
) -> dict:
    proposals = []
    student = None
    if example is not None:
        for proposal in example.proposals.order_by("-created_at", "-pk")[:10]:
            if proposal.agent.startswith("student:"):
                student = student or proposal
            else:
                proposals.append(proposal)
    teacher = next((p for p in proposals if p.is_valid), None)
    quality_run = project.quality_runs.first()
    rows.recover_shown([quality_run] if quality_run else [])
    return {
        "project": project,
        "is_lead": role == Membership.Role.LEAD,
        "example": example,
        "teacher": teacher,
        "proposals": proposals,
        "student": student,
        "labels": project.labels.all(),
        "filters": filters,
        "strategies": review.STRATEGIES,
        "strategy_name": review.STRATEGIES.get(filters.strategy, ""),
        "reviewed_today": review.reviewed_today(project=project, user=request.user),
        # Counting a big queue visits every row (12-22 ms at 100k); past the cap
        # the page says "1,000+" (bench/README.md, review queue).
        "remaining": review.queue(project, filters)[: REMAINING_CAP + 1].count(),
        "remaining_cap": REMAINING_CAP,
        "sources": Example.Source.choices,
        "quality_run": quality_run,
    }


def _render_card(request: HttpRequest, project: Project, role: str, filters, *, example=None) -> HttpResponse:
    if example is None:
        example = review.review_next(project=project, user=request.user, filters=filters)
    context = _card_context(request, project, role, example, filters)
    template = "annotation/review.html#card" if request.htmx else "annotation/review.html"
    return render(request, template, context)


@login_required
@require_GET
def review_queue(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    return _render_card(request, project, role, _queue_filter(request, project))


@login_required
@require_POST
def review_act(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    example = get_object_or_404(Example, project=project, pk=request.POST.get("example_id"), is_gold=False)
    try:
        review.review_record(
            example=example,
            user=request.user,
            verdict=request.POST.get("verdict", ""),
            label=request.POST.get("label"),
        )
    except review.ReviewError as exc:
        messages.error(request, str(exc))
        if request.htmx:
            return _render_card(request, project, role, _queue_filter(request, project), example=example)
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, _queue_filter(request, project))


@login_required
@require_POST
def review_skip(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    key = f"review:{project.pk}:skipped"
    skipped = request.session.get(key, [])
    example_id = request.POST.get("example_id", "")
    if example_id.isdigit():
        skipped = [*skipped, int(example_id)][-500:]
        request.session[key] = skipped
        ReviewClaim.objects.filter(example_id=int(example_id), user=request.user).delete()
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, _queue_filter(request, project))


@login_required
@require_POST
def review_undo(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    example = review.review_undo(project=project, user=request.user)
    if example is None:
        messages.info(request, "Nothing to undo.")
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, _queue_filter(request, project), example=example)


@login_required
def review_bulk(request: HttpRequest, slug: str) -> HttpResponse:
    """Accept every proposal in the current filter at or above a confidence, after a preview."""
    project = _project_for_lead(request, slug)
    filters = _queue_filter(request, project)
    threshold = _float_or_none(request.POST.get("threshold") or request.GET.get("threshold"))
    if threshold is None or not 0 <= threshold <= 1:
        threshold = 0.9
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        accepted = review.bulk_accept(
            project=project, user=request.user, filters=filters, threshold=threshold
        )
        messages.success(request, f"Accepted {accepted:,} proposals at confidence ≥ {threshold:.2f}.")
        return redirect("annotation:review", slug=project.slug)
    preview = review.bulk_accept_preview(project=project, filters=filters, threshold=threshold)
    return render(
        request,
        "annotation/review_bulk.html",
        {
            "project": project,
            "is_lead": True,
            "preview": preview,
            "filters": filters,
            "strategies": review.STRATEGIES,
        },
    )


# --- gold sets ---------------------------------------------------------------------------------------


@login_required
@require_GET
def gold(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = _project_for_member(request, slug)
    draft = review.gold_draft(project)
    frozen = project.gold_sets.filter(frozen_at__isnull=False).order_by("-version")
    frozen_status = [(g, review.gold_status(g)) for g in frozen[:5]]
    real_examples = (
        Example.objects.filter(project=project, is_gold=False)
        .exclude(source=Example.Source.SYNTHETIC)
        .count()
    )
    return render(
        request,
        "annotation/gold.html",
        {
            "project": project,
            "is_lead": role == Membership.Role.LEAD,
            "draft": draft,
            "status": review.gold_status(draft) if draft else None,
            "reject": review.REJECT,
            "frozen": frozen_status,
            "real_examples": real_examples,
            "draw_form": GoldDrawForm(project=project, available=real_examples),
        },
    )


@login_required
@require_POST
def gold_draw(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    form = GoldDrawForm(request.POST, project=project)
    if not form.is_valid():
        messages.error(request, "Give the number of examples to draw (1 to 100,000) and where from.")
        return redirect("annotation:gold", slug=project.slug)
    source = form.cleaned_data["source"]
    draft = review.gold_draw(
        project=project,
        size=form.cleaned_data["size"],
        stratified=form.cleaned_data["stratified"],
        import_batch_id=source.get("import_batch_id"),
        filters=_queue_filter(request, project) if source.get("use_filter") else None,
    )
    messages.success(
        request, f"Gold set v{draft.version} now has {draft.items.count():,} candidates to label blind."
    )
    return redirect("annotation:gold", slug=project.slug)


def _draft_or_404(project: Project) -> GoldSet:
    draft = review.gold_draft(project)
    if draft is None:
        raise Http404("No gold set is being labelled.")
    return draft


def _draft_item_or_404(draft: GoldSet, example_id: str | None) -> Example:
    """Only items of the gold set being labelled may get blind labels or adjudications."""
    if not (example_id or "").isdigit():
        raise Http404("No such gold item.")
    return get_object_or_404(Example, pk=int(example_id), gold_items__gold_set=draft)


def _skipped(request: HttpRequest, key: str, example: Example | None = None) -> list[int]:
    """Gold items this user skipped (session): they come back after the others."""
    skipped = request.session.get(key, [])
    if example is not None and example.pk not in skipped:
        skipped = [*skipped, example.pk][-500:]
        request.session[key] = skipped
    return skipped


@login_required
def gold_label(request: HttpRequest, slug: str) -> HttpResponse:
    """Blind labelling: no teacher proposal, no other reviewer's label."""
    project, role = _project_for_member(request, slug)
    draft = _draft_or_404(project)
    skipped_key = f"gold:{draft.pk}:skipped"
    if request.method == "POST":
        example = _draft_item_or_404(draft, request.POST.get("example_id"))
        verdict = request.POST.get("verdict", "correct")
        if verdict == "skip":
            _skipped(request, skipped_key, example)
            ReviewClaim.objects.filter(example=example, user=request.user).delete()
        else:
            try:
                review.gold_label_blind(
                    gold_set=draft,
                    example=example,
                    user=request.user,
                    label=request.POST.get("label", ""),
                    verdict=verdict,
                )
            except review.ReviewError as exc:
                messages.error(request, str(exc))
        if not request.htmx:
            return redirect("annotation:gold-label", slug=project.slug)
    example = review.gold_next_blind(
        gold_set=draft, user=request.user, skipped=_skipped(request, skipped_key)
    )
    context = {
        "project": project,
        "is_lead": role == Membership.Role.LEAD,
        "example": example,
        "labels": project.labels.all(),
        "gold_set": draft,
        "blind": True,
    }
    template = "annotation/gold_label.html#card" if request.htmx else "annotation/gold_label.html"
    return render(request, template, context)


@login_required
def gold_adjudicate(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    draft = _draft_or_404(project)
    skipped_key = f"gold:{draft.pk}:adjudication-skipped"
    if request.method == "POST":
        example = _draft_item_or_404(draft, request.POST.get("example_id"))
        verdict = request.POST.get("verdict", "correct")
        if verdict == "skip":
            _skipped(request, skipped_key, example)
        else:
            try:
                review.gold_adjudicate(
                    gold_set=draft,
                    example=example,
                    user=request.user,
                    label=request.POST.get("label", ""),
                    verdict=verdict,
                )
            except review.ReviewError as exc:
                messages.error(request, str(exc))
        if not request.htmx:
            return redirect("annotation:gold-adjudicate", slug=project.slug)
    status = review.gold_status(draft)
    row = review.gold_next_disagreement(draft, skipped=_skipped(request, skipped_key), status=status)
    context = {
        "project": project,
        "is_lead": True,
        "row": row,
        "example": row["item"].example if row else None,
        "teacher": review.teacher_proposal(row["item"].example) if row else None,
        "labels": project.labels.all(),
        "gold_set": draft,
        # "n of m": this disagreement's place among all the version's disagreements.
        "position": status["disagreed"] - status["disagreements"] + 1,
        "disagreed": status["disagreed"],
        "reject": review.REJECT,
    }
    template = "annotation/gold_adjudicate.html#card" if request.htmx else "annotation/gold_adjudicate.html"
    return render(request, template, context)


@login_required
@require_POST
def gold_freeze(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    draft = _draft_or_404(project)
    try:
        review.gold_freeze(gold_set=draft, user=request.user)
        messages.success(request, f"Gold set v{draft.version} is frozen: it will never change.")
    except review.ReviewError as exc:
        messages.error(request, str(exc))
    return redirect("annotation:gold", slug=project.slug)


@login_required
@require_POST
def review_quality(request: HttpRequest, slug: str) -> HttpResponse:
    project = _project_for_lead(request, slug)
    review.quality_run_start(project=project, user=request.user)
    messages.info(
        request,
        "Scoring likely label errors in the background; choose “Likely label errors first” when it is done.",
    )
    return redirect("annotation:review", slug=project.slug)
