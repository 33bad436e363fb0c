"""Fixtures of the browser tests (see ui_helpers.py): one server process and one Chromium per module."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_helpers import admin_key, browser, live_server, new_page  # noqa: F401  (pytest fixtures)
