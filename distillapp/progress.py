"""A terminal progress bar that follows a job row, for the management commands."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def follow_row(
    model,
    pk: int,
    *,
    desc: str,
    unit: str,
    fields: list[str],
    position: Callable[[dict], tuple[int, int | None]],
    postfix: Callable[[dict], dict] | None = None,
    enabled: bool = True,
) -> Iterator[None]:
    """Show (done, total) read from the row every half second while the body runs.

    It reads the row from its own connection, as the web page does, so what
    it shows is what the job has committed.
    """
    if not enabled:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        from django.db import connection

        with tqdm(desc=desc, unit=unit, unit_scale=unit == "B", leave=False) as bar:
            while True:
                row = model.objects.filter(pk=pk).values(*fields).first()
                if row:
                    done, total = position(row)
                    bar.total = total or None
                    bar.update(done - bar.n)
                    if postfix:
                        bar.set_postfix(postfix(row))
                if stop.wait(0.5):
                    break
        connection.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
