"""--record: the Rx's pictures as a video file."""

import av
import numpy as np

from receiver.record import FrameRecorder


def test_recorder_writes_every_shown_frame_at_its_size(tmp_path):
    path = tmp_path / "rx.mp4"
    recorder = FrameRecorder(path)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (30, 45, 3), dtype=np.uint8) for _ in range(5)]
    for frame in frames:
        recorder.write(frame)
    recorder.close()
    recorder.close()  # idempotent: the process's stop may come twice
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert recorder.frames == 5
    assert len(decoded) == 5
    assert decoded[0].shape == (30, 44, 3)  # yuv420p: the odd side rounded down


def test_a_recorder_that_saw_no_frame_writes_no_file(tmp_path):
    recorder = FrameRecorder(tmp_path / "none.mp4")
    recorder.close()
    assert not (tmp_path / "none.mp4").exists()
