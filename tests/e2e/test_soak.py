"""``hoplink soak`` end to end: a very short soak of the three real processes, its JSON checked.

Too short for a growth verdict (the command says so and does not judge it); what it checks is
that every process was sampled and every frame the Tx decided was accounted for by the Rx.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from experiments.soak import slope_per_hour, warmup_seconds

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_short_soak_samples_every_process_and_accounts_every_frame() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "soak", "--minutes", "0.3", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert set(result["processes"]) == {"rx", "channel", "tx"}
    for name, p in result["processes"].items():
        assert len(p["samples"]) >= 2, name
        assert all(mb > 0 for _, mb in p["samples"]), name
        assert p["samples_after_warmup"] >= 2, name
        assert p["growth_mb_per_h"] is not None, name
    frames = result["frames"]
    assert frames["tx_decided"] == frames["planned"] > 0
    assert frames["rx_accounted"] == frames["tx_decided"]
    assert frames["rx_sessions"] == 1
    assert result["accounted"] is True
    assert result["growth_judged"] is False and result["ok"] is True
    assert "soak:" in done.stderr  # progress goes to stderr, the JSON alone to stdout


def test_slope_and_warmup() -> None:
    # 1 MB every 60 s is 60 MB/h; a flat trace grows by nothing.
    assert slope_per_hour([(0, 100.0), (60, 101.0), (120, 102.0)]) == pytest.approx(60.0)
    assert slope_per_hour([(t, 50.0) for t in range(5)]) == 0.0
    assert slope_per_hour([(0, 1.0)]) is None
    assert warmup_seconds(600) == 120  # 20 %
    assert warmup_seconds(100) == 30  # at least 30 s when the stream is long enough
    assert warmup_seconds(18) == 9  # never more than half of a short stream
