"""gunicorn settings the serve command loads (`--config python:distillapp.gunicorn_config`)."""

from __future__ import annotations


def post_worker_init(worker) -> None:
    # Each web process loads the live models after Django is set up and before its first
    # request, so no user's request pays for the load (training.serving.warm_up).
    try:
        from training.serving import warm_up

        warm_up()
    except Exception:  # a server that cannot warm up still serves, cold
        worker.log.exception("Warm-up failed; models load on their first request")
