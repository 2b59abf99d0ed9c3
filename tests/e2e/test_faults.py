"""Faults over the real processes (``pytest -m faults``): the network cells of the fault matrix
(one rx and one channel for all of them) and process faults (an Rx or a Tx killed mid-stream).

The in-process cells are in tests/experiments/test_faults.py; see :mod:`experiments.faults` for
what each column promises and why the bounds are what they are.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from experiments import faults
from experiments.demo import Processes, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faults.NetworkBench]:
    with faults.NetworkBench(tmp_path_factory.mktemp("faults-logs")) as b:
        yield b


@pytest.mark.parametrize("cell", faults.NETWORK_CELLS, ids=[c.name for c in faults.NETWORK_CELLS])
def test_fault_cell_over_processes(cell: faults.FaultCell, bench: faults.NetworkBench) -> None:
    result = bench.run(cell)
    assert not result.problems(), faults.render([result])
    assert result.frames == faults.NETWORK_FRAMES
    assert result.injected, "the channel injected nothing"
    if cell.headers_exposed:
        assert result.rx_errors > 0  # corrupted headers were refused and counted


def test_rx_killed_mid_stream_and_restarted(tmp_path: Path) -> None:
    """SIGKILL the Rx mid-stream (no BYE, no flush) and start it again on the same port: the Tx
    reconnects through the channel, the new Rx re-learns the memory from DIGESTs and refreshes
    (it persists nothing: see experiments/faults.py, "Process faults"), and the stream resumes. No
    frame is silently skipped: the new Rx session settles every sequence number, those sent before
    it joined as "before_restart"."""
    frames = 150
    env = {"HOPLINK_LOG_LEVEL": "warning", "HOPLINK_SEED": "0", "HOPLINK_THRESHOLD": "0.99"}
    with Processes(tmp_path, env=env) as procs:
        rx = procs.start("rx", ["receiver"])
        ports = {"port": rx.port, "link_port": rx.link_port}
        channel = procs.start("channel", ["channel", "--rx-url", rx.ws_url])
        tx = procs.start(
            "tx",
            [
                "transmitter",
                "--url",
                channel.ws_url,
                "--scenario",
                "low_motion",
                "--frames",
                str(frames),
                "--fps",
                "30",
                "--digest-every",
                "15",
                "--backoff-max",
                "1",
                "--linger",
            ],
        )
        wait_for(lambda: rx.stats()["frames"] >= 40, 60, "40 frames at the Rx")
        before = rx.stats()
        rx.process.send_signal(signal.SIGKILL)
        rx.process.wait(10)
        procs.children.pop("rx")
        wait_for(lambda: tx.stats()["traffic"]["reconnects"] >= 1, 30, "the Tx to notice")
        rx = procs.start("rx", ["receiver"], **ports)
        tx_stats = wait_for(lambda: (s := tx.stats())["link"]["finished"] and s, 90, "the Tx")

        def rx_done() -> dict | None:
            s = rx.stats()
            return s if s["link"]["session_ended"] and s["quality"]["pending"] == 0 else None

        rx_stats = wait_for(rx_done, 30, "the new Rx to settle")
    t, o, c = tx_stats["traffic"], rx_stats["frames_by_outcome"], rx_stats["counters"]
    assert tx_stats["frames"] == frames == t["frames_sent"] + t["frames_unsent"]
    assert t["reconnects"] >= 1 and t["connects"] >= 2
    # The new session accounts for every frame: those before it joined (the old Rx had them) are
    # "before_restart", not lost and not skipped.
    assert sum(o.values()) == frames and c["frames_skipped"] == 0
    assert o["before_restart"] >= before["frames"]
    assert o["lost"] + o["before_restart"] >= t["frames_unsent"]
    shown = frames - o["lost"] - o["before_restart"]
    assert shown >= frames - before["frames"] - 30  # the stream resumed (≤ 1 s in flight/unsent)
    # Re-learned: the new Rx found the gap (a hit on a reference it never had, or a DIGEST that
    # differs; which comes first depends on timing) and refreshes repaired it.
    assert c["missing_refs"] + c["digest_mismatches"] > 0
    assert c["refreshes_applied"] > 0
    assert rx_stats["digest"]["agree"] is True


def test_tx_killed_and_restarted_starts_a_new_session(tmp_path: Path) -> None:
    """A Tx killed mid-stream leaves no BYE; its successor starts again at frame 0 with an empty
    memory. The Rx tells the two streams apart by the HELLO's stream id: a new session, whose
    frames are all its own (not taken for duplicates of the dead stream's)."""
    env = {"HOPLINK_LOG_LEVEL": "warning", "HOPLINK_SEED": "0", "HOPLINK_THRESHOLD": "0.99"}
    with Processes(tmp_path, env=env) as procs:
        rx = procs.start("rx", ["receiver"])
        first = procs.start(
            "tx", ["transmitter", "--url", rx.ws_url, "--frames", "150", "--fps", "30"], key="tx1"
        )
        wait_for(lambda: rx.stats()["frames"] >= 40, 60, "40 frames at the Rx")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        old_session = rx.stats()["link"]["session"]
        second = procs.start(
            "tx", ["transmitter", "--url", rx.ws_url, "--frames", "60", "--fps", "0", "--linger"]
        )
        tx = wait_for(lambda: (s := second.stats())["link"]["finished"] and s, 60, "the new Tx")

        def rx_done() -> dict | None:
            s = rx.stats()
            return s if s["link"]["session_ended"] and s["quality"]["pending"] == 0 else None

        stats = wait_for(rx_done, 30, "the Rx to settle")
    assert tx["frames_sent"] == 60
    assert stats["link"]["session"] == old_session + 1
    assert stats["frames_by_outcome"]["decoded"] == 60 == stats["frames"]
    assert stats["counters"]["duplicates"] == 0
    assert stats["digest"]["agree"] is True
