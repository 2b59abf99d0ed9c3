"""Real codecs as the user's alternative: H.264 (libx264 via PyAV) and per-frame JPEG (PIL).

Both code the very clips the semantic link sees (``shared.scenarios.load_clip``, 64x64 RGB) and
measure quality the same way, with :func:`shared.accounting.psnr` / :func:`~shared.accounting.ssim`
on the decoded RGB frames, averaged frame by frame like the link's summary.

Bit counting rules (what is counted is what a link would have to carry):

* **H.264** — yuv420p, one I-frame per clip (``keyint=N:min-keyint=N:scenecut=0``, N = clip
  length), B-frames as the preset chooses, one encoder thread, weighted P-prediction off
  (``weightp=0``, see :data:`X264_EXTRA_PARAMS`). This libx264 is not bit-exact from run to run on
  these clips (same frames, same settings, one thread: an encode now and then differs, by up to a
  few % of a point's bits on the fastest clip), so codec rows move slightly between runs. The
  encoder writes Annex-B packets. We split them into NAL units at their start codes (``00 00 01``
  / ``00 00 00 01``) and count the NAL units' bytes (header, payload and emulation-prevention
  bytes) **without the start codes** — those are Annex-B framing, replaced by length fields or
  packet boundaries in MP4/RTP, just as the link's semantic bits leave out msgpack/websocket
  framing — and **without x264's settings SEI**: a NAL of type 6 (SEI) carrying a
  user-data-unregistered message (payload type 5) with x264's UUID
  ``dc45e9bd-e6d9-48b7-962c-d820d923eeef``, i.e. the ~700 bytes of text "x264 - core … options: …"
  in the first packet, which no decoder needs. SPS, PPS and every slice are counted.
  :func:`h264_stream_bits` gives the breakdown.
* **JPEG** — each frame is a baseline JPEG from PIL at the given quality (4:2:0 subsampling, PIL's
  default tables). With ``headers="once"`` (default) the header segments (everything before the
  first SOS marker: SOI, APP0, DQT, SOF0, DHT) are counted once per clip when they are identical
  for every frame — as H.264 counts its SPS/PPS once — and each frame pays its scan (SOS to EOI);
  ``headers="every"`` counts whole files (Motion-JPEG as stored on disk).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image

from shared.accounting import psnr, ssim

__all__ = [
    "DEFAULT_CRFS",
    "DEFAULT_JPEG_QUALITIES",
    "X264_EXTRA_PARAMS",
    "X264_SEI_UUID",
    "BitsAtPsnr",
    "CodecPoint",
    "RealCodecError",
    "StreamBits",
    "bits_at_psnr",
    "h264_encode",
    "h264_points",
    "h264_stream_bits",
    "jpeg_points",
    "pool_points",
    "split_nal_units",
]

DEFAULT_CRFS: tuple[int, ...] = (18, 23, 28, 33, 38, 43, 47, 51)  # 51 is libx264's coarsest
DEFAULT_JPEG_QUALITIES: tuple[int, ...] = (1, 3, 5, 10, 20, 35, 50, 75, 90)
X264_SEI_UUID = bytes.fromhex("dc45e9bde6d948b7962cd820d923eeef")
NAL_TYPE_SEI = 6
SEI_USER_DATA_UNREGISTERED = 5
FPS = 30
# Weighted P-prediction off (preset medium would use weightp=2): on these 64x64 clips its
# weight tables cost ~30 bits per P-frame, so at the link's qualities (18-20 dB) weightp=0 is the
# cheaper, stronger baseline (it loses only at high quality on fades; docs/results.md).
X264_EXTRA_PARAMS = "weightp=0"


class RealCodecError(ValueError):
    """Frames or knobs a real codec cannot code (wrong dtype or shape, empty clip, bad knob)."""


@dataclass(frozen=True)
class CodecPoint:
    """One operating point of a real codec on one clip: its knob, rate and mean quality."""

    codec: str  # "h264" or "jpeg"
    knob: float  # CRF for h264, quality for jpeg
    bits_per_frame: float
    psnr: float  # mean over frames, dB (shared.accounting.psnr)
    ssim: float  # mean over frames (shared.accounting.ssim)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise RealCodecError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[3] != 3 or len(frames) == 0:
        raise RealCodecError(f"frames must have shape (N>0, H, W, 3), got {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise RealCodecError(f"yuv420p needs even frame sides, got {frames.shape[1:3]}")
    return np.ascontiguousarray(frames)


def _quality(frames: np.ndarray, decoded: Sequence[np.ndarray]) -> tuple[float, float]:
    if len(decoded) != len(frames):
        raise RealCodecError(f"decoder returned {len(decoded)} frames for {len(frames)}")
    p = float(np.mean([psnr(a, b) for a, b in zip(frames, decoded, strict=True)]))
    s = float(np.mean([ssim(a, b) for a, b in zip(frames, decoded, strict=True)]))
    return p, s


# --- H.264 ----------------------------------------------------------------------------------------


def split_nal_units(stream: bytes) -> list[tuple[int, bytes]]:
    """Split an Annex-B byte stream into ``(start_code_length, nal_unit)`` pairs.

    A start code is ``00 00 01``, or ``00 00 00 01`` when a zero byte precedes it (the zero is
    counted with the start code). Bytes before the first start code (none in a valid stream) are
    returned as a NAL with start-code length 0.
    """
    units: list[tuple[int, bytes]] = []
    starts: list[tuple[int, int]] = []  # (start-code offset, payload offset)
    i = stream.find(b"\x00\x00\x01")
    while i != -1:
        begin = i - 1 if i > 0 and stream[i - 1] == 0 else i
        starts.append((begin, i + 3))
        i = stream.find(b"\x00\x00\x01", i + 3)
    if not starts:
        return [(0, stream)] if stream else []
    if starts[0][0] > 0:
        units.append((0, stream[: starts[0][0]]))
    for n, (begin, payload) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(stream)
        units.append((payload - begin, stream[payload:end]))
    return units


def _is_x264_sei(nal: bytes) -> bool:
    """True for an SEI NAL whose first message is user data unregistered with x264's UUID."""
    if not nal or nal[0] & 0x1F != NAL_TYPE_SEI:
        return False
    pos, fields = 1, []
    for _ in range(2):  # payload type, then payload size: runs of 0xFF plus a last byte
        value = 0
        while pos < len(nal) and nal[pos] == 0xFF:
            value, pos = value + 255, pos + 1
        if pos >= len(nal):
            return False
        fields.append(value + nal[pos])
        pos += 1
    return fields[0] == SEI_USER_DATA_UNREGISTERED and nal[pos : pos + 16] == X264_SEI_UUID


@dataclass(frozen=True)
class StreamBits:
    """Where the bits of an Annex-B stream go; ``counted`` is what CodecPoint reports."""

    raw: int  # every byte of every packet
    start_codes: int  # Annex-B start codes (framing)
    x264_sei: int  # x264's settings SEI NAL(s), without their start codes
    counted: int  # raw - start_codes - x264_sei


def h264_stream_bits(packets: Iterable[bytes]) -> StreamBits:
    raw = start_codes = sei = 0
    for packet in packets:
        raw += 8 * len(packet)
        for start, nal in split_nal_units(packet):
            start_codes += 8 * start
            if _is_x264_sei(nal):
                sei += 8 * len(nal)
    return StreamBits(raw, start_codes, sei, raw - start_codes - sei)


def h264_encode(
    frames: np.ndarray, crf: int, preset: str = "medium", x264_params: str = X264_EXTRA_PARAMS
) -> list[bytes]:
    """Encode RGB frames with libx264 (yuv420p, one I-frame); the Annex-B packets in order.

    ``x264_params`` are appended to ``keyint=N:min-keyint=N:scenecut=0`` (x264 itself clamps
    min-keyint to N/2 + 1; with scenecut off and keyint = N the clip still has one I-frame).
    """
    import av

    frames = _check_frames(frames)
    if not 0 <= crf <= 51:
        raise RealCodecError(f"crf must be in [0, 51], got {crf}")
    n, height, width = frames.shape[:3]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, FPS), FPS
    ctx.thread_count = 1  # x264's output depends on its threading; one thread is reproducible
    ctx.options = {
        "crf": str(crf),
        "preset": preset,
        "x264-params": ":".join(
            p for p in (f"keyint={n}:min-keyint={n}:scenecut=0", x264_params) if p
        ),
    }
    packets: list[bytes] = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in ctx.encode(frame)]
    packets += [bytes(p) for p in ctx.encode(None)]
    return packets


def _h264_decode(packets: Sequence[bytes]) -> list[np.ndarray]:
    import av

    ctx = av.CodecContext.create("h264", "r")
    out: list[np.ndarray] = []
    for data in packets:
        out += [f.to_ndarray(format="rgb24") for f in ctx.decode(av.Packet(data))]
    out += [f.to_ndarray(format="rgb24") for f in ctx.decode(None)]
    return out


def h264_points(
    frames: np.ndarray,
    crfs: Sequence[int] = DEFAULT_CRFS,
    preset: str = "medium",
    *,
    x264_params: str = X264_EXTRA_PARAMS,
) -> list[CodecPoint]:
    """One point per CRF: bits/frame (start codes and x264's SEI excluded), PSNR, SSIM."""
    frames = _check_frames(frames)
    points = []
    for crf in crfs:
        packets = h264_encode(frames, int(crf), preset, x264_params)
        bits = h264_stream_bits(packets).counted
        p, s = _quality(frames, _h264_decode(packets))
        points.append(CodecPoint("h264", float(crf), bits / len(frames), p, s))
    return points


# --- JPEG -----------------------------------------------------------------------------------------

_SOS = b"\xff\xda"


def _jpeg_bytes(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_points(
    frames: np.ndarray,
    qualities: Sequence[int] = DEFAULT_JPEG_QUALITIES,
    headers: str = "once",
) -> list[CodecPoint]:
    """One point per PIL quality; see the module docstring for ``headers`` ("once"/"every")."""
    frames = _check_frames(frames)
    if headers not in ("once", "every"):
        raise RealCodecError(f"headers must be 'once' or 'every', got {headers!r}")
    points = []
    for quality in qualities:
        if not 1 <= quality <= 100:
            raise RealCodecError(f"jpeg quality must be in [1, 100], got {quality}")
        files = [_jpeg_bytes(f, int(quality)) for f in frames]
        heads = {f[: f.index(_SOS)] for f in files}
        if headers == "once" and len(heads) == 1:
            total = 8 * (len(heads.pop()) + sum(len(f) - f.index(_SOS) for f in files))
        else:
            total = 8 * sum(len(f) for f in files)
        decoded = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]
        p, s = _quality(frames, decoded)
        points.append(CodecPoint("jpeg", float(quality), total / len(frames), p, s))
    return points


# --- bits at a target quality ---------------------------------------------------------------------


class BitsAtPsnr(float):
    """Bits/frame at a target PSNR; a float that also says whether it was interpolated.

    ``in_range`` is False when the target lies outside the PSNR range of the points; the value is
    then the bits of the nearest end point — the cheapest point when every point is better than
    the target (``side == "below"``: an upper bound on the bits needed), the most expensive one
    when no point reaches it (``side == "above"``: a lower bound).
    """

    in_range: bool
    side: str  # "inside", "below" (target under every point's PSNR) or "above"
    psnr_range: tuple[float, float]

    def __new__(
        cls, value: float, in_range: bool, side: str, psnr_range: tuple[float, float]
    ) -> BitsAtPsnr:
        obj = super().__new__(cls, value)
        obj.in_range, obj.side, obj.psnr_range = in_range, side, psnr_range
        return obj

    def __repr__(self) -> str:
        flag = "" if self.in_range else f", OUT OF RANGE ({self.side})"
        return f"BitsAtPsnr({float(self):.3f}{flag})"

    def describe(self, digits: int = 1) -> str:
        """For tables: ``123.4``, or ``≤123.4*`` / ``≥123.4*`` when out of range."""
        if self.in_range:
            return f"{float(self):.{digits}f}"
        return ("≤" if self.side == "below" else "≥") + f"{float(self):.{digits}f}*"


def bits_at_psnr(points: Sequence[CodecPoint], target_psnr: float) -> BitsAtPsnr:
    """Bits/frame at ``target_psnr``: log-linear interpolation between bracketing points.

    The points are ordered by rate; every consecutive pair whose PSNRs bracket the target gives
    ``log(bits)`` linear in PSNR, and the cheapest such estimate is returned (an RD curve that is
    not monotone can cross the target twice). Outside the points' PSNR range, see
    :class:`BitsAtPsnr`.
    """
    pts = sorted(
        (p for p in points if math.isfinite(p.psnr) and p.bits_per_frame > 0),
        key=lambda p: (p.bits_per_frame, -p.psnr),
    )
    if not pts:
        raise RealCodecError("no codec points with finite PSNR and positive bits")
    lo, hi = min(p.psnr for p in pts), max(p.psnr for p in pts)
    if target_psnr < lo:
        return BitsAtPsnr(pts[0].bits_per_frame, False, "below", (lo, hi))
    if target_psnr > hi:
        best = max(pts, key=lambda p: (p.psnr, -p.bits_per_frame))
        return BitsAtPsnr(best.bits_per_frame, False, "above", (lo, hi))
    estimates = [p.bits_per_frame for p in pts if p.psnr == target_psnr]
    for a, b in zip(pts, pts[1:], strict=False):
        if min(a.psnr, b.psnr) <= target_psnr <= max(a.psnr, b.psnr) and a.psnr != b.psnr:
            w = (target_psnr - a.psnr) / (b.psnr - a.psnr)
            log_bits = (1 - w) * math.log(a.bits_per_frame) + w * math.log(b.bits_per_frame)
            estimates.append(math.exp(log_bits))
    return BitsAtPsnr(min(estimates), True, "inside", (lo, hi))


def pool_points(per_clip: Sequence[Sequence[CodecPoint]]) -> list[CodecPoint]:
    """Pool one codec's points over clips of equal length: mean bits, PSNR and SSIM per knob."""
    if not per_clip:
        raise RealCodecError("no clips to pool")
    knobs = [p.knob for p in per_clip[0]]
    pooled = []
    for i, knob in enumerate(knobs):
        group = [clip[i] for clip in per_clip]
        if any(p.knob != knob or p.codec != group[0].codec for p in group):
            raise RealCodecError("clips were coded with different knobs")
        pooled.append(
            CodecPoint(
                group[0].codec,
                knob,
                float(np.mean([p.bits_per_frame for p in group])),
                float(np.mean([p.psnr for p in group])),
                float(np.mean([p.ssim for p in group])),
            )
        )
    return pooled
