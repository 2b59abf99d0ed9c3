"""Video sources: seeded synthetic scenarios rendered from real photographs, and video files.

Every source yields RGB uint8 frames of ``size`` x ``size`` pixels produced by one rule,
:func:`resize_frame`, so a scenario clip and a user's video reach the encoder the same way.

A scenario is a virtual camera moving over a photograph bundled in scikit-image's wheel (nothing
is downloaded). Each frame is a square window on the photo, sampled with bilinear interpolation in
float32 at ``max(RENDER_PX, size)`` pixels (so sub-pixel motion stays smooth), rounded to uint8,
passed through :func:`resize_frame`, and finally given a small sensor noise at output resolution.
Clips are deterministic in ``seed`` and prefix-consistent: the first k frames of a longer clip
equal the k-frame clip, because every random draw is made frame by frame.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import skimage.data
from PIL import Image, UnidentifiedImageError

SCENARIOS: tuple[str, ...] = (
    "static",
    "low_motion",
    "high_motion",
    "scene_change",
    "repetitive_return",
    "cam_shake",
    "high_texture",
    "illum_change",
)
# Groups of scenarios that results are averaged over; scene_change is reported on its own.
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "stable": ("static", "low_motion", "repetitive_return"),
    "gradual_drift": ("illum_change", "cam_shake"),
    "moderate": ("high_motion", "high_texture"),
}
DEFAULT_FRAMES = 120  # 4 s at 30 fps
RENDER_PX = 256  # render resolution of the virtual camera (at least the output size)
SENSOR_NOISE_STD = 0.6  # grey levels at output resolution: mostly +-1, rarely +-2
MIN_SIZE = 8

_DATA_DIR = Path(os.path.dirname(skimage.data.__file__))
_PHOTO_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "immunohistochemistry": "ihc.png",
    "gravel": "gravel.png",
}
_STILL_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})


class ScenarioError(ValueError):
    """A source, frame or clip parameter that cannot be turned into frames."""


def _unknown_source(source: object) -> ScenarioError:
    names = ", ".join(SCENARIOS)
    return ScenarioError(
        f"unknown source {str(source)!r}: not a scenario and not an existing file; "
        f"valid scenarios are: {names}"
    )


def protocol_of(scenario: str) -> str | None:
    """The protocol a scenario is averaged in, or None (scene_change is reported apart)."""
    if scenario not in SCENARIOS:
        raise _unknown_source(scenario)
    return next((p for p, members in PROTOCOLS.items() if scenario in members), None)


# --------------------------------------------------------------------------------------------
# The resize rule


def resize_frame(frame: np.ndarray, size: int = 64) -> np.ndarray:
    """Bring any uint8 image to RGB ``(size, size, 3)``: the one rule every source goes through.

    Grayscale ``(H, W)`` or ``(H, W, 1)`` is repeated to three channels and RGBA loses its alpha.
    The image is centre-cropped to a square on its shorter side (the extra rows or columns are
    split evenly, one more at the end when odd), then area-resampled with PIL's BOX filter.
    """
    _check_size(size)
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ScenarioError(f"frame dtype must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ScenarioError(f"frame shape must be (H, W), (H, W, 1|3|4), got {frame.shape}")
    height, width = frame.shape[:2]
    if height == 0 or width == 0:
        raise ScenarioError(f"frame is empty: shape {frame.shape}")
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = frame[top : top + side, left : left + side]
    square = np.repeat(square, 3, axis=2) if square.shape[2] == 1 else square[:, :, :3]
    if side == size:
        return np.ascontiguousarray(square)
    image = Image.fromarray(np.ascontiguousarray(square))
    return np.array(image.resize((size, size), Image.Resampling.BOX))


def _check_size(size: int) -> None:
    if size < MIN_SIZE:
        raise ScenarioError(f"size must be >= {MIN_SIZE} pixels, got {size}")


# --------------------------------------------------------------------------------------------
# The virtual camera


@dataclass(frozen=True)
class _Photo:
    """A source photo as three float32 PIL channels ('F' mode), so warps keep sub-levels."""

    channels: tuple[Image.Image, Image.Image, Image.Image]

    @property
    def width(self) -> int:
        return self.channels[0].width

    @property
    def height(self) -> int:
        return self.channels[0].height


@functools.cache
def _photo(name: str) -> _Photo:
    rgb = np.asarray(Image.open(_DATA_DIR / _PHOTO_FILES[name]).convert("RGB"), np.float32)
    red, green, blue = (Image.fromarray(np.ascontiguousarray(rgb[:, :, c])) for c in range(3))
    return _Photo((red, green, blue))


@dataclass(frozen=True)
class _View:
    """A square camera window: centre in photo pixels (x right, y down), side, rotation."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0


def _render(photo: _Photo, view: _View, px: int) -> np.ndarray:
    """Sample the window bilinearly at px x px; float32 (px, px, 3) in grey levels."""
    scale = view.side / px
    cos, sin = scale * math.cos(view.angle), scale * math.sin(view.angle)
    half = px / 2
    # PIL maps output (x, y) to input (a x + b y + c, d x + e y + f), pixel centres at +0.5.
    coeffs = (cos, -sin, view.cx - (cos - sin) * half, sin, cos, view.cy - (sin + cos) * half)
    planes = [
        np.asarray(c.transform((px, px), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR))
        for c in photo.channels
    ]
    return np.stack(planes, axis=2)


def _bounds(photo: _Photo, side: float, angle: float = 0.0) -> tuple[float, float, float, float]:
    """(x_lo, x_hi, y_lo, y_hi) for a window centre that keeps the whole window on the photo."""
    half = side / 2 * (abs(math.cos(angle)) + abs(math.sin(angle))) + 1.0  # +1: bilinear edge
    return half, photo.width - half, half, photo.height - half


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _bounce(x: float, v: float, lo: float, hi: float) -> tuple[float, float]:
    """Advance x by v, reflecting off [lo, hi] so a pan of any length stays on the photo."""
    x += v
    if x < lo:
        x, v = 2 * lo - x, -v
    elif x > hi:
        x, v = 2 * hi - x, -v
    return _clamp(x, lo, hi), v


def _random_centre(photo: _Photo, side: float, rng: np.random.Generator) -> tuple[float, float]:
    x_lo, x_hi, y_lo, y_hi = _bounds(photo, side)
    return float(rng.uniform(x_lo, x_hi)), float(rng.uniform(y_lo, y_hi))


def _pan(
    photo: _Photo,
    rng: np.random.Generator,
    side: float,
    speed: float,
    turn_std: float,
) -> Iterator[tuple[float, float]]:
    """Window centres of a pan at ``speed`` px/frame whose heading drifts by ``turn_std`` rad."""
    x, y = _random_centre(photo, side, rng)
    heading = float(rng.uniform(0, 2 * math.pi))
    vx, vy = speed * math.cos(heading), speed * math.sin(heading)
    x_lo, x_hi, y_lo, y_hi = _bounds(photo, side)
    while True:
        yield x, y
        turn = float(rng.normal(0, turn_std))
        vx, vy = (
            vx * math.cos(turn) - vy * math.sin(turn),
            vx * math.sin(turn) + vy * math.cos(turn),
        )
        x, vx = _bounce(x, vx, x_lo, x_hi)
        y, vy = _bounce(y, vy, y_lo, y_hi)


# --------------------------------------------------------------------------------------------
# Scenarios: each is an endless generator of float32 (px, px, 3) frames, seeded by rng.

_Scenario = Callable[[np.random.Generator, int], Iterator[np.ndarray]]
_SCENARIO_FNS: dict[str, _Scenario] = {}


def _scenario(name: str) -> Callable[[_Scenario], _Scenario]:
    def register(fn: _Scenario) -> _Scenario:
        _SCENARIO_FNS[name] = fn
        return fn

    return register


@_scenario("static")
def _static(rng: np.random.Generator, px: int) -> Iterator[np.ndarray]:
    # A tripod shot: one window; only the sensor noise added later changes between frames.
    photo = _photo("coffee")
    frame = _render(photo, _View(*_random_centre(photo, 256, rng), side=256), px)
    while True:
        yield frame


@_scenario("low_motion")
def _low_motion(rng: np.random.Generator, px: int) -> Iterator[np.ndarray]:
    photo = _photo("chelsea")
    speed = float(rng.uniform(0.35, 0.55))  # px/frame at render scale (side == RENDER_PX)
    for x, y in _pan(photo, rng, side=256, speed=speed, turn_std=0.03):
        yield _render(photo, _View(x, y, 256), px)


@_scenario("high_motion")
def _high_motion(rng: np.random.Generator, px: int) -> Iterator[np.ndarray]:
    # Fast pan with a zoom that breathes between about 0.7x and 1.4x of the base window.
    photo = _photo("motorcycle")
    base, zoom_period, phase = 230.0, float(rng.uniform(40, 60)), float(rng.uniform(0, 2 * math.pi))
    speed = float(rng.uniform(4.5, 6.0))
    path = _pan(photo, rng, side=base * 2**0.5, speed=speed, turn_std=0.08)
    for t, (x, y) in enumerate(path):
        side = base * 2 ** (0.5 * math.sin(2 * math.pi * t / zoom_period + phase))
        yield _render(photo, _View(x, y, side), px)


_SHOT_FRAMES = 30  # scene_change: a hard cut every this many frames
_SHOT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "immunohistochemistry")


@_scenario("scene_change")
def _scene_change(rng: np.random.Generator, px: int) -> Iterator[np.ndarray]:
    # Four distinct photos, cut in turn; each shot is a slow pan from a fresh position.
    names = [str(n) for n in rng.choice(_SHOT_PHOTOS, size=4, replace=False)]
    for shot in itertools.count():
        photo = _photo(names[shot % len(names)])
        path = _pan(photo, rng, side=224, speed=float(rng.uniform(0.3, 0.6)), turn_std=0.03)
        for x, y in itertools.islice(path, _SHOT_FRAMES):
            yield _render(photo, _View(x, y, 224), px)


_RETURN_HOLD = 10  # repetitive_return: frames spent still on each view
_RETURN_MOVE = 4  # frames of each transition between views
_RETURN_CYCLE = 3 * (_RETURN_HOLD + _RETURN_MOVE)
_RETURN_ANCHORS = ((0.15, 0.15), (0.85, 0.35), (0.45, 0.85))  # normalized, far apart


@_scenario("repetitive_return")
def _repetitive_return(rng: np.random.Generator, px: int) -> Iterator[np.ndarray]:
    # A camera that keeps returning to three views (a surveillance tour), each return landing
    # within a fraction of a pixel of the last one.
    photo, side = _photo("astronaut"), 200.0
    x_lo, x_hi, y_lo, y_hi = _bounds(photo, side + 4)
    order = rng.permutation(len(_RETURN_ANCHORS))
    views = []
    for i in order:
        u, v = (np.asarray(_RETURN_ANCHORS[i]) + rng.uniform(-0.05, 0.05, size=2)).clip(0, 1)
        views.append((x_lo + u * (x_hi - x_lo), y_lo + v * (y_hi - y_lo)))
    for visit in itertools.count():
        (x0, y0), (x1, y1) = views[visit % 3], views[(visit + 1) % 3]
        dx, dy = rng.normal(0, 0.5, size=2)  # landing error of the return
        for _ in range(_RETURN_HOLD):
            yield _render(photo, _View(x0 + dx, y0 + dy, side), px)
        for k in range(1, _RETURN_MOVE + 1):
            s = k / (_RETURN_MOVE + 1)
            s = s * s * (3 - 2 * s)  # smoothstep: ease in and out of each move
            yield _render(photo, _View(x0 + s * (x1 - x0), y0 + s * (y1 - y0), side), px)


@_scenario("cam_shake")
def _cam_shake(rng: np.random.Generator, px: int) -> Iterator[np.ndarray]:
    # Hand-held camera: a mean-reverting random walk (AR(1)) smoothed once more (exponential
    # filter), so the jitter is a few px and wobbles rather than flickers.
    photo, side = _photo("astronaut"), 240.0
    cx, cy = _random_centre(photo, side + 40, rng)  # margin for the shake
    walk = np.zeros(3)  # dx, dy (px), angle (rad)
    smooth = np.zeros(3)
    step = np.array([1.6, 1.6, 0.0035])  # per-frame kicks; stationary std ~4 px and ~0.5 deg
    while True:
        walk = 0.9 * walk + rng.normal(0, 1, size=3) * step
        smooth = 0.6 * smooth + 0.4 * walk
        x_lo, x_hi, y_lo, y_hi = _bounds(photo, side, smooth[2])
        x, y = _clamp(cx + smooth[0], x_lo, x_hi), _clamp(cy + smooth[1], y_lo, y_hi)
        yield _render(photo, _View(x, y, side, float(smooth[2])), px)


@_scenario("high_texture")
def _high_texture(rng: np.random.Generator, px: int) -> Iterator[np.ndarray]:
    photo = _photo("gravel")
    for x, y in _pan(photo, rng, side=256, speed=float(rng.uniform(1.5, 2.5)), turn_std=0.04):
        yield _render(photo, _View(x, y, 256), px)


@_scenario("illum_change")
def _illum_change(rng: np.random.Generator, px: int) -> Iterator[np.ndarray]:
    # Fixed framing under a light that brightens and shifts from warm to cool over
    # DEFAULT_FRAMES frames (cosine ease), then swings back, so clips of any length are defined.
    photo = _photo("coffee")
    frame = _render(photo, _View(*_random_centre(photo, 256, rng), side=256), px)
    gain_lo, gain_hi = float(rng.uniform(0.5, 0.6)), float(rng.uniform(1.25, 1.35))
    tint = float(rng.uniform(0.06, 0.12))
    for t in itertools.count():
        ramp = 0.5 - 0.5 * math.cos(math.pi * t / (DEFAULT_FRAMES - 1))  # 0 -> 1 -> 0 ...
        warm = tint * (1 - 2 * ramp)  # +tint (warm) at the start, -tint (cool) at the peak
        gains = (gain_lo + (gain_hi - gain_lo) * ramp) * np.array([1 + warm, 1.0, 1 - warm])
        yield frame * gains.astype(np.float32)


def _scenario_frames(name: str, size: int, seed: int) -> Iterator[np.ndarray]:
    salt = zlib.crc32(name.encode())  # per-scenario stream: scenarios with one seed differ
    rng = np.random.default_rng([salt, seed])
    noise_rng = np.random.default_rng([salt, seed, 1])  # apart, so noise never shifts the path
    for frame in _SCENARIO_FNS[name](rng, max(RENDER_PX, size)):
        out = resize_frame(np.clip(np.rint(frame), 0, 255).astype(np.uint8), size)
        noise = np.rint(noise_rng.normal(0, SENSOR_NOISE_STD, size=out.shape))
        yield np.clip(out + noise, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Files


def _still_frames(path: Path, size: int) -> Iterator[np.ndarray]:
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ScenarioError(f"cannot decode image {path}: {exc}") from exc
    frame = resize_frame(rgb, size)
    while True:
        yield frame.copy()


def _video_frames(path: Path, size: int) -> Iterator[np.ndarray]:
    for frame in _raw_video_frames(path):
        yield resize_frame(frame, size)


# --------------------------------------------------------------------------------------------
# Public entry points


def iter_frames(
    source: str | os.PathLike[str],
    n_frames: int | None = None,
    size: int = 64,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Stream uint8 ``(size, size, 3)`` frames from a scenario name or a video/image file.

    Scenarios give ``n_frames`` frames (default DEFAULT_FRAMES). A video gives all its frames,
    or the first ``n_frames``; a still image is repeated ``n_frames`` (default DEFAULT_FRAMES)
    times. A name in SCENARIOS wins over a file of the same name. Bad arguments, unknown or
    undecodable sources and empty videos raise ScenarioError here, before the first frame.
    """
    if n_frames is not None and n_frames <= 0:
        raise ScenarioError(f"n_frames must be >= 1 (or None), got {n_frames}")
    _check_size(size)
    if seed < 0:
        raise ScenarioError(f"seed must be >= 0, got {seed}")

    name = os.fspath(source)
    if name in SCENARIOS:
        frames = _scenario_frames(name, size, seed)
        n_frames = DEFAULT_FRAMES if n_frames is None else n_frames
    elif (path := Path(name)).is_file():
        if path.suffix.lower() in _STILL_SUFFIXES:
            frames = _still_frames(path, size)
            n_frames = DEFAULT_FRAMES if n_frames is None else n_frames
        else:
            frames = _video_frames(path, size)
    else:
        raise _unknown_source(source)
    if n_frames is not None:
        frames = itertools.islice(frames, n_frames)

    # Pull the first frame now so decoding errors and empty videos surface at the call.
    first = next(frames, None)
    if first is None:
        raise ScenarioError(f"video {name} has no frames")
    return itertools.chain([first], frames)


def load_clip(
    source: str | os.PathLike[str],
    n_frames: int | None = None,
    size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """A whole clip as uint8 ``(T, size, size, 3)``; see :func:`iter_frames` for the sources."""
    return np.stack(list(iter_frames(source, n_frames, size, seed)))


# --------------------------------------------------------------------------------------------
# Frames at their own size (token links: DESIGN "Frames as token grids")

DEFAULT_SHORT_SIDE = 240  # px: the default working size's short side


def working_size(height: int, width: int, stride: int, short_side: int = DEFAULT_SHORT_SIDE):
    """(H, W) a frame of ``height`` x ``width`` is coded at: the aspect ratio kept, the short
    side ``short_side`` (a smaller frame keeps its own size), both rounded to ``stride``."""
    if height < 1 or width < 1:
        raise ScenarioError(f"frame size must be positive, got {height}x{width}")
    scale = min(1.0, short_side / min(height, width))

    def fit(side: int) -> int:
        return max(stride, int(round(side * scale / stride)) * stride)

    return fit(height), fit(width)


def to_working_size(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) resized to ``size`` = (H, W) (area filter when shrinking)."""
    if frame.shape[:2] == tuple(size):
        return np.ascontiguousarray(frame)
    h, w = size
    shrink = frame.shape[0] >= h and frame.shape[1] >= w
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(frame).resize((w, h), resample))


def iter_working_frames(
    source: str | os.PathLike[str],
    n_frames: int | None = None,
    stride: int = 8,
    short_side: int = DEFAULT_SHORT_SIDE,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """Stream a source at its working size, uint8 (H, W, 3): a video or image keeps its aspect
    ratio (:func:`working_size`, fixed by its first frame); a scenario is rendered square at
    the short side. Errors surface at the call, as with :func:`iter_frames`."""
    name = os.fspath(source)
    if name in SCENARIOS:
        side = working_size(short_side, short_side, stride, short_side)[0]
        return iter_frames(name, n_frames, size=side, seed=seed)
    path = Path(name)
    if not path.is_file():
        raise _unknown_source(source)
    if path.suffix.lower() in _STILL_SUFFIXES:
        with Image.open(path) as image:
            still = np.asarray(image.convert("RGB"))
        raw: Iterator[np.ndarray] = itertools.repeat(still, n_frames or DEFAULT_FRAMES)
    else:
        raw = itertools.islice(_raw_video_frames(path), n_frames)
    first = next(raw, None)
    if first is None:
        raise ScenarioError(f"video {name} has no frames")
    size = working_size(*first.shape[:2], stride, short_side)
    return (to_working_size(f, size) for f in itertools.chain([first], raw))


def load_working_clip(
    source: str | os.PathLike[str],
    n_frames: int | None = None,
    stride: int = 8,
    short_side: int = DEFAULT_SHORT_SIDE,
    seed: int = 0,
) -> np.ndarray:
    """A whole clip at its working size, uint8 (T, H, W, 3); see :func:`iter_working_frames`."""
    return np.stack(list(iter_working_frames(source, n_frames, stride, short_side, seed)))


def _raw_video_frames(path: Path) -> Iterator[np.ndarray]:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ScenarioError(f"no video stream in {path}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        raise ScenarioError(f"cannot decode video {path}: {exc}") from exc


# Real camera footage that ships in Debian packages (no codec was trained on it).
REAL_VIDEOS = {
    "cockatoo": "/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4",
    "plant": "/usr/lib/python3/dist-packages/imageio/resources/images/realshort.mp4",
    "dog": "/usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4",
    "screencast": "/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4",
}
REAL_VIDEO_PACKAGES = "python3-imageio forensics-samples-files"


def expand_sources(spec: str, videos: dict[str, str] | None = None) -> dict[str, str]:
    """Comma-separated sources as {label: source}: a scenario is its own label, a file its stem,
    and ``real`` stands for the installed :data:`REAL_VIDEOS` under their short names."""
    videos = REAL_VIDEOS if videos is None else videos
    out: dict[str, str] = {}
    for item in (s.strip() for s in spec.split(",")):
        if item == "real":
            found = {name: path for name, path in videos.items() if Path(path).is_file()}
            if not found:
                raise ScenarioError(
                    "--sources real found none of the packaged camera videos; install them "
                    f"with `apt-get install {REAL_VIDEO_PACKAGES}`"
                )
            out.update(found)
        elif item:
            out[Path(item).stem if Path(item).suffix else item] = item
    return out
