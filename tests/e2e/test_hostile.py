"""A hostile peer: malformed and out-of-range input, oversized frames, floods, no credentials.

Every bad input gets a clear, counted error (and a close code where the link cannot go on), and
the process keeps serving: /healthz and /stats answer, and a proper link afterwards works. The
link's shared secret and the channel's control token are checked here too
(shared/protocol/security.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from experiments.demo import Child, Processes, free_port, wait_for
from shared.coding.quantizer import pack_codes
from shared.config import ConfigError, build_config
from shared.protocol.handshake import CloseCode
from shared.protocol.messages import (
    MAX_MESSAGE_BYTES,
    MAX_SEQ,
    Bye,
    Corrupt,
    Digest,
    Error,
    Hello,
    Hit,
    New,
    Refresh,
    RefreshRequest,
    decode,
    encode,
)
from shared.protocol.seal import SEAL_BITS, SEALED_OVERHEAD, LinkAuth
from shared.protocol.security import NONCE_BYTES, link_auth, sign_hello, verify_hello
from shared.service import ChannelSettings
from transmitter.core import TransmitterCore

pytestmark = pytest.mark.e2e

SECRET = "correct horse battery staple"
ENV = {"HOPLINK_LOG_LEVEL": "warning", "HOPLINK_SEED": "0", "HOPLINK_THRESHOLD": "0.99"}
CONFIG = build_config({"seed": 0, "threshold": 0.99}, read_env=False)


@dataclass
class Bench:
    procs: Processes
    rx: Child
    rx_secret: Child  # an Rx that requires the shared secret
    model_digest: str

    def hello(self) -> Hello:
        return Hello(role="tx", config_digest=CONFIG.digest(), model_digest=self.model_digest)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    from shared.codec.models import load_codec

    logs = tmp_path_factory.mktemp("hostile-logs")
    with Processes(Path(logs), env=ENV) as procs:
        # Short header deadline and few stream readers, so the tests of both stay short.
        bounds = {"HOPLINK_HTTP_HEADER_TIMEOUT": "1", "HOPLINK_STATS_STREAM_READERS": "3"}
        rx = procs.start("rx", ["receiver"], env=bounds)
        rx_secret = procs.start("rx", ["receiver"], env={"HOPLINK_SECRET": SECRET}, key="rx-s")
        yield Bench(procs, rx, rx_secret, load_codec(CONFIG.codec).digest)


async def open_link(url: str, hello: Hello) -> tuple[ClientConnection, Hello]:
    ws = await connect(url, compression=None, max_size=None)
    await ws.send(encode(hello))
    reply = decode(await ws.recv())
    assert isinstance(reply, Hello), reply
    return ws, reply


async def refused(url: str, first: bytes | str) -> tuple[Error | None, int, str]:
    """Send ``first`` on a fresh link; the ERROR (if any) and the close code and reason."""
    async with connect(url, compression=None) as ws:
        await ws.send(first)
        error = None
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = decode(await ws.recv())
                if isinstance(message, Error):
                    error = message
    rcvd = closed.value.rcvd
    return error, rcvd.code, rcvd.reason


def _latent(rng: np.random.Generator) -> np.ndarray:
    z = rng.standard_normal(CONFIG.latent_dim).astype(np.float32)
    return z / np.linalg.norm(z)


async def stream_proper_frames(ws: ClientConnection, frames: int) -> None:
    """A well-behaved Tx: a few distinct latents, repeated (NEWs then HITs), then DIGEST, BYE."""
    tx = TransmitterCore(CONFIG)
    rng = np.random.default_rng(1)
    views = [_latent(rng) for _ in range(4)]
    for seq in range(frames):
        await ws.send(encode(tx.on_frame(seq, seq / 30, views[seq // 5 % 4]).message))
    await ws.send(encode(tx.digest()))
    await ws.send(encode(tx.bye()))


def hostile_messages() -> list[tuple[str, bytes | str]]:
    latent = pack_codes(np.full(CONFIG.latent_dim, 9, dtype=np.uint16), CONFIG.bits_per_value)
    hit = {"type": "hit", "seq": 1, "t": 0.0, "refs": [0], "cue": 0}
    pack = lambda m: msgpack.packb(m, use_bin_type=True)  # noqa: E731
    return [
        ("malformed msgpack", b"\xc1\xc1 not msgpack"),
        ("text frame", "hello?"),
        ("not a map", pack([1, 2, 3])),
        ("unknown type", pack({"type": "gremlin"})),
        ("wrong field type", pack({**hit, "seq": "one"})),
        ("missing field", pack({"type": "hit", "seq": 1})),
        ("unknown field", pack({**hit, "extra": 1})),
        ("seq beyond 64 bits", pack({**hit, "seq": 2**64 - 1})),
        ("NaN frame time", pack({**hit, "t": float("nan")})),
        ("inf rho", pack({"type": "corrupt", "rho": float("inf"), "sigma": 0.0, "seed": 0})),
        ("rho out of range", encode(Corrupt(rho=2.0, sigma=0.0, seed=0))),
        ("slot out of range", encode(New(seq=0, t=0.0, slot=10**6, latent=latent))),
        ("latent of the wrong size", encode(New(seq=1, t=0.0, slot=0, latent=b"\x00" * 3))),
        ("ref out of range", encode(Hit(seq=2, t=0.0, refs=(10**6,), cue=0))),
        ("two refs, no weights", encode(Hit(seq=3, t=0.0, refs=(0, 1), cue=0))),
        ("all-zero weights", encode(Hit(seq=4, t=0.0, refs=(0,), cue=0, weights=(0,)))),
        ("seq 2^53 ahead", encode(Hit(seq=MAX_SEQ, t=0.0, refs=(0,), cue=0))),
        ("refresh of the wrong size", encode(Refresh(ref=0, seq=-1, latent=b"\x01"))),
        ("digest with short hashes", encode(Digest(seq=0, count=3, digest="x", slot_hashes=b""))),
        ("a Tx-bound message", encode(RefreshRequest(ref=0, seq=0))),
        ("a second hello", encode(Hello(role="tx", config_digest="x", model_digest="y"))),
        ("over MAX_MESSAGE_BYTES", b"\x00" * (MAX_MESSAGE_BYTES + 1)),
    ]


async def test_bad_input_is_counted_and_the_rx_keeps_serving(bench: Bench) -> None:
    rx = bench.rx
    bad = hostile_messages()
    ws, _ = await open_link(rx.ws_url, bench.hello())
    async with ws:
        errors = []
        for _, data in bad:
            await ws.send(data)
            async with asyncio.timeout(10):
                reply = decode(await ws.recv())
            assert isinstance(reply, Error), reply
            errors.append(reply)
        await ws.send(encode(Bye(last_seq=4)))
    for (what, _), error in zip(bad, errors, strict=True):
        assert error.code == "bad_message" and len(error.reason) > 10, (what, error)
    stats = await asyncio.to_thread(
        wait_for, lambda: (s := rx.stats())["link"]["session_ended"] and s, 10, "the Rx's BYE"
    )
    t, c = stats["traffic"], stats["counters"]
    assert t["errors_sent"] == len(bad) == t["decode_errors"] + c["errors"]
    assert c["seq_jumps_refused"] == 1
    assert sum(stats["frames_by_outcome"].values()) == 5  # frames 0-4: concealed or lost
    assert httpx.get(f"{rx.url}/healthz", timeout=5).json()["status"] == "ok"
    # A proper link afterwards: a new session, every frame decoded.
    ws, _ = await open_link(rx.ws_url, bench.hello())
    async with ws:
        await stream_proper_frames(ws, 20)

        def ended() -> dict | None:
            s = rx.stats()
            return s if s["link"]["session_ended"] and s["frames"] == 20 else None

        stats = await asyncio.to_thread(wait_for, ended, 15, "the proper session")
    assert stats["frames_by_outcome"]["decoded"] == 20
    assert stats["counters"]["errors"] == 0 and stats["digest"]["agree"] is True


async def test_oversized_frame_closes_the_link_with_1009(bench: Bench) -> None:
    rx = bench.rx
    ws, _ = await open_link(rx.ws_url, bench.hello())
    with pytest.raises(ConnectionClosed) as closed:
        async with ws:
            await ws.send(b"\x00" * (8 * MAX_MESSAGE_BYTES))  # beyond the websocket's max_size
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert httpx.get(f"{rx.url}/healthz", timeout=5).json()["status"] == "ok"
    ws, reply = await open_link(rx.ws_url, bench.hello())  # and the next link opens
    await ws.close()
    assert reply.role == "rx"


async def test_garbage_hello_is_refused_with_a_close_code(bench: Bench) -> None:
    error, code, reason = await refused(bench.rx.ws_url, b"\x93\x01\x02")
    assert code == CloseCode.PROTOCOL_ERROR and "hello" in reason
    assert error is not None and error.code == "protocol_error"
    old = Hello(role="tx", config_digest=CONFIG.digest(), model_digest="m", version=999)
    error, code, _ = await refused(bench.rx.ws_url, encode(old))
    assert code == CloseCode.VERSION_MISMATCH and "999" in error.reason


# --- a REFRESH_REQUEST flood towards the Tx ------------------------------------------------------


async def test_refresh_request_flood_is_bounded_by_the_tx_budget(bench: Bench) -> None:
    """A fake Rx floods the Tx with refresh requests (and garbage): the Tx answers at most its
    refresh budget per DIGEST period, counts the rest as refused, and streams on."""
    flood, unknown, garbage = 3000, 100, 200
    seen = {"refresh": 0, "digest": 0, "bye": 0}
    done = asyncio.Event()

    async def fake_rx(ws) -> None:
        hello = decode(await ws.recv())
        await ws.send(
            encode(
                Hello(role="rx", config_digest=hello.config_digest, model_digest=hello.model_digest)
            )
        )
        flooded = False
        async for data in ws:
            message = decode(data)
            if message.TYPE in seen:
                seen[message.TYPE] += 1
            if isinstance(message, New) and not flooded:
                flooded = True
                for _ in range(flood):
                    await ws.send(encode(RefreshRequest(ref=message.slot, seq=-1, reason="flood")))
                for i in range(unknown):
                    await ws.send(encode(RefreshRequest(ref=10_000 + i, seq=-1)))
                for _ in range(garbage):
                    await ws.send(b"\xc1")
            if isinstance(message, Bye):
                done.set()

    async with serve(fake_rx, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        args = ["--url", f"ws://127.0.0.1:{port}/link", "--frames", "90", "--fps", "30"]
        args += ["--digest-every", "30", "--linger"]
        tx = await asyncio.to_thread(
            bench.procs.start, "tx", ["transmitter", *args], key="tx-flood"
        )
        try:
            async with asyncio.timeout(60):
                await done.wait()
            stats = await asyncio.to_thread(
                wait_for, lambda: (s := tx.stats())["link"]["finished"] and s, 30, "the Tx"
            )
        finally:
            await asyncio.to_thread(bench.procs.stop, "tx-flood")
    c, t = stats["counters"], stats["traffic"]
    budget = 64  # TransmitterCore.refresh_budget, refilled by every DIGEST
    assert stats["frames_sent"] == 90 and stats["link"]["finished"]
    assert c["refresh_requests"] == flood + unknown
    assert c["refreshes_sent"] == seen["refresh"] <= budget * (1 + c["digests_sent"])
    assert c["refreshes_refused"] == flood + unknown - c["refreshes_sent"]
    assert t["decode_errors"] == garbage
    assert seen["bye"] == 1


# --- the link's shared secret --------------------------------------------------------------------


async def test_the_secret_rx_refuses_unauthenticated_and_replayed_hellos(bench: Bench) -> None:
    url = bench.rx_secret.ws_url
    error, code, reason = await refused(url, encode(bench.hello()))
    assert code == CloseCode.AUTH_FAILED and "no MAC" in reason and error.code == "auth_failed"
    wrong = sign_hello(bench.hello(), "not the secret")
    error, code, reason = await refused(url, encode(wrong))
    assert code == CloseCode.AUTH_FAILED and "wrong MAC" in reason
    good = sign_hello(bench.hello(), SECRET)
    ws, reply = await open_link(url, good)
    await ws.close()
    verify_hello(reply, SECRET, peer_nonce=good.nonce)  # the Rx proved it holds the secret
    assert reply.nonce and reply.nonce != good.nonce
    error, code, reason = await refused(url, encode(good))  # the same HELLO, replayed
    assert code == CloseCode.AUTH_FAILED and "replayed" in reason
    stats = bench.rx_secret.stats()
    assert stats["link"]["links_refused_by_code"]["auth_failed"] == 3


def test_a_tx_with_the_secret_streams_and_one_without_is_refused(bench: Bench) -> None:
    procs = bench.procs
    common = ["--frames", "30", "--fps", "0", "--linger"]
    ok = procs.start(
        "tx",
        ["transmitter", "--url", bench.rx_secret.ws_url, *common],
        env={"HOPLINK_SECRET": SECRET},
        key="tx-secret",
    )
    try:
        stats = wait_for(lambda: (s := ok.stats())["link"]["finished"] and s, 60, "the Tx")
    finally:
        procs.stop("tx-secret")
    assert stats["frames_sent"] == 30
    assert stats["traffic"]["auth_forged"] == stats["traffic"]["auth_unsealed"] == 0
    rx = wait_for(
        lambda: (s := bench.rx_secret.stats())["link"]["session_ended"] and s, 15, "the Rx"
    )
    assert rx["frames_by_outcome"]["decoded"] == 30 and rx["traffic"]["auth_forged"] == 0
    # Its link bits count the seals (counter + tag on every message after the HELLOs), as the
    # in-process link counts them for a link with a secret.
    from experiments.link import simulate
    from shared.codec.models import load_codec
    from shared.scenarios import load_clip

    codec = load_codec(CONFIG.codec)
    clip = load_clip("low_motion", n_frames=30, size=codec.frame_size, seed=CONFIG.seed)
    latents = codec.encode(clip)
    sim = simulate(latents, CONFIG, authenticated=True)
    assert rx["bits"]["link_per_frame"] == pytest.approx(sim.summary.link_bits_per_frame)
    plain = simulate(latents, CONFIG).summary.link_bits_per_frame
    messages = 30 + 2 + 1  # frames, two DIGESTs (every 30 frames, and the last), BYE
    assert sim.summary.link_bits_per_frame - plain == pytest.approx(
        (messages * SEAL_BITS + 2 * 8 * (NONCE_BYTES + 32)) / 30
    )
    # A Tx with a secret refuses a receiver that cannot prove it holds it (exit status 2).
    rogue = procs.start(
        "tx",
        ["transmitter", "--url", bench.rx.ws_url, *common],
        env={"HOPLINK_SECRET": SECRET},
        key="tx-rogue",
        wait=False,  # refused at once: it may exit before its /healthz ever answers
    )
    try:
        assert rogue.process.wait(60) == 2
    finally:
        procs.stop("tx-rogue")
    assert "4006" in rogue.log_tail() and "not authenticated" in rogue.log_tail()


# --- the channel's control token (its API in-process: tests/channel/test_server.py) --------------


def test_channel_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    from channel.server import ChannelService

    with pytest.raises(ConfigError, match="HOPLINK_CONTROL_TOKEN"):
        ChannelService(CONFIG, ChannelSettings(host="0.0.0.0"))
    ChannelService(CONFIG, ChannelSettings(host="::1"))  # loopback needs none
    port = str(free_port())
    run = subprocess.run(
        [sys.executable, "-m", "channel", "--host", "0.0.0.0", "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        env={**ENV, "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2 and "HOPLINK_CONTROL_TOKEN" in run.stderr


# --- pre-auth: a link slot is taken only after a valid HELLO -------------------------------------


async def test_an_idle_unauthenticated_socket_does_not_lock_the_tx_out(bench: Bench) -> None:
    url = bench.rx_secret.ws_url
    async with connect(url, compression=None) as idle:  # connects, says nothing
        await idle.ping()  # it is accepted and held, awaiting its HELLO
        ws, reply = await open_link(url, sign_hello(bench.hello(), SECRET))
        assert isinstance(reply, Hello)
        # the slot is taken now: a second valid HELLO is turned away
        error, code, _ = await refused(url, encode(sign_hello(bench.hello(), SECRET)))
        await ws.close()
    assert code == CloseCode.LINK_BUSY


async def test_the_pre_auth_pool_is_small_and_what_it_refuses_is_counted(bench: Bench) -> None:
    url = bench.rx.ws_url
    before = bench.rx.stats()["link"]["links_refused_by_code"].get("preauth_full", 0)
    idle = []
    try:
        for _ in range(8):  # RxSettings.preauth_max
            ws = await connect(url, compression=None)
            await ws.ping()
            idle.append(ws)
        async with connect(url, compression=None) as one_more:
            with pytest.raises(ConnectionClosed) as closed:
                await one_more.recv()
        assert closed.value.rcvd.code == CloseCode.LINK_BUSY
    finally:
        for ws in idle:
            await ws.close()
    refusals = bench.rx.stats()["link"]["links_refused_by_code"]
    assert refusals["preauth_full"] == before + 1
    ws, _ = await open_link(url, bench.hello())  # the pool is free again
    await ws.close()


# --- per-message authentication: nothing forged or replayed moves the Rx ------------------------


async def open_sealed_link(url: str, hello: Hello) -> tuple[ClientConnection, LinkAuth]:
    """A Tx holding the secret: its HELLO, the Rx's answer, and the link's sealer/opener."""
    signed = sign_hello(hello, SECRET)
    ws, reply = await open_link(url, signed)
    verify_hello(reply, SECRET, peer_nonce=signed.nonce)
    auth = link_auth(SECRET, "tx", signed, reply)
    assert auth is not None
    return ws, auth


async def test_forged_and_replayed_messages_cannot_move_the_rx_sequence(bench: Bench) -> None:
    """A man in the middle of an authenticated link injects HITs 10^6 ahead (unsealed, with a
    copied seal, altered), and replays a real frame: each is dropped and counted, no sequence
    state moves, and every real frame is decoded."""
    rx = bench.rx_secret
    ws, auth = await open_sealed_link(rx.ws_url, dataclasses.replace(bench.hello(), stream="mitm"))
    tx = TransmitterCore(CONFIG)
    rng = np.random.default_rng(1)
    views = [_latent(rng) for _ in range(4)]
    far = encode(Hit(seq=10**6, t=0.0, refs=(0,), cue=0))
    async with ws:
        sealed: list[bytes] = []
        for seq in range(20):
            sealed.append(
                auth.seal(encode(tx.on_frame(seq, seq / 30, views[seq // 5 % 4]).message))
            )
            await ws.send(sealed[-1])
            if seq == 5:
                await ws.send(far)  # unsealed
                await ws.send(far + sealed[3][-SEALED_OVERHEAD:])  # a real seal on a forgery
                await ws.send(encode(Hit(seq=10**6 + 1, t=0.0, refs=(0,), cue=0)))
                altered = bytearray(sealed[4])
                altered[10] ^= 0x40
                await ws.send(bytes(altered))
                await ws.send(sealed[3])  # a replay of a real frame
        await ws.send(auth.seal(encode(tx.digest())))
        await ws.send(auth.seal(encode(tx.bye())))

        def ended() -> dict | None:
            s = rx.stats()
            return s if s["link"]["session_ended"] and s["frames"] == 20 else None

        stats = await asyncio.to_thread(wait_for, ended, 15, "the authenticated session")
    t, c = stats["traffic"], stats["counters"]
    assert (t["auth_unsealed"], t["auth_forged"], t["auth_replayed"]) == (2, 2, 1)
    assert c["seq_jumps_refused"] == 0 and c["duplicates"] == 0 and c["frames_skipped"] == 0
    assert stats["frames_by_outcome"]["decoded"] == 20
    assert c["errors"] == 0 and t["decode_errors"] == 0 and stats["digest"]["agree"] is True


async def test_a_hello_replayed_to_a_restarted_rx_cannot_drive_it(bench: Bench) -> None:
    """A HELLO (and the sealed frames after it) captured on one link and replayed to a restarted
    Rx, which no longer knows the nonce: the HELLO is answered, but the Rx's fresh nonce is in
    the keys, so the captured NEW and the attacker's NEW and CORRUPT are all refused."""
    hello = sign_hello(dataclasses.replace(bench.hello(), stream="victim"), SECRET)
    ws, reply = await open_link(bench.rx_secret.ws_url, hello)
    auth = link_auth(SECRET, "tx", hello, reply)
    new = TransmitterCore(CONFIG).on_frame(0, 0.0, _latent(np.random.default_rng(2))).message
    captured = auth.seal(encode(new))
    async with ws:
        await ws.send(captured)
    restarted = await asyncio.to_thread(
        bench.procs.start, "rx", ["receiver"], env={"HOPLINK_SECRET": SECRET}, key="rx-restarted"
    )
    try:
        ws, answer = await open_link(restarted.ws_url, hello)  # the replayed HELLO is answered
        assert answer.nonce != reply.nonce
        corrupt = encode(Corrupt(rho=1.0, sigma=1.0, seed=0))
        async with ws:
            for data in (captured, encode(new), corrupt, corrupt + captured[-SEALED_OVERHEAD:]):
                await ws.send(data)
            await ws.ping()  # processed in order: everything above has been read

            def counted() -> dict | None:
                s = restarted.stats()
                t = s["traffic"]
                return s if t["auth_forged"] + t["auth_unsealed"] == 4 else None

            stats = await asyncio.to_thread(wait_for, counted, 10, "the refusals")
    finally:
        await asyncio.to_thread(bench.procs.stop, "rx-restarted")
    c = stats["counters"]
    assert (stats["traffic"]["auth_forged"], stats["traffic"]["auth_unsealed"]) == (2, 2)
    assert c["messages"] == 0 and c["news"] == 0 and stats["memory"]["filled"] == 0
    assert c["ids_desynced"] == 0 and c["prototypes_noised"] == 0


async def test_a_replayed_hello_holding_the_slot_gives_way_to_the_real_tx(bench: Bench) -> None:
    """A HELLO replayed to a restarted Rx takes the link slot (the Rx cannot tell it from a
    reconnect) but can seal nothing. The real Tx of that stream, with a fresh HELLO, takes the
    slot over (the replayer is closed with 4008) and streams; a HELLO of another stream is still
    refused as busy, and the replayed one, now known, is refused outright."""
    hello = sign_hello(dataclasses.replace(bench.hello(), stream="victim"), SECRET)
    restarted = await asyncio.to_thread(
        bench.procs.start, "rx", ["receiver"], env={"HOPLINK_SECRET": SECRET}, key="rx-held"
    )
    try:
        replayer, _ = await open_link(restarted.ws_url, hello)  # holds the slot, idle
        other = sign_hello(dataclasses.replace(bench.hello(), stream="someone-else"), SECRET)
        _, code, _ = await refused(restarted.ws_url, encode(other))
        assert code == CloseCode.LINK_BUSY
        real = sign_hello(dataclasses.replace(bench.hello(), stream="victim"), SECRET)
        ws, reply = await open_link(restarted.ws_url, real)
        with pytest.raises(ConnectionClosed) as closed:
            await replayer.recv()
        assert closed.value.rcvd.code == CloseCode.SUPERSEDED
        auth = link_auth(SECRET, "tx", real, reply)
        new = TransmitterCore(CONFIG).on_frame(0, 0.0, _latent(np.random.default_rng(5))).message
        async with ws:
            await ws.send(auth.seal(encode(new)))
            await ws.ping()

            def counted() -> dict | None:
                s = restarted.stats()
                return s if s["counters"]["news"] == 1 else None

            stats = await asyncio.to_thread(wait_for, counted, 10, "the real Tx's NEW")
        _, code, reason = await refused(restarted.ws_url, encode(hello))  # known now
        assert code == CloseCode.AUTH_FAILED and "replayed" in reason
    finally:
        await asyncio.to_thread(bench.procs.stop, "rx-held")
    assert stats["link"]["links_refused_by_code"]["superseded"] == 1
    assert stats["traffic"]["auth_forged"] == 0


# --- a restarted Rx accounts only for what it can know -------------------------------------------


def test_a_killed_and_restarted_rx_counts_earlier_frames_before_restart_not_lost(
    bench: Bench,
) -> None:
    """kill -9 of the Rx mid-stream, then a new Rx on the same port: the Tx reconnects and says
    where its stream is; the new Rx counts the frames before it as before_restart (it cannot know
    what the dead one made of them), none as lost, and its outcomes add up to what the Tx sent."""
    procs, frames = bench.procs, 240
    ports = {"port": free_port(), "link_port": free_port()}
    rx = procs.start("rx", ["receiver"], **ports, key="rx-dies")
    tx = procs.start(
        "tx",
        ["transmitter", "--url", rx.ws_url, "--frames", str(frames), "--fps", "30", "--linger"],
        env={"HOPLINK_BACKOFF_INITIAL": "0.1", "HOPLINK_BACKOFF_MAX": "0.5"},
        key="tx-survives",
    )
    try:
        wait_for(lambda: rx.stats()["frames"] >= 60, 60, "60 frames at the first Rx")
        rx.process.kill()  # kill -9: no BYE, no close frame
        rx.process.wait(10)
        procs.children.pop("rx-dies")
        rx = procs.start("rx", ["receiver"], **ports, key="rx-restarted-at-once")
        sent = wait_for(lambda: (s := tx.stats())["link"]["finished"] and s, 90, "the Tx")
        stats = wait_for(lambda: (s := rx.stats())["link"]["session_ended"] and s, 15, "BYE")
    finally:
        procs.stop("tx-survives")
        procs.stop("rx-restarted-at-once")
    outcomes, c = stats["frames_by_outcome"], stats["counters"]
    assert sent["frames"] == frames and sent["traffic"]["reconnects"] >= 1
    assert 60 <= outcomes["before_restart"] < frames
    assert outcomes["lost"] == 0 and c["seq_jumps_refused"] == 0 and c["frames_skipped"] == 0
    assert sum(outcomes.values()) == frames


# --- HTTP: DNS rebinding, slowloris, stats streams ------------------------------------------------


async def test_foreign_host_and_origin_are_refused_on_rest_and_link(bench: Bench) -> None:
    """A page that reached the Rx by DNS rebinding (Host: evil.example), or any foreign Origin,
    gets 403 on REST and cannot open /link; loopback names pass."""
    rx = bench.rx
    async with httpx.AsyncClient(timeout=5) as client:
        for headers in (
            {"Host": "evil.example"},
            {"Host": f"evil.example:{rx.port}"},
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
        ):
            r = await client.get(f"{rx.url}/stats", headers=headers)
            assert r.status_code == 403, headers
        for host in (f"localhost:{rx.port}", f"127.0.0.1:{rx.port}"):
            assert (
                await client.get(f"{rx.url}/healthz", headers={"Host": host})
            ).status_code == 200
        same = {"Origin": f"http://localhost:{rx.port}"}  # the dashboard's own origin
        assert (await client.get(f"{rx.url}/healthz", headers=same)).status_code == 200
    with pytest.raises(InvalidStatus) as refused_ws:
        await connect(rx.ws_url, origin="http://evil.example", compression=None)
    assert refused_ws.value.response.status_code == 403
    ws, _ = await open_link(rx.ws_url, bench.hello())  # a dialing end sends no Origin
    await ws.close()


async def test_a_slowloris_socket_is_closed_after_the_header_deadline(bench: Bench) -> None:
    """A client that never finishes its request headers is closed (HOPLINK_HTTP_HEADER_TIMEOUT,
    1 s here); one that completes them is served."""
    reader, writer = await asyncio.open_connection("127.0.0.1", bench.rx.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never end
    await writer.drain()
    async with asyncio.timeout(30):
        while True:
            data = await reader.read(1024)
            if not data:
                break
            writer.write(b"X-Slow: 1\r\n")  # a header now and then, as slowloris does
    writer.close()
    assert httpx.get(f"{bench.rx.url}/healthz", timeout=5).status_code == 200


async def test_stats_streams_are_bounded_in_readers(bench: Bench) -> None:
    """At most HOPLINK_STATS_STREAM_READERS (3 here) streams at once; the next is answered 503;
    a closed stream frees its place."""
    url = f"{bench.rx.url}/stats/stream"
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
        streams = []
        for _ in range(3):
            response = await stack.enter_async_context(client.stream("GET", url))
            assert response.status_code == 200
            lines = response.aiter_lines()  # kept: a dropped iterator closes its stream
            async with asyncio.timeout(10):
                while not (await anext(lines)).startswith("data:"):
                    pass  # the first event came: this reader is counted
            streams.append((response, lines))
        async with asyncio.timeout(10):
            assert (await client.get(url)).status_code == 503
        await streams.pop()[0].aclose()

        async def reopened() -> int:
            async with asyncio.timeout(10), client.stream("GET", url) as response:
                return response.status_code

        async with asyncio.timeout(20):
            while await reopened() != 200:
                await asyncio.sleep(0.1)
    assert httpx.get(f"{bench.rx.url}/healthz", timeout=5).status_code == 200


async def test_the_rx_warns_when_its_link_listens_beyond_loopback_without_a_secret(
    codec, caplog: pytest.LogCaptureFixture
) -> None:
    from receiver.server import RxService
    from shared.service import RxSettings

    for host, secret, warned in (("0.0.0.0", None, True), ("127.0.0.1", None, False)):
        caplog.clear()
        service = RxService(CONFIG, RxSettings(host=host, secret=secret), codec)
        await service.start()
        await service.stop()
        assert ("without a shared secret" in caplog.text) is warned
    service = RxService(CONFIG, RxSettings(host="0.0.0.0", secret=SECRET), codec)
    caplog.clear()
    await service.start()
    await service.stop()
    assert "without a shared secret" not in caplog.text
