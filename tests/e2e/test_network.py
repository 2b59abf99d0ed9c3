"""End to end on loopback: the real rx, channel and tx processes (``python -m …``).

One Rx and one channel serve the whole module; each test streams with its own Tx process (a HELLO
after BYE starts a new Rx session, so every test reads its own numbers). Children run with
OMP_NUM_THREADS=1 and are always terminated in the fixture teardown.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from experiments.demo import Child, Processes, get_json, wait_for
from shared.config import build_config
from shared.protocol.messages import Error, Hello, decode, encode

pytestmark = pytest.mark.e2e

SCENARIO = "low_motion"
FRAMES = 120
# τ = 0.99 gives the memory a dozen prototypes on this clip, so ID desync has refs to permute.
THRESHOLD = 0.99
CONFIG = build_config({"threshold": THRESHOLD, "seed": 0}, read_env=False)
LINK_ENV = {
    "HOPLINK_LOG_LEVEL": "warning",
    "HOPLINK_SEED": "0",
    "HOPLINK_THRESHOLD": str(THRESHOLD),
}


@dataclass
class Link:
    procs: Processes
    rx: Child
    channel: Child


@dataclass
class Run:
    """The final stats of one stream."""

    tx: dict
    rx: dict
    channel: dict


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Link]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    with Processes(Path(logs), env=LINK_ENV) as procs:
        rx = procs.start("rx", ["receiver", "--reference", SCENARIO, "--frames", str(FRAMES)])
        channel = procs.start("channel", ["channel", "--rx-url", rx.ws_url])
        yield Link(procs, rx, channel)


def stream(link: Link, *tx_args: str, frames: int = FRAMES, during=None) -> Run:
    """Stream ``frames`` frames with a fresh Tx (kept alive with --linger), wait for the Rx to
    settle, return the final stats of all three; ``during(tx_child)`` runs while it streams."""
    return stream_via(link, link.channel.ws_url, *tx_args, frames=frames, during=during)


def stream_via(link: Link, url: str, *tx_args: str, frames: int, during=None) -> Run:
    key = "tx"
    tx = link.procs.start(
        "tx",
        [
            "transmitter",
            "--url",
            url,
            "--scenario",
            SCENARIO,
            "--frames",
            str(frames),
            "--linger",
            *tx_args,
        ],
        key=key,
    )
    try:
        if during is not None:
            during(tx)
        tx_stats = wait_for(
            lambda: (s := tx.stats())["link"]["finished"] and s, 60, "the Tx to finish"
        )

        def rx_done() -> dict | None:
            s = link.rx.stats()
            return s if s["link"]["session_ended"] and s["quality"]["pending"] == 0 else None

        rx_stats = wait_for(rx_done, 30, "the Rx to settle")
        return Run(tx_stats, rx_stats, link.channel.stats())
    finally:
        link.procs.stop(key)


@pytest.fixture(scope="module")
def clean_run(link: Link) -> Run:
    """120 frames, unpaced, through a channel with no impairment."""
    get_json_delete(f"{link.channel.url}/impairments")
    return stream(link, "--fps", "0")


def get_json_delete(url: str) -> None:
    r = httpx.delete(url, timeout=5)
    assert r.status_code == 204, r.text


def test_clean_link_delivers_every_frame(clean_run: Run) -> None:
    tx, rx = clean_run.tx, clean_run.rx
    assert tx["frames_sent"] == FRAMES
    assert rx["frames"] == FRAMES
    assert sum(rx["frames_by_outcome"].values()) == tx["frames_sent"]
    assert rx["frames_by_outcome"]["decoded"] == FRAMES
    assert rx["hits"] + rx["news"] == FRAMES
    assert (rx["hits"], rx["news"]) == (tx["hits"], tx["news"])
    assert rx["quality"]["psnr_mean"] > 0  # decoded to pixels and compared with the truth
    assert 0 < rx["quality"]["ssim_mean"] <= 1
    assert rx["traffic"]["decode_errors"] == 0 and rx["counters"]["errors"] == 0


def test_clean_link_bits_and_digests_agree(clean_run: Run) -> None:
    tx, rx, channel = clean_run.tx, clean_run.rx, clean_run.channel
    # Semantic bits (eq. 3): counted by the Tx when sent, by the Rx when received.
    assert (
        tx["traffic"]["semantic_bits"] + tx["traffic"]["refresh_bits"]
        == (rx["traffic"]["semantic_bits_in"])
    )
    # The channel saw exactly the bytes the Tx sent and the Rx received (this link only).
    forward = channel["directions"]["tx_to_rx"]
    assert forward["dropped"] == 0
    frames_seen = forward["types_in"].get("hit", 0) + forward["types_in"].get("new", 0)
    assert frames_seen >= FRAMES  # the channel's counters span every link of the module
    assert tx["traffic"]["payload_bytes_out"] == rx["traffic"]["payload_bytes_in"]
    assert rx["digest"]["agree"] is True
    assert rx["digest"]["rx"] == rx["digest"]["tx_last"] == tx["digest"]
    assert rx["digest"]["last_digest_seq"] == FRAMES - 1
    assert rx["bits"]["wire_bits_per_frame"] > rx["bits"]["semantic_per_frame"] > 0


def test_network_run_matches_the_simulator(clean_run: Run) -> None:
    """The processes run the same cores as the in-process simulator: same decisions, same bits,
    same quality, frame for frame."""
    from experiments.link import simulate
    from shared.codec.cache import DecodeCache
    from shared.codec.models import load_codec
    from shared.scenarios import load_clip

    config = CONFIG
    codec = load_codec(config.codec)
    frames = load_clip(SCENARIO, n_frames=FRAMES, size=codec.frame_size, seed=config.seed)
    sim = simulate(codec.encode(frames), config, frames=frames, decoder=DecodeCache(codec))
    rx = clean_run.rx
    assert (rx["hits"], rx["news"]) == (sim.summary.hits, sim.summary.news)
    assert rx["bits"]["semantic_per_frame"] == pytest.approx(sim.summary.bits_per_frame)
    assert rx["bits"]["payload_bytes_per_frame"] == pytest.approx(sim.summary.wire_bytes_per_frame)
    # Link bits (every message both ways: HELLOs, frames, DIGESTs, BYE) as the Rx counted them.
    assert rx["bits"]["link_per_frame"] == pytest.approx(sim.summary.link_bits_per_frame)
    assert rx["bits"]["link_per_frame"] > rx["bits"]["semantic_per_frame"]
    assert rx["quality"]["psnr_mean"] == pytest.approx(sim.summary.psnr, abs=1e-9)
    assert rx["quality"]["ssim_mean"] == pytest.approx(sim.summary.ssim, abs=1e-9)


def test_corruption_events_are_detected_and_repaired(link: Link) -> None:
    before = link.channel.stats()["events"]

    def corrupt(tx: Child) -> None:
        progress = lambda n: lambda: link.rx.stats()["frames"] >= n  # noqa: E731
        wait_for(progress(40), 30, "40 frames at the Rx")
        r = httpx.post(f"{link.channel.url}/events/corrupt", json={"rho": 0.5}, timeout=5)
        assert r.status_code == 200, r.text
        wait_for(progress(80), 30, "80 frames at the Rx")
        r = httpx.post(f"{link.channel.url}/events/corrupt", json={"sigma": 0.3}, timeout=5)
        assert r.status_code == 200, r.text

    run = stream(link, "--fps", "60", "--digest-every", "15", during=corrupt, frames=150)
    rx, events = run.rx, run.channel["events"]
    c = rx["counters"]
    assert events["corrupt"] - before["corrupt"] == 2 == rx["traffic"]["corrupt_events"]
    assert events["id_desync"] - before["id_desync"] == 1
    assert events["prototype_noise"] - before["prototype_noise"] == 1
    assert 0 < c["prototypes_noised"] <= rx["memory"]["capacity"]
    assert c["ids_desynced"] <= c["prototypes_noised"]
    # The faults were noticed (cues, digests) and repaired (lookups, refreshes).
    assert c["cue_failures"] + c["digest_mismatches"] > 0
    assert c["lookups_ok"] + c["refresh_requests"] > 0
    assert c["refreshes_applied"] > 0
    assert sum(rx["frames_by_outcome"].values()) == 150 == run.tx["frames_sent"]
    assert rx["frames_by_outcome"]["lost"] == 0
    # After the faults, a few DIGEST periods bring the two memories back together.
    assert rx["digest"]["agree"] is True


def test_bit_errors_are_counted_and_memories_reconverge(link: Link) -> None:
    url = f"{link.channel.url}/impairments/tx_to_rx/bit_errors"
    # Errors on frames 10..59 only; DIGESTs every 15 frames repair what they broke.
    attributes = {"ber": 3e-3, "seq_range": [10, 59]}
    r = httpx.post(
        f"{link.channel.url}/impairments/tx_to_rx",
        json={"type": "bit_errors", "attributes": attributes},
        timeout=5,
    )
    assert r.status_code == 201, r.text
    try:
        run = stream(link, "--fps", "0", "--digest-every", "15")
    finally:
        httpx.delete(url, timeout=5)
    injected = run.channel["directions"]["tx_to_rx"]["impairments"]["bit_errors"]
    rx = run.rx
    c, t = rx["counters"], rx["traffic"]
    assert injected["messages_corrupted"] > 0 and injected["bits_flipped"] > 0
    noticed = (
        c["cue_failures"]
        + c["missing_refs"]
        + c["digest_mismatches"]
        + c["errors"]
        + t["decode_errors"]
        + c["concealed"]
    )
    assert noticed > 0
    # Every rejected message was one the channel corrupted.
    assert t["decode_errors"] + c["errors"] <= injected["messages_corrupted"]
    assert sum(rx["frames_by_outcome"].values()) == FRAMES == run.tx["frames_sent"]
    assert rx["digest"]["agree"] is True


def test_tx_reconnects_when_the_channel_restarts(link: Link) -> None:
    """A dropped link is dialed again with backoff; the Rx resumes the session (no BYE), and
    every frame is accounted for: the ones lost in the break are counted, not skipped."""
    procs = link.procs
    channel = procs.start("channel", ["channel", "--rx-url", link.rx.ws_url], key="channel-2")
    ports = {"port": channel.port, "link_port": channel.link_port}

    def restart_channel(tx: Child) -> None:
        wait_for(lambda: link.rx.stats()["frames"] >= 30, 30, "30 frames at the Rx")
        procs.stop("channel-2")
        wait_for(lambda: tx.stats()["traffic"]["reconnects"] >= 1, 10, "the Tx to notice")
        procs.start("channel", ["channel", "--rx-url", link.rx.ws_url], **ports, key="channel-2")

    try:
        run = stream_via(link, channel.ws_url, "--fps", "60", frames=150, during=restart_channel)
    finally:
        procs.stop("channel-2")
    tx, rx = run.tx, run.rx
    assert tx["traffic"]["reconnects"] >= 1 and tx["traffic"]["connects"] >= 2
    assert tx["frames"] == 150 and tx["frames_sent"] + tx["traffic"]["frames_unsent"] == 150
    assert rx["link"]["links_accepted"] >= 2  # one session across two links
    assert sum(rx["frames_by_outcome"].values()) == 150
    assert rx["frames_by_outcome"]["lost"] <= 150 - tx["frames_sent"] + 5  # in flight at the cut
    assert rx["digest"]["agree"] is True


async def test_wrong_config_digest_is_refused_through_the_channel(link: Link) -> None:
    ours = CONFIG.digest()
    other = build_config({"threshold": 0.5}, read_env=False).digest()
    hello = Hello(role="tx", config_digest=other, model_digest="0" * 64)
    async with connect(link.channel.ws_url, compression=None) as ws:
        await ws.send(encode(hello))
        error = decode(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert isinstance(error, Error) and error.code == "config_mismatch"
    assert other in error.reason and ours in error.reason
    rcvd = closed.value.rcvd
    assert rcvd is not None and rcvd.code == 4002
    assert "config digest mismatch" in rcvd.reason
    assert other[:16] in rcvd.reason and ours[:16] in rcvd.reason


async def test_first_message_must_be_hello_and_one_link_at_a_time(link: Link) -> None:
    async with connect(link.rx.ws_url, compression=None) as first:
        # A socket that has not sent its HELLO holds no link slot: a second one is served
        # alongside it (its bad HELLO refused on its own; the slot is taken by a valid HELLO).
        async with connect(link.rx.ws_url, compression=None) as second:
            await second.send(b"\x93\x01\x02")
            with pytest.raises(ConnectionClosed) as refused:
                while True:
                    await second.recv()
        assert refused.value.rcvd.code == 4000
        await first.send(b"\xc1 not msgpack")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await first.recv()
    assert closed.value.rcvd.code == 4000
    assert "hello" in closed.value.rcvd.reason


def test_tx_with_another_config_is_refused_and_exits(link: Link) -> None:
    tx = link.procs.start(
        "tx",
        ["transmitter", "--url", link.channel.ws_url, "--frames", "5", "--threshold", "0.5"],
        key="tx-mismatch",
    )
    try:
        assert tx.process.wait(30) == 2
    finally:
        link.procs.stop("tx-mismatch")
    log = tx.log_tail()
    assert "4002" in log and "config digest mismatch" in log


@pytest.mark.parametrize("service", ["rx", "channel", "tx"])
async def test_service_endpoints(link: Link, clean_run: Run, service: str) -> None:
    procs = link.procs
    child = {"rx": link.rx, "channel": link.channel}.get(service)
    if child is None:  # a lingering Tx, done streaming
        child = procs.start(
            "tx",
            [
                "transmitter",
                "--url",
                link.channel.ws_url,
                "--frames",
                "3",
                "--fps",
                "0",
                "--linger",
            ],
            key="tx-endpoints",
        )
    try:
        async with httpx.AsyncClient(base_url=child.url, timeout=10) as client:
            health = (await client.get("/healthz")).json()
            assert health["status"] == "ok" and health["service"] == service
            stats = (await client.get("/stats")).json()
            assert stats["service"] == service
            async with client.stream("GET", "/stats/stream") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.aiter_lines()
                event = None
                async for line in lines:
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        break
            assert event is not None and event["service"] == service
            text = (await client.get("/metrics")).text
        names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
        expected = {
            "rx": "hoplink_rx_frames_total",
            "channel": "hoplink_channel_messages_received_total",
            "tx": "hoplink_tx_frames_total",
        }[service]
        assert expected in names
    finally:
        procs.stop("tx-endpoints")


def test_impairment_api_validates_input(link: Link) -> None:
    base = f"{link.channel.url}/impairments"
    loss = {"type": "loss", "attributes": {"probability": 2}}
    bad_value = httpx.post(f"{base}/tx_to_rx", json=loss, timeout=5)
    assert bad_value.status_code == 422 and "probability" in bad_value.text
    unknown = httpx.post(f"{base}/tx_to_rx", json={"type": "gremlins"}, timeout=5)
    assert unknown.status_code == 422 and "gremlins" in unknown.text
    bad_direction = httpx.post(f"{base}/sideways", json={"type": "loss"}, timeout=5)
    assert bad_direction.status_code == 422
    delay = {"type": "delay", "attributes": {"delay_ms": 1}}
    ok = httpx.post(f"{base}/rx_to_tx", json=delay, timeout=5)
    assert ok.status_code == 201 and ok.json()["attributes"]["delay_ms"] == 1
    assert [v["name"] for v in get_json(base)] == ["delay"]
    assert httpx.delete(f"{base}/rx_to_tx/delay", timeout=5).status_code == 204
    assert httpx.delete(f"{base}/rx_to_tx/delay", timeout=5).status_code == 404
    assert get_json(base) == []
    no_link = httpx.post(f"{link.channel.url}/events/corrupt", json={"rho": 0.1}, timeout=5)
    assert no_link.status_code == 409


def test_a_per_dimension_grid_runs_through_the_processes_as_in_the_simulator() -> None:
    """Each process reads the codec's grid from its card; the Rx decodes what the simulator does."""
    import os

    from experiments.link import simulate
    from shared.codec.cache import DecodeCache
    from shared.codec.models import load_codec
    from shared.scenarios import load_clip

    argv = ["--latent-grid", "per_dim", "--bits-per-value", "4"]
    done = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "demo", "--frames", "30", "--fps", "0", "--json",
         "--no-impairments", "--scenario", SCENARIO, *argv],
        capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rx = json.loads(done.stdout)["rx"]
    assert rx["frames_by_outcome"]["decoded"] == 30 and rx["digest"]["agree"]
    assert rx["timeline"][0]["bits"] == 64 * 4  # a NEW of d·b bits
    config = build_config({"latent_grid": "per_dim", "bits_per_value": 4}, read_env=False)
    codec = load_codec(config.codec)
    frames = load_clip(SCENARIO, n_frames=30, size=codec.frame_size, seed=config.seed)
    sim = simulate(codec.encode(frames), config, frames=frames, decoder=DecodeCache(codec))
    assert (rx["hits"], rx["news"]) == (sim.summary.hits, sim.summary.news)
    assert rx["quality"]["psnr_mean"] == pytest.approx(sim.summary.psnr, abs=1e-9)


def test_a_token_link_runs_through_the_processes_as_in_the_simulator(tmp_path: Path) -> None:
    """A token codec's grids cross rx, channel and tx as CODED frames; the Rx shows what the
    simulator shows and the video written from the simulator has every frame at its size."""
    import os

    import av

    from experiments.clips import encoded_clip
    from experiments.link import simulate

    argv = ["--codec", "tok8d16", "--scenario", SCENARIO, "--frames", "12"]
    done = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "demo", "--fps", "0", "--json",
         "--no-impairments", *argv],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rx = json.loads(done.stdout)["rx"]
    assert rx["frames_by_outcome"]["decoded"] == 12 and rx["digest"]["agree"]
    config = build_config({"codec": "tok8d16"}, read_env=False)
    clip = encoded_clip(config, SCENARIO, 12)
    sim = simulate(clip.latents, config, frames=clip.frames, decoder=clip.decoder)
    assert (rx["hits"], rx["news"]) == (sim.summary.hits, sim.summary.news)
    assert rx["quality"]["psnr_mean"] == pytest.approx(sim.summary.psnr, abs=1e-9)
    assert rx["bits"]["link_per_frame"] == pytest.approx(sim.summary.link_bits_per_frame)

    out = tmp_path / "side.mp4"
    video = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "sim", *argv, "--out-video", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert video.returncode == 0, video.stderr
    with av.open(str(out)) as container:
        pictures = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(pictures) == 12
    assert pictures[0].shape == (clip.frames.shape[1], 2 * clip.frames.shape[2], 3)
