#!/usr/bin/env python3
"""HEALTHCHECK of the hoplink images: GET /healthz of the service running in this container.

The port is HOPLINK_PORT, else the default of the service named on the command line (rx 8003,
channel 8002, tx 8001). Exit 0 when it answers 200, 1 otherwise (Docker's convention).
"""

import os
import sys
import urllib.request

DEFAULT_PORTS = {
    "rx": "8003",
    "receiver": "8003",
    "channel": "8002",
    "tx": "8001",
    "transmitter": "8001",
}


def port() -> str:
    if os.environ.get("HOPLINK_PORT"):
        return os.environ["HOPLINK_PORT"]
    try:  # PID 1 is the service (the entry point execs it): `hoplink rx`, `python -m receiver` ...
        with open("/proc/1/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        argv = []
    for arg in argv:
        if arg in DEFAULT_PORTS:
            return DEFAULT_PORTS[arg]
    return DEFAULT_PORTS["channel"]


def main() -> int:
    url = f"http://127.0.0.1:{port()}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
