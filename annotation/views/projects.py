"""Projects, their labels and members."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordForm
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation import projects, teacher
from annotation.forms import (
    ExportForm,
    ImportForm,
    InvitationForm,
    LabelForm,
    LabelingForm,
    MembershipForm,
    ProjectForm,
    ProjectSettingsForm,
)
from annotation.models import (
    ImportBatch,
    Invitation,
    Label,
    Membership,
    Project,
    user_may_create_projects,
)
from annotation.views._common import (
    act,
    form_errors,
    project_for_lead,
    project_for_member,
    render_polled,
    workers_online,
)
from annotation.views.data import held_import
from distillapp.jobs import recover_shown


@login_required
@require_GET
def project_list(request: HttpRequest) -> HttpResponse:
    mine = Project.objects.for_user(request.user).order_by("name")
    return render(
        request,
        "annotation/project_list.html",
        {"projects": mine, "may_create": user_may_create_projects(request.user)},
    )


@login_required
def project_create(request: HttpRequest) -> HttpResponse:
    if not user_may_create_projects(request.user):
        raise PermissionDenied(
            "Only staff (or users given the “add project” permission) may create projects."
        )
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = projects.project_create(
            name=form.cleaned_data["name"],
            slug=form.cleaned_data["slug"],
            task_type=form.cleaned_data["task_type"],
            guidelines=form.cleaned_data["guidelines"],
            labels=form.cleaned_data["labels"],
            task_options=form.cleaned_data.get("task_options") or {},
            user=request.user,
        )
        messages.success(request, f"Project “{project.name}” created. Import some examples next.")
        return redirect("annotation:project-detail", slug=project.slug)
    return render(request, "annotation/project_create.html", {"form": form})


def _status_context(project: Project) -> dict:
    batches = list(project.import_batches.select_related("created_by")[:10])
    jobs = list(project.labeling_jobs.select_related("prompt_version", "created_by")[:5])
    synthetic_jobs = list(project.synthetic_jobs.all()[:5])
    recover_shown([*batches, *jobs, *synthetic_jobs])  # a dead worker's job is queued again
    is_busy = any(not x.is_finished for x in [*batches, *jobs, *synthetic_jobs])
    waiting = [b for b in batches if b.status == ImportBatch.Status.PENDING]
    return {
        "counts": projects.project_counts(project),
        "batches": batches,
        "jobs": jobs,
        "synthetic_jobs": synthetic_jobs,
        "is_busy": is_busy,
        "workers_online": workers_online() if waiting else None,
    }


def _import_form(request: HttpRequest, project: Project) -> ImportForm:
    """The import form, with the settings and file of the user's last failed try, if any."""
    held = held_import(request, project)
    file = held.get("file")
    return ImportForm(project=project, initial=held.get("settings"), held_name=file["name"] if file else "")


@login_required
@require_GET
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    context = {
        "project": project,
        "role": role,
        "is_lead": role == Membership.Role.LEAD,
        "labels": project.labels.all(),
        "import_form": _import_form(request, project) if role == Membership.Role.LEAD else None,
        "export_form": ExportForm(project=project),
        "labeling_form": LabelingForm(task=project.task),
        "teacher": teacher.teacher_config_for(project),
        "gold_sets": project.gold_sets.frozen(),
        "dashboard": projects.project_dashboard(project),
        **_status_context(project),
    }
    return render(request, "annotation/project_detail.html", context)


@login_required
@require_GET
def project_status(request: HttpRequest, slug: str) -> HttpResponse:
    """The polled part of the project page: counts and import progress."""
    project, role = project_for_member(request, slug)
    context = {
        "project": project,
        "role": role,
        "is_lead": role == Membership.Role.LEAD,
        **_status_context(project),
    }
    return render_polled(
        request, "annotation/project_detail.html#status", context, ended=not context["is_busy"]
    )


@login_required
def project_settings(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    form = ProjectSettingsForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Settings saved.")
        return redirect("annotation:project-detail", slug=project.slug)
    return render(
        request, "annotation/project_settings.html", {"project": project, "form": form, "is_lead": True}
    )


# --- labels ---------------------------------------------------------------------------


@login_required
@require_GET
def project_labels(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    return render(
        request,
        "annotation/project_labels.html",
        {
            "project": project,
            "is_lead": role == Membership.Role.LEAD,
            "labels": project.labels.all(),
            "form": LabelForm(),
        },
    )


@login_required
@require_POST
def label_create(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    form = LabelForm(request.POST)

    def create() -> str:
        data = form.cleaned_data
        label = projects.label_create(
            project=project, name=data["name"], description=data["description"], key=data["key"]
        )
        return f"Label “{label.name}” added with key {label.key or '—'}."

    act(request, create, form)
    return redirect("annotation:project-labels", slug=project.slug)


@login_required
@require_POST
def label_update(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = project_for_lead(request, slug)
    label = get_object_or_404(Label, project=project, pk=pk)
    form = LabelForm(request.POST)

    def update() -> str:
        data = form.cleaned_data
        projects.label_update(
            label=label,
            name=data["name"],
            description=data["description"],
            key=data["key"],
            order=label.order if data["order"] is None else data["order"],
        )
        return f"Label “{label.name}” saved."

    act(request, update, form)
    return redirect("annotation:project-labels", slug=project.slug)


@login_required
@require_POST
def label_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = project_for_lead(request, slug)
    label = get_object_or_404(Label, project=project, pk=pk)

    def delete() -> str:
        projects.label_delete(label=label)
        return f"Label “{label.name}” deleted."

    act(request, delete)
    return redirect("annotation:project-labels", slug=project.slug)


# --- members --------------------------------------------------------------------------


def _members_page(request: HttpRequest, project: Project, role: str, **extra) -> HttpResponse:
    is_lead = role == Membership.Role.LEAD
    return render(
        request,
        "annotation/project_members.html",
        {
            "project": project,
            "is_lead": is_lead,
            "memberships": project.memberships.select_related("user").order_by("role", "user__username"),
            "form": MembershipForm(),
            "invitation_form": InvitationForm(prefix="invite"),
            "invitations": project.invitations.filter(used_at__isnull=True).select_related("created_by")
            if is_lead
            else [],
            **extra,
        },
    )


@login_required
@require_GET
def project_members(request: HttpRequest, slug: str) -> HttpResponse:
    project, role = project_for_member(request, slug)
    return _members_page(request, project, role)


@login_required
@require_POST
def invitation_create(request: HttpRequest, slug: str) -> HttpResponse:
    """Invite someone new: the page that answers shows the link once (only its hash is kept)."""
    project = project_for_lead(request, slug)
    form = InvitationForm(request.POST, prefix="invite")
    if form.is_valid():
        try:
            invitation, token = projects.invitation_create(
                project=project,
                username=form.cleaned_data["username"],
                role=form.cleaned_data["role"],
                user=request.user,
            )
        except projects.ServiceError as exc:
            messages.error(request, str(exc))
        else:
            link = request.build_absolute_uri(reverse("annotation:invitation-accept", args=[token]))
            response = _members_page(
                request, project, Membership.Role.LEAD, new_invitation=invitation, link=link
            )
            response["Cache-Control"] = "no-store"  # the link is shown once, never from a cache
            return response
    else:
        messages.error(request, form_errors(form))
    return redirect("annotation:project-members", slug=project.slug)


@login_required
@require_POST
def invitation_withdraw(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = project_for_lead(request, slug)
    invitation = get_object_or_404(Invitation, project=project, pk=pk, used_at__isnull=True)
    invitation.delete()
    messages.success(
        request, f"The invitation of {invitation.username} is withdrawn; its link no longer works."
    )
    return redirect("annotation:project-members", slug=project.slug)


def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    """The invited person's page: choose a password, and the account and membership exist."""
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    invitation = projects.invitation_for_token(token)
    usable = invitation is not None and invitation.used_at is None and not invitation.is_expired
    context = {"invitation": invitation if usable else None}
    if not usable:
        # Unknown, used, withdrawn or expired: the same words, so a link says nothing about others.
        return render(
            request, "annotation/invitation_accept.html", context, status=410 if invitation else 404
        )
    form = SetPasswordForm(get_user_model()(username=invitation.username), request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = projects.invitation_accept(token=token, password=form.cleaned_data["new_password1"])
        except projects.ServiceError as exc:
            messages.error(request, str(exc))
            return redirect("annotation:invitation-accept", token=token)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(
            request,
            f"Welcome, {user.get_username()}: you are a {invitation.get_role_display().lower()} of "
            f"{invitation.project.name}. Sign in next time with your user name and this password.",
        )
        return redirect("annotation:project-detail", slug=invitation.project.slug)
    response = render(request, "annotation/invitation_accept.html", {**context, "form": form})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def membership_add(request: HttpRequest, slug: str) -> HttpResponse:
    project = project_for_lead(request, slug)
    form = MembershipForm(request.POST)

    def add() -> str:
        membership = projects.membership_set(
            project=project, username=form.cleaned_data["username"], role=form.cleaned_data["role"]
        )
        return f"{membership.user} is now a {membership.get_role_display().lower()}."

    act(request, add, form)
    return redirect("annotation:project-members", slug=project.slug)


@login_required
@require_POST
def membership_remove(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    project = project_for_lead(request, slug)
    membership = get_object_or_404(Membership, project=project, pk=pk)

    def remove() -> str:
        projects.membership_remove(membership=membership)
        return f"{membership.user} was removed from the project."

    act(request, remove)
    return redirect("annotation:project-members", slug=project.slug)
