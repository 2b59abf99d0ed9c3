"""What the processes import, checked in a fresh interpreter: the channel never loads torch."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_the_channel_core_does_not_import_torch():
    code = "import sys, channel.core; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_channel_never_imports_torch() -> None:
    code = (
        "import channel.server, channel.workers, channel.__main__, sys; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
