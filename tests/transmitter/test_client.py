"""The Tx's frame source: preloaded or streamed, the frames are the same."""

from __future__ import annotations

import numpy as np

from shared.config import build_config
from shared.service import TxSettings
from transmitter.client import TxService


def _frames(service: TxService, n: int) -> list[np.ndarray]:
    return [service._next_frame() for _ in range(n)]


def test_preloaded_source_gives_the_same_frames_and_replays_on_loop(codec) -> None:
    config = build_config({}, read_env=False)
    streamed = TxService(config, TxSettings(scenario="low_motion", frames=4), codec)
    preloaded = TxService(
        config, TxSettings(scenario="low_motion", frames=4, preload=True, loop=True), codec
    )
    first = _frames(streamed, 5)
    assert first[4] is None  # the end of a 4-frame source
    again = _frames(preloaded, 8)
    for a, b in zip(first[:4], again[:4], strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(again[:4], again[4:], strict=True):  # the loop replays the clip
        assert np.array_equal(a, b)
