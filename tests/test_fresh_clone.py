"""A fresh clone has no ../shared beside it: the suite must still end green there."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.shared_data import REPO_ROOT

NEEDS_SHARED = ["tests/annotation/test_embedding_teacher.py", "tests/annotation/test_quality.py"]


def test_tests_that_need_the_shared_datasets_skip_without_them(tmp_path):
    env = {**os.environ, "DISTILL_SHARED_DATA": str(tmp_path / "no-shared-here")}
    env.pop("DISTILL_DATA_DIR", None)  # the child makes its own
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *NEEDS_SHARED],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "needs the shared dataset banking77" in result.stdout
    assert "9 skipped" in result.stdout.splitlines()[-1]  # every test that reads Banking77
