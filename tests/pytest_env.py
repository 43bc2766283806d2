"""Loaded with -p before Django's settings: give the test run its own data dir.

Without this, tests would write uploads into ./var and share the embedded
Redis of a dev server running from the same checkout.
"""

import os
import tempfile

os.environ.setdefault("DISTILL_DATA_DIR", tempfile.mkdtemp(prefix="distillapp-test-"))
# Playwright's sync API runs an event loop in the test thread; the ORM calls
# made there by live_server tests are still synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
