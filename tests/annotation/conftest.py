from __future__ import annotations

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Rate-limit counters (views._common.rate_limited) start at zero in every test."""
    cache.clear()
    yield
    cache.clear()
