"""Sign-in is throttled (django-axes) and new passwords are validated (issue #23)."""

from __future__ import annotations

import pytest
from django.contrib.auth.forms import SetPasswordForm
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def sign_in(client: Client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password})


def test_wrong_passwords_lock_the_username_out_then_the_right_one_too(django_user_model, settings):
    make_user(django_user_model, "rui_reviewer")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "rui_reviewer", "guess").status_code == 200  # the form again
    locked = sign_in(client, "rui_reviewer", "guess")
    assert locked.status_code == 429 and "Too many sign-in attempts" in locked.content.decode()
    for _ in range(20):
        assert sign_in(client, "rui_reviewer", "guess").status_code == 429
    # The right password is refused too while the lock holds.
    assert sign_in(client, "rui_reviewer", "pw-rui_reviewer").status_code == 429
    assert "_auth_user_id" not in client.session
    # Another address is not locked out: a stranger's guessing cannot lock a reviewer out.
    elsewhere = Client(REMOTE_ADDR="10.0.0.9")
    assert sign_in(elsewhere, "rui_reviewer", "pw-rui_reviewer").status_code == 302
    # An administrator unlocks the username.
    call_command("axes_reset_username", "rui_reviewer")
    assert sign_in(client, "rui_reviewer", "pw-rui_reviewer").status_code == 302


def test_a_good_sign_in_still_works_and_resets_the_count(django_user_model, settings):
    make_user(django_user_model, "lena_lead")
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "lena_lead", "guess")
    assert sign_in(client, "lena_lead", "pw-lena_lead").status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "lena_lead", "guess")
    assert sign_in(client, "lena_lead", "pw-lena_lead").status_code == 302


def test_new_passwords_set_through_a_form_are_validated(django_user_model):
    user = make_user(django_user_model, "rui_reviewer")
    for weak in ("demo", "password123", "12345678901", "rui_reviewer"):
        form = SetPasswordForm(user, {"new_password1": weak, "new_password2": weak})
        assert not form.is_valid(), weak
    strong = "violet-harbour-97-tundra"
    assert SetPasswordForm(user, {"new_password1": strong, "new_password2": strong}).is_valid()


def test_the_demo_logins_still_work(settings):
    call_command("seed_demo")
    for username in ("demo", "reviewer"):
        assert sign_in(Client(), username, "demo").status_code == 302
