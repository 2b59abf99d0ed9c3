"""`hoplink codec-eval` and its parts: the fitted quantizer range and the thumbnail baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.cli import main
from experiments.codeceval import (
    codec_roundtrip,
    evaluate,
    fit_latent_grid,
    fit_latent_range,
    link_comparison,
    link_variants,
    thumbnail,
    thumbnail_choice,
)
from shared.accounting import psnr_batch
from shared.coding.quantizer import normalize
from shared.scenarios import ScenarioError, expand_sources, load_clip


def test_fitted_range_covers_the_latents_and_rounds_up() -> None:
    z = normalize(np.random.default_rng(0).standard_normal((2000, 64)))
    r = fit_latent_range(z)
    assert np.mean(np.abs(z) <= r) >= 0.999
    assert r * 64 == int(r * 64) and 0 < r < 1
    with pytest.raises(ValueError, match="finite"):
        fit_latent_range(np.array([[np.nan]]))


def test_fitted_grid_covers_each_dimension_and_follows_its_offset() -> None:
    rng = np.random.default_rng(1)
    scale = np.geomspace(0.01, 0.3, 16)
    z = rng.standard_normal((40000, 16)) * scale + 2 * scale
    grid = fit_latent_grid(z)
    inside = np.abs(z - grid.centre) <= grid.half_range
    assert inside.mean(axis=0).min() >= 0.995
    assert (np.abs(grid.centre - 2 * scale) < 0.15 * scale).all()
    np.testing.assert_allclose(grid.half_range, 3.29 * scale, rtol=0.1)  # the 99.95 % quantile
    assert 0.2 < grid.spread < 0.3  # E|N(0, 1)| / 3.29
    with pytest.raises(ValueError, match="finite"):
        fit_latent_grid(np.array([[np.nan, 0.0], [0.0, 0.0]]))


def test_a_per_dimension_grid_beats_one_range_at_few_bits_on_real_frames(codec) -> None:
    from shared.codec.zoo import card_grid

    frames = load_clip("low_motion", n_frames=4, size=64)

    def quality(grid) -> float:
        return float(psnr_batch(frames, codec_roundtrip(codec, frames, 3, grid)).mean())

    assert quality(card_grid(codec.name)) > quality(fit_latent_range(codec.encode(frames))) + 1


def test_pca_baseline_spends_d_times_b_bits_and_improves_with_both() -> None:
    from experiments.codeceval import pca_codec

    frames = load_clip("low_motion", n_frames=3, size=16)
    small, large = pca_codec(16, 8), pca_codec(16, 32)
    assert small.basis.shape == (8, 16 * 16 * 3)
    np.testing.assert_allclose(large.basis @ large.basis.T, np.eye(32), atol=1e-4)

    def quality(pca, bits) -> float:
        return float(psnr_batch(frames, pca.roundtrip(frames, bits)).mean())

    assert quality(small, 2) < quality(small, 8) < quality(large, 8)
    # At 8 bits the grid costs little: close to the unquantized projection.
    x = frames.reshape(3, -1).astype(np.float32) - large.mean
    exact = np.clip(np.rint(x @ large.basis.T @ large.basis + large.mean), 0, 255)
    exact_psnr = float(psnr_batch(frames, exact.astype(np.uint8).reshape(frames.shape)).mean())
    assert quality(large, 8) > exact_psnr - 0.3


def test_thumbnail_at_full_resolution_and_8_bits_is_nearly_lossless() -> None:
    frames = load_clip("static", n_frames=2, size=16)
    assert np.abs(thumbnail(frames, 16, 8).astype(int) - frames).max() <= 1
    coarse = psnr_batch(frames, thumbnail(frames, 4, 2)).mean()
    assert coarse < psnr_batch(frames, thumbnail(frames, 8, 4)).mean()


def test_thumbnail_choice_stays_within_the_bit_budget() -> None:
    clips = [load_clip("low_motion", n_frames=2, size=32)]
    for budget in (100, 512, 4096):
        side, q = thumbnail_choice(clips, budget)
        assert side * side * 3 * q <= budget
    with pytest.raises(ValueError, match="no thumbnail"):
        thumbnail_choice(clips, 5)


def test_roundtrip_is_what_the_link_shows_on_a_new(codec) -> None:
    from shared.coding.quantizer import dequantize, quantize

    frames = load_clip("static", n_frames=2, size=64)
    expected = codec.decode(dequantize(quantize(codec.encode(frames), 4, 0.5), 4))
    assert np.array_equal(codec_roundtrip(codec, frames, 4, 0.5), expected)


def test_evaluate_rows_for_each_bits_and_source(codec) -> None:
    clips = {s: load_clip(s, n_frames=3, size=64) for s in ("static", "high_texture")}
    rows = evaluate(codec, clips, [2, 8])
    assert [(r.bits_per_value, r.source) for r in rows] == [
        (2, "static"), (2, "high_texture"), (8, "static"), (8, "high_texture"),
    ]  # fmt: skip
    for r in rows:
        assert r.bits_per_frame == 64 * r.bits_per_value
        side, _, q = (int(v) for v in r.thumbnail.split("×"))
        assert side * side * 3 * q <= r.bits_per_frame
    by = {(r.bits_per_value, r.source): r for r in rows}
    assert by[8, "static"].psnr > by[2, "static"].psnr
    assert by[8, "static"].pca_psnr > by[2, "static"].pca_psnr > 5


def test_codec_eval_command_prints_json_rows(capsys) -> None:
    argv = ["codec-eval", "--codecs", "ae64", "--bits", "8", "--sources", "static"]
    assert main([*argv, "--frames", "2", "--range", "paper", "--no-h264", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    rows = payload["rows"]
    assert (
        payload["link"] == []
        and len(rows) == 1
        and rows[0]["codec"] == "ae64"
        and rows[0]["latent_range"] == 1.0
        and rows[0]["latent_grid"] == "uniform"
    )
    assert rows[0]["psnr"] > 10
    argv += ["--frames", "2", "--no-h264", "--json"]
    assert main([*argv, "--range", "paper,per_dim"]) == 0
    grids = [r["latent_grid"] for r in json.loads(capsys.readouterr().out)["rows"]]
    assert grids == ["uniform", "per_dim"]


def test_real_stands_for_the_installed_packaged_videos(tmp_path) -> None:
    clip = tmp_path / "walk.mp4"
    clip.write_bytes(b"")
    videos = {"walk": str(clip), "absent": str(tmp_path / "absent.mp4")}
    assert expand_sources("static, real,/data/my_clip.mkv", videos) == {
        "static": "static", "walk": str(clip), "my_clip": "/data/my_clip.mkv",
    }  # fmt: skip
    with pytest.raises(ScenarioError, match="apt-get install python3-imageio"):
        expand_sources("real", {"absent": str(tmp_path / "absent.mp4")})


def test_codec_eval_reads_weights_and_cards_from_another_folder(tmp_path, capsys) -> None:
    import shutil

    from shared.codec.zoo import codecs_dir

    for suffix in (".pt", ".json"):
        shutil.copy(codecs_dir() / f"ae64{suffix}", tmp_path / f"ae64{suffix}")
    argv = ["codec-eval", "--bits", "3", "--sources", "static", "--frames", "2", "--no-h264"]
    argv += ["--range", "per_dim", "--json"]
    assert main([*argv, "--weights-dir", str(tmp_path)]) == 0  # --codecs: those in the folder
    (moved,) = json.loads(capsys.readouterr().out)["rows"]
    assert main(argv + ["--codecs", "ae64"]) == 0
    (shipped,) = json.loads(capsys.readouterr().out)["rows"]
    assert moved == shipped
    bare = tmp_path / "bare"  # a card with no grid
    bare.mkdir()
    shutil.copy(tmp_path / "ae64.pt", bare / "ae64.pt")
    card = json.loads((tmp_path / "ae64.json").read_text())
    del card["latent_grid"]
    (bare / "ae64.json").write_text(json.dumps(card))
    with pytest.raises(SystemExit, match="refit-quantizer"):
        main([*argv, "--weights-dir", str(bare)])
    with pytest.raises(SystemExit, match="no codec weights"):
        main(["codec-eval", "--weights-dir", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="drop --weights-dir"):
        main(["codec-eval", "--link", "--weights-dir", str(tmp_path)])


def test_codec_eval_rejects_bad_bits_and_unknown_codecs() -> None:
    with pytest.raises(SystemExit, match="--bits"):
        main(["codec-eval", "--bits", "x", "--no-h264"])
    with pytest.raises(SystemExit, match="unknown codec"):
        main(["codec-eval", "--codecs", "nope", "--no-h264"])
    with pytest.raises(SystemExit, match="--range"):
        main(["codec-eval", "--range", "paper,log", "--no-h264"])
    with pytest.raises(SystemExit, match="--link-pairs"):
        main(["codec-eval", "--no-h264", "--link", "--link-pairs", "8:paper,x:per_dim"])


def test_link_comparison_calibrates_each_variant_to_one_target_per_group(codec) -> None:
    from experiments.table import TABLE_GROUPS
    from shared.config import build_config

    base = build_config({"memory": "hopfield"}, read_env=False)
    pairs = [(4, "paper"), (4, "per_dim"), (8, "paper"), (8, "per_dim")]
    variants = link_variants([codec], base, pairs)
    assert [v.label for v in variants] == [
        "ae64 b=4 R=1", "ae64 b=4 per-dim", "ae64 b=8 R=1", "ae64 b=8 per-dim",
    ]  # fmt: skip
    assert variants[1].config.latent_grid == "per_dim" and variants[1].config.bits_per_value == 4
    rows = link_comparison([variants[0], variants[0], variants[3]], n_frames=6, seed=0)
    assert [r.group for r in rows] == [g for g in TABLE_GROUPS for _ in range(3)]
    for a, b, c in zip(rows[::3], rows[1::3], rows[2::3], strict=True):
        assert a == b  # the same variant twice: the same calibration
        assert a.target_psnr == c.target_psnr  # one target per group for every variant
        for r in (a, c):
            assert r.psnr >= r.target_psnr and 0 <= r.hit_rate <= 1 and r.bits_per_frame > 0
