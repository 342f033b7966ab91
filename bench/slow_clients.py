"""Slow clients against gunicorn on 127.0.0.1: sync workers (the old command) against the shipped
gthread settings (``gunicorn.conf.py``), in the same run.

For each, ``--slow`` clients POST the login form one byte every 0.25 s (bounded: they stop after
the probe) while a normal GET of the login page measures how long the server takes to answer;
"no answer" means none within ``--wait`` seconds.

Run: ``.venv/bin/python bench/slow_clients.py [--workers 2] [--slow 4] [--wait 10]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.slow_clients import answer_time_while_held, gunicorn  # noqa: E402

VARIANTS = {
    "sync workers (before)": ("--worker-class", "sync", "--threads", "1"),
    "gthread, gunicorn.conf.py (now)": (),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slow", type=int, default=4, help="slow clients at once")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds the probe waits")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name, arguments in VARIANTS.items():
            with gunicorn(
                *arguments, workers=options.workers, database=Path(folder) / "db.sqlite3"
            ) as url:
                idle = answer_time_while_held(url, slow_clients=0, wait_s=options.wait)
                held = answer_time_while_held(url, slow_clients=options.slow, wait_s=options.wait)
            shown = "no answer" if held is None else f"{held * 1000:.0f} ms"
            sys.stdout.write(
                f"{name}: {options.workers} workers, idle {idle * 1000:.0f} ms; with"
                f" {options.slow} slow clients: {shown} (waited up to {options.wait:g} s)\n"
            )


if __name__ == "__main__":
    main()
