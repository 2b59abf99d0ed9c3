"""``promtool check metrics`` on a process's /metrics text (Debian's ``prometheus`` package)."""

from __future__ import annotations

import shutil
import subprocess

PROMTOOL_MISSING = (
    "promtool is not installed: it checks every process's /metrics. Install Debian's "
    "'prometheus' package (apt-get install -y prometheus); .ci/run does."
)


def promtool_check(text: str) -> tuple[int, str]:
    """(exit status, what promtool printed) for ``text``; fails the test if promtool is absent."""
    exe = shutil.which("promtool")
    assert exe is not None, PROMTOOL_MISSING
    done = subprocess.run(
        [exe, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    return done.returncode, (done.stdout + done.stderr).decode()
