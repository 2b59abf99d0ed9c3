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


def test_help_imports_neither_torch_nor_av():
    probe = (
        "import sys, contextlib, io\n"
        "from experiments.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['sim', '--help'])\n"
        "print(sorted(m for m in ('torch', 'av', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_demo_once_prints_the_urls_first_and_explains_its_summary():
    out = hoplink("demo", "--once", "--frames", "20", "--fps", "0", "--no-impairments")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()

    def index(prefix: str) -> int:  # the last line that starts so
        return max(i for i, x in enumerate(lines) if x.strip().startswith(prefix))

    # The addresses are printed before any process starts, the summary after the clip.
    assert index("dashboard http://127.0.0.1:") < index("starting rx") < index("all three up")
    assert index("all three up") < index("frames (Tx sent / Rx settled)")
    assert index("frames (Tx sent / Rx settled)") < index("what the figures mean")
    for figure in ("semantic bits/frame", "wire bits/frame", "PSNR dB", "next:"):
        assert index(figure) > index("what the figures mean")
    assert "live until Ctrl-C" not in out.stdout  # --once: nothing stays up


@pytest.mark.slow
def test_trained_weights_go_to_the_user_folder_and_load_from_there(tmp_path):
    env = {"XDG_DATA_HOME": str(tmp_path), "HOPLINK_WEIGHTS_DIR": ""}
    trained = hoplink("train", "--steps", "2", "--threads", "1", env=env)
    assert trained.returncode == 0, trained.stderr
    folder = tmp_path / "hoplink" / "weights"
    assert (folder / "ae64.pt").is_file() and (folder / "ae64.json").is_file()
    assert f"--weights-dir {folder}" in trained.stderr
    sim = ["sim", "--scenario", "static", "--frames", "6", "--json"]
    shipped = json.loads(hoplink(*sim, env=env).stdout)["summary"]
    mine = hoplink(*sim, "--weights-dir", str(folder), env=env)
    assert mine.returncode == 0, mine.stderr
    # Two steps of training: another (much worse) codec than the shipped one.
    assert json.loads(mine.stdout)["summary"]["psnr"] != shipped["psnr"]
