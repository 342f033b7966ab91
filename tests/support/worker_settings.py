"""Settings of the task worker processes that scale-out tests and ``bench/batch.py`` start: the
test settings, plus the heartbeat and the stale limit (s) from the environment, so a killed
worker's case is re-queued within seconds rather than minutes."""

import os

from ctspine_site.settings.test import *  # noqa: F403

CTSPINE_JOB_HEARTBEAT_S = float(os.environ.get("CTSPINE_JOB_HEARTBEAT_S", "2"))
CTSPINE_JOB_STALE_AFTER_S = float(os.environ.get("CTSPINE_JOB_STALE_AFTER_S", "120"))
