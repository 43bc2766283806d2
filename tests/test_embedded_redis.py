"""The embedded Redis (no REDIS_URL): stopped at once, with or without its data kept."""

from __future__ import annotations

import time

import pytest

from distillapp import embedded_redis


def _wait_stopped(socket_path, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not embedded_redis.is_running(socket_path):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("save", [True, False])
def test_stop_stops_the_server_and_keeps_data_only_when_asked(tmp_path, save):
    db, sock = tmp_path / "redis.db", tmp_path / "redis.sock"
    server = embedded_redis.start(db_path=db, socket_path=sock)
    assert server is not None and embedded_redis.is_running(sock)
    server.set("kept", "yes")

    embedded_redis.stop(server, save=save)
    assert _wait_stopped(sock)

    again = embedded_redis.start(db_path=db, socket_path=sock)
    try:
        assert again.get("kept") == (b"yes" if save else None)
    finally:
        embedded_redis.stop(again, save=False)


def test_stop_answers_without_redis_py_retrying_the_closed_connection(tmp_path, monkeypatch):
    # SHUTDOWN closes the connection; a retrying client sleeps through its backoff steps
    # (3 s per stopped server: every test run, bench and `serve` shutdown paid it).
    import redis.retry

    backoffs: list[float] = []
    monkeypatch.setattr(redis.retry, "sleep", backoffs.append)
    server = embedded_redis.start(db_path=tmp_path / "r.db", socket_path=tmp_path / "r.sock")
    embedded_redis.stop(server, save=False)
    assert backoffs == []
    assert _wait_stopped(tmp_path / "r.sock")
