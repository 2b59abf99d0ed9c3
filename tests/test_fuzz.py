"""Fuzzing: the message decoder, the Rx core, the channel core and the REST APIs.

Every input is either handled or refused with the module's own named error — never an
unexpected exception, a hang, or a frame counted twice. Thousands of cases in CI; run deeper with
``HYPOTHESIS_PROFILE=long`` (profiles registered in tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channel.core import ChannelCore
from channel.impairments.base import ImpairmentError
from receiver.core import ReceiverCore, RxStep
from shared.accounting import Outcome
from shared.coding.quantizer import pack_codes, packed_size
from shared.config import build_config
from shared.protocol.messages import (
    FRAME_MESSAGES,
    MAX_SEQ,
    MESSAGE_TYPES,
    Bye,
    Hit,
    Message,
    New,
    ProtocolError,
    decode,
    encode,
)


def examples(n: int) -> int:
    """``n`` cases in CI, or the loaded profile's count when that is larger (long runs)."""
    return max(n, settings.default.max_examples)


FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}

# Small memories so that random references hit filled slots; short cues so that lookups happen.
CONFIGS = {
    "index": build_config({"capacity": 16, "cue_bits": 16, "cue_tolerance": 2}, read_env=False),
    "soft": build_config(
        {"capacity": 16, "cue_bits": 16, "cue_tolerance": 2, "transmission": "soft", "top_k": 4},
        read_env=False,
    ),
    "tools": build_config(
        {"capacity": 16, "delta": True, "entropy_coding": True, "entropy_reset": 8},
        read_env=False,
    ),
}


# --- strategies ----------------------------------------------------------------------------------

msgpack_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=40),
)
msgpack_values = st.one_of(
    msgpack_scalars,
    st.lists(msgpack_scalars, max_size=4),
    st.dictionaries(st.text(max_size=4), msgpack_scalars, max_size=3),
    st.lists(st.lists(msgpack_scalars, max_size=2), max_size=2),
)


def _int_field(name: str, capacity: int) -> st.SearchStrategy[int]:
    """Integers a decoder accepts, biased to the interesting ones (slots near the capacity,
    sequence numbers near the stream, far ahead, at the limits)."""
    small = st.integers(-1, 2 * capacity + 2)
    if name == "cue":
        return st.integers(0, 2**64 - 1) | st.integers(0, 2**16)
    if name in ("seq", "last_seq"):
        return st.integers(-1, 40) | st.integers(-1, MAX_SEQ) | st.sampled_from([MAX_SEQ, 4200])
    if name in ("count", "version", "seed", "bits", "scale"):
        return st.integers(0, 2 * capacity) | st.integers(0, MAX_SEQ)
    return small | st.integers(-1, MAX_SEQ)


def _bytes_field(name: str, config) -> st.SearchStrategy[bytes]:
    size = packed_size(config.latent_dim, config.bits_per_value)
    if name in ("latent", "residual"):
        codes = st.lists(
            st.integers(0, (1 << config.bits_per_value) - 1),
            min_size=config.latent_dim,
            max_size=config.latent_dim,
        ).map(lambda c: pack_codes(np.array(c, dtype=np.uint16), config.bits_per_value))
        return st.one_of(
            codes,
            st.binary(min_size=size, max_size=size),
            st.binary(max_size=size + 2),
            st.binary(min_size=1, max_size=40),  # a residual of b' < b bits packs shorter
        )
    if name == "slot_hashes":
        return st.binary(max_size=4 * 20).map(lambda b: b[: len(b) // 4 * 4]) | st.binary(
            max_size=9
        )
    return st.binary(max_size=64)


def _field(f: dataclasses.Field, config) -> st.SearchStrategy[Any]:
    kind, name = f.type, f.name
    if kind == "int":
        return _int_field(name, config.capacity)
    if kind == "float":
        if name in ("rho", "sigma"):
            return st.floats(-1.0, 12.0, allow_nan=False)
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "str":
        return st.text(max_size=40)
    if kind == "bytes":
        return _bytes_field(name, config)
    if kind == "tuple[int, ...]":
        element = st.integers(0, config.capacity + 2) | st.integers(0, 2**32 - 1)
        return st.lists(element, max_size=6).map(tuple) | st.lists(
            st.integers(0, 3), max_size=3
        ).map(tuple)
    raise AssertionError(f"no strategy for {kind}")  # a new field type: add one here


@functools.cache
def messages(config) -> st.SearchStrategy[Message]:
    """Every message type the decoder knows, with fields the decoder accepts."""
    builders = [
        st.builds(cls, **{f.name: _field(f, config) for f in dataclasses.fields(cls)})
        for cls in MESSAGE_TYPES.values()
    ]
    frames = [
        b for b, cls in zip(builders, MESSAGE_TYPES.values(), strict=True) if cls in FRAME_MESSAGES
    ]
    return st.one_of(*frames, *frames, *builders)  # frames twice as often


# --- the decoder ---------------------------------------------------------------------------------


def _decodes_or_refuses(data: bytes) -> Message | None:
    try:
        message = decode(data)
    except ProtocolError:
        return None
    assert isinstance(message, Message)
    assert decode(encode(message)) == message  # what decodes, re-encodes to the same message
    return message


@settings(max_examples=examples(3000), **FUZZ)
@given(st.binary(max_size=600))
def test_decoder_refuses_random_bytes_with_a_protocol_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(max_examples=examples(1000), **FUZZ)
@given(
    kind=st.sampled_from([*MESSAGE_TYPES, "nope", ""]) | st.integers(0, 2**64 - 1) | st.none(),
    fields=st.dictionaries(
        st.sampled_from(
            sorted({f.name for c in MESSAGE_TYPES.values() for f in dataclasses.fields(c)})
        )
        | st.text(max_size=6),
        msgpack_values,
        max_size=8,
    ),
)
def test_decoder_validates_every_field(kind: Any, fields: dict) -> None:
    data = msgpack.packb({"type": kind, **fields}, use_bin_type=True)
    message = _decodes_or_refuses(data)
    if message is not None:  # accepted fields are the declared types, floats finite
        for f in dataclasses.fields(message):
            value = getattr(message, f.name)
            if isinstance(value, float):
                assert math.isfinite(value)


@settings(max_examples=examples(1000), **FUZZ)
@given(
    st.data(),
    st.sampled_from(list(CONFIGS.values())),
)
def test_decoder_survives_mutations_of_valid_messages(data, config) -> None:
    raw = bytearray(encode(data.draw(messages(config))))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "append", "byte"]))
        if op == "flip" and raw:
            bit = data.draw(st.integers(0, 8 * len(raw) - 1))
            raw[bit >> 3] ^= 0x80 >> (bit & 7)
        elif op == "truncate":
            del raw[data.draw(st.integers(0, len(raw))) :]
        elif op == "append":
            raw += data.draw(st.binary(min_size=1, max_size=8))
        elif raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _decodes_or_refuses(bytes(raw))


def test_decoder_refuses_deep_nesting_and_oversize() -> None:
    deep = b"\x91" * 100_000 + b"\xc0"  # a list in a list in ... (msgpack's stack limit)
    with pytest.raises(ProtocolError):
        decode(deep)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(b"\x00" * (300 * 1024))
    huge_map = msgpack.packb({"type": "bye", "last_seq": 1, **{f"k{i}": i for i in range(10_000)}})
    with pytest.raises(ProtocolError, match="unknown fields"):
        decode(huge_map)


# --- the Rx core ---------------------------------------------------------------------------------


def _check_frames(step: RxStep, settled: dict[int, Outcome]) -> None:
    assert isinstance(step, RxStep)
    for frame in step.frames:
        if frame.latent is not None:
            assert np.all(np.isfinite(frame.latent)), frame
        if frame.outcome is None:
            continue
        assert frame.seq not in settled, f"frame {frame.seq} settled twice"
        settled[frame.seq] = frame.outcome


def _run_rx(config, sequence: list[tuple[Message, float, bool]]) -> None:
    rx = ReceiverCore(config, refresh_timeout=0.5, reorder_window=8, max_seq_jump=64)
    settled: dict[int, Outcome] = {}
    now = 0.0
    for message, dt, tick in sequence:
        now += dt
        step = rx.on_message(message, now)  # must never raise
        _check_frames(step, settled)
        for reply in step.replies:
            decode(encode(reply))  # replies are valid messages
        if tick:
            _check_frames(rx.tick(now), settled)
    last = max(rx._highest, rx._floor - 1)
    _check_frames(rx.on_message(Bye(last_seq=last), now + 10), settled)
    c = rx.counters
    by_outcome = {o: sum(1 for v in settled.values() if v is o) for o in Outcome}
    for outcome, n in by_outcome.items():
        assert getattr(c, outcome.value) == n
    # Every frame up to the end is settled exactly once (or skipped by a counted late join).
    counted = sum(1 for s in settled if 0 <= s <= last)
    assert counted + c.frames_skipped == last + 1
    assert not rx._pending


@settings(max_examples=examples(600), **FUZZ)
@given(st.data(), st.sampled_from(sorted(CONFIGS)))
def test_rx_core_handles_any_message_sequence(data, name: str) -> None:
    config = CONFIGS[name]
    step = st.tuples(messages(config), st.floats(0.0, 0.4), st.booleans())
    _run_rx(config, data.draw(st.lists(step, max_size=40)))


@settings(max_examples=examples(400), **FUZZ)
@given(st.data())
def test_rx_core_handles_a_plausible_stream_with_faults(data) -> None:
    """Mostly well-formed frames near the stream's position, some bad ones: the paths that
    random messages rarely reach (cue checks, lookups, refresh waits, digests)."""
    config = CONFIGS["index"]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    stored = 0
    sequence = []
    for seq in range(data.draw(st.integers(1, 60))):
        r = rng.random()
        if r < 0.3 or stored == 0:
            codes = rng.integers(0, 256, config.latent_dim).astype(np.uint16)
            slot = int(rng.integers(-1, config.capacity + 1)) if rng.random() < 0.1 else stored
            stored = min(stored + 1, config.capacity - 1)
            message: Message = New(seq=seq, t=seq / 30, slot=slot, latent=pack_codes(codes, 8))
        elif r < 0.9:
            ref = int(rng.integers(0, stored + 1))
            message = Hit(seq=seq, t=seq / 30, refs=(ref,), cue=int(rng.integers(0, 2**16)))
        else:
            message = data.draw(messages(config))
        if rng.random() < 0.1:
            continue  # lost
        sequence.append((message, float(rng.random() * 0.2), bool(rng.random() < 0.3)))
    if len(sequence) > 3 and rng.random() < 0.3:
        sequence[1], sequence[2] = sequence[2], sequence[1]  # reordered
    _run_rx(config, sequence)


def test_a_corrupted_sequence_number_cannot_stall_the_stream() -> None:
    """One frame whose seq jumped far ahead (a bit error in the header, or a hostile peer) is
    refused and counted; the frames that follow are still decoded, and one message never
    declares more than max_seq_jump frames lost (no hang on seq = 2^53)."""
    config = CONFIGS["index"]
    rx = ReceiverCore(config)
    latent = pack_codes(np.full(config.latent_dim, 7, dtype=np.uint16), 8)
    settled: dict[int, Outcome] = {}
    for seq in range(5):
        _check_frames(rx.on_message(New(seq=seq, t=0.0, slot=seq, latent=latent), 0.0), settled)
    step = rx.on_message(Hit(seq=MAX_SEQ, t=0.0, refs=(0,), cue=0), 0.0)
    assert step.replies and "ahead of the stream" in step.replies[0].reason
    assert rx.counters.seq_jumps_refused == 1 and rx.counters.errors == 1
    for seq in range(5, 10):
        _check_frames(rx.on_message(New(seq=seq, t=0.0, slot=seq, latent=latent), 0.0), settled)
    assert [settled[s] for s in range(10)] == [Outcome.DECODED] * 10
    # A BYE claiming a far end is bounded too.
    step = rx.on_message(Bye(last_seq=MAX_SEQ), 0.0)
    assert rx.counters.lost == rx.max_seq_jump
    assert "ahead of the stream" in step.replies[-1].reason


def test_a_confirmed_long_jump_keeps_the_accounting_whole() -> None:
    config = CONFIGS["index"]
    latent = pack_codes(np.full(config.latent_dim, 7, dtype=np.uint16), 8)
    frames = [New(seq=s, t=0.0, slot=s % 8, latent=latent) for s in (0, 1, 2, 4, 10_000, 10_001)]
    _run_rx(config, [(m, 0.01, False) for m in frames])  # counted + skipped == every frame


def test_a_restarted_receiver_joins_a_long_stream() -> None:
    """A fresh core whose first frames are far into a stream (the Rx restarted) accepts them
    once a second frame confirms the position; older frames are counted, not looped over."""
    config = CONFIGS["index"]
    rx = ReceiverCore(config, max_seq_jump=100)
    latent = pack_codes(np.full(config.latent_dim, 7, dtype=np.uint16), 8)
    first = rx.on_message(New(seq=100_000, t=0.0, slot=0, latent=latent), 0.0)
    assert first.replies  # refused until confirmed
    second = rx.on_message(New(seq=100_001, t=0.0, slot=1, latent=latent), 0.0)
    assert [f.outcome for f in second.frames if f.seq == 100_001] == [Outcome.DECODED]
    c = rx.counters
    assert c.frames_skipped == 100_001 - 100 and c.lost <= 100


# --- the channel core ----------------------------------------------------------------------------

EVERY_IMPAIRMENT = {
    "rate": {"bits_per_second": 1e5, "queue_bytes": 5000},
    "loss": {"model": "gilbert_elliott", "p_good_to_bad": 0.2},
    "bit_errors": {"ber": 0.01},
    "id_desync": {"probability": 0.3},
    "prototype_noise": {"probability": 0.3},
    "duplicate": {"probability": 0.3},
    "delay": {"delay_ms": 5, "jitter_ms": 5},
    "reorder": {"probability": 0.3, "after_messages": 2},
}


@settings(max_examples=examples(200), **FUZZ)
@given(
    st.data(),
    st.lists(st.sampled_from(sorted(EVERY_IMPAIRMENT)), unique=True),
    st.booleans(),
)
def test_channel_core_forwards_any_bytes(data, names: list[str], whole_frame: bool) -> None:
    config = CONFIGS["index"]
    core = ChannelCore(config, seed=data.draw(st.integers(0, 1000)))
    for name in names:
        attributes = dict(EVERY_IMPAIRMENT[name])
        if name == "bit_errors":
            attributes["whole_frame"] = whole_frame
        core.set_impairment("tx_to_rx", name, attributes)
        core.set_impairment("rx_to_tx", name, attributes)
    items = st.one_of(messages(config).map(encode), st.binary(max_size=200))
    now = 0.0
    for raw in data.draw(st.lists(items, max_size=30)):
        now += data.draw(st.floats(0.0, 0.05))
        direction = data.draw(st.sampled_from(["tx_to_rx", "rx_to_tx"]))
        for delivery in core.on_data(direction, raw, now):
            assert delivery.at >= now
        core.poll(now)
    core.clear_all()
    core.poll(now + 1000)
    for direction in ("tx_to_rx", "rx_to_tx"):
        s = core.stats()[direction]
        assert s["messages_in"] + s["duplicated"] == s["messages_out"] + s["dropped"] + s["held"]
    with pytest.raises(ImpairmentError):
        core.set_impairment("tx_to_rx", "loss", {"probability": float("nan")})


# --- the REST APIs ------------------------------------------------------------------------------

CONTROL_TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {CONTROL_TOKEN}"}


@functools.cache
def _app(kind: str):
    """A service's app, built in-process (not started)."""
    config = build_config({}, read_env=False)
    if kind == "channel":
        from channel.server import build_app
        from shared.service import ChannelSettings

        return build_app(config, ChannelSettings(control_token=CONTROL_TOKEN))
    from receiver.server import build_app
    from shared.service import RxSettings

    return build_app(config, RxSettings())


_CLIENTS: dict[str, Any] = {}


def started(kind: str):
    """A TestClient of the app with its lifespan running (the service exists for calls)."""
    from starlette.testclient import TestClient

    if kind not in _CLIENTS:
        client = TestClient(_app(kind))
        client.__enter__()
        _CLIENTS[kind] = client
    return _CLIENTS[kind]


@pytest.fixture(scope="module", autouse=True)
def _stop_apps():
    yield
    while _CLIENTS:
        _CLIENTS.popitem()[1].__exit__(None, None, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=10,
)
attribute_names = st.sampled_from(
    [
        "probability",
        "ber",
        "delay_ms",
        "jitter_ms",
        "types",
        "seq_range",
        "toxicity",
        "model",
        "whole_frame",
        "after_messages",
        "sigma",
        "bits_per_second",
        "queue_bytes",
    ]
) | st.text(max_size=10)


@settings(max_examples=examples(300), **FUZZ)
@given(
    direction=st.sampled_from(["tx_to_rx", "rx_to_tx", "sideways", "%00", ""]),
    name=st.sampled_from(["loss", "bit_errors", "delay", "reorder", "rate", "gremlins"]),
    body=st.dictionaries(attribute_names, json_values, max_size=5) | json_values,
    method=st.sampled_from(["PUT", "DELETE", "POST"]),
    auth=st.booleans(),
)
def test_channel_control_api_answers_any_body_without_a_server_error(
    direction, name, body, method, auth
) -> None:
    """Hypothesis-generated JSON against the control API (in-process): 2xx or a 4xx that says
    why, never a 5xx; with the token only, state changes."""
    client = started("channel")
    path = f"/impairments/{direction}/{name}" if method != "POST" else "/events/corrupt"
    headers = {"Content-Type": "application/json", **(AUTH if auth else {})}
    content = json.dumps(body)  # NaN and Infinity included: Python's JSON parser takes them
    response = client.request(method, path, content=content, headers=headers)
    assert response.status_code < 500, response.text
    if not auth:
        assert response.status_code in (401, 404, 405), response.text
    elif response.status_code >= 400:
        assert response.json()["detail"]
    client.delete("/impairments", headers=AUTH)


try:  # from the OpenAPI schemas, when schemathesis is installed (dev extra)
    import schemathesis
except ImportError:  # pragma: no cover
    schemathesis = None

if schemathesis is not None:
    SKIP = r"/stats/stream|/dashboard"  # an endless event stream; static pages
    channel_schema = schemathesis.openapi.from_asgi("/openapi.json", _app("channel"))
    channel_schema = channel_schema.exclude(path_regex=SKIP)
    rx_schema = schemathesis.openapi.from_asgi("/openapi.json", _app("rx")).exclude(path_regex=SKIP)
    REST = {"deadline": None, "suppress_health_check": list(HealthCheck)}
    REST_EXAMPLES = examples(int(os.environ.get("HOPLINK_FUZZ_REST_EXAMPLES", "25")))

    def _validate(case, kind: str) -> None:
        from schemathesis.checks import not_a_server_error, response_schema_conformance

        started(kind)  # the lifespan runs, then calls go to the same app object
        for headers in ({}, AUTH):
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code < 300:
                case.validate_response(response, checks=[response_schema_conformance])

    @channel_schema.parametrize()
    @settings(max_examples=REST_EXAMPLES, **REST)
    def test_channel_api_from_its_openapi_schema(case) -> None:
        _validate(case, "channel")
        started("channel").delete("/impairments", headers=AUTH)

    @rx_schema.parametrize()
    @settings(max_examples=REST_EXAMPLES, **REST)
    def test_rx_api_from_its_openapi_schema(case) -> None:
        _validate(case, "rx")
