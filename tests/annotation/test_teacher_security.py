"""A lead must not be able to choose which server secret the teacher sends, or where.

Repro of issue #12 finding 1: a lead set the key variable to DJANGO_SECRET_KEY and the
base URL to a server of their own, started a labelling job, and received the secret key
as the Authorization header.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from annotation import teacher
from annotation.models import Example, Project, TeacherConfig
from tests.conftest import client_for, make_user

# The labelling job's teacher calls run on their own threads and connections.
pytestmark = pytest.mark.django_db(transaction=True)
SECRET = "s3cret-server-key-never-to-leave"


class _Attacker(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        type(self).seen.append(dict(self.headers))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def attacker():
    """A server of the attacker's own on loopback, NOT on the operator's allow-list."""
    _Attacker.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Attacker.seen
    server.shutdown()
    server.server_close()


def settings_form(**overrides) -> dict:
    form = {
        "teacher-provider": "openai",
        "teacher-model": "gpt-4o-mini",
        "teacher-base_url": "",
        "teacher-api_key_env": "OPENAI_API_KEY",
        "teacher-temperature": "0",
        "teacher-max_tokens": "32",
        "teacher-price_input_per_mtok": "0.15",
        "teacher-price_output_per_mtok": "0.6",
        "teacher-concurrency": "4",
        "teacher-requests_per_minute": "0",
        "teacher-timeout_seconds": "5",
        "teacher-max_attempts": "1",
        "teacher-self_consistency_samples": "0",
        "prompt-instructions": "Route the ticket.",
        "prompt-few_shot": "none",
        "prompt-few_shot_k": "8",
        "prompt-few_shot_per_label": "2",
        "prompt-fixed_examples": "",
    }
    form.update({f"teacher-{k}": v for k, v in overrides.items()})
    return form


def test_a_lead_cannot_send_the_secret_key_to_their_own_server(project, lead_client, attacker, monkeypatch):
    attacker_url, seen = attacker
    monkeypatch.setenv("DJANGO_SECRET_KEY", SECRET)
    Example.objects.create(project=project, text="I was charged twice")
    url = reverse("annotation:teacher-settings", args=[project.slug])
    response = lead_client.post(url, settings_form(api_key_env="DJANGO_SECRET_KEY", base_url=attacker_url))
    assert response.status_code == 200  # the form comes back with its errors
    page = response.content.decode()
    assert "not one of the available choices" in page
    config = teacher.teacher_config_for(project)
    assert config.api_key_env != "DJANGO_SECRET_KEY" and config.base_url != attacker_url

    # Whatever is stored (old rows, the admin), a call never goes out with it.
    TeacherConfig.objects.filter(project=project).update(
        provider="openai", api_key_env="DJANGO_SECRET_KEY", base_url=attacker_url
    )
    with pytest.raises(teacher.LabelingError, match="not allowed on this server"):
        teacher.labeling_job_create(project=project, user=None, selection="unlabelled")
    config.refresh_from_db()
    with pytest.raises(teacher.TeacherError, match="not allowed"):
        teacher.OpenAITeacher(teacher.teacher_settings(config), project.task)
    assert seen == [] and all(SECRET not in str(headers) for headers in seen)


def test_an_allowed_key_may_not_go_to_an_unlisted_address(project, attacker, monkeypatch):
    attacker_url, seen = attacker
    monkeypatch.setenv("OPENAI_API_KEY", "sk-operator")
    Example.objects.create(project=project, text="I was charged twice")
    TeacherConfig.objects.update_or_create(
        project=project,
        defaults={"provider": "openai", "api_key_env": "OPENAI_API_KEY", "base_url": attacker_url},
    )
    with pytest.raises(teacher.LabelingError, match="DISTILL_TEACHER_BASE_URLS"):
        teacher.labeling_job_create(project=project, user=None, selection="unlabelled")
    settings = teacher.TeacherSettings(model="m", api_key_env="OPENAI_API_KEY", base_url=attacker_url)
    with pytest.raises(teacher.TeacherError, match="base URL"):  # the serving fallback's client too
        teacher.OpenAITeacher(settings, project.task)
    assert seen == []


def test_allowed_endpoints_still_work(project, lead_client, monkeypatch):
    from tests.fake_openai import FakeOpenAI, answer_with

    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    Example.objects.create(project=project, text="I was charged twice")
    with FakeOpenAI(answer_with({"I was charged twice": "Billing"})) as server:
        url = reverse("annotation:teacher-settings", args=[project.slug])
        page = lead_client.get(url).content.decode()
        assert server.base_url in page and "FAKE_LLM_KEY" in page
        response = lead_client.post(url, settings_form(api_key_env="FAKE_LLM_KEY", base_url=server.base_url))
        assert response.status_code == 302
        job = teacher.labeling_job_create(project=project, user=None, selection="unlabelled")
        assert teacher.labeling_job_claim(job.pk)
        teacher.labeling_job_run(job=job)
        assert server.requests[0].headers["authorization"] == "Bearer sk-test"


def test_settings_page_does_not_tell_whether_a_variable_exists(project, lead_client, monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", SECRET)
    TeacherConfig.objects.update_or_create(
        project=project, defaults={"provider": "openai", "api_key_env": "DJANGO_SECRET_KEY"}
    )
    page = lead_client.get(reverse("annotation:teacher-settings", args=[project.slug])).content.decode()
    assert "key is set" not in page
    assert "DJANGO_SECRET_KEY is not allowed here" in page


def test_only_staff_or_permitted_users_create_projects(django_user_model, settings):
    form = {"name": "Mine", "slug": "", "task_type": "classification", "labels": "A\nB\n"}
    plain = make_user(django_user_model, "pat_plain")
    client = client_for(plain)
    assert client.get(reverse("annotation:project-create")).status_code == 403
    assert client.post(reverse("annotation:project-create"), form).status_code == 403
    assert "New project" not in client.get(reverse("annotation:project-list")).content.decode()
    assert not Project.objects.exists()

    permitted = make_user(django_user_model, "perry_permitted")
    permitted.user_permissions.add(Permission.objects.get(codename="add_project"))
    assert client_for(permitted).post(reverse("annotation:project-create"), form).status_code == 302
    staff = make_user(django_user_model, "stella_staff", is_staff=True)
    assert client_for(staff).get(reverse("annotation:project-create")).status_code == 200

    settings.PROJECT_CREATORS = "anyone"
    assert client.post(reverse("annotation:project-create"), {**form, "name": "Other"}).status_code == 302
