"""Scenario and video sources: shapes, determinism, the resize rule, motion regimes, files."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from skimage.registration import phase_cross_correlation

from shared import scenarios
from shared.scenarios import (
    DEFAULT_FRAMES,
    PROTOCOLS,
    SCENARIOS,
    ScenarioError,
    iter_frames,
    load_clip,
    protocol_of,
    resize_frame,
)


@functools.cache
def clip(name: str, seed: int = 0) -> np.ndarray:
    """Default clips are shared between tests; the array is made read-only to keep them intact."""
    frames = load_clip(name, seed=seed)
    frames.flags.writeable = False
    return frames


def frame_diffs(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between consecutive frames, one value per transition."""
    return np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- the registry -------------------------------------------------------------------------------


def test_protocols_partition_all_scenarios_but_scene_change():
    members = [s for group in PROTOCOLS.values() for s in group]
    assert len(members) == len(set(members))
    assert set(members) | {"scene_change"} == set(SCENARIOS)
    assert protocol_of("cam_shake") == "gradual_drift"
    assert protocol_of("repetitive_return") == "stable"
    assert protocol_of("scene_change") is None
    with pytest.raises(ScenarioError, match="nope"):
        protocol_of("nope")


# --- every scenario -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_clip_shape_and_dtype(name):
    frames = clip(name)
    assert frames.shape == (DEFAULT_FRAMES, 64, 64, 3)
    assert frames.dtype == np.uint8
    assert frames.flags.c_contiguous
    assert frames.std() > 10  # real picture content, not a flat field


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_is_deterministic_in_seed(name):
    again = load_clip(name, n_frames=40)
    assert again.tobytes() == clip(name)[:40].tobytes()  # also: a short clip is a prefix
    other = load_clip(name, n_frames=40, seed=1)
    assert distance(other, again) > 1.0


@pytest.mark.parametrize("name", SCENARIOS)
def test_other_seeds_have_similar_motion(name):
    # A different seed is another take of the same kind of shot, not another regime.
    base = frame_diffs(clip(name)).mean()
    for seed in (1, 2):
        ratio = frame_diffs(clip(name, seed)).mean() / base
        assert 0.6 < ratio < 1.6, (name, seed, ratio)


def test_render_is_fast_and_size_and_length_are_honoured():
    for name in SCENARIOS:
        start = time.perf_counter()
        load_clip(name, seed=7)
        assert time.perf_counter() - start < 2.0, name
    assert load_clip("low_motion", n_frames=5, size=32).shape == (5, 32, 32, 3)
    assert load_clip("cam_shake", n_frames=3, size=300).shape == (3, 300, 300, 3)
    assert len(list(iter_frames("high_motion", n_frames=250))) == 250


# --- motion regimes -----------------------------------------------------------------------------


def test_motion_orders_static_low_high():
    mean = {name: frame_diffs(clip(name)).mean() for name in SCENARIOS}
    assert mean["static"] < 1.0  # sensor noise only
    assert mean["static"] < mean["low_motion"] < mean["cam_shake"] < mean["high_motion"]
    assert mean["high_motion"] > 5 * mean["low_motion"]
    assert min(mean.values()) == mean["static"]


def test_static_differs_only_by_sensor_noise():
    frames = clip("static").astype(np.int16)
    noise = frames - frames[0]
    assert np.abs(noise).max() <= 4
    assert 0.2 < np.abs(noise[1:]).mean() < 1.5


def test_scene_change_has_a_spike_at_each_cut():
    diffs = frame_diffs(clip("scene_change"))
    cuts = np.sort(np.argsort(diffs)[-3:]) + 1  # frame index after each spike
    assert list(cuts) == [30, 60, 90]
    others = np.delete(diffs, cuts - 1)
    assert diffs[cuts - 1].min() > 5 * others.max()


def test_repetitive_return_comes_back_to_its_views():
    frames = clip("repetitive_return")
    cycle = scenarios._RETURN_CYCLE
    hold_starts = range(0, DEFAULT_FRAMES - cycle, scenarios._RETURN_HOLD + scenarios._RETURN_MOVE)
    same = [distance(frames[t], frames[t + cycle]) for t in hold_starts]
    half = [distance(frames[t], frames[t + cycle // 2]) for t in hold_starts]
    assert max(same) * 5 < min(half)


def test_cam_shake_jitters_around_a_fixed_framing():
    shake = clip("cam_shake")
    assert frame_diffs(shake).mean() > 3 * frame_diffs(clip("static")).mean()
    # global shift of each frame against the first: it jitters by a few px but never wanders
    gray = shake.astype(np.float64).mean(axis=3)
    shifts = np.array([phase_cross_correlation(gray[0], f, upsample_factor=4)[0] for f in gray])
    assert np.abs(shifts).max() <= 4.0
    assert shifts.std(axis=0).min() > 0.3


def test_high_texture_has_the_most_fine_detail():
    def detail(frames: np.ndarray) -> float:
        return float(np.abs(np.diff(frames.astype(np.int16), axis=2)).mean())

    texture = detail(clip("high_texture"))
    assert all(texture > 1.2 * detail(clip(n)) for n in SCENARIOS if n != "high_texture")


def test_illumination_ramps_up_with_a_tint():
    frames = clip("illum_change").astype(np.float64)
    brightness = frames.mean(axis=(1, 2, 3))
    assert brightness[-1] > 1.8 * brightness[0]
    assert np.corrcoef(np.arange(len(brightness)), brightness)[0, 1] > 0.95
    assert (np.diff(brightness) > -0.5).all()  # monotone up to sensor noise
    red_over_blue = frames[..., 0].mean(axis=(1, 2)) / frames[..., 2].mean(axis=(1, 2))
    assert red_over_blue[0] > red_over_blue[-1]  # warm light turning cool


# --- the resize rule ----------------------------------------------------------------------------


def test_resize_centre_crops_the_longer_side():
    image = np.full((100, 160, 3), 128, np.uint8)
    image[:, :30] = (255, 0, 0)  # left border: falls outside the 100 px centre square
    image[:, -30:] = (0, 0, 255)
    out = resize_frame(image, 64)
    assert out.shape == (64, 64, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    assert (out == 128).all()
    tall = np.transpose(image, (1, 0, 2))
    assert (resize_frame(tall, 20) == 128).all()


def test_resize_is_an_area_average():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
    blocks = image.reshape(64, 2, 64, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(resize_frame(image, 64) - blocks).max() <= 1.0
    assert (resize_frame(np.full((37, 51, 3), 77, np.uint8), 64) == 77).all()


def test_resize_channel_rules():
    gray = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    out = resize_frame(gray, 32)
    assert out.shape == (32, 32, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 255
    assert (resize_frame(rgba, 16) == (10, 20, 30)).all()


@pytest.mark.parametrize(
    ("frame", "size", "match"),
    [
        (np.zeros((8, 8, 3), np.float32), 8, "uint8"),
        (np.zeros((8, 8, 2), np.uint8), 8, "shape"),
        (np.zeros((0, 8, 3), np.uint8), 8, "empty"),
        (np.zeros((8, 8, 3), np.uint8), 4, "size"),
    ],
)
def test_resize_rejects_bad_frames(frame, size, match):
    with pytest.raises(ScenarioError, match=match):
        resize_frame(frame, size)


# --- files --------------------------------------------------------------------------------------


def write_video(path: Path, frames: np.ndarray, codec: str) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".avi", "mpeg4")])
def test_video_round_trip(tmp_path, suffix, codec):
    # 12 frames, 96x80 (not square): each a flat grey that gets brighter
    levels = np.linspace(30, 220, 12).astype(np.uint8)
    source = np.broadcast_to(levels[:, None, None, None], (12, 80, 96, 3)).copy()
    path = tmp_path / f"ramp{suffix}"
    write_video(path, source, codec)

    frames = load_clip(str(path))
    assert frames.shape == (12, 64, 64, 3)
    assert frames.dtype == np.uint8
    assert np.abs(frames.mean(axis=(1, 2, 3)) - levels).max() < 6  # lossy, but the same video
    assert load_clip(path, n_frames=5, size=32).shape == (5, 32, 32, 3)
    assert np.array_equal(np.stack(list(iter_frames(str(path)))), frames)


def test_still_image_repeats(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    path = tmp_path / "still.png"
    Image.fromarray(pixels).save(path)
    frames = load_clip(str(path))
    assert frames.shape == (DEFAULT_FRAMES, 64, 64, 3)
    assert (frames == resize_frame(pixels)).all()
    assert load_clip(str(path), n_frames=3).shape == (3, 64, 64, 3)


def test_unknown_source_lists_the_scenarios(tmp_path):
    missing = str(tmp_path / "nowhere.mp4")
    with pytest.raises(ScenarioError) as info:
        load_clip(missing)
    assert "nowhere.mp4" in str(info.value)
    assert all(name in str(info.value) for name in SCENARIOS)
    with pytest.raises(ScenarioError, match="not a scenario"):
        iter_frames("hihg_motion")  # raised at the call, before iterating
    with pytest.raises(ScenarioError, match="not a scenario"):
        load_clip(str(tmp_path))  # a directory is not a file


def test_undecodable_files_name_the_path(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 20)
    with pytest.raises(ScenarioError, match="cannot decode video .*garbage.mp4: .+"):
        load_clip(str(garbage))
    broken_png = tmp_path / "broken.png"
    broken_png.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ScenarioError, match="cannot decode image .*broken.png"):
        load_clip(str(broken_png))


def test_video_without_frames(tmp_path):
    path = tmp_path / "empty.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width = stream.height = 64
        container.start_encoding()
    with pytest.raises(ScenarioError, match="empty.avi has no frames"):
        load_clip(str(path))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_frames": 0}, "n_frames must be >= 1"),
        ({"n_frames": -3}, "n_frames must be >= 1"),
        ({"size": 7}, "size must be >= 8"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ScenarioError, match=match):
        load_clip("static", **kwargs)
