"""``python -m transmitter``: the same as ``hoplink tx``."""

import sys

from shared.service import TxSettings, service_main
from transmitter.client import run

if __name__ == "__main__":
    sys.exit(service_main("tx", TxSettings, run))
