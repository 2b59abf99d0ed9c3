"""``pip install <clone>`` into a fresh virtual environment outside the repository, without the
dev extras, and the installed ``hoplink`` run from outside it: what a new user gets.

Slow (a few minutes: most of it installing torch and the dependencies; pip's cache helps on the
second run). ``HOPLINK_TORCH_SPEC`` names the torch requirement to install first (default
``torch==2.13.0``, the pinned version; CI that reaches PyPI directly should point pip at the CPU
index, ``PIP_INDEX_URL=https://download.pytorch.org/whl/cpu``, for that step).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TORCH = os.environ.get("HOPLINK_TORCH_SPEC", "torch==2.13.0")
DEV_ONLY = ("pytest", "httpx", "hypothesis", "selenium", "schemathesis")


def _clean_env(venv: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HOPLINK_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", MPLBACKEND="Agg")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(hoplink executable, a working folder outside the repo, its environment)."""
    base = tmp_path_factory.mktemp("fresh-install")
    clone = base / "clone"  # what `git clone` would give: tracked and new, unignored files
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    env = _clean_env(venv)
    for what in (TORCH, str(clone)):
        done = subprocess.run([*pip, what], capture_output=True, text=True, env=env, timeout=1500)
        assert done.returncode == 0, f"pip install {what}:\n{done.stdout}\n{done.stderr}"
    work = base / "elsewhere"
    work.mkdir()
    return venv / "bin" / "hoplink", work, env


def run(installed, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    hoplink, work, env = installed
    return subprocess.run(
        [str(hoplink), *args], cwd=work, capture_output=True, text=True, env=env, timeout=timeout
    )


def test_installed_without_the_dev_extras_from_site_packages(installed):
    hoplink, work, env = installed
    probe = (
        "import importlib.util as u, experiments, shared;"
        f"print(experiments.__file__); print([m for m in {DEV_ONLY!r} if u.find_spec(m)])"
    )
    done = subprocess.run(
        [str(hoplink.parent / "python"), "-c", probe],
        cwd=work, capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    where, dev = done.stdout.splitlines()
    assert "site-packages" in where and not where.startswith(str(ROOT))
    assert dev == "[]"
    assert (Path(where).parents[1] / "shared" / "codec" / "weights" / "ae64.pt").is_file()


def test_version(installed):
    done = run(installed, "--version")
    assert done.returncode == 0 and done.stdout.strip().startswith("hoplink 0.")


def test_faults_short_matrix(installed):
    done = run(installed, "faults")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = " ".join(done.stdout.split())  # the summary line wraps at the terminal width
    assert "short matrix" in summary and "over processes" in summary


def test_bench_hop(installed):
    done = run(installed, "bench", "--quick", "--only", "hop")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[hop]" in done.stdout
