"""Training the codec (experiments.training): seeded crops, a smoke run, the quantizer refit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.training import CropSampler, holdout_frames, train_codec
from shared.codec.models import CodecError, codecs_dir, load_codec


def test_crops_are_seeded() -> None:
    np.testing.assert_array_equal(holdout_frames(4, seed=3), holdout_frames(4, seed=3))
    photo = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    a = CropSampler([photo], 32, seed=1).batch(3)
    b = CropSampler([photo], 32, seed=1).batch(3)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_train_smoke_writes_loadable_weights_and_card(tmp_path) -> None:
    card = train_codec(
        "ae64", minutes=0.01, seed=1, out_dir=tmp_path, progress=False,
        batch_size=16, bank_size=64, eval_frames=8, min_zoom=2.0,
    )  # fmt: skip
    assert (tmp_path / "ae64.pt").is_file() and (tmp_path / "ae64.json").is_file()
    assert json.loads((tmp_path / "ae64.json").read_text()) == card
    for key in ("name", "latent_dim", "frame_size", "params", "command", "wall_time_s",
                "hardware", "steps", "seed", "train_psnr_db", "eval_psnr_db"):  # fmt: skip
        assert key in card, key
    assert card["steps"] >= 1 and card["seed"] == 1 and card["latent_dim"] == 64
    assert card["min_zoom"] == 2.0 and "--min-zoom 2 " in card["command"]
    assert len(card["latent_grid"]["centre"]) == 64 and 0 < card["fitted_latent_range"] <= 1
    trained = load_codec("ae64", weights_dir=tmp_path)
    assert trained.digest == card["sha256"] != load_codec("ae64").digest
    z = trained.encode(holdout_frames(2))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


def test_refit_quantizer_rewrites_only_the_cards_quantizer(tmp_path) -> None:
    import shutil

    from experiments.training import refit_quantizer
    from shared.codec.zoo import codec_card

    for suffix in (".pt", ".json"):
        shutil.copy(codecs_dir() / f"ae64{suffix}", tmp_path / f"ae64{suffix}")
    before = codec_card("ae64", tmp_path)
    card = refit_quantizer("ae64", seed=3, n=64, out_dir=tmp_path)
    assert codec_card("ae64", tmp_path) == card
    assert {k: v for k, v in card.items() if k not in ("latent_grid", "fitted_latent_range")} == {
        k: v for k, v in before.items() if k not in ("latent_grid", "fitted_latent_range")
    }
    assert card["latent_grid"] != before["latent_grid"]  # other crops, another fit
    assert len(card["latent_grid"]["half_range"]) == 64


def test_crop_sampler_refuses_a_non_positive_zoom() -> None:
    photo = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="min_zoom"):
        CropSampler([photo], 32, seed=0, min_zoom=0.0)


def test_train_rejects_unknown_name(tmp_path) -> None:
    with pytest.raises(CodecError, match="unknown codec"):
        train_codec("nope", minutes=0.01, out_dir=tmp_path, progress=False)
