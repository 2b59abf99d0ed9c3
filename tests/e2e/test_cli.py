"""The command line as a user meets it: real subprocesses, real output."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def hoplink(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_the_commands():
    out = hoplink("--help")
    assert out.returncode == 0
    for command in ("sim", "table", "train", "scenarios"):
        assert command in out.stdout


def test_sim_json_reports_the_link_figures():
    out = hoplink("sim", "--scenario", "static", "--frames", "40", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    s = report["summary"]
    assert s["frames"] == 40 and sum(s["outcomes"].values()) == 40
    assert s["news"] >= 1 and s["hits"] + s["news"] == 40
    # A static clip is recalled almost every frame: far fewer bits than one latent per frame.
    assert s["bits_per_frame"] < 0.25 * 64 * 8
    assert s["psnr"] > 15
    assert report["digests_agree"] is True


def test_environment_configures_the_link():
    out = hoplink(
        "sim",
        "--scenario",
        "static",
        "--frames",
        "10",
        "--json",
        env={"HOPLINK_MEMORY": "vq", "HOPLINK_CAPACITY": "32"},
    )
    config = json.loads(out.stdout)["config"]
    assert config["memory"] == "vq" and config["capacity"] == 32


@pytest.mark.parametrize(
    "args, message",
    [
        (["sim", "--scenario", "no_such_clip"], "no_such_clip"),
        (["sim", "--threshold", "3"], "threshold"),
        (["sim", "--latent-dim", "32"], "latent_dim"),
    ],
)
def test_bad_input_gets_a_clear_error(args, message):
    out = hoplink(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
