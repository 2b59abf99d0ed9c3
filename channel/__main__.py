"""``python -m channel``: the same as ``hoplink channel``."""

import sys

from channel.app import run
from shared.service import ChannelSettings, service_main

if __name__ == "__main__":
    sys.exit(service_main("channel", ChannelSettings, run))
