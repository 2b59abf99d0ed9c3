"""``hoplink bench``: every section in one run, printed as tables and optionally as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from pathlib import Path

from experiments.tables import render_table

SECTIONS = ("codec", "retrieval", "hop", "scale", "pipeline")
CHANNEL_WORKERS = 2  # the scale section also runs a channel of this many workers (1: not)


def run_bench(
    quick: bool, sections: tuple[str, ...] = SECTIONS, channel_workers: int = CHANNEL_WORKERS
) -> dict:
    from benchmarks import channel_hop, codec, pipeline, retrieval  # deferred: imports av, torch

    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}",
        "quick": quick,
        "notes": [],
        "load_average_start": os.getloadavg()[0],  # other jobs on the machine weigh on timings
    }
    started = time.perf_counter()
    if "codec" in sections:
        results["codec"] = codec.run(batches=(1,) if quick else (1, 32))
    if "retrieval" in sections:
        sizes = retrieval.QUICK_SIZES if quick else retrieval.SIZES
        results["retrieval"] = retrieval.run(sizes=sizes, batches=(1,) if quick else (1, 32))
    if "hop" in sections:
        results["hop"] = asyncio.run(channel_hop.hop(count=200 if quick else 2000))
    if "scale" in sections:
        links = (1, 10) if quick else (1, 10, 100, 500)
        results["scale"] = asyncio.run(
            channel_hop.scale(links, seconds=1.0 if quick else 3.0, workers=channel_workers)
        )
    if "pipeline" in sections:
        from shared.codec.models import CODECS  # deferred: imports torch

        # Latency over 300 paced frames; throughput over 3,000 unpaced ones, twice per path.
        frames = 60 if quick else 300
        unpaced = {"unpaced_frames": 60, "repeats": 1} if quick else {"unpaced_frames": 3000}
        results["pipeline"] = pipeline.run(frames=frames, **unpaced)
        large = [n for n in codec.shipped_codecs() if CODECS[n].frame_size == 128]
        if large:
            results["pipeline"] += pipeline.run(frames=frames, codec=large[0], **unpaced)
        else:
            results["notes"].append(
                "pipeline: no 128x128 codec shipped (none registered with frame_size 128 and "
                "its weights present), so only 64x64 rows"
            )
    results["seconds"] = time.perf_counter() - started
    results["load_average_end"] = os.getloadavg()[0]
    return results


def print_tables(results: dict) -> None:
    load = f"{results['load_average_start']:.1f} → {results['load_average_end']:.1f}"
    print(f"machine: {results['machine']}; {results['seconds']:.0f} s; load average {load}")
    for section, rows in results.items():
        if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
            continue
        headers = list(
            dict.fromkeys(k for r in rows for k, v in r.items() if not isinstance(v, dict))
        )
        print(f"\n[{section}]")
        print(render_table(headers, [[row.get(h, float("nan")) for h in headers] for row in rows]))
        for row in rows:
            if "rss_mb" in row:
                rss = ", ".join(f"{k} {v:.0f} MB" for k, v in row["rss_mb"].items())
                print(f"  resident memory ({row['path']}, {row['codec']}): {rss}")
    for note in results["notes"]:
        print(f"\nnote: {note}")


def main(
    quick: bool,
    as_json: bool,
    out: str | None,
    sections: tuple[str, ...],
    channel_workers: int = CHANNEL_WORKERS,
) -> int:
    results = run_bench(quick, sections, channel_workers)
    if out:
        Path(out).write_text(json.dumps(results, indent=2))
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print_tables(results)
    return 0
