"""Seeing the link: original | reconstruction side by side, written as a video file.

Out of band: what is written here is never link traffic. The PSNR of each frame is burnt into
its reconstruction half (and lost frames say so), so a still from the file tells its own story.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

VIDEO_CODEC = "libx264"
VIDEO_CRF = 18  # visually lossless enough that the video shows the link, not its own artefacts


def side_by_side(original: np.ndarray, shown: np.ndarray | None, label: str) -> np.ndarray:
    """One frame (H, 2W, 3): the original left, the Rx's picture right with ``label`` on it."""
    h, w = original.shape[:2]
    canvas = np.zeros((h, 2 * w, 3), dtype=np.uint8)
    canvas[:, :w] = original
    if shown is not None:
        canvas[:, w:] = shown
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    draw.rectangle((w, 0, w + 8 + 7 * len(label), 14), fill=(0, 0, 0))
    draw.text((w + 4, 2), label, fill=(255, 255, 0))
    return np.asarray(image)


def frame_label(seq: int, psnr: float, outcome: str) -> str:
    if not math.isfinite(psnr):
        return f"#{seq} | {outcome}"
    return f"#{seq} | {psnr:.1f} dB | {outcome}"


def write_side_by_side(
    path: str | Path,
    originals: np.ndarray,
    shown: Sequence[np.ndarray | None],
    labels: Sequence[str],
    fps: float = 30.0,
) -> Path:
    """Write original | shown as an H.264 MP4 (even sides); returns the path."""
    path = Path(path)
    if len(shown) != len(originals) or len(labels) != len(originals):
        raise ValueError(
            f"{len(originals)} originals but {len(shown)} shown frames and {len(labels)} labels"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = originals.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(VIDEO_CODEC, rate=round(fps))
        stream.width, stream.height = 2 * w - (2 * w) % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(VIDEO_CRF)}
        for original, picture, label in zip(originals, shown, labels, strict=True):
            frame = side_by_side(original, picture, label)[: stream.height, : stream.width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
