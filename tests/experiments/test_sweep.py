"""The sweep (experiments.sweep), in-process: grids, tidy CSV, resume, figures, matched study."""

import math

import pytest

from experiments.sweep import (
    PRESETS,
    SweepError,
    SweepSpec,
    expand,
    parse_grid_args,
    run_sweep,
    spec_from_toml,
)
from experiments.sweep_rows import read_rows
from shared.config import build_config


def test_resume_after_interruption_runs_only_the_missing_keys(tmp_path):
    base = build_config({}, read_env=False)
    grid = parse_grid_args(["scenario=static", "memory=vq", "threshold=0.9,0.95,0.99"])
    spec = SweepSpec(grids=[("g", grid)], frames=8)
    first = run_sweep(spec, base, tmp_path, workers=1, progress=False, figures=False)
    assert first.added["runs"] == 3
    # Simulate an interruption: drop the last row, keep the header and the others.
    lines = (tmp_path / "runs.csv").read_text().splitlines(keepends=True)
    (tmp_path / "runs.csv").write_text("".join(lines[:-1]))
    again = run_sweep(spec, base, tmp_path, workers=1, progress=False, figures=False)
    assert again.done_before == 2 and again.added["runs"] == 1
    rows = read_rows(tmp_path / "runs.csv")
    assert sorted(r["threshold"] for r in rows) == [0.9, 0.95, 0.99]


def test_matched_study_rows_and_timeline(tmp_path):
    base = build_config({}, read_env=False)
    spec = spec_from_toml("frames = 8\n[matched]\nbeta = [20]\ncodecs = false\n")
    outcome = run_sweep(spec, base, tmp_path, workers=1, progress=False, figures=False)
    rows = read_rows(tmp_path / "matched.csv")
    # groups x (symmetric 2 + four one-sided rules x 2) rows
    assert outcome.added["matched"] == len(rows) == 4 * 10
    for group in ("stable", "gradual_drift", "moderate", "scene_change"):
        cell = {(r["rule"], r["method"]): r for r in rows if r["group"] == group}
        sym_h, sym_v = cell[("symmetric", "hopfield")], cell[("symmetric", "vq")]
        # The symmetric rule: both reach the common target.
        assert sym_h["psnr"] >= sym_h["target_psnr"] and sym_v["psnr"] >= sym_v["target_psnr"]
        # One-sided: the fixed method keeps its symmetric τ; the other lands within 0.2 dB
        # of it (or as bisection gets).
        fixed = cell[("one_sided_vq_fixed", "vq")]
        moved = cell[("one_sided_vq_fixed", "hopfield")]
        assert fixed["role"] == "fixed" and fixed["threshold"] == sym_v["threshold"]
        assert moved["role"] == "bisected" and moved["reference_psnr"] == sym_v["psnr"]
        assert moved["delta_psnr"] == pytest.approx(moved["psnr"] - sym_v["psnr"])
        # Slack spent: the lowest-rate τ at most 0.2 dB below the fixed method's PSNR.
        slack = cell[("one_sided_hopfield_fixed_slack", "vq")]
        assert slack["role"] == "slack" and slack["psnr"] >= sym_h["psnr"] - 0.2 - 1e-9
    timeline = read_rows(tmp_path / "timeline.csv")
    assert {r["scenario"] for r in timeline} == {"illum_change", "cam_shake"}
    assert len(timeline) == 2 * 2 * 8  # clips x methods x frames


def test_grid_arguments_aliases_and_scenario_groups():
    grid = parse_grid_args(["tau=0.9,0.95", "M=16,64", "K=0,32", "scenario=gradual_drift,static"])
    assert grid == {
        "threshold": (0.9, 0.95),
        "capacity": (16, 64),
        "cue_bits": (0, 32),
        "scenario": ("illum_change", "cam_shake", "static"),
    }
    assert len(parse_grid_args(["scenario=all"])["scenario"]) == 8
    for bad, message in (
        (["nope=1"], "unknown sweep parameter"),
        (["memory=lstm"], "memory"),
        (["capacity=1.5"], "capacity"),
        (["threshold"], "NAME=V1"),
        (["scenario=no_such_clip"], "no_such_clip"),
    ):
        with pytest.raises(SweepError, match=message):
            parse_grid_args(bad)


def test_toml_spec_and_invalid_combinations_are_skipped():
    spec = spec_from_toml(
        """
frames = 10
[fixed]
capacity = 32
[[grid]]
name = "a"
memory = ["hopfield", "vq"]
transmission = ["index", "soft"]
[[grid]]
name = "b"
rho = [0.0, 0.1]
[matched]
beta = [5, 20]
"""
    )
    assert [n for n, _ in spec.grids] == ["a", "b"] and spec.n_frames == 10
    assert spec.matched.betas == (5.0, 20.0)
    base = build_config({}, read_env=False)
    tasks, skipped = expand(spec, base, "digest")
    runs = [t for t in tasks if t.kind == "run"]
    assert len(runs) == 3 + 2 - 1  # vq+soft is skipped; rho=0 of grid b equals a's hopfield-index
    assert len(skipped) == 1 and "soft" in skipped[0]
    assert all(t.params["config"]["capacity"] == 32 for t in runs)
    corrupted = [t for t in runs if t.params["rho"] > 0]
    assert corrupted[0].params["corrupt_at"] == 5  # mid-clip
    assert sum(t.kind == "matched" for t in tasks) == 2 * 4
    assert sum(t.kind == "codecs" for t in tasks) == 8
    # Keys are stable, and change with anything that changes a run.
    again, _ = expand(spec, base, "digest")
    assert [t.key for t in again] == [t.key for t in tasks]
    other_seed, _ = expand(spec, base.replace(seed=1), "digest")
    assert not {t.key for t in other_seed} & {t.key for t in tasks}
    with pytest.raises(SweepError, match="unknown keys"):
        spec_from_toml("grids = 1")


def test_rows_do_not_depend_on_the_number_of_workers(tmp_path):
    base = build_config({}, read_env=False)
    grid = parse_grid_args(["scenario=static,low_motion", "memory=hopfield,vq", "tau=0.97"])
    spec = SweepSpec(grids=[("g", grid)], frames=8)
    for workers in (1, 2):
        run_sweep(
            spec, base, tmp_path / str(workers), workers=workers, progress=False, figures=False
        )

    def rows(folder):
        return {
            r["key"]: {k: v for k, v in r.items() if k != "seconds"}
            for r in read_rows(tmp_path / folder / "runs.csv")
        }

    assert rows("1") == rows("2") and len(rows("1")) == 4


SNR_SPEC = """
frames = 30
[[grid]]
name = "snr"
scenario = ["low_motion"]
memory = ["vq", "hopfield"]
threshold = ["matched"]
fading = ["awgn", "rayleigh"]
seed = [0, 1]
ebn0_db = [3, 30]
"""


def test_snr_grid_rows_are_snr_point_at_the_matched_tau(tmp_path, codec):
    from experiments.snr import POINT_COLUMNS, snr_point
    from experiments.table import calibrate, prepare_clips, run_group
    from shared.codec.cache import DecodeCache

    base = build_config({}, read_env=False)
    spec = spec_from_toml(SNR_SPEC)
    outcome = run_sweep(spec, base, tmp_path, workers=1, progress=False, figures=False)
    rows = read_rows(tmp_path / "snr.csv")
    assert outcome.added == {"runs": 0, "matched": 0, "timeline": 0, "codecs": 0, "snr": 16}
    assert len({r["key"] for r in rows}) == 16 and not (tmp_path / "runs.csv").exists()
    decoder = DecodeCache(codec)
    for r in rows:
        # The same point computed by hand: calibrate τ on the clean channel, then snr_point.
        clip = prepare_clips(["low_motion"], codec, 30, r["seed"])[0]
        config = base.replace(memory=r["memory"], seed=r["seed"])
        ceiling = run_group([clip], config.replace(memory="vq", threshold=1.0), decoder, False)
        assert r["target_psnr"] == ceiling.summary.psnr - 0.5
        calibrated, _ = calibrate([clip], config, r["target_psnr"], decoder)
        assert r["threshold_rule"] == "matched" and r["threshold"] == calibrated.threshold
        assert r["clean_psnr"] == calibrated.summary.psnr >= r["target_psnr"]
        phy = {"snr_db": r["ebn0_db"], "channel": r["channel"]}
        point = snr_point(
            clip.frames, clip.latents, config.replace(threshold=r["threshold"]), phy,
            DecodeCache(codec), seed=r["seed"],
        )  # fmt: skip
        assert {k: r[k] for k in POINT_COLUMNS} == point
        assert (r["modulation"], r["fec"], r["n_frames"]) == ("qpsk", "none", 30)
        # C in bits/s/Hz by hand: κ = 512 latent bits / ⌈840 NEW frame bits / 2⌉ QPSK symbols.
        eta = r["hit_rate"] * 512 / r["bits_per_frame"]
        assert r["kappa_bps_per_hz"] == 512 / 420
        assert r["reasoning_capacity_bps_per_hz"] == pytest.approx(512 / 420 * math.log2(1 + eta))
        if r["ebn0_db"] == 30:  # an error-free channel: the network path equals the simulator
            assert r["ber"] == 0 and r["refreshes"] == r["concealed"] == 0 and r["digests_agree"]
            assert (r["psnr"], r["bits_per_frame"]) == (r["clean_psnr"], r["clean_bits_per_frame"])
    # Seeds are independent repetitions: other clip, other channel draws.
    for memory in ("vq", "hopfield"):
        for fading in ("awgn", "rayleigh"):
            s0, s1 = (
                next(r for r in rows if (r["memory"], r["channel"], r["ebn0_db"], r["seed"])
                     == (memory, fading, 3.0, seed))
                for seed in (0, 1)
            )  # fmt: skip
            assert s0["ber"] != s1["ber"] and s0["target_psnr"] != s1["target_psnr"]
    # Resumable like every sweep.
    again = run_sweep(spec, base, tmp_path, workers=1, progress=False, figures=False)
    assert again.done_before == 16 and again.added["snr"] == 0


def test_snr_axes_parse_and_misuse_is_named():
    grid = parse_grid_args(
        [
            "ebn0_db=0,2.5",
            "fading=awgn,rayleigh",
            "modulation=16qam",
            "fec=hamming74",
            "tau=matched",
        ]
    )
    assert grid == {
        "ebn0_db": (0.0, 2.5),
        "channel": ("awgn", "rayleigh"),
        "modulation": ("16qam",),
        "fec": ("hamming74",),
        "threshold": ("matched",),
    }
    base = build_config({}, read_env=False)
    tasks, _ = expand(SweepSpec(grids=[("g", grid)], frames=8), base, "digest")
    assert len(tasks) == 4 and {t.kind for t in tasks} == {"snr"}
    assert {t.params["phy"]["channel"] for t in tasks} == {"awgn", "rayleigh"}
    assert all(
        t.params["phy"]["fec"] == "hamming74" and t.params["psnr_drop"] == 0.5 for t in tasks
    )
    fixed, _ = expand(SweepSpec(grids=[("g", parse_grid_args(["ebn0_db=4"]))]), base, "d")
    assert fixed[0].params["psnr_drop"] is None  # the config's τ
    for bad, message in (
        (["modulation=8psk"], "modulation"),
        (["fading=rician"], "channel"),
        (["tau=best"], "threshold"),
    ):
        with pytest.raises(SweepError, match=message):
            parse_grid_args(bad)
    for items, message in (
        (["modulation=qpsk"], "give ebn0_db"),
        (["tau=matched"], "give ebn0_db"),
        (["ebn0_db=4", "rho=0.1"], "rho and sigma"),
        (["ebn0_db=4", "psnr_drop=1"], "psnr_drop only applies"),
        (["ebn0_db=99"], "invalid channel"),
    ):
        with pytest.raises(SweepError, match=message):
            expand(SweepSpec(grids=[("g", parse_grid_args(items))]), base, "digest")


def test_snr_preset_covers_every_memory_kind_both_fadings_and_several_seeds():
    tasks, skipped = expand(spec_from_toml(PRESETS["snr"]), build_config({}, read_env=False), "d")
    assert not skipped and {t.kind for t in tasks} == {"snr"}
    configs = [t.params["config"] for t in tasks]
    kinds = {(c["memory"], c["hopfield_steps"], c["transmission"]) for c in configs}
    assert kinds == {("vq", 1, "index"), ("hopfield", 1, "index"), ("adaptive", 1, "index"),
                     ("hopfield", 1, "soft"), ("hopfield", 10, "index")}  # fmt: skip
    assert {t.params["phy"]["channel"] for t in tasks} == {"awgn", "rayleigh"}
    assert len({c["seed"] for c in configs}) >= 5
    assert all(t.params["psnr_drop"] == 0.5 for t in tasks)  # every method at its matched τ


class _FakeRay:
    """Just enough of Ray's API to see how the sweep calls it (tasks run here, at once)."""

    def __init__(self) -> None:
        import types

        self.inits: list[dict] = []
        self.initialized = False
        self.shutdowns = 0
        self.exceptions = types.SimpleNamespace(RayTaskError=RuntimeError)

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        self.inits.append(kwargs)
        self.initialized = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.initialized = False

    def remote(self, **resources):
        def wrap(fn):
            import types

            return types.SimpleNamespace(remote=lambda *args: fn(*args))

        return wrap

    def wait(self, pending, num_returns):
        return pending[:num_returns], pending[num_returns:]

    def get(self, ref):
        return ref

    def cancel(self, ref) -> None:
        pass


@pytest.mark.parametrize(
    "address, env, joins",
    [
        ("10.0.0.1:6379", None, "10.0.0.1:6379"),
        (None, "127.0.0.1:7000", "127.0.0.1:7000"),  # RAY_ADDRESS, as Ray itself reads it
        (None, None, None),
    ],
)
def test_ray_joins_a_cluster_without_resource_arguments(tmp_path, monkeypatch, address, env, joins):
    import sys

    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr("experiments.sweep._check_reachable", lambda address: None)
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    base = build_config({}, read_env=False)
    spec = SweepSpec(grids=[("g", parse_grid_args(["scenario=static", "memory=vq"]))], frames=4)
    outcome = run_sweep(
        spec, base, tmp_path, workers=2, use_ray=True, ray_address=address, progress=False,
        figures=False,
    )  # fmt: skip
    assert outcome.added["runs"] == 1
    (kwargs,) = fake.inits
    if joins:
        assert kwargs["address"] == joins
        assert "num_cpus" not in kwargs and "num_gpus" not in kwargs
    else:
        assert kwargs["num_cpus"] == 1 and "address" not in kwargs
    assert fake.shutdowns == 1  # a Ray this sweep started or joined is left again


def test_ray_results_equal_the_local_run(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", _FakeRay())
    monkeypatch.setattr("experiments.sweep._check_reachable", lambda address: None)
    base = build_config({}, read_env=False)
    grid = parse_grid_args(["scenario=static", "memory=vq,hopfield", "threshold=0.9,0.99"])
    spec = SweepSpec(grids=[("g", grid)], frames=6)
    kw = dict(progress=False, figures=False)
    run_sweep(spec, base, tmp_path / "local", workers=1, **kw)
    run_sweep(spec, base, tmp_path / "ray", use_ray=True, ray_address="fake:1", **kw)

    def rows(folder):
        found = read_rows(folder / "runs.csv")
        return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in found), key=str)

    assert rows(tmp_path / "local") == rows(tmp_path / "ray")


def test_a_ray_address_where_nothing_listens_fails_at_once_naming_the_flag():
    import socket

    from experiments.sweep import _check_reachable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        _check_reachable(f"127.0.0.1:{port}")  # something answers: Ray's turn
    with pytest.raises(SweepError, match=rf"--ray-address 127.0.0.1:{port}: no Ray cluster"):
        _check_reachable(f"127.0.0.1:{port}")
    _check_reachable("auto")  # not HOST:PORT: left to Ray
