"""Fuzzing the channel core (channel.core): any bytes through every impairment at once; the
counters always balance.

Every input is either handled or refused with the module's own named error. Strategies and case
counts are in tests/fuzzing.py; run deeper with ``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channel.core import ChannelCore
from channel.impairments.base import ImpairmentError
from shared.protocol.messages import encode
from tests.fuzzing import CONFIGS, FUZZ, examples, messages

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
