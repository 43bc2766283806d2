#!/usr/bin/env python
"""The floor under bench/teacher_bench.py: the bare OpenAI SDK against the same fake, no Django.

    python bench/teacher_floor.py [--calls 2000] [--concurrency 32] [--latency-ms 200] [--profile]

The fake (tests/fake_openai.py with teacher_bench's responder and TCP_NODELAY) runs in its own
process; this process sends the calls with ``openai.AsyncOpenAI`` under an asyncio semaphore,
once as the app sends them (``client.post("/chat/completions", cast_to=httpx.Response)`` and
``json.loads``) and once through ``client.chat.completions.create`` (request transform and
pydantic response model), alternating ``post, create, post``. Mode ``app`` is ``post`` with the
body the app's classification job sends (``logprobs`` and the labels' JSON schema as
``response_format``: the fake then answers with log-probs, a longer reply to read). Each prints calls/s, the same
``overhead_ms_per_call`` as teacher_bench (``seconds / ceil(calls / C) * 1000 - L``) and this
process's CPU per call. No database, no ORM thread: what is left is the client library, the
event loop and the machine, so the app's job cannot do better than this.
One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
for _path in (BENCH_DIR.parent, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def _serve(queue, latency_s: float) -> None:
    import teacher_bench

    with teacher_bench.fake_server(latency_s, nagle=False) as server:
        queue.put(server.base_url)
        time.sleep(24 * 3600)


async def _run(base_url: str, mode: str, calls: int, concurrency: int, latency_ms: float) -> dict:
    import httpx
    import openai
    from teacher_bench import LABEL_NAMES, example_text, overhead_per_wave

    from tasks.classification.task import response_format

    client = openai.AsyncOpenAI(api_key="sk-floor", base_url=base_url, max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    system = "You label support tickets. " * 60  # ~350 prompt tokens, as in teacher_bench

    async def one(n: int) -> None:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": example_text(n)}],
            "max_tokens": 20,
            "temperature": 0,
        }
        if mode == "app":
            body["logprobs"] = True
            body["response_format"] = response_format(LABEL_NAMES)
        async with gate:
            if mode in ("post", "app"):
                response = await client.post("/chat/completions", body=body, cast_to=httpx.Response)
                json.loads(response.content)
            else:
                await client.chat.completions.create(**body)

    await one(0)  # connection set up and imports warm
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(n) for n in range(1, calls + 1)))
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    await client.close()
    return {
        "mode": mode,
        "calls_per_second": round(calls / seconds, 1),
        "overhead_ms_per_call": round(
            overhead_per_wave(seconds, math.ceil(calls / concurrency), latency_ms), 1
        ),
        "client_cpu_ms_per_call": round(cpu * 1000 / calls, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument(
        "--modes",
        default="post,create,post",
        help="runs in order: post (the app's call), app (post with the app's body), create",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile (CPU time) of the calls, to stderr")
    args = parser.parse_args()
    queue: mp.Queue = mp.Queue()
    server = mp.Process(target=_serve, args=(queue, args.latency_ms / 1000), daemon=True)
    server.start()
    try:
        base_url = queue.get(timeout=60)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
        runs = [
            asyncio.run(_run(base_url, mode, args.calls, args.concurrency, args.latency_ms))
            for mode in args.modes.split(",")
        ]
        if profiler is not None:
            import pstats

            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    finally:
        server.terminate()
    print(
        json.dumps(
            {
                "ideal_calls_per_second": round(args.concurrency * 1000 / args.latency_ms, 1),
                "runs": runs,
                "cpus": os.cpu_count(),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
