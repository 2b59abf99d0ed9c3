"""`hoplink bench --quick`: every section runs and reports its figure beside its floor."""

import json
import subprocess
import sys

import pytest


@pytest.mark.e2e
def test_quick_bench_reports_every_figure_beside_its_floor(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.cli",
            "bench",
            "--quick",
            "--only",
            "codec,retrieval,hop,pipeline",
            "--out",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert {r["codec"] for r in results["codec"]} == {"ae64"}
    assert all(r["encode_fps"] > 0 and r["decode_fps"] > 0 for r in results["codec"])
    methods = {r["method"] for r in results["retrieval"]}
    assert {"vq", "hopfield"} <= methods
    assert all(r["floor_us"] > 0 and r["x_floor"] > 0 for r in results["retrieval"])
    for row in results["hop"]:
        assert row["msgs_per_s_channel"] > 0 and row["msgs_per_s_bare"] > 0
    paths = {r["path"] for r in results["pipeline"]}
    assert paths == {"tx→channel→rx", "tx→rx", "simulator"}
    channel_rss = next(r for r in results["pipeline"] if r["path"] == "tx→channel→rx")["rss_mb"]
    assert channel_rss["channel"] < channel_rss["rx"]  # the channel carries no torch
    assert "[codec]" in run.stdout and "[pipeline]" in run.stdout
