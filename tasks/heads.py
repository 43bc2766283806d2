"""What the quick students share: a scikit-learn head saved beside its config, loaded once per
saved file, and fitted on one BLAS thread."""

from __future__ import annotations

import functools
import json
from pathlib import Path

HEAD_FILE = "quick_head.joblib"
CONFIG_FILE = "quick_student.json"


@functools.lru_cache(maxsize=8)
def _load(model_dir: str, mtime: float):
    import joblib

    from distillapp.ml import note_model_load

    note_model_load()
    config = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    return joblib.load(Path(model_dir) / HEAD_FILE), config


def load(model_dir: Path | str):
    """(head, config) of a saved quick student, loaded once; a retrained directory afresh."""
    path = Path(model_dir)
    return _load(str(path), (path / HEAD_FILE).stat().st_mtime)


def one_blas_thread():
    # lbfgs makes many small matrix products: on the 2-core CPU shared with other jobs,
    # OpenBLAS's 2 threads spin-waiting for each other made a 3,000 x 384 x 77 fit 10x
    # slower than one thread (17 s against 1.7 s at load 9).
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")
