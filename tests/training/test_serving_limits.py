"""What a token holder may make the server do (#23) and what the drop-in answers when unsure (#24):
requests per minute per token, the teacher fallback's monthly budget, the bounds on a batch and
the share of traffic kept, one answer for every slug that is not the token's, and the drop-in's
unsure answer as an OpenAI client sees it.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from annotation.models import Example
from tests.conftest import client_for, make_project
from tests.training import test_api_dropin as dropin
from tests.training.conftest import make_run
from tests.training.test_api_dropin import CHAT, assert_openai_error, post
from training import openapi, serving
from training.forms import ServingConfigForm
from training.models import MAX_BATCH_LIMIT, PredictionLog, ServingConfig
from training.serving import limits

pytestmark = pytest.mark.django_db

# The drop-in tests' fixtures: a promoted version that is never sure, its token, no LLM or the fake one.
llm, offline, token, version = dropin.llm, dropin.offline, dropin.token, dropin.version

CHAT_BODY = {"messages": [{"role": "user", "content": "refund please"}]}


def predict_path(project) -> str:
    return f"/api/v1/projects/{project.slug}/predict"


def configure(project, **fields) -> ServingConfig:
    config = serving.serving_config_for(project)
    for name, value in fields.items():
        setattr(config, name, value)
    config.save()
    serving.forget_cached()
    return config


@pytest.fixture
def clock(monkeypatch):
    """The limits' clock, held 20 s into a minute (a test never straddles two)."""
    now = {"t": 1_800_000_000.0 + 20}  # 1_800_000_000 is a whole minute
    monkeypatch.setattr(limits, "_now", lambda: now["t"])
    return now


# --- requests per minute per token --------------------------------------------------------------------


def test_a_token_past_its_requests_per_minute_gets_429_until_the_minute_ends(
    project, lead, token, offline, clock
):
    configure(project, requests_per_minute=3, drop_in_unsure="guess")
    assert post(predict_path(project), token, {"texts": ["refund please"]}).status_code == 200
    assert post(CHAT, token, CHAT_BODY).status_code == 200
    models = Client().get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert models.status_code == 200  # all three APIs count
    refused = post(predict_path(project), token, {"texts": ["refund please"]})
    assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert refused["Retry-After"] == "40"
    assert PredictionLog.objects.count() == 2  # the refused request never reached the model

    # Counted in Redis, not in this process: another serving process refuses it too.
    limits._blocked.clear()
    serving.forget_cached()
    assert_openai_error(post(CHAT, token, CHAT_BODY), 429, "rate_limit_exceeded")

    # Another token of the same project has its own count.
    _, other = serving.token_create(project=project, user=lead, name="second")
    assert post(predict_path(project), other, {"texts": ["refund please"]}).status_code == 200

    clock["t"] += 40  # the next minute
    assert post(predict_path(project), token, {"texts": ["refund please"]}).status_code == 200


def test_serving_goes_on_when_redis_cannot_be_reached(project, token, offline, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    configure(project, requests_per_minute=1)
    for _ in range(2):
        response = post(predict_path(project), token, {"texts": ["refund please"]})
        assert response.status_code == 200, response.content[:300]


# --- the teacher fallback's monthly budget --------------------------------------------------------------


def price_each_call_at_60_cents(project) -> None:
    from annotation.teacher import teacher_config_for

    teacher = teacher_config_for(project)
    teacher.price_input_per_mtok = Decimal("600")  # the fake's 1,000 prompt tokens: $0.60
    teacher.price_output_per_mtok = Decimal("0")
    teacher.save()


def test_past_the_monthly_budget_unsure_texts_go_to_review_and_the_lead_is_told(
    project, token, llm, lead, reviewer
):
    price_each_call_at_60_cents(project)
    configure(project, monthly_fallback_budget_usd=Decimal("1.00"), drop_in_unsure="guess")
    routes = [post(CHAT, token, {"messages": [{"role": "user", "content": f"refund {i}"}]}) for i in range(3)]
    assert [r.json()["distill"]["route"] for r in routes] == ["teacher", "teacher", "review"]
    assert llm.calls == 2  # $1.20 spent, then no more calls this month
    assert serving.fallback_spend(project) == Decimal("1.20") == serving.logged_spend(project)
    assert Example.objects.filter(text="refund 2", source="traffic").exists()  # it went to review

    deploy = client_for(lead).get(reverse("training:deploy", args=[project.slug])).content.decode()
    assert 'data-budget="spent"' in deploy and "$1.20 of $1.00" in deploy
    monitor = client_for(reviewer).get(reverse("training:monitor", args=[project.slug])).content.decode()
    assert 'data-budget="spent"' in monitor

    # Redis lost the count (restarted): it is made again from the prediction log.
    cache.delete(limits._spend_key(project))
    assert (
        post(CHAT, token, {"messages": [{"role": "user", "content": "refund 3"}]}).json()["distill"]["route"]
        == "review"
    )
    assert llm.calls == 2

    configure(project, monthly_fallback_budget_usd=Decimal("5.00"))  # the lead raises it
    assert (
        post(CHAT, token, {"messages": [{"role": "user", "content": "refund 4"}]}).json()["distill"]["route"]
        == "teacher"
    )
    deploy = client_for(lead).get(reverse("training:deploy", args=[project.slug])).content.decode()
    assert "data-budget" not in deploy  # $1.80 of $5.00: no alert


def test_the_budget_warns_before_it_is_spent_and_resets_next_month(project, llm):
    config = configure(project, monthly_fallback_budget_usd=Decimal("1.00"))
    PredictionLog.objects.create(
        project=project, route="teacher", latency_ms=1, teacher_cost_usd=Decimal("0.85")
    )
    status = serving.fallback_budget_status(project, config)
    assert status.is_near and not status.is_spent
    assert status.resets_at.day == 1 and status.resets_at > PredictionLog.objects.get().created_at


# --- bounds on a batch and on what is kept ----------------------------------------------------------------


def test_a_batch_is_bounded_whatever_the_settings_row_says(project, token, offline):
    form = ServingConfigForm({**ServingConfigForm(instance=serving.serving_config_for(project)).initial})
    assert form.is_valid(), form.errors
    for bad in (0, MAX_BATCH_LIMIT + 1, 1_000_000):
        form = ServingConfigForm(
            {**form.initial, "max_batch": bad}, instance=serving.serving_config_for(project)
        )
        assert not form.is_valid() and "max_batch" in form.errors
    # A row saved before the bound (or by hand) does not lift it.
    ServingConfig.objects.filter(project=project).update(max_batch=1_000_000)
    serving.forget_cached()
    texts = [f"text {i}" for i in range(MAX_BATCH_LIMIT + 1)]
    assert_openai_error(post(predict_path(project), token, {"texts": texts}), 413, "too_many_texts")
    assert not PredictionLog.objects.exists()


def test_a_new_project_keeps_a_sample_of_its_unsure_traffic(lead, tiny_classifier, offline):
    project = make_project(lead=lead, slug="sampled")
    config = serving.serving_config_for(project)
    assert 0 < config.traffic_sample_rate <= 0.2
    form = ServingConfigForm({**ServingConfigForm(instance=config).initial, "traffic_sample_rate": 1.5})
    assert "traffic_sample_rate" in form.errors
    serving.version_promote(run=make_run(project, tiny_classifier), user=lead, threshold=1.0)
    _, raw = serving.token_create(project=project, user=lead, name="t")
    random.seed(7)
    for start in range(0, 200, 50):
        texts = [f"unsure text number {i}" for i in range(start, start + 50)]
        response = post(predict_path(project), raw, {"texts": texts})
        assert {p["route"] for p in response.json()["predictions"]} == {"review"}
    kept = Example.objects.filter(project=project, source="traffic").count()
    assert 5 <= kept <= 45  # about a tenth, not all 200


# --- slugs ----------------------------------------------------------------------------------------------------


def test_an_unknown_slug_and_another_projects_answer_alike(project, lead, token):
    make_project(lead=lead, slug="secret-merger")
    answers = {}
    for slug in ("secret-merger", "no-such-project"):
        response = post(f"/api/v1/projects/{slug}/predict", token, {"texts": ["x"]})
        error = response.json()["error"]
        answers[slug] = (
            response.status_code,
            error["code"],
            error["type"],
            error["message"].replace(slug, "…"),
        )
    assert answers["secret-merger"] == answers["no-such-project"]
    assert answers["secret-merger"][:2] == (404, "no_project")


# --- the drop-in when unsure, as the OpenAI client sees it ---------------------------------------------------


def test_an_openai_client_gets_an_error_it_does_not_retry(
    project, lead, tiny_classifier, live_server, transactional_db
):
    import openai

    serving.version_promote(run=make_run(project, tiny_classifier), user=lead, threshold=1.0)
    _, raw = serving.token_create(project=project, user=lead, name="drop-in")
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=raw)  # its default retries
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "refund please"}]
        )
    assert caught.value.code == "student_unsure"
    assert caught.value.body["code"] == "student_unsure"
    assert PredictionLog.objects.count() == 1  # asked once: not retried


def test_the_deploy_page_and_the_document_say_what_an_unsure_text_gets(project, lead, token):
    page = client_for(lead).get(reverse("training:deploy", args=[project.slug])).content.decode()
    assert 'data-drop-in-unsure="error"' in page and "student_unsure" in page
    configure(project, drop_in_unsure="abstain", drop_in_abstain_content="NO_IDEA")
    page = client_for(lead).get(reverse("training:deploy", args=[project.slug])).content.decode()
    assert 'data-drop-in-unsure="abstain"' in page and "NO_IDEA" in page

    chat = openapi.document()["paths"]["/v1/chat/completions"]["post"]
    assert {"422", "429"} <= set(chat["responses"])
    assert "student_unsure" in chat["responses"]["422"]["description"]
    assert "JSON string" in chat["description"]  # the extraction content
    predict = openapi.document()["paths"]["/api/v1/projects/{slug}/predict"]["post"]
    assert "429" in predict["responses"] and "403" not in predict["responses"]


def test_the_lead_saves_the_new_settings_and_an_abstain_needs_its_text(project, lead, token):
    client = client_for(lead)
    data = {**ServingConfigForm(instance=serving.serving_config_for(project)).initial}
    data = {k: ("" if v is None else v) for k, v in data.items()}
    response = client.post(
        reverse("training:deploy", args=[project.slug]),
        {**data, "drop_in_unsure": "abstain", "drop_in_abstain_content": ""},
    )
    assert response.status_code == 200 and "Write the text the drop-in answers" in response.content.decode()
    response = client.post(
        reverse("training:deploy", args=[project.slug]),
        {
            **data,
            "drop_in_unsure": "abstain",
            "drop_in_abstain_content": "UNSURE",
            "requests_per_minute": 60,
            "monthly_fallback_budget_usd": "25",
        },
    )
    assert response.status_code == 302
    config = ServingConfig.objects.get(project=project)
    assert (config.drop_in_unsure, config.drop_in_abstain_content, config.requests_per_minute) == (
        "abstain",
        "UNSURE",
        60,
    )
    assert config.monthly_fallback_budget_usd == Decimal("25")


def test_a_counter_expires_from_its_first_count_and_counts_across_processes_from_redis():
    # The counter lives in Redis (every web process shares it) and expires a window after its
    # first count, not after its last: a busy token's window still ends.
    key = f"test:counter:{random.random()}"
    assert limits._incr(key, 2, timeout=30) == 2
    client = cache._cache.get_client(write=True)
    full = cache.make_and_validate_key(key)
    first_ttl = client.ttl(full)
    assert 0 < first_ttl <= 30
    client.expire(full, 7)  # as if time had passed
    assert limits._incr(key, 3, timeout=30) == 5
    assert 0 < client.ttl(full) <= 7  # a later count leaves the expiry alone
    assert cache.get(key) == 5  # Django's cache reads what the counter wrote
