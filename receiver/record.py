"""``--record FILE``: what the Rx showed, frame by frame, as a video file (out of band).

Frames are appended in the order the Rx measured them (sequence order on a clean link); a lost
frame is not in the file, a concealed one is the picture that was shown. The file is H.264 in
MP4 at the frames' own size (sides rounded down to even, as yuv420p needs).
"""

from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np

RECORD_FPS = 30
RECORD_CRF = 18  # near-transparent: the recording shows the link, not its own artefacts


class FrameRecorder:
    """Appends uint8 (H, W, 3) frames to ``path``; opened at the first frame, closed by close()."""

    def __init__(self, path: str | Path, fps: int = RECORD_FPS) -> None:
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self._container = None
        self._stream = None
        self._lock = threading.Lock()

    def write(self, frame: np.ndarray) -> None:
        with self._lock:
            if self._container is None:
                self._open(frame.shape[0], frame.shape[1])
            s = self._stream
            picture = np.ascontiguousarray(frame[: s.height, : s.width])
            for packet in s.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                self._container.mux(packet)
            self.frames += 1

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        self._stream = self._container.add_stream("libx264", rate=self.fps)
        self._stream.width, self._stream.height = width - width % 2, height - height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(RECORD_CRF)}

    def close(self) -> None:
        with self._lock:
            if self._container is None:
                return
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
