"""`hoplink rd` on a tiny clip: runs in seconds and writes the CSVs and the plot."""

import csv
import json

from experiments.cli import main


def test_reduced_rd_writes_csv_plot_and_tables(tmp_path, capsys):
    out = tmp_path / "rd"
    code = main(
        [
            "rd",
            "--scenario",
            "cam_shake",
            "--frames",
            "12",
            "--methods",
            "vq,rdo-entropy-delta",
            "--points",
            "3",
            "--crfs",
            "51,40",
            "--no-ssim",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader((out / "rd_points.csv").open()))
    assert {r["method"] for r in rows} == {"vq", "rdo-entropy-delta"}
    assert all(r["digests_agree"] == "True" and r["silent_wrong"] == "0" for r in rows)
    assert all(float(r["link_bits_per_frame"]) > float(r["semantic_bits_per_frame"]) for r in rows)
    assert all(float(r["semantic_bits_per_frame"]) > 0 and float(r["psnr"]) > 5 for r in rows)
    assert {r["knob"] for r in rows} == {"threshold", "rdo_lambda"}
    bd = list(csv.DictReader((out / "bd_rate.csv").open()))
    assert {(r["method"], r["anchor"]) for r in bd} >= {
        ("rdo-entropy-delta", "vq"),
        ("rdo-entropy-delta", "h264"),
        ("vq", "h264"),
    }
    assert len(list(csv.DictReader((out / "h264_points.csv").open()))) == 2
    for name in ("rd.png", "rd.svg"):
        assert (out / name).stat().st_size > 1000
    summary = json.loads((out / "rd.json").read_text())
    assert summary["interpolation"].startswith("pchip") and summary["seconds"]["total"] > 0
    assert "| method |" in capsys.readouterr().out


def test_matched_point_reads_each_method_and_vq_at_one_psnr_off_their_hulls(tmp_path, capsys):
    from experiments.table import Curve

    out = tmp_path / "rd"
    argv = ["rd", "--sources", "static,cam_shake", "--frames", "16", "--points", "4"]
    argv += ["--methods", "vq,hopfield,entropy,entropy-cue", "--no-h264", "--no-ssim"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| method | cue |" in text and "silent wrong, σ = 0.1" in text
    assert "source mean vs vq" in text
    points = list(csv.DictReader((out / "rd_points.csv").open()))
    matched = list(csv.DictReader((out / "matched.csv").open()))
    assert {r["group"] for r in matched} == {"static", "cam_shake"}

    def curve(group, method):
        pts = [p for p in points if p["group"] == group and p["method"] == method]
        return Curve.of(
            [float(p["link_bits_per_frame"]) for p in pts], [float(p["psnr"]) for p in pts]
        )

    cues = {"vq": "every_reference", "hopfield": "every_reference", "entropy": "on_change"}
    for r in matched:
        at = float(r["psnr"])
        assert at >= float(r["target_psnr"])
        bits = curve(r["group"], r["method"]).at(at)[0]
        vq_bits = curve(r["group"], "vq").at(at)[0]
        assert float(r["link_bits_per_frame"]) == bits  # the method at that PSNR ...
        assert float(r["vq_bits_per_frame"]) == vq_bits  # ... and vq at the very same PSNR
        assert float(r["vs_vq"]) == bits / vq_bits
        assert r["cue"] == cues.get(r["method"], "every_reference")
        assert int(r["silent_wrong"]) >= 0 and len(r["corrupt_frames"]) > 2
    # Without a cue on repeated references, the noised Rx memory is shown unverified.
    wrong = {(r["group"], r["method"]): int(r["silent_wrong"]) for r in matched}
    for group in ("static", "cam_shake"):
        assert wrong[group, "entropy-cue"] == wrong[group, "vq"] == 0
    assert sum(wrong[g, "entropy"] for g in ("static", "cam_shake")) > 0


def test_unknown_method_is_a_clear_error(tmp_path, capsys):
    code = main(["rd", "--scenario", "static", "--methods", "vq,nope", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown method" in capsys.readouterr().err
