"""docker-compose.yml and the Dockerfile: valid, consistent, and the services work as written.

These tests need no container engine: one reads the compose file and launches each service's
command with its environment as local processes (container ports remapped to free loopback ports,
service host names to 127.0.0.1; nothing else changed); others run the images' entry point and
health check as plain scripts. The real thing, images built and `docker-compose up`, is
.ci/compose_test.py, which CI runs after the tests (.ci/run).
"""

from __future__ import annotations

import ast
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from experiments.demo import Processes, free_port, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PLACEHOLDER = "hoplink-change-me"


def load_compose() -> dict:
    """The compose file as data: PyYAML if installed, else the interpreter of docker-compose
    (which always ships PyYAML)."""
    try:
        import yaml
    except ImportError:
        binary = shutil.which("docker-compose")
        if binary is None:
            pytest.skip("reading docker-compose.yml needs PyYAML or docker-compose")
        interpreter = Path(binary).read_text(errors="replace").splitlines()[0].removeprefix("#!")
        code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
        out = subprocess.run(
            [*interpreter.split(), "-c", code, str(COMPOSE)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return json.loads(out.stdout)
    return yaml.safe_load(COMPOSE.read_text())


def test_docker_compose_config_is_valid() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def start_order(services: dict) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for dependency in services[name].get("depends_on") or {}:
                visit(dependency)
            order.append(name)

    for name in services:
        visit(name)
    return order


def test_compose_file_is_consistent() -> None:
    services = load_compose()["services"]
    assert set(services) == {"rx", "channel", "tx"}
    for name, service in services.items():
        env = service["environment"]
        port = env["HOPLINK_PORT"]
        assert env["HOPLINK_HOST"] == "0.0.0.0"
        # Published on the host's loopback unless the user opts in (HOPLINK_PUBLISH): the
        # control port, and the channel's link port (a Tx on the host may stream through it).
        published = [port] + ([env["HOPLINK_LINK_PORT"]] if name == "channel" else [])
        assert service["ports"] == [f"${{HOPLINK_PUBLISH:-127.0.0.1}}:{p}:{p}" for p in published]
        # The image's own HEALTHCHECK (GET /healthz on HOPLINK_PORT), polled faster.
        assert "test" not in service["healthcheck"]
        assert service["command"][:2] == ["hoplink", name]
        target = "channel" if name == "channel" else "full"
        assert service["build"] == {"context": ".", "target": target}
    channel = services["channel"]["environment"]
    assert channel["HOPLINK_CONTROL_TOKEN"] == f"${{HOPLINK_CONTROL_TOKEN:-{PLACEHOLDER}}}"
    assert channel["HOPLINK_PUBLISH"] == "${HOPLINK_PUBLISH:-127.0.0.1}"
    for name in ("channel", "tx"):
        (dependency,) = services[name]["depends_on"].values()
        assert dependency["condition"] == "service_healthy"
    link_keys = (
        "HOPLINK_CODEC",
        "HOPLINK_MEMORY",
        "HOPLINK_CAPACITY",
        "HOPLINK_THRESHOLD",
        "HOPLINK_SEED",
    )
    assert len({tuple(s["environment"].get(k) for k in link_keys) for s in services.values()}) == 1


def test_compose_services_stream_end_to_end(tmp_path: Path) -> None:
    services = load_compose()["services"]
    # (service, port variable) -> (port in the container, free port here)
    ports = {
        (name, key): (str(value), free_port())
        for name, s in services.items()
        for key, value in s["environment"].items()
        if key in ("HOPLINK_PORT", "HOPLINK_LINK_PORT")
    }

    def localize(value: object) -> str:
        text = str(value)
        for (name, _), (port, local) in ports.items():
            text = re.sub(rf"//{name}:{port}\b", f"//127.0.0.1:{local}", text)
        return text

    with Processes(tmp_path) as procs:
        children = {}
        for name in start_order(services):
            service = services[name]
            env = {key: localize(value) for key, value in service["environment"].items()}
            env.update(HOPLINK_HOST="127.0.0.1")
            command = [str(part) for part in service["command"]]
            assert command[0] == "hoplink"
            argv = [sys.executable, "-m", "experiments.cli", *command[1:]]
            link = ports.get((name, "HOPLINK_LINK_PORT"))
            children[name] = procs.start(
                name,
                argv,
                port=ports[name, "HOPLINK_PORT"][1],
                link_port=link[1] if link else None,
                env=env,
            )
        frames = int(services["tx"]["environment"]["HOPLINK_FRAMES"])
        tx = wait_for(lambda: (s := children["tx"].stats())["link"]["finished"] and s, 60, "tx")

        def rx_done() -> dict | None:
            s = children["rx"].stats()
            return s if s["link"]["session_ended"] and s["quality"]["pending"] == 0 else None

        rx = wait_for(rx_done, 30, "the Rx to settle")
        channel = children["channel"].stats()
    assert tx["frames_sent"] == frames
    assert sum(rx["frames_by_outcome"].values()) == frames
    assert rx["frames_by_outcome"]["decoded"] > frames // 2
    assert rx["quality"]["psnr_mean"] is not None
    # The impairments configured by HOPLINK_CHANNEL_IMPAIRMENTS are in force.
    assert set(channel["impairments"]["tx_to_rx"]) == {"bit_errors", "loss", "delay"}


# --- the images, without an engine ------------------------------------------------------------


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, re.M)
    assert [name for _, name in stages] == ["base", "channel", "full"]
    assert stages[0][0] == "${BASE_IMAGE}"
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert 'ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"' in text
    for stage in re.split(r"^FROM ", text, flags=re.M)[2:]:
        # Dependencies before the code (layer caching), then an unprivileged user.
        assert stage.index("pip install $PIP_SOURCE") < stage.index("COPY . ./")
        assert stage.index("COPY . ./") < stage.index("USER hoplink")
    assert re.search(r"^HEALTHCHECK .*hoplink-healthcheck", text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs", "**/__pycache__", "tests"} <= set(ignored)
    assert "benchmarks" not in ignored and "experiments" not in ignored


def test_channel_image_has_what_the_channel_imports() -> None:
    """The channel stage installs only CHANNEL_DEPS (no torch): every declared dependency that
    `hoplink channel` imports must be in it, and torch must not be imported at all."""
    declared = re.search(r'^ARG CHANNEL_DEPS="([^"]+)"', DOCKERFILE.read_text(), re.M)
    assert declared is not None
    channel_deps = set(declared.group(1).split())
    pyproject = (ROOT / "pyproject.toml").read_text()
    import tomllib

    dependencies = {
        re.split(r"[<>=!~ ;\[]", d)[0].lower()
        for d in tomllib.loads(pyproject)["project"]["dependencies"]
    }
    assert channel_deps <= dependencies
    # What the process imports: its modules at startup, and what the channel package and the
    # service shell import lazily (inside functions).
    lazy: set[str] = set()
    for path in [*(ROOT / "channel").rglob("*.py"), ROOT / "shared" / "service.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                lazy.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                lazy.add(node.module.split(".")[0])
    code = (
        "import importlib, importlib.metadata as md, json, sys\n"
        "import experiments.cli, channel.server\n"
        "for name in sys.argv[1:]:\n"
        "    try: importlib.import_module(name)\n"
        "    except ImportError: pass\n"
        "dists = md.packages_distributions()\n"
        "print(json.dumps(sorted({d.lower() for m in list(sys.modules) "
        "for d in dists.get(m.split('.')[0], [])})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *sorted(lazy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    imported = set(json.loads(out.stdout))
    assert "torch" not in imported
    assert imported & dependencies <= channel_deps, imported & dependencies - channel_deps


ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({"HOPLINK_CONTROL_TOKEN": PLACEHOLDER, "HOPLINK_PUBLISH": "0.0.0.0"}, True),
        ({"HOPLINK_CONTROL_TOKEN": PLACEHOLDER, "HOPLINK_PUBLISH": "192.0.2.7"}, True),
        ({"HOPLINK_CONTROL_TOKEN": PLACEHOLDER}, True),  # published where? assume everywhere
        ({"HOPLINK_CONTROL_TOKEN": PLACEHOLDER, "HOPLINK_PUBLISH": "127.0.0.1"}, False),
        ({"HOPLINK_CONTROL_TOKEN": PLACEHOLDER, "HOPLINK_HOST": "127.0.0.1"}, False),
        ({"HOPLINK_CONTROL_TOKEN": "my-own-token", "HOPLINK_PUBLISH": "0.0.0.0"}, False),
        ({"HOPLINK_PUBLISH": "0.0.0.0"}, False),  # rx, tx: no control API
    ],
)
def test_entrypoint_refuses_the_placeholder_token_beyond_loopback(
    env: dict[str, str], refused: bool
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOPLINK_")}
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "sh", "-c", "echo ran"],
        env={**base, "HOPLINK_HOST": "0.0.0.0", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if refused:
        assert result.returncode == 64
        assert "placeholder" in result.stderr and result.stdout == ""
    else:
        assert (result.returncode, result.stdout) == (0, "ran\n")


def test_image_healthcheck_script() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = [sys.executable, str(ROOT / "docker" / "healthcheck.py")]
    try:
        port = str(server.server_address[1])
        ok = subprocess.run(script, env={**os.environ, "HOPLINK_PORT": port}, timeout=30)
        assert ok.returncode == 0
        closed = str(free_port())
        down = subprocess.run(
            script, env={**os.environ, "HOPLINK_PORT": closed}, capture_output=True, timeout=30
        )
        assert down.returncode == 1
    finally:
        server.shutdown()
        server.server_close()
