"""docker-compose.yml: valid for docker-compose, and its services work as written.

No container engine runs here, so the second test reads the compose file and launches each
service's command with its environment as local processes: container ports are remapped to free
loopback ports and service host names to 127.0.0.1; nothing else is changed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.demo import Processes, free_port, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


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
        assert f"{port}:{port}" in service["ports"]
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
        assert service["command"][:2] == ["hoplink", name]
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
    container_ports = {name: str(s["environment"]["HOPLINK_PORT"]) for name, s in services.items()}
    local_ports = {name: free_port() for name in services}

    def localize(value: object) -> str:
        text = str(value)
        for name, port in container_ports.items():
            text = re.sub(rf"//{name}:{port}\b", f"//127.0.0.1:{local_ports[name]}", text)
        return text

    with Processes(tmp_path) as procs:
        children = {}
        for name in start_order(services):
            service = services[name]
            env = {key: localize(value) for key, value in service["environment"].items()}
            env.update(HOPLINK_HOST="127.0.0.1", HOPLINK_PORT=str(local_ports[name]))
            command = [str(part) for part in service["command"]]
            assert command[0] == "hoplink"
            argv = [sys.executable, "-m", "experiments.cli", *command[1:]]
            children[name] = procs.start(name, argv, port=local_ports[name], env=env)
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
