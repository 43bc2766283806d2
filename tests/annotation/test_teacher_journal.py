"""The teacher's answer journal (annotation.teacher.journal) against the real Redis."""

from __future__ import annotations

import asyncio

from annotation.teacher import journal
from distillapp.redis_cache import raw_client


def test_answers_kept_in_one_turn_go_in_one_write_and_leave_once_written():
    job_id = 990_001
    paid = journal.Journal(job_id)
    client = raw_client()
    client.delete(paid.key)
    seen_before_the_turn_ended = []

    async def answers_come_back() -> None:
        paid.keep("req-a", [{"value": "Billing", "confidence": 0.9}])
        paid.keep("req-b", [{"value": "Other", "confidence": 0.4}])
        seen_before_the_turn_ended.append(client.hlen(paid.key))
        await asyncio.sleep(0)  # the loop turns: both are written, together
        paid.keep("req-c", [{"value": "Billing", "confidence": 0.7}])
        paid.flush()  # as the run ends

    asyncio.run(answers_come_back())
    assert seen_before_the_turn_ended == [0]
    assert 0 < client.ttl(paid.key) <= journal.KEEP_SECONDS
    assert journal.kept(job_id, ["req-a", "req-c", "req-x"]) == {
        "req-a": [{"value": "Billing", "confidence": 0.9}],
        "req-c": [{"value": "Billing", "confidence": 0.7}],
    }
    journal.written(job_id, ["req-a", "req-b", "req-c"])
    assert not client.exists(paid.key)
    assert journal.kept(job_id, ["req-a"]) == {}
