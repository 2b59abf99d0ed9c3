"""`docker-compose up` for real, on this machine, with nothing of its network changed.

Run as root from the repository root (.ci/run does, after `make test`):

    .venv/bin/python .ci/compose_test.py

Phases (each one timed; the summary is printed at the end, also on failure):

1. apt: docker.io, docker-compose and debootstrap, when missing.
2. engine: a private dockerd (own data root, exec root, socket and pid file under the work
   directory) with --bridge=none --iptables=false --ip-forward=false: no bridge, no NAT rule, no
   sysctl. If it does not answer, the test FAILS with its log (never a silent skip).
3. base image: `debootstrap --variant=minbase bookworm` (python3 3.11, python3-venv) and `docker
   import`: the stand-in for python:3.11-slim, which needs a registry this machine cannot reach.
4. wheelhouse: `pip wheel` on the host fills it with every dependency (torch==2.13.0, the CPU
   build) and serves it on 127.0.0.1 to the image builds.
5. images: the project's Dockerfile, unchanged, built with the host network: `--build-arg
   BASE_IMAGE=<debootstrap image>` and PIP_SOURCE/TORCH_SOURCE = `--no-index --find-links
   http://127.0.0.1:<port>/`; targets `full` (hoplink:latest) and `channel` (hoplink-channel).
6. compose up: docker-compose.yml with every service on the host network (network_mode: host),
   the service names mapped to 127.0.0.1 (extra_hosts), every process bound to 127.0.0.1 and every
   port moved to a free one (so nothing clashes with what runs here); written as a derived file,
   not an override, because docker-compose refuses `ports` with the host network and an override
   cannot remove them.
7. checks: the three containers healthy (the images' own HEALTHCHECK), the clip streamed, every
   frame accounted at the Rx, memory digests agree, the impairments of the compose file in force,
   the README's curl call answered (and refused without the token), the dashboard and every
   /metrics answer; the images: non-root, no torch in the channel's, benchmarks in the full one,
   the placeholder token refused when published beyond loopback.
8. teardown: `docker-compose down`, dockerd stopped by its PID, whatever it left mounted under the
   work directory unmounted, the work directory removed.

Every request goes to 127.0.0.1; only the package mirrors (apt, pip) are reached beyond it.

Environment:
  HOPLINK_COMPOSE_WORK    work directory to use and keep (image cache, wheelhouse) for a faster
                          rerun; default: a fresh one under /var/tmp, removed at the end
  HOPLINK_DEBIAN_MIRROR   debootstrap's mirror (default http://deb.debian.org/debian)
  HOPLINK_WHEELS_PIP_ARGS extra options of `pip wheel` (e.g. "--extra-index-url
                          https://download.pytorch.org/whl/cpu" where pip's own configuration
                          does not provide the CPU build of torch)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROJECT = "hoplinkci"
BASE_IMAGE = "hoplink-ci-base:bookworm"
TORCH = "torch==2.13.0"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_PACKAGES = {
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}


class Failure(Exception):
    """The compose test failed; the message says why."""


# --- small helpers -------------------------------------------------------------------------------


TIMINGS: list[tuple[str, float]] = []


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    print(f"\n=== {name}", flush=True)
    start = time.monotonic()
    try:
        yield
    finally:
        elapsed = time.monotonic() - start
        TIMINGS.append((name, elapsed))
        print(f"=== {name}: {elapsed:.1f} s", flush=True)


def run(
    argv: list[str], *, quiet: bool = False, echo: bool = True, timeout: float = 1800, **kwargs: Any
) -> str:
    """Run a command: printed (unless not echo), its output printed (unless quiet; on failure
    always) and returned; Failure on a non-zero status."""
    if echo:
        print("+ " + shlex.join(argv), flush=True)
    result = subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        **kwargs,
    )
    if not echo and result.returncode:
        print("+ " + shlex.join(argv), flush=True)
    if not quiet or result.returncode:
        tail = result.stdout[-6000:] if quiet else result.stdout
        print(tail, end="" if tail.endswith("\n") or not tail else "\n", flush=True)
    if result.returncode:
        raise Failure(f"{shlex.join(argv[:3])} ... exited with status {result.returncode}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: Any = None, headers: dict | None = None) -> tuple[int, str]:
    assert url.startswith("http://127.0.0.1:"), url  # loopback only
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def get_json(url: str) -> Any:
    status, text = http("GET", url)
    if status != 200:
        raise Failure(f"GET {url}: {status} {text[:200]}")
    return json.loads(text)


def wait_for(what: str, check: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, Failure) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(poll)
    raise Failure(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)
    print(f"ok: {message}", flush=True)


def load_compose() -> dict:
    import yaml  # the project's dev dependencies (make setup) and docker-compose both ship it

    return yaml.safe_load(COMPOSE.read_text())


# --- the engine ----------------------------------------------------------------------------------


class Engine:
    """A private dockerd: started here, stopped by its PID, its mounts undone."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.data_root = work / "docker"
        self.exec_root = work / "exec"
        self.socket = work / "docker.sock"
        self.log = work / "dockerd.log"
        self.process: subprocess.Popen | None = None
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket}", DOCKER_BUILDKIT="0")
        self.env.pop("DOCKER_CONTEXT", None)
        # Debian's client matches its daemon (a newer client elsewhere on PATH may want buildx).
        self.docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"

    def start(self) -> None:
        argv = [
            "dockerd",
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.work / 'dockerd.pid'}",
            f"--host=unix://{self.socket}",
        ]
        print("+ " + shlex.join(argv), flush=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            probe = subprocess.run(
                [self.docker, "info", "--format", "{{.ServerVersion}} {{.Driver}}"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            if probe.returncode == 0:
                print(f"dockerd {probe.stdout.strip()} (pid {self.process.pid})", flush=True)
                return
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:]
        reason = (
            f"exited with status {self.process.returncode}"
            if self.process.poll() is not None
            else "did not answer within 60 s"
        )
        raise Failure(f"the container engine could not start: dockerd {reason}; its log:\n{tail}")

    def __call__(self, *args: str, **kwargs: Any) -> str:
        return run([self.docker, *args], env=self.env, **kwargs)

    def compose(self, files: list[Path], *args: str, **kwargs: Any) -> str:
        argv = ["docker-compose", "-p", PROJECT]
        for f in files:
            argv += ["-f", str(f)]
        return run([*argv, *args], env=self.env, cwd=ROOT, **kwargs)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        print(f"stopping dockerd (pid {self.process.pid})", flush=True)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            print("dockerd ignored SIGTERM for 60 s: SIGKILL", flush=True)
            self.process.kill()
            self.process.wait(timeout=30)


def unmount_under(path: Path) -> None:
    """Undo every mount below `path` (deepest first): overlays, netns, debootstrap's /proc."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].encode().decode("unicode_escape") for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


# --- the phases ----------------------------------------------------------------------------------


def install_tools() -> None:
    missing = [pkg for binary, pkg in APT_PACKAGES.items() if shutil.which(binary) is None]
    if not missing:
        print("docker.io, docker-compose and debootstrap are installed", flush=True)
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env, quiet=True)
    run(["apt-get", "install", "-y", "-qq", *missing], env=env, quiet=True)


def build_base_image(engine: Engine, work: Path) -> None:
    if engine("images", "-q", BASE_IMAGE, quiet=True, echo=False).strip():
        print(f"{BASE_IMAGE} is in the engine's cache", flush=True)
        return
    rootfs = work / "rootfs"
    mirror = os.environ.get("HOPLINK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            quiet=True,
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(
            [
                engine.docker,
                "import",
                "--change",
                f"ENV PATH={DEFAULT_PATH}",
                "--change",
                "ENV LANG=C.UTF-8",
                "-",
                BASE_IMAGE,
            ],
            env=engine.env,
            stdin=tar.stdout,
        )
        if tar.wait() != 0:
            raise Failure("tar of the debootstrap tree failed")
    finally:
        unmount_under(rootfs)
        shutil.rmtree(rootfs, ignore_errors=True)


def fill_wheelhouse(wheelhouse: Path) -> None:
    if sys.version_info[:2] != (3, 11):
        raise Failure(
            f"the wheelhouse is built for the image's python 3.11; this is {sys.version.split()[0]}"
        )
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = wheelhouse.parent / "requirements.txt"
    requirements.write_text(
        "\n".join([TORCH, "setuptools>=68", "wheel"] + pyproject["project"]["dependencies"]) + "\n"
    )
    wheelhouse.mkdir(exist_ok=True)
    extra = shlex.split(os.environ.get("HOPLINK_WHEELS_PIP_ARGS", ""))
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheelhouse)]
        + extra
        + ["-r", str(requirements)],
        quiet=True,
    )
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    torch = [w for w in wheels if w.startswith("torch-")]
    if not any(w.startswith("torch-2.13.0+cpu-") for w in torch) or any(
        w.startswith("nvidia") for w in wheels
    ):
        raise Failure(
            f"the wheelhouse has no CPU-only torch 2.13.0 ({torch}): set HOPLINK_WHEELS_PIP_ARGS="
            "'--extra-index-url https://download.pytorch.org/whl/cpu'"
        )
    size = sum(p.stat().st_size for p in wheelhouse.glob("*.whl")) / 2**20
    print(f"{len(wheels)} wheels, {size:.0f} MiB", flush=True)


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """The wheelhouse over HTTP on 127.0.0.1 (the builds' `--find-links`)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for("the wheelhouse server", lambda: http("GET", url)[0] == 200, 10, 0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def build_images(engine: Engine, wheels_url: str) -> None:
    source = f"--no-index --find-links {wheels_url}"
    common = [
        "build",
        "--network=host",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        f"PIP_SOURCE={source}",
        "--build-arg",
        f"TORCH_SOURCE={source}",
    ]
    for target, tag in (("full", "hoplink:latest"), ("channel", "hoplink-channel:latest")):
        start = time.monotonic()
        engine(*common, "--target", target, "-t", tag, str(ROOT), quiet=True, timeout=1800)
        print(f"built {tag} (target {target}) in {time.monotonic() - start:.1f} s", flush=True)
    print(
        engine("images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}", quiet=True), flush=True
    )


def host_network_compose(compose: dict, path: Path) -> dict[str, int]:
    """docker-compose.yml on the host network, written to `path`: every service with
    network_mode: host, the service names mapped to 127.0.0.1 (extra_hosts), every process bound
    to 127.0.0.1 and every HOPLINK_*PORT moved to a free port (URLs follow), the `ports` dropped
    (docker-compose refuses them with the host network, and an override file cannot remove them).
    Everything else is the file as written. Returns the services' control ports."""
    compose = json.loads(json.dumps(compose))
    services = compose["services"]
    moved: dict[str, int] = {}  # old port -> new port, over every HOPLINK_*PORT of any service
    for service in services.values():
        for key, value in service["environment"].items():
            if re.fullmatch(r"HOPLINK_(\w+_)?PORT", key):
                moved[str(value)] = free_port()
    hosts = "|".join(re.escape(h) for h in [*services, "localhost", "127.0.0.1"])
    pattern = re.compile(rf"//({hosts}):(\d+)\b")

    def move(m: re.Match) -> str:
        host, port = m.groups()
        if port not in moved:
            return m.group(0)
        return f"//{host if host in services else '127.0.0.1'}:{moved[port]}"

    ports: dict[str, int] = {}
    for name, service in services.items():
        env = service["environment"]
        for key, value in env.items():
            if re.fullmatch(r"HOPLINK_(\w+_)?PORT", key):
                env[key] = str(moved[str(value)])
            elif isinstance(value, str):
                env[key] = pattern.sub(move, value)
        env["HOPLINK_HOST"] = "127.0.0.1"
        if "HOPLINK_PUBLISH" in env:
            env["HOPLINK_PUBLISH"] = "127.0.0.1"
        ports[name] = int(env["HOPLINK_PORT"])
        service.pop("ports", None)
        service.pop("build", None)  # built above, from the same Dockerfile
        service["network_mode"] = "host"
        service["extra_hosts"] = [f"{other}:127.0.0.1" for other in services]
    compose = {k: v for k, v in compose.items() if not k.startswith("x-")}
    path.write_text(json.dumps(compose, indent=2))  # JSON is YAML
    for name, service in services.items():
        print(f"{name}: {json.dumps(service['environment'])}", flush=True)
    return ports


def check_stack(engine: Engine, compose: dict, ports: dict[str, int], files: list[Path]) -> None:
    services = compose["services"]
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    ids = {
        name: engine.compose(files, "ps", "-q", name, quiet=True, echo=False).strip()
        for name in services
    }

    def health() -> dict[str, str]:
        return {
            name: engine(
                "inspect", "--format", "{{.State.Health.Status}}", cid, quiet=True, echo=False
            ).strip()
            for name, cid in ids.items()
        }

    wait_for("three healthy containers", lambda: set(health().values()) == {"healthy"}, 120)
    expect(True, f"all three healthy by the images' HEALTHCHECK: {health()}")

    frames = int(services["tx"]["environment"]["HOPLINK_FRAMES"])
    tx = wait_for(
        "the Tx to finish streaming",
        lambda: (s := get_json(base["tx"] + "/stats"))["link"]["finished"] and s,
        180,
    )

    def rx_settled() -> dict | None:
        s = get_json(base["rx"] + "/stats")
        return s if s["link"]["session_ended"] and s["quality"]["pending"] == 0 else None

    rx = wait_for("the Rx to settle", rx_settled, 60)
    channel = get_json(base["channel"] + "/stats")
    outcomes = rx["frames_by_outcome"]
    expect(tx["frames_sent"] == frames, f"the Tx streamed the clip: {tx['frames_sent']} frames")
    expect(
        sum(outcomes.values()) == frames,
        f"every frame accounted at the Rx: {sum(outcomes.values())} = {outcomes}",
    )
    expect(outcomes.get("decoded", 0) > frames // 2, f"most frames decoded: {outcomes}")
    expect(rx["quality"]["psnr_mean"] is not None, f"PSNR {rx['quality']['psnr_mean']:.2f} dB")
    expect(rx["digest"]["agree"] is True, f"memory digests agree: {rx['digest']}")
    expect(
        set(channel["impairments"]["tx_to_rx"]) == {"bit_errors", "loss", "delay"},
        f"the compose file's impairments in force: {sorted(channel['impairments']['tx_to_rx'])}",
    )

    # The curl example of docker-compose.yml, with and without the token.
    token = services["channel"]["environment"]["HOPLINK_CONTROL_TOKEN"]
    token = re.sub(r"\$\{HOPLINK_CONTROL_TOKEN:-([^}]*)\}", r"\1", token)
    url = base["channel"] + "/impairments/tx_to_rx/loss"
    json_type = {"Content-Type": "application/json"}
    status, text = http("PUT", url, {"probability": 0.05}, json_type)
    expect(status == 401, f"PUT without the token refused: {status}")
    status, text = http(
        "PUT", url, {"probability": 0.05}, {**json_type, "Authorization": f"Bearer {token}"}
    )
    expect(status == 200, f"the compose file's curl example answers {status}: {text[:120]}")

    status, text = http("GET", base["channel"] + "/dashboard/")
    expect(status == 200 and "<html" in text.lower(), f"the dashboard answers {status}")
    for name in services:
        status, text = http("GET", base[name] + "/metrics")
        expect(
            status == 200 and "# TYPE" in text,
            f"{name} /metrics answers {status} ({text.count('# TYPE')} metric families)",
        )


def check_images(engine: Engine) -> None:
    run_args = ["run", "--rm", "--network=none"]
    for image in ("hoplink:latest", "hoplink-channel:latest"):
        user = engine("inspect", "--format", "{{.Config.User}}", image, quiet=True).strip()
        expect(user == "hoplink", f"{image} runs as {user!r}, not root")
    probe = "import importlib.util as u; print(u.find_spec('torch') is None)"
    out = engine(*run_args, "hoplink-channel:latest", "python", "-c", probe, quiet=True)
    expect(out.strip() == "True", "the channel image has no torch")
    out = engine(*run_args, "hoplink:latest", "hoplink", "bench", "--help", quiet=True)
    expect("usage" in out, "`hoplink bench` runs in the full image (benchmarks/ included)")
    refused = subprocess.run(
        [engine.docker, *run_args]
        + ["-e", "HOPLINK_CONTROL_TOKEN=hoplink-change-me", "-e", "HOPLINK_PUBLISH=0.0.0.0"]
        + ["hoplink-channel:latest"],
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    expect(
        refused.returncode == 64 and "placeholder" in refused.stderr,
        f"the placeholder token published beyond loopback is refused ({refused.returncode})",
    )


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    if os.geteuid() != 0:
        print("compose test: FAILED: runs as root (it starts dockerd)", file=sys.stderr)
        return 1
    keep = os.environ.get("HOPLINK_COMPOSE_WORK")
    if keep:
        work = Path(keep).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="hoplink-compose.", dir="/var/tmp"))
    engine = Engine(work)
    compose = load_compose()
    files = [work / "docker-compose.host-network.yml"]
    started = time.monotonic()
    up = False
    failure: str | None = None
    try:
        with phase("apt: docker.io docker-compose debootstrap"):
            install_tools()
        with phase("engine: dockerd --bridge=none --iptables=false --ip-forward=false"):
            engine.start()
        with phase("base image: debootstrap --variant=minbase bookworm + docker import"):
            build_base_image(engine, work)
        with phase("wheelhouse: pip wheel on the host"):
            fill_wheelhouse(work / "wheels")
        with serve(work / "wheels") as wheels_url, phase("images: docker build (full, channel)"):
            build_images(engine, wheels_url)
        with phase("compose up (host network)"):
            ports = host_network_compose(compose, files[0])
            up = True
            engine.compose(files, "up", "-d", "--no-build", timeout=600)
        with phase("checks"):
            check_stack(engine, compose, ports, files)
            check_images(engine)
    except Failure as exc:
        failure = str(exc)
    except Exception as exc:  # noqa: BLE001 - report any error as the test's failure
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        with phase("teardown: compose down, dockerd stopped, mounts and files removed"):
            if up:
                if failure:
                    with contextlib.suppress(Exception):
                        engine.compose(files, "logs", "--no-color", "--tail=40", timeout=60)
                with contextlib.suppress(Exception):
                    engine.compose(files, "down", "--remove-orphans", "-t", "10", timeout=120)
            engine.stop()
            unmount_under(work)
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    print("\ncompose test timings:")
    for name, seconds in TIMINGS:
        print(f"  {seconds:7.1f} s  {name}")
    print(f"  {time.monotonic() - started:7.1f} s  total")
    if failure:
        print(f"\ncompose test: FAILED: {failure}", file=sys.stderr)
        return 1
    print("\ncompose test: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
