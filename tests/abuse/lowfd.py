"""``python -m tests.abuse.lowfd serve ...``: ``notifyhub`` under a low file-descriptor
limit, ``NOTIFYHUB_TEST_NOFILE=soft:hard`` (as ``ulimit -n`` would set it)."""

from __future__ import annotations

import os
import resource
import sys

from api.cli import main

if __name__ == "__main__":
    soft, hard = (int(n) for n in os.environ["NOTIFYHUB_TEST_NOFILE"].split(":"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    sys.exit(main())
