"""The learned codec (shared.codec.models) and its zoo of shipped weights with cards."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from experiments.training import evaluate_psnr, holdout_frames
from shared.accounting import psnr_batch
from shared.codec.models import CODECS, Codec, CodecError, CodecSpec, codecs_dir, load_codec

# The shipped ae64 reaches 27.8 dB on the 48 held-out crops below (28.3 dB on the card's 512);
# the floor leaves a margin for retraining noise. A random unit latent decodes to ~6 dB.
PSNR_FLOOR_DB = 25.0


@pytest.fixture(scope="module")
def codec() -> Codec:
    return load_codec("ae64")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return holdout_frames(48, size=64, seed=7)


def test_default_codec_is_ae64(codec: Codec) -> None:
    assert codec.name == "ae64" and codec.spec is CODECS["ae64"]
    assert (codec.latent_dim, codec.frame_size) == (64, 64)
    assert codec.weights_path == codecs_dir() / "ae64.pt"


def test_encode_gives_unit_norm_float32(codec: Codec, frames: np.ndarray) -> None:
    z = codec.encode(frames)
    assert z.shape == (len(frames), 64) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    single = codec.encode(frames[0])
    assert single.shape == (1, 64) and single.dtype == np.float32


def test_decode_gives_uint8_frames(codec: Codec, frames: np.ndarray) -> None:
    z = codec.encode(frames[:5])
    x = codec.decode(z)
    assert x.shape == (5, 64, 64, 3) and x.dtype == np.uint8
    one = codec.decode(z[0])
    assert one.shape == (1, 64, 64, 3) and one.dtype == np.uint8
    np.testing.assert_array_equal(one[0], x[0])
    # float64 latents are accepted and cast
    np.testing.assert_array_equal(codec.decode(z[:1].astype(np.float64)), x[:1])


def test_digest_is_sha256_of_weights_and_stable(codec: Codec) -> None:
    path = codecs_dir() / "ae64.pt"
    assert codec.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_codec("ae64").digest == codec.digest
    assert path.stat().st_size < 5 * 2**20


def test_card_matches_shipped_weights(codec: Codec) -> None:
    card = json.loads((codecs_dir() / "ae64.json").read_text())
    assert card["sha256"] == codec.digest
    assert card["name"] == "ae64" and card["latent_dim"] == 64 and card["frame_size"] == 64
    assert CodecSpec.from_dict(card["architecture"]) == codec.spec
    for key in ("params", "command", "wall_time_s", "hardware", "steps", "seed"):
        assert key in card
    assert card["eval_psnr_db"] > PSNR_FLOOR_DB


SHIPPED = sorted(n for n in CODECS if (codecs_dir() / f"{n}.pt").is_file())


def test_the_codec_family_is_shipped() -> None:
    assert {"ae64", "ae64v2", "ae64w", "ae64d128", "ae64d256", "ae128", "ae64cap"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_codec_matches_its_card_and_round_trips(name: str) -> None:
    shipped = load_codec(name)
    card = json.loads((codecs_dir() / f"{name}.json").read_text())
    assert card["sha256"] == shipped.digest and card["name"] == name
    assert CodecSpec.from_dict(card["architecture"]) == shipped.spec
    assert card["weights_bytes"] == shipped.weights_path.stat().st_size < 8 * 2**20
    # The card's figure is honest: re-measured on the same held-out crops, it agrees.
    size = shipped.frame_size
    measured = evaluate_psnr(shipped, holdout_frames(512, size=size))
    assert measured == pytest.approx(card["eval_psnr_db"], abs=2e-3)
    assert measured > 20.0  # trained: a random unit latent decodes to ~6 dB
    frames = holdout_frames(4, size=size, seed=11)
    z = shipped.encode(frames)
    assert z.shape == (4, shipped.latent_dim)
    assert shipped.decode(z).shape == (4, size, size, 3)
    # Encoding is deterministic whether a frame goes alone (the Tx) or in a batch (the simulator).
    assert shipped.encode(frames[2]).tobytes() == z[2:3].tobytes()


def test_batch_and_single_frames_give_bit_identical_results(
    codec: Codec, frames: np.ndarray
) -> None:
    z = codec.encode(frames)
    for i in (0, 1, len(frames) // 2, len(frames) - 1):
        assert np.array_equal(codec.encode(frames[i]), z[i : i + 1])
        assert np.array_equal(codec.encode(frames[i : i + 1]), z[i : i + 1])
    assert np.array_equal(codec.encode(frames[::-1]), z[::-1])  # order and strides do not matter
    x = codec.decode(z[:6])
    for i in range(6):
        assert np.array_equal(codec.decode(z[i]), x[i : i + 1])


def test_shipped_codec_reconstructs_real_photos(codec: Codec, frames: np.ndarray) -> None:
    quality = evaluate_psnr(codec, frames)
    rng = np.random.default_rng(0)
    random = rng.standard_normal((len(frames), 64)).astype(np.float32)
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    chance = float(psnr_batch(frames, codec.decode(random)).mean())
    assert quality > PSNR_FLOOR_DB
    assert quality > chance + 15.0


def test_latents_keep_frames_apart(codec: Codec, frames: np.ndarray) -> None:
    z = codec.encode(frames)
    cos = z @ z.T
    off = cos[~np.eye(len(z), dtype=bool)]
    assert off.max() < 0.9999  # different crops do not collapse onto one latent
    dark = np.clip(frames[0].astype(np.float32) * 0.9, 0, 255).astype(np.uint8)
    assert float(codec.encode(dark)[0] @ z[0]) > 0.9  # a slightly darker frame stays close


def test_unknown_codec_name_raises() -> None:
    with pytest.raises(CodecError, match="unknown codec 'nope'.*ae64"):
        load_codec("nope")
    assert issubclass(CodecError, ValueError)


def test_missing_weights_raise(tmp_path) -> None:
    with pytest.raises(CodecError, match="not found"):
        load_codec("ae64", weights_dir=tmp_path)


def test_weights_for_another_spec_raise() -> None:
    other = CodecSpec("ae64", latent_dim=32)
    with pytest.raises(CodecError, match=r"trained for another spec \(latent_dim: 64 != 32\)"):
        Codec(other, codecs_dir() / "ae64.pt")


def test_corrupt_weights_raise(tmp_path) -> None:
    (tmp_path / "ae64.pt").write_bytes(b"not a torch file")
    with pytest.raises(CodecError, match="cannot read weights"):
        load_codec("ae64", weights_dir=tmp_path)


@pytest.mark.parametrize("shape", [(32, 32, 3), (64, 64), (2, 64, 64, 4), (2, 64, 32, 3)])
def test_wrong_frame_shape_raises(codec: Codec, shape: tuple[int, ...]) -> None:
    bad = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(CodecError, match=r"expected frames of shape \(N, 64, 64, 3\).*got") as e:
        codec.encode(bad)
    assert str(shape) in str(e.value)


def test_wrong_frame_dtype_raises(codec: Codec) -> None:
    with pytest.raises(CodecError, match="uint8, got float32"):
        codec.encode(np.zeros((64, 64, 3), dtype=np.float32))


def test_bad_latents_raise(codec: Codec) -> None:
    with pytest.raises(CodecError, match=r"latents of shape \(N, 64\).*got \(2, 32\)"):
        codec.decode(np.zeros((2, 32), dtype=np.float32))
    nan = np.zeros(64, dtype=np.float32)
    nan[3] = np.nan
    with pytest.raises(CodecError, match="NaN"):
        codec.decode(nan)
    with pytest.raises(CodecError, match="float32, got int64"):
        codec.decode(np.zeros(64, dtype=np.int64))


def test_spec_validation() -> None:
    with pytest.raises(CodecError, match="not divisible"):
        CodecSpec("x", frame_size=60)
    with pytest.raises(CodecError, match="activation"):
        CodecSpec("x", activation="tanh")
    spec = CodecSpec("x", widths=(8, 16), dec_widths=(8,), frame_size=16)
    assert CodecSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_decode_cache_reuses_frames_and_stays_within_its_byte_bound() -> None:
    """Repeated latents are decoded once; beyond ``max_bytes`` the least recently used frames
    go, so a cache of large (token) frames cannot grow without bound."""
    from shared.codec.cache import DecodeCache

    class Counting:
        calls = 0

        def decode(self, latent: np.ndarray) -> np.ndarray:
            Counting.calls += 1
            return np.full((1, 32, 32, 3), int(latent[0]), dtype=np.uint8)  # 3,072 bytes

    entry = 3072 + 4 * 4  # a frame and its key (4 float32)
    cache = DecodeCache(Counting(), max_bytes=3 * entry)
    latents = [np.array([i, 0, 0, 0], dtype=np.float32) for i in range(5)]
    assert cache(latents[0])[0, 0, 0] == 0 and cache(latents[0]).shape == (32, 32, 3)
    assert Counting.calls == 1  # the second call was served from the cache
    for latent in latents[1:]:
        cache(latent)
    assert len(cache) == 3 and cache.bytes == 3 * entry <= cache.max_bytes
    cache(latents[4])  # still held: no decode
    assert Counting.calls == 5
    cache(latents[0])  # dropped long ago: decoded again
    assert Counting.calls == 6 and cache.bytes <= cache.max_bytes
