from __future__ import annotations

import uuid

import django_rq
import pytest
from django.conf import settings
from django.test import Client

from annotation import projects
from annotation.models import Membership, Project
from distillapp import embedded_redis
from tests.fake_openai import FakeOpenAI


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    """Real Redis: REDIS_URL's server, or the embedded one started here."""
    server = embedded_redis.ensure_started()
    yield
    if server is not None:
        embedded_redis.stop(server, save=False)


@pytest.fixture(autouse=True)
def fresh_rate_limits(monkeypatch):
    """Per-account rate-limit counters (views._common.rate_limited) start at zero in every test: each test
    counts under its own keys (clearing the cache would flush a Redis the queues share)."""
    monkeypatch.setattr("annotation.views._common.RATE_LIMIT_KEY", f"ratelimit-{uuid.uuid4().hex}")
    monkeypatch.setattr("annotation.views._common._rate_clock", lambda: 1_800_000_030.0)  # mid-minute


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2 on every test user would dominate the suite's run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def allowed_teachers(settings, monkeypatch):
    """The operator's teacher allow-lists, as a test deployment would set them: the key
    variable FAKE_LLM_KEY and every fake LLM server a test starts (random loopback ports).
    Worker subprocesses started by a test get the same lists through the environment."""
    settings.TEACHER_API_KEY_VARS = [*settings.TEACHER_API_KEY_VARS, "FAKE_LLM_KEY"]
    settings.TEACHER_BASE_URLS = allowed = list(settings.TEACHER_BASE_URLS)
    monkeypatch.setenv("DISTILL_TEACHER_API_KEY_VARS", ",".join(settings.TEACHER_API_KEY_VARS))
    original_init = FakeOpenAI.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        allowed.append(self.base_url)
        monkeypatch.setenv("DISTILL_TEACHER_BASE_URLS", ",".join(allowed))

    monkeypatch.setattr(FakeOpenAI, "__init__", init)
    return allowed


@pytest.fixture(autouse=True)
def fresh_serving_cache(settings):
    """Each test starts with an empty per-process serving cache and no primed teacher task (ids
    repeat across tests), and its own keys in the shared cache (Redis: the rate and spend
    counters), by a prefix of its own."""
    import uuid

    from annotation.teacher.service import primed_tasks_forget
    from training import serving
    from training.serving import limits

    settings.CACHES = {
        name: {**config, "KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}"}
        for name, config in settings.CACHES.items()
    }
    serving.forget_cached()
    limits._blocked.clear()
    primed_tasks_forget()
    yield
    serving.forget_cached()
    limits._blocked.clear()
    primed_tasks_forget()


@pytest.fixture
def queues(redis_server):
    """The rq queues, emptied before and after the test."""
    found = {name: django_rq.get_queue(name) for name in settings.RQ_QUEUE_NAMES}
    for queue in found.values():
        queue.empty()
    yield found
    for queue in found.values():
        queue.empty()


def make_user(django_user_model, username: str, **extra):
    return django_user_model.objects.create_user(username=username, password="pw-" + username, **extra)


@pytest.fixture
def lead(django_user_model):
    return make_user(django_user_model, "lena_lead")


@pytest.fixture
def reviewer(django_user_model):
    return make_user(django_user_model, "rui_reviewer")


@pytest.fixture
def outsider(django_user_model):
    return make_user(django_user_model, "otto_outsider")


DEFAULT_LABELS = [
    ("Billing", "Money questions"),
    ("Technical support", "Something is broken"),
    ("Other", "Everything else"),
]


def make_project(*, lead, reviewer=None, slug: str = "tickets", labels=DEFAULT_LABELS) -> Project:
    project = projects.project_create(name=slug.title(), slug=slug, user=lead, labels=list(labels))
    if reviewer is not None:
        Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    return project


@pytest.fixture
def project(lead, reviewer) -> Project:
    return make_project(lead=lead, reviewer=reviewer)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def lead_client(lead) -> Client:
    return client_for(lead)


@pytest.fixture
def reviewer_client(reviewer) -> Client:
    return client_for(reviewer)


@pytest.fixture
def outsider_client(outsider) -> Client:
    return client_for(outsider)
