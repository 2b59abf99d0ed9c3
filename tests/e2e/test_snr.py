"""The demo's processes at a named SNR: the phy impairment on both directions of the channel."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_the_demo_runs_at_a_named_snr():
    impair = [f"--impair={d}.phy.snr_db=4" for d in ("tx_to_rx", "rx_to_tx")]
    done = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "demo", "--frames", "30", "--fps", "0", "--json",
         *impair],
        capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    phy = stats["channel"]["impairments"]["tx_to_rx"]["phy"]
    assert phy["snr_db"] == 4.0 and phy["snr_mode"] == "ebn0" and phy["modulation"] == "qpsk"
    assert stats["channel"]["impairments"]["rx_to_tx"]["phy"]["snr_db"] == 4.0
    # QPSK at Eb/N0 4 dB: BER 0.0125 over the payload bits, and the Rx accounts for every frame.
    counters = phy["counters"]
    assert counters["bits_flipped"] > 0 and counters["payload_bits"] > 0
    assert phy["link"]["bit_error_probability"] == pytest.approx(0.0125, rel=0.01)
    rx = stats["rx"]
    assert rx["frames"] == 30 and sum(rx["frames_by_outcome"].values()) == 30
