"""The pipeline benchmark's bookkeeping (benchmarks.pipeline), with no processes."""

import pytest

from benchmarks.pipeline import frame_latency


def test_frame_latency_joins_the_two_logs_by_seq():
    tx = [
        {"seq": 0, "kind": "new", "captured": 1.0, "encoded": 1.001, "sent": 1.002},
        {"seq": 1, "kind": "hit", "captured": 2.0, "encoded": 2.001, "sent": 2.002},
        {"seq": 2, "kind": "hit", "captured": 3.0, "encoded": 3.001, "sent": 3.002},  # lost
    ]
    rx = [{"seq": 0, "decoded": 1.005}, {"seq": 1, "decoded": 2.003}]
    got = frame_latency(tx, rx)
    assert got["frames_timed"] == 2 and got["hit_share"] == 0.5
    assert got["latency_p50_ms"] == pytest.approx(4.0)
    assert got["encode_p50_ms"] == pytest.approx(1.0)
    assert got["to_pixels_p50_ms"] == pytest.approx(2.0)
