"""What a token holder may make the server do: requests per minute per token, and the
teacher fallback's spend per project and calendar month (UTC).

Both are counted in Redis through Django's cache, the one place every serving process
shares: a token's count is one Redis script (INCRBY, EXPIRE on the first count) per request, and a
token over its limit is remembered in the process until its minute ends, so a flood costs
no Redis call at all (a limit raised meanwhile helps that token from the next minute). The spend is read only when unsure texts are about to go to the
teacher, and added to after it answers. A Redis that cannot be reached does not stop
serving: the rate limit lets requests through (logged), the budget is read from the log.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.core.cache import cache
from django.db.models import Sum
from django.utils import timezone
from redis.exceptions import RedisError

from annotation.models import Project
from training.models import ApiToken, PredictionLog, ServingConfig
from training.serving.config import ServingError

logger = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, OSError)
_now = time.time  # the limits' clock (tests hold it still)

RATE_WINDOW_SECONDS = 60
# token id -> when its window ends: this process refuses it until then without asking Redis.
_blocked: dict[int, float] = {}
_BLOCKED_MAX_ENTRIES = 10_000


# INCRBY, and the expiry set by the count that created the key: one round trip.
_INCR_LUA = (
    "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) "
    "if n == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end "
    "return n"
)
# Django's Redis cache client -> the script bound to a client of its pool. Django builds a new
# redis-py client (and its ~170 response callbacks) on every get_client(), as does a
# pipeline: 0.1-0.2 ms of CPU a request, so the script and its client are made once.
_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _incr(key: str, delta: int, *, timeout: float) -> int:
    """Add `delta` to a counter that expires `timeout` seconds after it starts.

    On Redis, one round trip (a script: INCRBY, EXPIRE on the first count): Django's own
    ``incr`` asks EXISTS first, two round trips (bench/README.md, "Serving limits"). Django's
    cache reads the counter as it wrote it."""
    backend = getattr(cache, "_cache", None)
    if hasattr(backend, "get_client"):
        script = _scripts.get(backend)
        if script is None:
            script = _scripts[backend] = backend.get_client(write=True).register_script(_INCR_LUA)
        full = cache.make_and_validate_key(key)
        return int(script(keys=[full], args=[delta, math.ceil(timeout)]))
    try:
        return cache.incr(key, delta)
    except ValueError:  # the first count of its window: create it, unless another process just did
        if cache.add(key, delta, timeout=timeout):
            return delta
        return cache.incr(key, delta)


def rate_check(*, token: ApiToken, config: ServingConfig) -> None:
    """Count one request of `token`; a ServingError (429, Retry-After) past its minute's limit."""
    now = _now()
    window = int(now // RATE_WINDOW_SECONDS)
    ends = (window + 1) * RATE_WINDOW_SECONDS
    if _blocked.get(token.pk, 0.0) > now:
        raise _too_many(config, ends - now)
    # The hash (random per token), not the id: ids come back in a test database.
    key = f"serving:rate:{token.token_hash[:24]}:{window}"
    try:
        count = _incr(key, 1, timeout=RATE_WINDOW_SECONDS + 5)
    except _REDIS_ERRORS as exc:
        # One line a request, not a traceback: an outage of seconds is hundreds of requests.
        logger.warning("Rate limit not counted: Redis cannot be reached (%s)", exc)
        return
    if count > config.requests_per_minute:
        if len(_blocked) >= _BLOCKED_MAX_ENTRIES:
            _blocked.clear()
        _blocked[token.pk] = ends
        raise _too_many(config, ends - now)


def _too_many(config: ServingConfig, wait: float) -> ServingError:
    return ServingError(
        f"This token has made more than {config.requests_per_minute:,} requests this minute "
        "(the project's limit per token); try again when the minute ends.",
        code="rate_limit_exceeded",
        status=429,
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


# --- the fallback's monthly budget -------------------------------------------------------------------

_MICROS = Decimal(1_000_000)  # spend is counted in millionths of a dollar (the log's precision)
_SPEND_KEY_SECONDS = 35 * 24 * 3600


def _month_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month_start(now: datetime | None = None) -> datetime:
    start = _month_start(now)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def _spend_key(project: Project) -> str:
    return f"serving:spend:{project.pk}:{_month_start():%Y%m}"


def logged_spend(project: Project) -> Decimal:
    """This month's teacher spend of the project's serving, from the prediction log (the truth;
    rows reach it within the log's flush interval)."""
    total = PredictionLog.objects.filter(project=project, created_at__gte=_month_start()).aggregate(
        total=Sum("teacher_cost_usd")
    )["total"]
    return total or Decimal("0")


def fallback_spend(project: Project) -> Decimal:
    """This month's spend as the request path counts it: Redis, made from the log when missing."""
    key = _spend_key(project)
    try:
        micros = cache.get(key)
        if micros is None:
            micros = int(logged_spend(project) * _MICROS)
            if not cache.add(key, micros, timeout=_SPEND_KEY_SECONDS):
                micros = cache.get(key, micros)
    except _REDIS_ERRORS as exc:
        logger.warning("Fallback spend read from the log: Redis cannot be reached (%s)", exc)
        return logged_spend(project)
    return Decimal(micros) / _MICROS


def fallback_budget_spent(project: Project, config: ServingConfig) -> bool:
    """Whether the teacher may no longer be asked this month (the lead's budget is spent).

    Read once per request before the teacher is called: concurrent requests may together
    pass the budget by what they are spending at that moment, never by more.
    """
    budget = config.monthly_fallback_budget_usd
    return budget is not None and fallback_spend(project) >= budget


def fallback_spend_add(*, project: Project, cost_usd: Decimal) -> None:
    micros = int(cost_usd * _MICROS)
    if micros <= 0:
        return
    key = _spend_key(project)
    try:
        try:
            cache.incr(key, micros)
        except ValueError:  # gone (a new month, Redis restarted): made from the log first
            fallback_spend(project)
            _incr(key, micros, timeout=_SPEND_KEY_SECONDS)
    except _REDIS_ERRORS as exc:
        logger.warning("Fallback spend not counted: Redis cannot be reached (%s)", exc)


@dataclass(frozen=True)
class BudgetStatus:
    """The deploy and monitor pages' view of the month's budget (from the log)."""

    budget: Decimal
    spent: Decimal
    resets_at: datetime

    @property
    def share(self) -> float:
        return float(self.spent / self.budget) if self.budget else 1.0

    @property
    def is_spent(self) -> bool:
        return self.spent >= self.budget

    @property
    def is_near(self) -> bool:
        return not self.is_spent and self.share >= BUDGET_WARNING_SHARE


BUDGET_WARNING_SHARE = 0.8


def fallback_budget_status(project: Project, config: ServingConfig) -> BudgetStatus | None:
    """None when the project has no budget or its fallback is not the teacher."""
    if config.monthly_fallback_budget_usd is None or config.fallback != ServingConfig.Fallback.TEACHER:
        return None
    return BudgetStatus(
        budget=config.monthly_fallback_budget_usd,
        spent=logged_spend(project),
        resets_at=_next_month_start(),
    )
