"""What the fuzz tests (tests/*/test_*_fuzz.py) share: case counts, small configurations,
Hypothesis strategies for every message, and the services' apps built in-process.

Every input is either handled or refused with the module's own named error — never an
unexpected exception, a hang, or a frame counted twice. Thousands of cases in CI; run deeper with
``HYPOTHESIS_PROFILE=long`` (profiles registered in tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from shared.coding.quantizer import pack_codes, packed_size
from shared.config import build_config
from shared.protocol.messages import FRAME_MESSAGES, MAX_SEQ, MESSAGE_TYPES, Message


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


# --- the services' apps, in-process ---------------------------------------------------------

CONTROL_TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {CONTROL_TOKEN}"}


@functools.cache
def service_app(kind: str):
    """A service's app, built in-process (not started)."""
    config = build_config({}, read_env=False)
    if kind == "channel":
        from channel.server import build_app
        from shared.service import ChannelSettings

        return build_app(config, ChannelSettings(control_token=CONTROL_TOKEN, link_port=0))
    from receiver.server import build_app
    from shared.service import RxSettings

    return build_app(config, RxSettings(link_port=0))


_CLIENTS: dict[str, Any] = {}


def started(kind: str):
    """A TestClient of the app with its lifespan running (the service exists for calls)."""
    from starlette.testclient import TestClient

    if kind not in _CLIENTS:
        client = TestClient(service_app(kind))
        client.__enter__()
        _CLIENTS[kind] = client
    return _CLIENTS[kind]


def stop_started() -> None:
    """Stop the lifespans that :func:`started` began (a module's teardown)."""
    while _CLIENTS:
        _CLIENTS.popitem()[1].__exit__(None, None, None)


# --- the OpenAPI schemas, when schemathesis is installed (dev extra) ------------------------------

try:
    import schemathesis
except ImportError:  # pragma: no cover
    schemathesis = None

SKIP_PATHS = r"/stats/stream|/dashboard"  # an endless event stream; static pages
REST = {"deadline": None, "suppress_health_check": list(HealthCheck)}
REST_EXAMPLES = examples(int(os.environ.get("HOPLINK_FUZZ_REST_EXAMPLES", "25")))


def openapi_schema(kind: str):
    """The service's OpenAPI schema, read from its app in-process, its endless paths left out."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", service_app(kind))
    return schema.exclude(path_regex=SKIP_PATHS)


def validate_case(case, kind: str) -> None:
    """Call the started app with one generated case, with and without the token: never a 5xx,
    and a success conforms to the schema."""
    from schemathesis.checks import not_a_server_error, response_schema_conformance

    started(kind)  # the lifespan runs, then calls go to the same app object
    for headers in ({}, AUTH):
        response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code < 300:
            case.validate_response(response, checks=[response_schema_conformance])
