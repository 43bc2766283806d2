"""Evaluation pages: metrics (the task draws its own part), the examples behind a cell, run comparison."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from annotation.models import Example
from annotation.views._common import project_for_member
from tasks import stats
from training import services
from training.models import Evaluation
from training.services import preference


@login_required
@require_GET
def evaluation(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project, role = project_for_member(request, slug)
    student = get_object_or_404(Evaluation, project=project, pk=pk)
    teacher = services.latest_teacher_evaluation(student) if student.subject == "student" else None
    overlap = services.error_analysis(student, teacher) if teacher else {}
    # Only an evaluation stored before intervals lacks them; the macro-F1 bootstrap that
    # fills them in is over labels (per_class), so span answers are never handed to it.
    m = stats.with_intervals(student.metrics, student.predictions if "per_class" in student.metrics else None)
    choice = stats.threshold_choice(
        m.get("coverage", []), student.target_accuracy, examples=m.get("examples") or 0
    )
    task = project.task
    texts = dict(
        Example.objects.filter(pk__in=[r["example"] for r in student.predictions]).values_list("pk", "text")
    )
    return render(
        request,
        "training/evaluation.html",
        {
            "project": project,
            "is_lead": role == "lead",
            "task": task,
            "task_context": task.evaluation_context(
                m, student.predictions, texts, teacher_rows=teacher.predictions if teacher else ()
            ),
            "evaluation": student,
            "m": m,
            "choice": choice,
            "teacher": teacher,
            "systems": services.latest_system_evaluations(student) if student.subject == "student" else [],
            "overlap": {k: len(v) for k, v in overlap.items()},
            "preference": preference.preference_summary(student)
            if task.compares_by_preference and student.subject == "student"
            else None,
        },
    )


OVERLAP_CELLS = {
    "both_right": "Both right",
    "only_student_wrong": "Only the student is wrong",
    "only_teacher_wrong": "Only the teacher is wrong",
    "both_wrong": "Both wrong",
}


@login_required
@require_GET
def evaluation_examples(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The examples behind one overlap cell or one confusion (true -> predicted)."""
    project, role = project_for_member(request, slug)
    student = get_object_or_404(Evaluation, project=project, pk=pk)
    rows = {r["example"]: r for r in student.predictions}
    cell = request.GET.get("cell", "")
    if cell:
        if cell not in OVERLAP_CELLS:
            raise Http404("Unknown cell.")
        teacher = services.latest_teacher_evaluation(student)
        ids = services.error_analysis(student, teacher).get(cell, [])
        title = OVERLAP_CELLS[cell]
        teacher_rows = {r["example"]: r for r in teacher.predictions} if teacher else {}
    else:
        true, predicted = request.GET.get("true", ""), request.GET.get("predicted", "")
        ids = [i for i, r in rows.items() if r["gold"] == true and (r["predicted"] or "(none)") == predicted]
        title = f"Gold “{true}”, predicted “{predicted}”"
        teacher_rows = {}
    texts = dict(Example.objects.filter(pk__in=ids).values_list("pk", "text"))
    task = project.task

    def shown(row: dict | None, text: str) -> dict | None:
        # An answer as one line: a label, or an extraction's "field: value · ..." from its text.
        if row is None:
            return None
        return {
            **row,
            "gold": task.summary(row["gold"], text=text),
            "predicted": task.summary(row["predicted"], text=text) if row["predicted"] is not None else None,
        }

    items = [
        {
            "id": i,
            "text": texts.get(i, ""),
            "row": shown(rows.get(i), texts.get(i, "")),
            "teacher": shown(teacher_rows.get(i), texts.get(i, "")),
        }
        for i in ids
    ]
    return render(
        request,
        "training/evaluation_examples.html",
        {
            "project": project,
            "is_lead": role == "lead",
            "evaluation": student,
            "title": title,
            "items": items,
        },
    )


@login_required
@require_GET
def compare(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    numbers = [int(n) for n in request.GET.getlist("run") if n.isdigit()]
    chosen = (
        list(project.training_runs.filter(number__in=numbers).order_by("number"))
        if numbers
        else list(project.training_runs.filter(status="succeeded").order_by("-number")[:3])[::-1]
    )
    return render(
        request,
        "training/compare.html",
        {
            "project": project,
            "is_lead": role == "lead",
            "comparison": services.compare_runs(chosen),
            "all_runs": project.training_runs.order_by("-number"),
        },
    )


# --- deployment, monitoring, cost --------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def evaluation_preference(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Blind A/B: the student's and the teacher's answers on a gold text, in an order the reviewer
    is never told; A, B or Same (1, 2, 0)."""
    project, role = project_for_member(request, slug)
    student = get_object_or_404(Evaluation, project=project, pk=pk, subject="student")
    status = 200
    if request.method == "POST":
        example_id = request.POST.get("example_id", "")
        try:
            if not example_id.isdigit():
                raise preference.PreferenceError("No text was named.")
            preference.preference_record(
                evaluation=student,
                example_id=int(example_id),
                user=request.user,
                pick=request.POST.get("pick", ""),
            )
        except preference.PreferenceError as exc:
            messages.error(request, str(exc))
            status = 400
        if not request.htmx and status == 200:
            return redirect("training:evaluation-preference", slug=project.slug, pk=student.pk)
    pair = preference.preference_next(evaluation=student, user=request.user)
    task = project.task
    if pair:
        text = pair["example"].text
        pair["a_shown"], pair["b_shown"] = (
            task.display(pair["a"], text=text),
            task.display(pair["b"], text=text),
        )
    context = {
        "project": project,
        "is_lead": role == "lead",
        "evaluation": student,
        "pair": pair,
        "summary": preference.preference_summary(student),
    }
    template = "training/preference.html#card" if request.htmx else "training/preference.html"
    return render(request, template, context, status=status)
