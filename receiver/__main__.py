"""``python -m receiver``: the same as ``hoplink rx``."""

import sys

from receiver.server import run
from shared.service import RxSettings, service_main

if __name__ == "__main__":
    sys.exit(service_main("rx", RxSettings, run))
