"""Temperature scaling: overconfident scores get a temperature above 1 and a smaller ECE."""

from __future__ import annotations

import numpy as np

from tasks import stats


def overconfident(n: int = 400, right_share: float = 0.6, seed: int = 0):
    # Always 0.98 sure of the first column, which is right 60 % of the time.
    rng = np.random.default_rng(seed)
    p = np.full((n, 3), 0.01)
    p[:, 0] = 0.98
    targets = np.where(rng.random(n) < right_share, 0, rng.integers(1, 3, n))
    return np.log(p), targets


def test_an_overconfident_model_is_cooled_down():
    log_p, targets = overconfident()
    fitted = stats.fit_temperature(log_p, targets)
    assert fitted["fitted"] and fitted["temperature"] > 1.5
    assert fitted["ece_before"] > 0.3 and fitted["ece_after"] < 0.1
    # After scaling the top confidence is near the 60 % the column is right.
    calibrated = stats.apply_temperature(log_p, fitted["temperature"])
    assert abs(calibrated[:, 0].mean() - np.mean(targets == 0)) < 0.08
    # The ranking of the columns never changes: accuracy is the same.
    assert (calibrated.argmax(axis=1) == log_p.argmax(axis=1)).all()


def test_an_underconfident_model_is_sharpened():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 500)
    p = np.full((500, 3), 0.3)
    p[np.arange(500), targets] = 0.4  # always right, but only 40 % sure
    fitted = stats.fit_temperature(np.log(p), targets)
    assert fitted["temperature"] < 0.5 and fitted["ece_after"] < fitted["ece_before"]


def test_too_few_examples_keep_the_temperature_at_one():
    log_p, targets = overconfident(n=stats.MIN_CALIBRATION_EXAMPLES - 1)
    assert stats.fit_temperature(log_p, targets) == {
        "temperature": 1.0,
        "examples": stats.MIN_CALIBRATION_EXAMPLES - 1,
        "fitted": False,
    }
