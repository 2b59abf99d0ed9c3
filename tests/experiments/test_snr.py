"""The link against channel SNR, through the real cores and the phy impairment."""

import pytest

from experiments.snr import (
    aggregate,
    breakdown,
    mean_ci,
    paired_difference,
    plot_snr,
    snr_sweep,
)
from shared.config import build_config


def test_errors_fall_and_memories_agree_as_snr_rises(codec, tmp_path):
    config = build_config(read_env=False)
    rows = snr_sweep(codec, config, n_frames=40, ebn0_db=(0, 14), memories=("vq",),
                     channels=("awgn",))  # fmt: skip
    low, high = rows
    assert (low["ebn0_db"], high["ebn0_db"]) == (0, 14)
    # At 14 dB QPSK over AWGN (BER ~1e-13) nothing breaks; at 0 dB (BER 0.08) almost everything.
    assert high["refreshes"] == 0 and high["concealed"] == 0 and high["digests_agree"]
    assert high["ber"] == 0 and low["ber"] == pytest.approx(0.0786, abs=0.02)
    assert low["refreshes"] > 5 and low["concealed"] > high["concealed"]
    assert low["bits_per_frame"] > high["bits_per_frame"]  # refreshes cost bits
    assert low["symbols_per_frame"] > high["symbols_per_frame"]  # and airtime
    assert high["psnr"] > low["psnr"] + 5
    assert high["reasoning_capacity_bps_per_hz"] > low["reasoning_capacity_bps_per_hz"]
    paths = plot_snr(rows, str(tmp_path / "snr"))
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in paths)


def test_seed_summaries_are_means_with_student_t_intervals():
    mean, half, n = mean_ci([1.0, 2.0, 3.0, 6.0])
    # mean 3, sample sd √(14/3), t(0.975, 3) = 3.182446
    assert (mean, n) == (3.0, 4) and half == pytest.approx(3.182446 * (14 / 3) ** 0.5 / 2)
    assert mean_ci([5.0])[0] == 5.0 and mean_ci([5.0])[1] != mean_ci([5.0])[1]  # NaN: one seed

    def row(memory, seed, psnr, steps=1):
        return {"scenario": "s", "channel": "awgn", "memory": memory, "hopfield_steps": steps,
                "ebn0_db": 4.0, "seed": seed, "psnr": psnr}  # fmt: skip

    rows = [row("vq", 0, 10.0), row("vq", 1, 12.0), row("hopfield", 0, 11.0),
            row("hopfield", 1, 14.0), row("hopfield", 0, 30.0, steps=10)]  # fmt: skip
    points = {p["method"]: p for p in aggregate(rows, ["psnr"])}
    assert points["vq"]["psnr"] == 11.0 and points["hopfield"]["psnr"] == 12.5
    assert points["hopfield+HEN10"]["psnr"] == 30.0 and points["hopfield+HEN10"]["seeds"] == 1
    (diff,) = paired_difference(rows, "psnr", "hopfield", "vq")
    assert (diff["mean"], diff["seeds"]) == (1.5, 2)  # seed by seed: 11 − 10 and 14 − 12


def test_breakdown_tells_a_cliff_from_a_ramp():
    cliff = (8, 8, 8, 20, 20)  # 10 % and 90 % of the way from 8 to 20 dB: 9.2 and 18.8 dB
    ramp = (8, 11, 14, 17, 20)
    rows = [{"memory": memory, "ebn0_db": x, "seed": seed, "psnr": y + seed}
            for memory, curve in (("vq", cliff), ("hopfield", ramp))
            for seed in (0, 1) for x, y in enumerate(curve)]  # fmt: skip
    shape = {b["method"]: b for b in breakdown(rows)}
    assert (shape["vq"]["leaves"], shape["vq"]["reaches"], shape["vq"]["width"]) == (3, 3, 0)
    assert (shape["hopfield"]["leaves"], shape["hopfield"]["reaches"]) == (1, 4)
    assert shape["hopfield"]["width"] == 3 and shape["hopfield"]["seeds"] == 2
