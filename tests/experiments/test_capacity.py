"""Algorithm 1 (experiments.capacity) and warm-started training (training.warm_start)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from experiments.capacity import ClipSampler, capacity_terms, train_capacity
from experiments.training import holdout_frames, warm_start
from shared.codec.models import CODECS, CodecError, CodecSpec, Decoder, Encoder, load_codec


def _frames(n: int) -> torch.Tensor:
    return torch.from_numpy(holdout_frames(n, seed=3)).permute(0, 3, 1, 2).float() / 255.0


def test_capacity_terms_match_a_hand_computation() -> None:
    # One clip of three frames: frame 1 repeats frame 0, frame 2 is orthogonal to both.
    z = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    frames = torch.rand(1, 3, 3, 4, 4)
    decoded_new = torch.rand(1, 3, 3, 4, 4)
    tau, alpha, beta = torch.tensor(0.9), 50.0, 10.0

    def decode(v: torch.Tensor) -> torch.Tensor:
        return v.sum(-1).view(-1, 1, 1, 1).expand(-1, 3, 4, 4) * 0.5

    out = capacity_terms(
        z, decoded_new, decode, frames, tau, beta=beta, alpha=alpha, hit_bits=40, new_bits=512
    )
    h1 = 1 / (1 + math.exp(-alpha * (1 - 0.9)))  # frame 1 recalls frame 0 exactly
    h2 = 1 / (1 + math.exp(-alpha * (0 - 0.9)))  # frame 2 recalls a blend orthogonal to it
    hits = [0.0, h1, h2]
    bits = [h * 40 + (1 - h) * 512 for h in hits]
    eta = np.mean(hits) * 512 / np.mean(bits)
    assert float(out["hit_rate"]) == pytest.approx(np.mean(hits), rel=1e-5)
    assert float(out["bits"]) == pytest.approx(np.mean(bits), rel=1e-5)
    assert float(out["capacity"]) == pytest.approx(math.log2(1 + eta), rel=1e-5)
    err_new = ((decoded_new - frames) ** 2).flatten(2).mean(-1)[0]
    err_hit = ((0.5 - frames[0, 1:]) ** 2).flatten(1).mean(-1)  # both recall prototype (1, 0)
    expected_d = (err_new[0] + sum(h * eh + (1 - h) * en for h, eh, en in zip(
        hits[1:], err_hit, err_new[1:], strict=True))) / 3  # fmt: skip
    assert float(out["distortion"]) == pytest.approx(float(expected_d), rel=1e-5)


def test_clips_are_seeded_and_move() -> None:
    photo = holdout_frames(1, size=256, seed=0)[0]
    a = ClipSampler([photo], 32, frames=6, seed=4).batch(2)
    assert a.shape == (2, 6, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, ClipSampler([photo], 32, frames=6, seed=4).batch(2))
    assert any(not np.array_equal(c[0], c[-1]) for c in a)


@pytest.mark.parametrize("target", ["ae64d128", "ae64d256"])
def test_warm_start_into_a_larger_latent_keeps_the_pictures(target: str) -> None:
    x = _frames(8)
    source = load_codec("ae64")
    with torch.no_grad():
        expected = source.decoder(source.encoder(x))
        enc, dec = Encoder(CODECS[target]).eval(), Decoder(CODECS[target]).eval()
        warm_start(enc, dec, "ae64")
        got = dec(enc(x))
    assert float((got - expected).abs().max()) < 2 / 255


def test_gdn_codec_spec_builds_and_is_invertible_in_shape() -> None:
    spec = CodecSpec("g", widths=(8, 16, 16), dec_widths=(16, 16, 8), norm="gdn")
    enc, dec = Encoder(spec), Decoder(spec)
    z = enc(_frames(2))
    assert z.shape == (2, 64)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    assert dec(z).shape == (2, 3, 64, 64)
    with pytest.raises(CodecError, match="unknown norm"):
        CodecSpec("g", norm="batch")


def test_train_capacity_smoke_writes_a_codec_with_its_learned_tau(tmp_path) -> None:
    card = train_capacity(out_dir=tmp_path, steps=2, clips=2, clip_frames=3, progress=False)
    trained = load_codec("ae64cap", weights_dir=tmp_path)
    assert trained.digest == card["sha256"]
    assert json.loads((tmp_path / "ae64cap.json").read_text()) == card
    assert card["steps"] == 2 and card["init"] == "ae64" and 0.5 <= card["learned_threshold"] < 1
    for key in ("probe_start", "probe_end"):
        assert 0 <= card[key]["hit_rate"] <= 1 and card[key]["distortion"] > 0
    with pytest.raises(CodecError, match="shape of its starting codec"):
        train_capacity("ae64cap", init="ae64d128", out_dir=tmp_path, steps=1, progress=False)
