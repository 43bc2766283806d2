from __future__ import annotations

import uuid

import pytest


@pytest.fixture(autouse=True)
def fresh_rate_limits(monkeypatch):
    """Rate-limit counters (views._common.rate_limited) start at zero in every test: each test
    counts under its own keys (clearing the cache would flush a Redis the queues share)."""
    monkeypatch.setattr("annotation.views._common.RATE_LIMIT_KEY", f"ratelimit-{uuid.uuid4().hex}")
    monkeypatch.setattr("annotation.views._common._rate_clock", lambda: 1_800_000_030.0)  # mid-minute
