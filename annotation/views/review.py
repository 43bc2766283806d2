"""The review queue and the gold set pages."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation import review
from annotation.forms import GoldDrawForm
from annotation.models import (
    STUDENT_AGENT_PREFIX,
    Example,
    GoldSet,
    Membership,
    Project,
    Proposal,
    ReviewClaim,
)
from annotation.review.rounds import round_status
from annotation.review.similar import similar_to
from annotation.views._common import (
    project_for_lead,
    project_for_member,
    rate_limited,
)
from distillapp import jobs
from distillapp.sql import Prepared

# --- review queue -------------------------------------------------------------------------------


def _queue_filter(request: HttpRequest, project: Project) -> review.QueueFilter:
    """The reviewer's queue settings: from the query string when given, else the session."""
    key = f"review:{project.pk}"
    saved = request.session.get(key, {})
    if "strategy" in request.GET:
        saved = {
            "strategy": request.GET.get("strategy")
            if request.GET.get("strategy") in review.STRATEGIES
            else "confidence",
            "label": _text(request.GET.get("label", "")),
            "source": _text(request.GET.get("source", "")),
            "min_confidence": _float_or_none(request.GET.get("min")),
            "max_confidence": _float_or_none(request.GET.get("max")),
            "search": _text(request.GET.get("q", "")).strip(),
        }
        request.session[key] = saved
        request.session[f"{key}:skipped"] = []
    # The project's order (its lead's setting) until the reviewer chooses one.
    saved = {
        "strategy": project.review_order if project.review_order in review.STRATEGIES else "confidence",
        **saved,
    }
    return review.QueueFilter(**saved, skipped=request.session.get(f"{key}:skipped", []))


def _text(value: str) -> str:
    """A filter typed in the address bar, as the database can compare it: PostgreSQL text
    holds no NUL character (a query with one is an error, not an empty result)."""
    return value.replace("\x00", "")


def _strategy_name(project: Project, filters: review.QueueFilter) -> str:
    if filters.similar_to:
        return f"Most like #{filters.similar_to}"
    name = review.STRATEGIES.get(filters.strategy, "")
    if filters.strategy == "auto":
        # Say which order "auto" serves now, so a reviewer knows why these cards come.
        now = review.resolved_strategy(project, "auto")
        return f"{name}: now {review.STRATEGIES[now][0].lower()}{review.STRATEGIES[now][1:]}"
    return name


@login_required
@require_POST
@rate_limited("similar")
def review_similar(request: HttpRequest, slug: str) -> HttpResponse:
    """Find more like this: the queue becomes the unreviewed texts closest to this card's."""
    project, role = project_for_member(request, slug)
    example = _queue_example_or_404(request, project)
    key = f"review:{project.pk}"
    saved = {k: v for k, v in request.session.get(key, {}).items() if k not in ("similar", "similar_to")}
    found = similar_to(example)  # cached vectors only: an unindexed pool is a worker's job
    if found.ids:
        request.session[key] = {**saved, "similar": found.ids, "similar_to": example.pk}
        request.session[f"{key}:skipped"] = []
        ReviewClaim.objects.filter(user=request.user, example__project=project).delete()
    # else: nothing is ranked yet; the reviewer stays on this card and queue.
    messages.info(request, _similar_message(example, found))
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, _queue_filter(request, project))


def _similar_message(example: Example, found: review.Similar) -> str:
    back = "Choose an order to go back to the queue."
    if not found.is_indexing:
        return f"The {len(found.ids)} unreviewed texts most like #{example.pk}, closest first. {back}"
    indexing = f"Still indexing ({found.ready:,} of {found.total:,} texts ready)"
    index = found.index
    if index is not None and index.status == index.Status.FAILED:
        indexing = f"Indexing failed ({index.error}); {found.ready:,} of {found.total:,} texts ready"
    if not found.ids:
        return (
            f"{indexing}: this text cannot be compared yet. A worker is embedding the unreviewed "
            "texts; ask again in a minute."
        )
    return (
        f"{indexing}: the {len(found.ids)} texts most like #{example.pk} among those ready, closest "
        f"first. A worker is embedding the rest; ask again in a minute for all of them. {back}"
    )


def _posted_id(request: HttpRequest) -> int | None:
    """The posted ``example_id`` as a number; None for anything else ("abc", "²", "1e3")."""
    raw = request.POST.get("example_id", "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


def _queue_example_or_404(request: HttpRequest, project: Project) -> Example:
    """The posted queue card of this project (never a gold item); 404 for anything else."""
    example_id = _posted_id(request)
    if example_id is None:
        raise Http404("No such example.")
    # With its teacher proposal's id and answer: what the verdict records (one query for both).
    example = review.queue_card(project, example_id)
    if example is None:
        raise Http404("No such example.")
    return example


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


# Field colours where a field has none of its own (Label.color), in field order; each
# reads on white with black text at the card's highlight strength.
PALETTE = [
    "#f4a261",
    "#2a9d8f",
    "#e9c46a",
    "#8ab17d",
    "#e76f51",
    "#6d9dc5",
    "#b56576",
    "#9c89b8",
    "#43aa8b",
    "#f28482",
]


def _fields(labels) -> list[dict]:
    """The project's labels (fields) as the cards and their scripts use them, each with a colour."""
    return [
        {
            "name": label.name,
            "key": label.key,
            "description": label.description,
            "color": label.color or PALETTE[index % len(PALETTE)],
            "allows_many": label.allows_many,
        }
        for index, label in enumerate(labels)
    ]


class BadAnswer(ValueError):
    """A posted answer that is not even JSON."""


def _posted_answer(request: HttpRequest):
    """The posted answer: the JSON ``value`` field (a span set...), else the ``label`` field."""
    raw = request.POST.get("value")
    if raw is None:
        return request.POST.get("label")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):  # nested thousands deep: not an answer either
        raise BadAnswer("The posted answer is not valid JSON.") from None


# Compiled once (bench/README.md, review queue).
_CARD_PROPOSALS = Prepared(
    lambda example: Proposal.objects.filter(example=example).order_by("-created_at", "-pk")[:10], example=int
)


def _card_context(
    request: HttpRequest, project: Project, role: str, example: Example | None, filters
) -> dict:
    """What the review page shows; for htmx, what its #card partial shows."""
    proposals = []
    student = None
    if example is not None:
        for proposal in _CARD_PROPOSALS.objects(example=example.pk):
            proposal.example = example
            if proposal.agent.startswith(STUDENT_AGENT_PREFIX):
                student = student or proposal
            else:
                proposals.append(proposal)
    teacher = next((p for p in proposals if p.is_valid), None)
    task = project.task
    for proposal in [*proposals, *([student] if student else [])]:
        proposal.summary = task.summary(proposal.value, text=example.text) if proposal.is_valid else ""
    labels = project.label_list()
    counts = review.queue_counts(project, request.user, filters)
    # The last scoring (of any status) is shown above the card, on the full page only.
    quality_run = None if request.htmx else project.quality_runs.first()
    jobs.recover_shown([quality_run] if quality_run else [])
    return {
        "project": project,
        "is_lead": role == Membership.Role.LEAD,
        "example": example,
        "teacher": teacher,
        "proposals": proposals,
        "student": student,
        "labels": labels,
        "task": task,
        "fields": _fields(labels),
        # What the card's script starts from: the text and the teacher's answer as they are.
        "editor": {"text": example.text, "initial": teacher.value if teacher else None} if example else None,
        "initial_json": json.dumps(teacher.value) if teacher else "",
        "filters": filters,
        "strategies": review.STRATEGIES,
        "strategy_name": _strategy_name(project, filters),
        "similar_key": "m" if not any(label.key == "m" for label in labels) else "",
        "reviewed_today": counts.reviewed_today,
        "round": round_status(project),
        "remaining": counts.remaining,
        "remaining_cap": review.REMAINING_CAP,
        "sources": Example.Source.choices,
        "quality_run": quality_run,
    }


def _render_card(
    request: HttpRequest,
    project: Project,
    role: str,
    filters,
    *,
    example=None,
    status: int = 200,
    after_verdict: bool = False,
) -> HttpResponse:
    # The counts first: choosing the card reads the verdicts and the last scoring they carry.
    review.queue_counts(project, request.user, filters)
    if example is None:
        example = review.review_next(
            project=project, user=request.user, filters=filters, after_verdict=after_verdict
        )
    context = _card_context(request, project, role, example, filters)
    template = "annotation/review.html#card" if request.htmx else "annotation/review.html"
    return render(request, template, context, status=status)


@login_required
@require_GET
def review_queue(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    return _render_card(request, project, role, _queue_filter(request, project))


@login_required
@require_POST
def review_act(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    example = _queue_example_or_404(request, project)
    filters = _queue_filter(request, project)
    try:
        review.review_record(
            example=example,
            user=request.user,
            verdict=request.POST.get("verdict", ""),
            value=_posted_answer(request),
            filters=filters,
        )
    except (BadAnswer, review.InvalidAnswer) as exc:
        # A bad answer is a bad request: nothing is stored, the same card comes back saying why.
        messages.error(request, str(exc))
        return _render_card(request, project, role, filters, example=example, status=400)
    except review.NotServed as exc:
        # A replay, a stale tab or someone else's card: nothing is stored; my own next card comes.
        messages.error(request, str(exc))
        if request.htmx:
            return _render_card(request, project, role, filters, status=409)
    except review.ReviewError as exc:
        messages.error(request, str(exc))
        if request.htmx:
            return _render_card(request, project, role, filters, example=example)
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, filters, after_verdict=True)


@login_required
@require_POST
def review_skip(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    key = f"review:{project.pk}:skipped"
    skipped = request.session.get(key, [])
    example_id = _posted_id(request)
    if example_id is not None:
        skipped = [*skipped, example_id][-500:]
        request.session[key] = skipped
        ReviewClaim.objects.filter(example_id=example_id, user=request.user).delete()
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, _queue_filter(request, project))


@login_required
@require_POST
def review_undo(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    example = review.review_undo(project=project, user=request.user)
    if example is None:
        messages.info(request, "Nothing to undo.")
    if not request.htmx:
        return redirect("annotation:review", slug=project.slug)
    return _render_card(request, project, role, _queue_filter(request, project), example=example)


@login_required
def review_bulk(request: HttpRequest, slug: str) -> HttpResponse:
    """Accept every proposal in the current filter at or above a confidence, after a preview."""
    project = project_for_lead(request, slug)
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
    project, role = project_for_member(request, slug)
    draft = review.gold_draft(project)
    frozen = project.gold_sets.frozen().order_by("-version")
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
            "task": project.task,
            # What the task's agreement returns differs by type; each type shows its own.
            "agreement_template": project.task.agreement_template,
            "reject": review.REJECT,
            "frozen": frozen_status,
            "real_examples": real_examples,
            "draw_form": GoldDrawForm(project=project, available=real_examples),
        },
    )


@login_required
@require_POST
def gold_draw(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
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
    if not (example_id or "").isascii() or not (example_id or "").isdigit() or len(example_id) > 18:
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
    project, role = project_for_member(request, slug)
    draft = _draft_or_404(project)
    skipped_key = f"gold:{draft.pk}:skipped"
    example, status = None, 200
    if request.method == "POST":
        posted = _draft_item_or_404(draft, request.POST.get("example_id"))
        posted.project = project  # one task (and one read of the fields) for the whole request
        verdict = request.POST.get("verdict", "correct")
        if verdict == "skip":
            _skipped(request, skipped_key, posted)
            ReviewClaim.objects.filter(example=posted, user=request.user).delete()
        else:
            try:
                review.gold_label_blind(
                    gold_set=draft,
                    example=posted,
                    user=request.user,
                    value=_posted_answer(request) if verdict != "reject" else None,
                    verdict=verdict,
                )
            except (BadAnswer, review.InvalidAnswer) as exc:
                messages.error(request, str(exc))
                example, status = posted, 400  # nothing stored: the same item again, saying why
            except review.ReviewError as exc:
                messages.error(request, str(exc))
        if not request.htmx and status == 200:
            return redirect("annotation:gold-label", slug=project.slug)
    if example is None:
        example = review.gold_next_blind(
            gold_set=draft, user=request.user, skipped=_skipped(request, skipped_key)
        )
    task = project.task
    labels = list(project.labels.all())
    context = {
        "project": project,
        "is_lead": role == Membership.Role.LEAD,
        "example": example,
        "labels": labels,
        "task": task,
        "fields": _fields(labels),
        "blind_card": f"{task.card_template}#blind",
        "blind_help": f"{task.card_template}#blind_help",
        "editor": {"text": example.text, "initial": None} if example else None,
        "gold_set": draft,
        "blind": True,
    }
    template = "annotation/gold_label.html#card" if request.htmx else "annotation/gold_label.html"
    return render(request, template, context, status=status)


@login_required
def gold_adjudicate(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    draft = _draft_or_404(project)
    skipped_key = f"gold:{draft.pk}:adjudication-skipped"
    refused, status_code = None, 200
    if request.method == "POST":
        example = _draft_item_or_404(draft, request.POST.get("example_id"))
        example.project = project
        verdict = request.POST.get("verdict", "correct")
        if verdict == "skip":
            _skipped(request, skipped_key, example)
        else:
            try:
                review.gold_adjudicate(
                    gold_set=draft,
                    example=example,
                    user=request.user,
                    value=_posted_answer(request) if verdict != "reject" else None,
                    verdict=verdict,
                )
            except (BadAnswer, review.InvalidAnswer) as exc:
                messages.error(request, str(exc))
                refused, status_code = example, 400
            except review.ReviewError as exc:
                messages.error(request, str(exc))
        if not request.htmx and status_code == 200:
            return redirect("annotation:gold-adjudicate", slug=project.slug)
    status = review.gold_status(draft)
    row = review.gold_next_disagreement(draft, skipped=_skipped(request, skipped_key), status=status)
    if refused is not None:
        row = next((r for r in status["rows"] if r["item"].example_id == refused.pk), row)
    task = project.task
    labels = list(project.labels.all())
    example = row["item"].example if row else None
    teacher = review.teacher_proposal(example) if row else None
    for answer in [*(row["blind"] if row else []), *([teacher] if teacher else [])]:
        answer.summary = task.summary(answer.value, text=example.text) if answer.value is not None else ""
        answer.value_json = json.dumps(answer.value)
    context = {
        "project": project,
        "is_lead": True,
        "row": row,
        "example": example,
        "teacher": teacher,
        "labels": labels,
        "task": task,
        "fields": _fields(labels),
        "adjudicate_card": f"{task.card_template}#adjudicate",
        # The two blind answers as they are (None for a reject), for the card's script.
        "editor": {
            "text": example.text,
            "initial": None,
            "sides": [None if r.verdict == "reject" else r.value for r in row["blind"]],
        }
        if row
        else None,
        "gold_set": draft,
        # "n of m": this disagreement's place among all the version's disagreements.
        "position": status["disagreed"] - status["disagreements"] + 1,
        "disagreed": status["disagreed"],
        "reject": review.REJECT,
    }
    template = "annotation/gold_adjudicate.html#card" if request.htmx else "annotation/gold_adjudicate.html"
    return render(request, template, context, status=status_code)


@login_required
@require_POST
def gold_freeze(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    draft = _draft_or_404(project)
    try:
        review.gold_freeze(gold_set=draft, user=request.user)
        messages.success(request, f"Gold set v{draft.version} is frozen: it will never change.")
    except review.ReviewError as exc:
        messages.error(request, str(exc))
    return redirect("annotation:gold", slug=project.slug)


@login_required
@require_POST
@rate_limited("quality")
def review_quality(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    review.quality_run_start(project=project, user=request.user)
    messages.info(
        request,
        "Scoring likely label errors in the background; choose “Likely label errors first” when it is done.",
    )
    return redirect("annotation:review", slug=project.slug)
