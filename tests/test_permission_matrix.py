"""Who may open what: every URL the resolver knows, for every role, GET and POST.

Generated from the URL resolver, so a new URL is covered by construction: a pattern
missing from ACCESS below fails the suite until someone says who may use it.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from annotation import projects, teacher
from annotation.models import GoldSet, ImportBatch, LabelingJob, Membership, SyntheticJob
from tests.conftest import client_for, make_project, make_user
from training.models import ApiToken, Evaluation, EvaluationJob, ExportJob, RoundRefresh, TrainingRun

pytestmark = pytest.mark.django_db

LEAD, MEMBER = "lead", "member"
# Project pages: who may use each one beyond being a member.
ACCESS = {
    "annotation:project-detail": MEMBER,
    "annotation:project-status": MEMBER,
    "annotation:project-settings": LEAD,
    "annotation:project-labels": MEMBER,
    "annotation:label-create": LEAD,
    "annotation:label-update": LEAD,
    "annotation:label-delete": LEAD,
    "annotation:project-members": MEMBER,
    "annotation:membership-add": LEAD,
    "annotation:membership-remove": LEAD,
    "annotation:invitation-create": LEAD,
    "annotation:invitation-withdraw": LEAD,
    "annotation:import-upload": LEAD,
    "annotation:import-batch": MEMBER,
    "annotation:project-export": MEMBER,
    "annotation:job-cancel": LEAD,
    "annotation:job-resume": LEAD,
    "annotation:teacher-settings": LEAD,
    "annotation:teacher-estimate": LEAD,
    "annotation:labeling-estimate": LEAD,
    "annotation:labeling-start": LEAD,
    "annotation:review": MEMBER,
    "annotation:review-act": MEMBER,
    "annotation:review-skip": MEMBER,
    "annotation:review-undo": MEMBER,
    "annotation:review-similar": MEMBER,
    "annotation:review-bulk": LEAD,
    "annotation:review-quality": LEAD,
    "annotation:gold": MEMBER,
    "annotation:gold-draw": LEAD,
    "annotation:gold-label": MEMBER,
    "annotation:gold-adjudicate": LEAD,
    "annotation:gold-freeze": LEAD,
    "annotation:synthetic-start": LEAD,
    "training:runs": MEMBER,
    "training:run-create": LEAD,
    "training:run": MEMBER,
    "training:run-evaluate": LEAD,
    "training:run-download": MEMBER,
    "training:evaluation-job": MEMBER,
    "training:evaluation": MEMBER,
    "training:evaluation-examples": MEMBER,
    "training:evaluation-preference": MEMBER,
    "training:compare": MEMBER,
    "training:deploy": (MEMBER, LEAD),  # members read it, leads save the serving settings
    "training:export-job": MEMBER,
    "training:promote": LEAD,
    "training:rollback": LEAD,
    "training:token-create": LEAD,
    "training:token-revoke": LEAD,
    "training:monitor": MEMBER,
    "training:cost": MEMBER,
    "training:review-value": MEMBER,
}
# Outside projects: the sign-in pages, health, the token APIs (their own tests) and the admin.
NOT_PROJECT_PAGES = {
    "annotation:project-list",
    "annotation:project-create",  # who may create: tests/annotation/test_teacher_security.py
    "annotation:invitation-accept",  # the token is the key: tests/annotation/test_invitations.py
    "login",
    "logout",
    "healthz",
    "favicon",
    "api-predict",
    "api-chat-completions",
    "api-models",
    "api-openapi",
    "api-docs",
}


def _names(patterns, namespace: str = "") -> list[str]:
    found = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace in {"admin", "django_rq"}:
                continue  # the admin's own permission system (staff only)
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            found += _names(entry.url_patterns, inner)
        elif isinstance(entry, URLPattern) and entry.name:
            found.append(namespace + entry.name)
    return found


ALL_NAMES = sorted(set(_names(get_resolver().url_patterns)))


def test_every_url_says_who_may_use_it():
    unknown = [name for name in ALL_NAMES if name not in ACCESS and name not in NOT_PROJECT_PAGES]
    assert not unknown, f"add these URLs to ACCESS in {__file__}: {unknown}"
    assert not [name for name in ACCESS if name not in ALL_NAMES], "ACCESS names a URL that is gone"


@pytest.fixture
def world(django_user_model, queues, tmp_path):
    lead = make_user(django_user_model, "lena_lead")
    reviewer = make_user(django_user_model, "rui_reviewer")
    project = make_project(lead=lead, reviewer=reviewer)
    clients = {
        "anonymous": Client(),
        "outsider": client_for(make_user(django_user_model, "otto_outsider")),
        # Staff see the admin, not every project: a staff account outside the project gets 404 too.
        "staff": client_for(make_user(django_user_model, "stella_staff", is_staff=True)),
        "reviewer": client_for(reviewer),
        "lead": client_for(lead),
    }
    (tmp_path / "run-1").mkdir()
    (tmp_path / "run-1" / "manifest.json").write_text("{}")
    run = TrainingRun.objects.create(
        project=project, number=1, status="succeeded", artifact_path=str(tmp_path / "run-1")
    )
    gold = GoldSet.objects.create(project=project, version=1)
    ids = {
        "label": project.labels.first().pk,
        "membership": project.memberships.get(role=Membership.Role.REVIEWER).pk,
        "import-batch": ImportBatch.objects.create(project=project, file_name="x.csv", format="csv").pk,
        "labeling": LabelingJob.objects.create(
            project=project, teacher={}, prompt_version=teacher.prompt_version_current(project, user=lead)
        ).pk,
        "synthetic": SyntheticJob.objects.create(project=project).pk,
        "invitation": projects.invitation_create(
            project=project, username="nina", role="reviewer", user=lead
        )[0].pk,
        "evaluation": Evaluation.objects.create(
            project=project, run=run, gold_set=gold, subject="student", agent=run.agent, metrics={}
        ).pk,
        "token": ApiToken.objects.create(project=project, name="t", prefix="p", token_hash="h" * 64).pk,
        "evaluation-job": EvaluationJob.objects.create(project=project, run=run).pk,
        "export-job": ExportJob.objects.create(project=project, run=run).pk,
        "round-refresh": RoundRefresh.objects.create(project=project, verdicts=10, status="failed").pk,
    }
    return project, clients, ids


# Which object a URL's <pk> names.
PK_OF = {
    # One kind here; tests/test_job_views.py asks the same of every kind in distillapp.jobs.JOBS.
    "annotation:job-cancel": "labeling",
    "annotation:job-resume": "labeling",
    "annotation:label-update": "label",
    "annotation:label-delete": "label",
    "annotation:membership-remove": "membership",
    "annotation:invitation-withdraw": "invitation",
    "annotation:import-batch": "import-batch",
    "training:evaluation": "evaluation",
    "training:evaluation-examples": "evaluation",
    "training:evaluation-preference": "evaluation",
    "training:token-revoke": "token",
    "training:evaluation-job": "evaluation-job",
    "training:export-job": "export-job",
}


def _parameters(patterns, name: str, namespace: str = "") -> set[str] | None:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            found = _parameters(entry.url_patterns, name, inner)
            if found is not None:
                return found
        elif isinstance(entry, URLPattern) and namespace + (entry.name or "") == name:
            return set(entry.pattern.converters)
    return None


def url_of(name: str, project, ids: dict) -> str:
    values = {"slug": project.slug, "number": 1, "pk": ids.get(PK_OF.get(name, "")), "kind": "labelingjob"}
    return reverse(name, kwargs={key: values[key] for key in _parameters(get_resolver().url_patterns, name)})


@pytest.mark.parametrize("name", sorted(ACCESS))
def test_permission_matrix(world, name):
    project, clients, ids = world
    url = url_of(name, project, ids)
    for method in ("get", "post"):
        seen = {role: getattr(client, method)(url).status_code for role, client in clients.items()}
        if seen["lead"] == 405:  # this view does not take this method, for anyone signed in
            assert all(code in (302, 405) for code in seen.values()), (name, method, seen)
            continue
        assert seen["anonymous"] == 302, (name, method, seen)
        assert clients["anonymous"].get(url)["Location"].startswith(reverse("login"))
        assert seen["outsider"] == 404 and seen["staff"] == 404, (name, method, seen)
        needed = (
            ACCESS[name]
            if isinstance(ACCESS[name], str)
            else dict(zip(("get", "post"), ACCESS[name], strict=True))[method]
        )
        if needed == LEAD:
            assert seen["reviewer"] == 403, (name, method, seen)
        # A POST with no form data may be refused as invalid (400/404 for "no such item"), never as forbidden.
        allowed = [seen["lead"]] if needed == LEAD else [seen["lead"], seen["reviewer"]]
        for code in allowed:
            assert code < 400 or code == 405 or (method == "post" and code in (400, 404)), (
                name,
                method,
                seen,
            )
