from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from annotation.models import Example, ImportBatch, Label, Membership, Project, Proposal, Review

pytestmark = pytest.mark.django_db


def upload(name: str = "tickets.csv", content: bytes = b"text\nrefund please\nlogin broken\n"):
    return SimpleUploadedFile(name, content, content_type="text/csv")


# (url name, needs label pk / membership pk, method, lead only, POST data)
VIEWS = [
    ("annotation:project-detail", None, "get", False),
    ("annotation:project-status", None, "get", False),
    ("annotation:project-labels", None, "get", False),
    ("annotation:project-members", None, "get", False),
    ("annotation:project-export", None, "get", False),
    ("annotation:project-settings", None, "get", True),
    ("annotation:project-settings", None, "post", True),
    ("annotation:label-create", None, "post", True),
    ("annotation:label-update", "label", "post", True),
    ("annotation:label-delete", "label", "post", True),
    ("annotation:membership-add", None, "post", True),
    ("annotation:membership-remove", "membership", "post", True),
    ("annotation:import-upload", None, "post", True),
    ("annotation:job-resume", "batch", "post", True),
]


def url_for(name: str, project: Project, needs: str | None) -> str:
    kwargs = {"slug": project.slug}
    if needs == "label":
        kwargs["pk"] = project.labels.first().pk
    elif needs == "batch":
        kwargs["kind"] = "importbatch"
        kwargs["pk"] = ImportBatch.objects.get_or_create(project=project, file_name="x.csv", format="csv")[
            0
        ].pk
    elif needs == "membership":
        kwargs["pk"] = project.memberships.get(role="reviewer").pk
    return reverse(name, kwargs=kwargs)


def post_data(name: str) -> dict:
    return {
        "annotation:project-settings": {"name": "Renamed", "guidelines": ""},
        "annotation:label-create": {"name": "Refunds", "description": "Money back"},
        "annotation:label-update": {"name": "Billing", "description": "Changed", "key": "1", "order": "1"},
        "annotation:membership-add": {"username": "otto_outsider", "role": "reviewer"},
        "annotation:import-upload": {"file": upload(), "text_column": "text", "id_column": "id"},
    }.get(name, {})


@pytest.mark.parametrize(("name", "needs", "method", "lead_only"), VIEWS)
def test_anonymous_is_sent_to_login(project, name, needs, method, lead_only):
    response = getattr(Client(), method)(url_for(name, project, needs))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize(("name", "needs", "method", "lead_only"), VIEWS)
def test_outsider_gets_404(project, outsider_client, name, needs, method, lead_only):
    response = getattr(outsider_client, method)(url_for(name, project, needs), post_data(name))
    assert response.status_code == 404


@pytest.mark.parametrize(("name", "needs", "method", "lead_only"), [v for v in VIEWS if v[3]])
def test_reviewer_gets_403_on_lead_actions(project, reviewer_client, name, needs, method, lead_only):
    response = getattr(reviewer_client, method)(url_for(name, project, needs), post_data(name))
    assert response.status_code == 403


@pytest.mark.parametrize(("name", "needs", "method", "lead_only"), [v for v in VIEWS if not v[3]])
def test_reviewer_can_read(project, reviewer_client, name, needs, method, lead_only):
    # 286 is htmx's "200, and stop polling" for the status fragment.
    assert reviewer_client.get(url_for(name, project, needs)).status_code in (200, 286)


@pytest.mark.parametrize(
    ("name", "needs"),
    [(v[0], v[1]) for v in VIEWS if v[2] == "post" and v[0] != "annotation:project-settings"],
)
def test_changing_views_need_post(project, lead_client, name, needs):
    assert lead_client.get(url_for(name, project, needs)).status_code == 405


def test_project_list_shows_only_my_projects(project, reviewer_client, outsider_client):
    assert "Tickets" in reviewer_client.get(reverse("annotation:project-list")).content.decode()
    assert "Tickets" not in outsider_client.get(reverse("annotation:project-list")).content.decode()


def test_create_project_makes_me_lead_with_labels(outsider, outsider_client):
    outsider.is_staff = True  # who may create projects: tests/annotation/test_teacher_security.py
    outsider.save()
    response = outsider_client.post(
        reverse("annotation:project-create"),
        {
            "name": "Invoice triage",
            "slug": "",
            "task_type": "classification",
            "guidelines": "",
            "labels": "Paid: settled\nOpen: not yet\n",
        },
    )
    project = Project.objects.get(slug="invoice-triage")
    assert response["Location"] == reverse("annotation:project-detail", args=[project.slug])
    assert project.memberships.get().user == outsider and project.memberships.get().role == "lead"
    assert list(project.labels.values_list("name", "description", "key")) == [
        ("Paid", "settled", "1"),
        ("Open", "not yet", "2"),
    ]


def test_create_project_rejects_duplicate_labels_and_slug(project, lead, lead_client):
    lead.is_staff = True
    lead.save()
    response = lead_client.post(
        reverse("annotation:project-create"),
        {"name": "X", "slug": project.slug, "task_type": "classification", "labels": "A\nA\n"},
    )
    assert response.status_code == 200
    assert "listed twice" in response.content.decode()
    assert "already" in response.content.decode() or "exists" in response.content.decode()


def test_upload_small_file_imports_at_once(project, lead_client):
    response = lead_client.post(
        reverse("annotation:import-upload", args=[project.slug]),
        {"file": upload(), "text_column": "text", "id_column": "id"},
        follow=True,
    )
    page = response.content.decode()
    assert "Imported 2 new examples" in page
    assert 'data-count="examples">2<' in page
    assert Example.objects.filter(project=project).count() == 2
    batch = ImportBatch.objects.get(project=project)
    assert batch.created_by.username == "lena_lead"
    assert batch.status == "succeeded"


def test_upload_malformed_file_shows_the_lines_and_imports_nothing(project, lead_client):
    response = lead_client.post(
        reverse("annotation:import-upload", args=[project.slug]),
        {
            "file": upload(content=b"text,label\nok,Billing\nbad,Nope\n"),
            "label_column": "label",
            "label_meaning": "predictions",
            "text_column": "text",
        },
        follow=True,
    )
    page = response.content.decode()
    assert "was not imported" in page
    assert '<td class="num">3</td><td>unknown label &#x27;Nope&#x27;' in page
    assert not Example.objects.filter(project=project).exists()


def test_upload_unknown_extension_asks_for_format(project, lead_client):
    response = lead_client.post(
        reverse("annotation:import-upload", args=[project.slug]),
        {"file": upload(name="data.dat"), "text_column": "text"},
        follow=True,
    )
    assert "choose one" in response.content.decode()
    assert not ImportBatch.objects.exists()


def test_large_upload_is_queued_and_status_polls_until_done(
    project, lead_client, settings, queues, django_capture_on_commit_callbacks
):
    settings.IMPORT_INLINE_MAX_BYTES = 10
    with django_capture_on_commit_callbacks(execute=True):
        response = lead_client.post(
            reverse("annotation:import-upload", args=[project.slug]),
            {"file": upload(), "text_column": "text"},
            follow=True,
        )
    assert "in the background" in response.content.decode()
    batch = ImportBatch.objects.get(project=project)
    assert batch.status == "pending"
    jobs = queues["default"].jobs
    assert [(j.func_name, j.args) for j in jobs] == [("annotation.jobs.run_import_batch", (batch.pk,))]

    status_url = reverse("annotation:project-status", args=[project.slug])
    busy = lead_client.get(status_url, headers={"HX-Request": "true"})
    assert busy.status_code == 200 and 'hx-trigger="every 2s"' in busy.content.decode()

    from annotation.jobs import run_import_batch

    run_import_batch(batch.pk)
    done = lead_client.get(status_url, headers={"HX-Request": "true"})
    assert done.status_code == 286  # tells htmx to stop polling
    assert 'data-count="examples">2<' in done.content.decode()


def test_label_rename_carries_over_to_answers(project, lead_client, reviewer):
    example = Example.objects.create(project=project, text="x")
    Proposal.objects.create(example=example, agent="import", value="Billing")
    Review.objects.create(example=example, reviewer=reviewer, verdict="accept", value="Billing")
    label = project.labels.get(name="Billing")
    lead_client.post(
        reverse("annotation:label-update", args=[project.slug, label.pk]),
        {"name": "Payments", "description": "", "key": "p", "order": 1},
    )
    assert Proposal.objects.get().value == "Payments"
    assert Review.objects.get().value == "Payments"
    assert Label.objects.get(pk=label.pk).key == "p"


def test_label_in_use_cannot_be_deleted(project, lead_client):
    Proposal.objects.create(
        example=Example.objects.create(project=project, text="x"), agent="import", value="Billing"
    )
    label = project.labels.get(name="Billing")
    response = lead_client.post(
        reverse("annotation:label-delete", args=[project.slug, label.pk]), follow=True
    )
    assert "rename it instead" in response.content.decode()
    assert Label.objects.filter(pk=label.pk).exists()
    unused = project.labels.get(name="Other")
    lead_client.post(reverse("annotation:label-delete", args=[project.slug, unused.pk]))
    assert not Label.objects.filter(pk=unused.pk).exists()


def test_label_key_reserved_for_review_actions(project, lead_client):
    response = lead_client.post(
        reverse("annotation:label-create", args=[project.slug]), {"name": "Shipping", "key": "x"}, follow=True
    )
    assert "kept for review actions" in response.content.decode()
    assert not project.labels.filter(name="Shipping").exists()


def test_members_add_and_last_lead_stays(project, lead_client, lead, outsider):
    lead_client.post(
        reverse("annotation:membership-add", args=[project.slug]),
        {"username": outsider.username, "role": "reviewer"},
    )
    assert project.role_of(outsider) == "reviewer"
    own = Membership.objects.get(project=project, user=lead)
    response = lead_client.post(
        reverse("annotation:membership-remove", args=[project.slug, own.pk]), follow=True
    )
    assert "at least one lead" in response.content.decode()
    assert Membership.objects.filter(pk=own.pk).exists()


def test_the_last_lead_cannot_demote_themselves(project, lead_client, lead):
    """Repro (#12.6): membership_set turned the only lead into a reviewer, leaving no lead."""
    response = lead_client.post(
        reverse("annotation:membership-add", args=[project.slug]),
        {"username": lead.username, "role": "reviewer"},
        follow=True,
    )
    assert "at least one lead" in response.content.decode()
    assert project.role_of(lead) == "lead"


def test_export_download_streams_jsonl(project, reviewer_client):
    Example.objects.create(project=project, text="hello")
    response = reviewer_client.get(
        reverse("annotation:project-export", args=[project.slug]), {"format": "jsonl", "scope": "all"}
    )
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"].startswith('attachment; filename="tickets-all-')
    rows = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert [r["text"] for r in rows] == ["hello"]


def test_export_of_missing_gold_version_says_so(project, reviewer_client):
    response = reviewer_client.get(
        reverse("annotation:project-export", args=[project.slug]),
        {"format": "csv", "scope": "gold", "gold": 4},
        follow=True,
    )
    assert "no frozen gold set version 4" in response.content.decode()


def test_guidelines_markdown_is_sanitised(project, reviewer_client):
    project.guidelines = "**Bold** <script>alert(1)</script> [x](javascript:alert(2))"
    project.save()
    page = reviewer_client.get(reverse("annotation:project-detail", args=[project.slug])).content.decode()
    assert "<strong>Bold</strong>" in page
    assert "<script>alert(1)" not in page and "javascript:alert" not in page


def test_admin_lists_every_model(admin_client):
    for model in [
        "project",
        "membership",
        "label",
        "importbatch",
        "example",
        "proposal",
        "review",
        "goldset",
    ]:
        assert admin_client.get(reverse(f"admin:annotation_{model}_changelist")).status_code == 200


def test_interrupted_import_can_be_resumed(project, lead_client, queues, django_capture_on_commit_callbacks):
    import datetime as dt

    from django.utils import timezone

    batch = ImportBatch.objects.create(
        project=project,
        file_name="x.csv",
        format="csv",
        status="running",
        heartbeat_at=timezone.now() - dt.timedelta(minutes=5),
    )
    # The page that shows it notices its worker went silent and queues it again (once).
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            lead_client.get(reverse("annotation:project-detail", args=[project.slug]))
    batch.refresh_from_db()
    assert batch.status == "pending"
    assert [j.args for j in queues["default"].jobs] == [(batch.pk,)]


def test_finished_import_is_not_resumed(project, lead_client, queues):
    batch = ImportBatch.objects.create(project=project, file_name="x.csv", format="csv", status="succeeded")
    response = lead_client.post(
        reverse("annotation:job-resume", args=[project.slug, "importbatch", batch.pk]), follow=True
    )
    assert "nothing to resume" in response.content.decode()
    assert queues["default"].count == 0
