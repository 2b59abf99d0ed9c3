"""End-to-end frames/s through tx → channel → rx, tx → rx direct, and the in-process simulator.

Each process runs with one BLAS/OpenMP thread (three processes share the machine's cores).
The floor is 1 / max(encode, decode) per frame: a link cannot beat its slowest codec half.
Resident memory of each process is read from /proc while the stream runs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from shared.demo import Processes, get_json, wait_for

SCENARIO = "low_motion"


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def network_run(frames: int, via_channel: bool) -> dict:
    """Stream ``frames`` unpaced; frames/s from the Tx's first send to the Rx settling all."""
    with tempfile.TemporaryDirectory() as logs, Processes(Path(logs)) as procs:
        common = {"HOPLINK_LOG_LEVEL": "warning"}
        rx = procs.start("rx", ["receiver"], env=common)
        target = rx.ws_url
        channel = None
        if via_channel:
            channel = procs.start("channel", ["channel", "--rx-url", rx.ws_url], env=common)
            target = channel.ws_url
        started = time.perf_counter()
        tx = procs.start(
            "tx",
            [
                "transmitter",
                "--url",
                target,
                "--scenario",
                SCENARIO,
                "--frames",
                str(frames),
                "--fps",
                "0",
                "--linger",
            ],  # fmt: skip
            env=common,
        )
        rss = {"rx": _rss_mb(rx.process.pid), "tx": _rss_mb(tx.process.pid)}
        if channel is not None:
            rss["channel"] = _rss_mb(channel.process.pid)

        def settled():
            return get_json(f"{rx.url}/stats")["frames"] >= frames

        wait_for(settled, timeout=300, what="the Rx to settle every frame", interval=0.05)
        wall = time.perf_counter() - started
        tx_stats = tx.stats()
        for name, child in (("rx", rx), ("tx", tx), ("channel", channel)):
            if child is not None:
                rss[name] = max(rss[name], _rss_mb(child.process.pid))
        return {
            "path": "tx→channel→rx" if via_channel else "tx→rx",
            "frames": frames,
            "tx_fps_mean": tx_stats["fps_mean"],
            "end_to_end_fps": frames / wall,
            "rss_mb": rss,
        }


def simulator_run(frames: int) -> dict:
    """The same frames through the in-process simulator, encode and decode included."""
    from shared.codec import load_codec
    from shared.config import build_config
    from shared.scenarios import load_clip
    from shared.simulator import DecodeCache, simulate

    codec = load_codec()
    clip = load_clip(SCENARIO, n_frames=frames)
    started = time.perf_counter()
    latents = codec.encode(clip)
    simulate(latents, build_config(), frames=clip, decoder=DecodeCache(codec), with_ssim=False)
    wall = time.perf_counter() - started
    return {"path": "simulator", "frames": frames, "end_to_end_fps": frames / wall}


def floor_fps() -> float:
    from benchmarks.codec import run as codec_run

    row = next(r for r in codec_run(batches=(1,)) if r["codec"] == "ae64")
    return 1.0 / max(row["encode_ms_per_frame"], row["decode_ms_per_frame"]) * 1e3


def run(frames: int = 300) -> list[dict]:
    rows = [network_run(frames, True), network_run(frames, False), simulator_run(frames)]
    floor = floor_fps()
    for row in rows:
        row["floor_fps"] = floor
        row["x_floor"] = row["end_to_end_fps"] / floor
    return rows
