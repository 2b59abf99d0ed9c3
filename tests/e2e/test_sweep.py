"""``hoplink sweep`` / ``hoplink report`` as a user runs them: the CLI in a subprocess."""

import csv
import json
import os
import subprocess
import sys

import pytest

from experiments.sweep import RUN_COLUMNS
from experiments.sweep_rows import read_rows

pytestmark = pytest.mark.e2e


TINY = [
    "--grid",
    "scenario=static,illum_change",
    "--grid",
    "memory=hopfield,vq",
    "--grid",
    "tau=0.95,0.99",
    "--frames",
    "20",
    "--workers",
    "1",
    "--quiet",
]


def hoplink(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )


def test_tiny_sweep_writes_tidy_rows_resumes_and_draws(tmp_path):
    out = tmp_path / "sweep"
    first = hoplink("sweep", *TINY, "--out", str(out))
    assert first.returncode == 0, first.stderr
    with (out / "runs.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == RUN_COLUMNS
        raw = list(reader)
    rows = read_rows(out / "runs.csv")
    assert len(rows) == len(raw) == 8 and len({r["key"] for r in rows}) == 8
    assert {(r["scenario"], r["memory"], r["threshold"]) for r in rows} == {
        (s, m, t)
        for s in ("static", "illum_change")
        for m in ("hopfield", "vq")
        for t in (0.95, 0.99)
    }
    for r in rows:
        assert r["frames"] == r["n_frames"] == 20 and r["hits"] + r["news"] == 20
        outcomes = sum(r[c] for c in RUN_COLUMNS if c.startswith("outcome_"))
        assert outcomes == 20 and r["outcome_decoded"] == 20
        assert r["digests_agree"] is True and r["silent_wrong"] == 0
        assert r["bits_per_frame"] > 0 and 10 < r["psnr"] < 60
        assert r["capacity"] == 256 and r["reasoning_capacity"] > 0  # M vs C
        assert r["protocol"] == {"static": "stable", "illum_change": "gradual_drift"}[r["scenario"]]
    # A static clip is recalled nearly every frame.
    static = [r for r in rows if r["scenario"] == "static"]
    assert all(r["bits_per_frame"] < 0.25 * 512 for r in static)

    # Resume: a second invocation finds every key and adds nothing.
    second = hoplink("sweep", *TINY, "--out", str(out), "--no-figures")
    assert second.returncode == 0, second.stderr
    assert "rows added: none" in second.stdout
    assert len(read_rows(out / "runs.csv")) == 8
    log = json.loads((out / "sweep.json").read_text())
    assert [i["already_done"] for i in log["invocations"]] == [0, 8]
    assert log["invocations"][0]["command"].startswith("hoplink sweep")

    for name in ("fig1a_savings_vs_tau", "fig2_rate_distortion"):
        for ext in ("png", "svg"):
            path = out / "figures" / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 1000, path

    report = hoplink("report", "--runs", str(out))
    assert report.returncode == 0, report.stderr
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "What the grid covered" in md and "figures/fig2_rate_distortion.png" in md
    assert page.startswith("<!doctype html>") and "<table>" in page and "<img " in page


def test_ray_flag_without_ray_is_a_clear_error(tmp_path):
    try:
        import ray  # noqa: F401

        pytest.skip("ray is installed")
    except ImportError:
        pass
    out = hoplink("sweep", "--grid", "memory=vq", "--frames", "4", "--ray", "--out", str(tmp_path))
    assert out.returncode == 2
    assert "hoplink[ray]" in out.stderr and "Traceback" not in out.stderr


def test_sweep_without_runs_is_a_clear_error(tmp_path):
    out = hoplink("sweep", "--out", str(tmp_path), "--no-figures")
    assert out.returncode == 2 and "--grid" in out.stderr
