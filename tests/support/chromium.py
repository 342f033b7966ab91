"""The Chromium that browser tests and bench/viewer_load.py drive through Playwright: Debian's
(``CTSPINE_CHROMIUM`` overrides the path), headless, with nothing running in the background."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("CTSPINE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
