"""gunicorn settings the serve command loads (`--config python:distillapp.gunicorn_config`)."""

from __future__ import annotations


def post_worker_init(worker) -> None:
    # Each web process starts loading the live models in a background thread and takes
    # requests at once: pages never wait for a model, and once the load is done no
    # prediction pays for it (training.serving.warm_up_start).
    try:
        from training.serving import warm_up_start

        warm_up_start()
    except Exception:  # a server that cannot warm up still serves, cold
        worker.log.exception("Warm-up failed; models load on their first request")
