"""The whole link: tx → channel → rx and tx → rx direct, beside the in-process simulator.

Throughput: the Tx streams unpaced; frames/s from when the first frame reached the Tx's encoder
until the Rx had the last one's pixels (the frame logs below; process start-up is not counted).
Floor: 1 / max(encode, decode) per frame, a link cannot beat its slowest codec half.

Latency: the Tx streams paced at 30 fps; per frame, from when the Tx hands it to the encoder until
the Rx has its pixels, joined by seq from the Tx's and the Rx's ``--frame-log`` (both stamp
``time.monotonic()``: one clock for every process of the machine). Floor: encode + decode + one
loopback websocket hop between two processes per hop of the path (two through the channel), all
measured in this run.
Hits reuse pixels the Rx decoded before, so a hit's latency can go below that floor.

Each process runs with one BLAS/OpenMP thread (three processes share the machine's cores).
Resident memory of each process is read from /proc while the stream runs.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.channel_hop import ChildProcess, scale_run
from benchmarks.codec import run as codec_run
from benchmarks.timing import percentiles, rss_mb
from experiments.demo import Processes, get_json, wait_for
from experiments.link import simulate
from shared.codec.cache import DecodeCache
from shared.codec.models import CODECS, load_codec
from shared.config import build_config
from shared.scenarios import load_clip

SCENARIO = "low_motion"
PACED_FPS = 30.0


def _codec_env(codec: str) -> dict[str, str]:
    """Both ends run ``codec`` (the link config names it and its latent size)."""
    return {"HOPLINK_CODEC": codec, "HOPLINK_LATENT_DIM": str(CODECS[codec].latent_dim)}


def network_run(frames: int, via_channel: bool, codec: str, fps: float = 0.0) -> dict:
    """Stream ``frames`` through real processes: frames/s and RSS, and when paced (``fps`` > 0)
    ``latency``: per-frame p50/p99 (see the module docstring)."""
    with tempfile.TemporaryDirectory() as logs, Processes(Path(logs)) as procs:
        common = {"HOPLINK_LOG_LEVEL": "warning", **_codec_env(codec)}
        tx_log, rx_log = Path(logs) / "tx-frames.jsonl", Path(logs) / "rx-frames.jsonl"
        rx = procs.start("rx", ["receiver", "--frame-log", str(rx_log)], env=common)
        target = rx.ws_url
        channel = None
        if via_channel:
            channel = procs.start("channel", ["channel", "--rx-url", rx.ws_url], env=common)
            target = channel.ws_url
        tx_args = ["--url", target, "--scenario", SCENARIO, "--frames", str(frames)]
        tx_args += ["--fps", str(fps), "--linger", "--frame-log", str(tx_log), "--preload"]
        tx = procs.start("tx", ["transmitter", *tx_args], env=common)
        children = {"rx": rx, "tx": tx, "channel": channel}
        rss = {name: rss_mb(c.process.pid) for name, c in children.items() if c is not None}

        def settled():
            return get_json(f"{rx.url}/stats")["frames"] >= frames

        wait_for(settled, timeout=300, what="the Rx to settle every frame", interval=0.05)
        tx_stats = tx.stats()
        wait_for(lambda: rx.stats()["quality"]["pending"] == 0, 30, "the Rx to decode")
        sent, shown = _log(tx_log), _log(rx_log)
        wall = max(line["decoded"] for line in shown) - min(line["captured"] for line in sent)
        for name, child in children.items():
            if child is not None:
                rss[name] = max(rss[name], rss_mb(child.process.pid))
        row = {
            "path": "tx→channel→rx" if via_channel else "tx→rx",
            "codec": codec,
            "frames": frames,
            "tx_fps_mean": tx_stats["fps_mean"],
            "end_to_end_fps": frames / wall,
            "rss_mb": rss,
        }
        if fps > 0:
            row["latency"] = frame_latency(sent, shown)
        return row


def _log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def frame_latency(tx_log: list[dict], rx_log: list[dict]) -> dict:
    """Per frame: Tx encoder → Rx pixels as p50/p99, and the p50 of its parts: encoding, the
    rest of the Tx (memory decision, send), and sent → pixels at the Rx (hops, decode)."""
    decoded = {line["seq"]: line["decoded"] for line in rx_log}
    timed = [{**line, "decoded": decoded[line["seq"]]} for line in tx_log if line["seq"] in decoded]
    total = percentiles([line["decoded"] - line["captured"] for line in timed])

    def p50(start: str, end: str) -> float:
        return percentiles([line[end] - line[start] for line in timed])["p50_ms"]

    return {
        "latency_p50_ms": total["p50_ms"],
        "latency_p99_ms": total["p99_ms"],
        "encode_p50_ms": p50("captured", "encoded"),
        "tx_rest_p50_ms": p50("encoded", "sent"),
        "to_pixels_p50_ms": p50("sent", "decoded"),
        "hit_share": sum(line["kind"] == "hit" for line in timed) / max(len(timed), 1),
        "frames_timed": len(timed),
    }


def simulator_run(frames: int, codec_name: str) -> dict:
    """The same frames through the in-process simulator, encode and decode included."""

    codec = load_codec(codec_name)
    clip = load_clip(SCENARIO, n_frames=frames, size=codec.frame_size)
    config = build_config({"codec": codec_name, "latent_dim": codec.latent_dim})
    started = time.perf_counter()
    latents = codec.encode(clip)
    simulate(latents, config, frames=clip, decoder=DecodeCache(codec), with_ssim=False)
    wall = time.perf_counter() - started
    return {
        "path": "simulator",
        "codec": codec_name,
        "frames": frames,
        "end_to_end_fps": frames / wall,
    }


def loopback_hop_ms(seconds: float = 3.0) -> float:
    """One-way p50 of one websocket hop from one process to another on loopback, paced like the
    frames (the scale section's simulated Tx straight into its sink process)."""

    async def measure() -> float:
        with ChildProcess("sink") as sink:
            return (await scale_run(sink.url, sink, 1, PACED_FPS, seconds))["p50_ms"]

    return asyncio.run(measure())


def run(
    frames: int = 300,
    codec: str = "ae64",
    paced_frames: int | None = None,
    unpaced_frames: int | None = None,
    repeats: int = 2,
) -> list[dict]:
    """Throughput rows for both network paths and the simulator, with latency at 30 fps
    (``paced_frames`` frames, default ``frames``) for the network paths.

    The unpaced runs stream ``unpaced_frames`` (default ``frames``) and take turns, path by path,
    ``repeats`` times: a run of a fraction of a second is mostly start-up and scheduling luck
    on a small machine. Each network row reports the median frames/s over its runs, its runs, and
    ``vs_direct``: its median over the direct path's."""

    paced = paced_frames or frames
    unpaced = unpaced_frames or frames
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(repeats):
        for via_channel in (True, False):
            runs[via_channel].append(network_run(unpaced, via_channel, codec))
    rows = []
    for via_channel in (True, False):
        row = dict(runs[via_channel][0])
        fps = [r["end_to_end_fps"] for r in runs[via_channel]]
        row["end_to_end_fps"] = float(np.median(fps))
        row["end_to_end_fps_runs"] = [round(f, 1) for f in fps]
        row["tx_fps_mean"] = float(np.median([r["tx_fps_mean"] for r in runs[via_channel]]))
        row.update(network_run(paced, via_channel, codec, fps=PACED_FPS)["latency"])
        rows.append(row)
    rows[0]["vs_direct"] = rows[0]["end_to_end_fps"] / rows[1]["end_to_end_fps"]
    rows[1]["vs_direct"] = 1.0
    frames = unpaced
    rows.append(simulator_run(frames, codec))
    times = next(r for r in codec_run(batches=(1,), names=[codec]))
    encode_ms, decode_ms = times["encode_ms_per_frame"], times["decode_ms_per_frame"]
    hop_ms = loopback_hop_ms()
    for row in rows:
        row["size"] = times["size"]
        row["floor_fps"] = 1e3 / max(encode_ms, decode_ms)
        row["x_floor"] = row["end_to_end_fps"] / row["floor_fps"]
        if "latency_p50_ms" in row:
            hops = 2 if row["path"] == "tx→channel→rx" else 1
            row["latency_floor_ms"] = encode_ms + decode_ms + hops * hop_ms
    return rows
