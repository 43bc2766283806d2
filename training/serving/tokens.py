"""API tokens: created once, stored as a hash, checked (through the cache) on each request."""

from __future__ import annotations

import hashlib
import secrets

from django.db import InterfaceError, OperationalError
from django.utils import timezone

from annotation.models import Project
from training.models import ApiToken
from training.serving.cache import cached, forget_now_and_on_commit
from training.serving.config import ServingError


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_create(*, project: Project, user, name: str) -> tuple[ApiToken, str]:
    raw = "dst_" + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        project=project, name=name.strip() or "token", prefix=raw[:10], token_hash=_hash(raw), created_by=user
    )
    return token, raw


def token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    forget_now_and_on_commit()


# How often a token's last_used_at is written: at most once a minute, not on every request.
TOKEN_TOUCH_SECONDS = 60


def token_check(authorization: str | None) -> ApiToken:
    """The token of an `Authorization: Bearer ...` header, or a ServingError saying why not."""
    if not authorization or not authorization.startswith("Bearer "):
        raise ServingError(
            "Send the project's API token as 'Authorization: Bearer <token>'.", code="no_token", status=401
        )
    digest = _hash(authorization[7:].strip())
    token = cached(("token", digest), lambda: _token_by_hash(digest))
    if token is None or not token.is_active:
        raise ServingError("This API token is not valid (wrong, or revoked).", code="bad_token", status=401)
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= TOKEN_TOUCH_SECONDS:
        token.last_used_at = now
        try:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        except (OperationalError, InterfaceError):
            pass  # "last used" is a hint: a database that does not answer does not stop a prediction
    return token


def _token_by_hash(digest: str) -> ApiToken | None:
    return ApiToken.objects.select_related("project").filter(token_hash=digest).first()
