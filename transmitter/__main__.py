"""``python -m transmitter``: the same as ``hoplink tx``."""

import sys

from shared.cli import main

if __name__ == "__main__":
    sys.exit(main(["tx", *sys.argv[1:]]))
