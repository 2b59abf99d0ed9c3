"""``python -m channel``: the same as ``hoplink channel``."""

import sys

from shared.cli import main

if __name__ == "__main__":
    sys.exit(main(["channel", *sys.argv[1:]]))
