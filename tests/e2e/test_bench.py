"""`hoplink bench --quick`: every section runs and reports its figure beside its floor.

No timing is asserted (the machine is shared): structure, floors present, and accounting.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.slow  # about two minutes on the 2-core box
def test_quick_bench_reports_every_figure_beside_its_floor(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.cli",
            "bench",
            "--quick",
            "--only",
            "codec,retrieval,hop,scale,pipeline",
            "--out",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert "ae64" in {r["codec"] for r in results["codec"]}
    assert all(r["encode_fps"] > 0 and r["decode_fps"] > 0 for r in results["codec"])
    methods = {r["method"] for r in results["retrieval"]}
    assert {"vq", "hopfield"} <= methods
    assert all(r["floor_us"] > 0 and r["x_floor"] > 0 for r in results["retrieval"])
    for row in results["hop"]:
        assert row["msgs_per_s_channel"] > 0 and row["msgs_per_s_bare"] > 0

    # Scale: N simulated links through one channel, all served, every frame accounted for.
    assert [r["links"] for r in results["scale"]] == [1, 10]
    for row in results["scale"]:
        n, count = row["links"], row["accounting"]
        assert row["refused"] == count["refused"] == 0 and count["legs"] == n
        assert count["sent"] == count["delivered"] + count["lost"]
        assert count["sent"] > 0 and count["channel_frames_in"] == count["sent"]
        assert count["channel_frames_out"] + row["lost"] >= count["delivered"]
        assert row["channel_cpu"] >= 0 and row["channel_rss_mb"] > 0
        for key in ("p50_ms_direct", "added_p99_ms", "added_p99_ms_bare"):
            assert isinstance(row[key], float)
        # The same links through a channel of two workers (--workers 2): all carried too.
        count = row["accounting_workers"]
        assert row["channel_workers"] == 2 and sum(count["links_per_worker"]) == n
        assert count["sent"] == count["delivered"] + count["lost"] == count["channel_frames_in"]

    pipeline = results["pipeline"]
    assert {(r["path"], r["codec"]) for r in pipeline} >= {
        ("tx→channel→rx", "ae64"),
        ("tx→rx", "ae64"),
        ("simulator", "ae64"),
    }
    for row in pipeline:
        if row["path"] != "simulator":  # paced latency, every frame joined, beside its floor
            assert row["frames_timed"] == 60
            assert row["latency_p99_ms"] >= row["latency_p50_ms"] > 0
            assert row["latency_floor_ms"] > 0
    if not any(r["size"] == 128 for r in pipeline):
        assert any("no 128x128 codec" in note for note in results["notes"])
    channel_rss = next(r for r in pipeline if r["path"] == "tx→channel→rx")["rss_mb"]
    assert channel_rss["channel"] < channel_rss["rx"]  # the channel carries no torch
    assert "[codec]" in run.stdout and "[scale]" in run.stdout and "[pipeline]" in run.stdout
