"""``python -m receiver``: the same as ``hoplink rx``."""

import sys

from shared.cli import main

if __name__ == "__main__":
    sys.exit(main(["rx", *sys.argv[1:]]))
