"""Loaded with -p before Django's settings: give the test run its own data dir.

Without this, tests would write uploads into ./var and share the embedded
Redis of a dev server running from the same checkout.
"""

import os
import tempfile

os.environ.setdefault("DISTILL_DATA_DIR", tempfile.mkdtemp(prefix="distillapp-test-"))
# Prediction logs are written in the request, so a test sees them at once; the buffered
# writer has its own tests (tests/training/test_serving.py).
os.environ.setdefault("DISTILL_SERVING_LOG_FLUSH_SECONDS", "0")
# The test client and live servers speak plain HTTP (production defaults: tests/test_settings.py).
os.environ.setdefault("DJANGO_SECURE", "false")
