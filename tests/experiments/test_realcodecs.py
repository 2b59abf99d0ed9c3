"""Real codecs as the user's alternative: bit counting, monotone RD points, interpolation."""

import math

import numpy as np
import pytest

from experiments.realcodecs import (
    X264_SEI_UUID,
    CodecPoint,
    RealCodecError,
    bits_at_psnr,
    h264_encode,
    h264_points,
    h264_stream_bits,
    jpeg_points,
    pool_points,
    split_nal_units,
)
from shared.scenarios import load_clip


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load_clip("low_motion", n_frames=12, size=64, seed=0)


def test_h264_rate_and_quality_fall_as_crf_rises(clip):
    points = h264_points(clip, crfs=(20, 35, 51))
    bits = [p.bits_per_frame for p in points]
    quality = [p.psnr for p in points]
    assert bits[0] > bits[1] > bits[2] > 0
    assert quality[0] > quality[1] > quality[2] > 10
    assert [p.codec for p in points] == ["h264"] * 3 and [p.knob for p in points] == [20, 35, 51]
    assert all(0 < p.ssim <= 1 for p in points)


def test_h264_counts_every_nal_but_start_codes_and_x264_settings_sei(clip):
    packets = h264_encode(clip, crf=30)
    stream = b"".join(packets)
    units = split_nal_units(stream)
    sei = [nal for _, nal in units if nal[0] & 0x1F == 6 and X264_SEI_UUID in nal]
    assert len(sei) == 1 and b"x264 - core" in sei[0]  # the encoder's settings text
    for setting in (b"keyint=12 ", b"scenecut=0", b"weightp=0", b"threads=1 "):
        assert setting in sei[0]
    breakdown = h264_stream_bits(packets)
    assert breakdown.raw == 8 * len(stream)
    assert breakdown.x264_sei == 8 * len(sei[0])
    assert breakdown.start_codes == 8 * sum(start for start, _ in units)
    assert breakdown.counted == breakdown.raw - breakdown.start_codes - breakdown.x264_sei
    assert breakdown.counted < breakdown.raw - breakdown.x264_sei
    # The NAL types a decoder needs (SPS 7, PPS 8, IDR 5, slices 1) are all counted.
    counted_types = {nal[0] & 0x1F for _, nal in units if X264_SEI_UUID not in nal}
    assert {7, 8, 5, 1} <= counted_types
    (point,) = h264_points(clip, crfs=(30,))
    assert point.bits_per_frame == pytest.approx(breakdown.counted / len(clip))


def test_split_nal_units_handles_both_start_codes():
    stream = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\xcc\x00\x00\x01\x65"
    assert split_nal_units(stream) == [(4, b"\x67\xaa"), (3, b"\x68\xbb\xcc"), (3, b"\x65")]
    assert split_nal_units(b"") == []


def test_other_sei_messages_are_counted():
    # An SEI of payload type 5 with another UUID, and a recovery-point SEI (type 6).
    other_uuid = b"\x00\x00\x01\x06\x05\x10" + bytes(range(1, 17)) + b"\x80"
    recovery = b"\x00\x00\x01\x06\x06\x01\x84\x80"
    x264 = b"\x00\x00\x01\x06\x05\x14" + X264_SEI_UUID + b"abcd\x80"
    bits = h264_stream_bits([other_uuid + recovery + x264])
    assert bits.x264_sei == 8 * (len(x264) - 3)
    assert bits.counted == 8 * (len(other_uuid) + len(recovery) - 6)


def test_jpeg_rate_and_quality_rise_with_quality(clip):
    points = jpeg_points(clip, qualities=(5, 30, 90))
    assert [p.bits_per_frame for p in points] == sorted(p.bits_per_frame for p in points)
    assert points[0].psnr < points[1].psnr < points[2].psnr
    assert points[0].bits_per_frame < points[1].bits_per_frame < points[2].bits_per_frame
    # Tables once per clip cost less than a full file per frame, same pixels.
    (every,) = jpeg_points(clip, qualities=(30,), headers="every")
    assert every.bits_per_frame > points[1].bits_per_frame and every.psnr == points[1].psnr


def test_bad_frames_and_knobs_are_refused(clip):
    with pytest.raises(RealCodecError, match="uint8"):
        h264_points(clip.astype(np.float32))
    with pytest.raises(RealCodecError, match="crf"):
        h264_points(clip, crfs=(60,))
    with pytest.raises(RealCodecError, match="quality"):
        jpeg_points(clip, qualities=(0,))
    with pytest.raises(RealCodecError, match="shape"):
        jpeg_points(clip[..., 0])


def _synthetic(psnrs):
    # bits = 10 * 2**(psnr / 3): log(bits) exactly linear in PSNR.
    return [CodecPoint("x", i, 10 * 2 ** (p / 3), p, 0.5) for i, p in enumerate(psnrs)]


def test_bits_at_psnr_interpolates_log_linearly_exactly():
    points = _synthetic([20.0, 23.0, 29.0, 35.0])
    for target in (20.0, 21.7, 26.0, 34.99, 35.0):
        bits = bits_at_psnr(points, target)
        assert bits.in_range and bits.side == "inside"
        assert float(bits) == pytest.approx(10 * 2 ** (target / 3), rel=1e-12)
    # Order of the points does not matter.
    assert float(bits_at_psnr(points[::-1], 26.0)) == pytest.approx(10 * 2 ** (26 / 3))


def test_bits_at_psnr_flags_targets_outside_the_curve():
    points = _synthetic([20.0, 25.0, 30.0])
    below = bits_at_psnr(points, 18.0)
    assert not below.in_range and below.side == "below"
    assert float(below) == pytest.approx(points[0].bits_per_frame)  # the cheapest point
    assert below.describe().startswith("≤") and below.describe().endswith("*")
    above = bits_at_psnr(points, 31.0)
    assert not above.in_range and above.side == "above"
    assert float(above) == pytest.approx(points[-1].bits_per_frame)
    assert "OUT OF RANGE" in repr(above)
    with pytest.raises(RealCodecError):
        bits_at_psnr([], 20.0)


def test_bits_at_psnr_takes_the_cheaper_crossing_of_a_wiggly_curve():
    points = [
        CodecPoint("x", 0, 100.0, 20.0, 0),
        CodecPoint("x", 1, 200.0, 22.0, 0),
        CodecPoint("x", 2, 400.0, 21.0, 0),  # not monotone
        CodecPoint("x", 3, 800.0, 30.0, 0),
    ]
    bits = bits_at_psnr(points, 21.0)
    assert float(bits) == pytest.approx(math.exp((math.log(100) + math.log(200)) / 2))


def test_pool_points_averages_over_clips():
    a = [CodecPoint("h264", 30, 100.0, 20.0, 0.4), CodecPoint("h264", 40, 50.0, 18.0, 0.3)]
    b = [CodecPoint("h264", 30, 300.0, 24.0, 0.6), CodecPoint("h264", 40, 150.0, 22.0, 0.5)]
    pooled = pool_points([a, b])
    assert pooled[0] == CodecPoint("h264", 30, 200.0, 22.0, 0.5)
    assert pooled[1].bits_per_frame == 100.0
    with pytest.raises(RealCodecError):
        pool_points([a, b[::-1]])
