"""``hoplink sweep``: parameter sweeps over the simulator, in parallel, resumable, into tidy CSVs.

A sweep is a list of *grids* (each the cartesian product of its parameter values) plus an optional
*matched-quality study*. Parameters are the :class:`~shared.config.LinkConfig` fields (threshold τ,
capacity M, beta β, transmission, cue_bits K, …) and the run's own: ``scenario`` (a scenario, a
protocol name such as ``gradual_drift`` for its scenarios, ``all``, or a video file), ``rho`` and
``sigma`` (one-shot Rx memory corruption at mid-clip, :class:`experiments.link.Corruption`).

SNR grids. A grid (or ``[fixed]``) that names ``ebn0_db`` runs each point through the real Tx,
channel and Rx cores with the ``phy`` impairment on both directions
(:func:`experiments.snr.snr_point`, the same code as ``hoplink snr``); its other channel axes are
``modulation`` (bpsk, qpsk, 16qam, 64qam), ``channel`` (awgn, rayleigh; alias ``fading``) and
``fec`` (none, repetition3, hamming74), with the phy's defaults (qpsk, awgn, none). The seed
(``seed``, a LinkConfig field) is a whole repetition: the clip's random path and noise, the cue
hyperplanes and the channel's draws. ``threshold = "matched"`` puts every method at its matched
τ (DESIGN.md, "Comparing methods at matched quality"): per memory configuration, clip and seed,
the lowest-rate τ whose clean-channel PSNR reaches the clip's all-NEW PSNR minus ``psnr_drop``
(default 0.5 dB), found by :func:`experiments.table.calibrate` before the channel is applied.

Everything the sweep measures goes to ``--out DIR``:

- ``runs.csv`` — one row per grid run: every parameter, every LinkSummary field (the summary's
  reasoning capacity C is the column ``reasoning_capacity``, ``capacity`` stays the memory size M),
  outcome counts, ``digests_agree``, ``silent_wrong``, the Tx/Rx counters, seconds;
- ``snr.csv`` — one row per SNR-grid run: the channel axes, the τ rule (``fixed`` or
  ``matched``, with the target, the clean-channel PSNR and bits at the calibrated τ), every
  LinkConfig field, and :data:`experiments.snr.POINT_COLUMNS` (bits/frame with refreshes, PSNR,
  lost/concealed/recovered frames, measured BER, symbols per frame, η, C, κ and C in bits/s/Hz);
- ``matched.csv`` — the matched-quality study: per β and group, hopfield and vq calibrated by the
  symmetric rule (:func:`experiments.table.calibrate`) and by the paper's one-sided protocol in
  both directions (:func:`experiments.table.bisect_into_window`);
- ``timeline.csv`` — per-frame bits of the gradual-drift clips at the symmetric τ (Fig. 1b);
- ``codecs.csv`` — H.264 and JPEG operating points of every clip of the study
  (:mod:`experiments.realcodecs`);
- ``sweep.json`` — the spec and a log of every invocation (command, seconds, runs added);
- ``figures/`` — Fig. 1(a), 1(b), 2, 3 as PNG and SVG (:mod:`experiments.figures`).

Each run has a key (sha256 of all its parameters and the codec's weights digest). Rows are
appended as runs finish; a second invocation skips every key already present, so an interrupted
sweep resumes where it stopped and re-running a finished one adds nothing. Runs are deterministic
in the seed, whatever the number of workers.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import platform
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from channel.impairments.phy import Attributes as PhyAttributes
from experiments.figures import make_figures
from experiments.link import Corruption, simulate
from experiments.realcodecs import (
    DEFAULT_CRFS,
    DEFAULT_JPEG_QUALITIES,
    X264_EXTRA_PARAMS,
    h264_points,
    jpeg_points,
)
from experiments.snr import POINT_COLUMNS, snr_point
from experiments.sweep_rows import MATCHED_GROUPS, RULES, read_rows
from experiments.table import (
    MATCH_TOLERANCE_DB,
    bisect_into_window,
    calibrate,
    prepare_clips,
    run_group,
)
from shared.accounting import LinkSummary, Outcome
from shared.codec.cache import DecodeCache
from shared.codec.models import CODECS, codecs_dir, load_codec
from shared.config import ConfigError, LinkConfig, build_config
from shared.scenarios import DEFAULT_FRAMES, PROTOCOLS, SCENARIOS, load_clip, protocol_of

__all__ = [
    "PRESETS",
    "SweepError",
    "SweepSpec",
    "Task",
    "parse_grid_args",
    "read_rows",
    "run_sweep",
    "spec_from_toml",
]


class SweepError(ValueError):
    """A sweep specification or output folder that cannot be used; the message says why."""


# Parameters of a run that are not LinkConfig fields; SNR_PARAMS make a grid an SNR grid.
PHY_AXES = ("modulation", "channel", "fec")  # attributes of the phy impairment, as named there
SNR_PARAMS = ("ebn0_db", *PHY_AXES, "psnr_drop")
RUN_PARAMS = ("scenario", "rho", "sigma", *SNR_PARAMS)
MATCHED_TAU = "matched"  # threshold value: each method at its matched τ (SNR grids)
DEFAULT_PSNR_DROP = 0.5
ALIASES = {
    "tau": "threshold",
    "τ": "threshold",
    "M": "capacity",
    "memory_size": "capacity",
    "K": "cue_bits",
    "mode": "transmission",
    "β": "beta",
    "ρ": "rho",
    "σ": "sigma",
    "fading": "channel",
}
CONFIG_FIELDS = tuple(LinkConfig.model_fields)
TX_COUNTERS = ("metastable", "refreshes_sent", "refreshes_refused")
RX_COUNTERS = (
    "cue_failures",
    "missing_refs",
    "lookups_ok",
    "lookups_failed",
    "refresh_requests",
    "digest_mismatches",
    "ids_desynced",
    "prototypes_noised",
)


def _summary_columns() -> tuple[str, ...]:
    """Every LinkSummary field as a column: outcomes spread to ``outcome_<name>``, and the
    summary's reasoning capacity C renamed ``reasoning_capacity`` (``capacity`` is M)."""
    columns: list[str] = []
    for f in dataclasses.fields(LinkSummary):
        if f.name == "outcomes":
            columns += [f"outcome_{o.value}" for o in Outcome]
        elif f.name == "capacity":
            columns.append("reasoning_capacity")
        else:
            columns.append(f.name)
    return tuple(columns)


SUMMARY_COLUMNS = _summary_columns()
RUN_COLUMNS = (
    "key",
    "grid",
    "scenario",
    "protocol",
    "n_frames",
    "rho",
    "sigma",
    "corrupt_at",
    *CONFIG_FIELDS,
    "codec_digest",
    *SUMMARY_COLUMNS,
    "digests_agree",
    "silent_wrong",
    *(f"tx_{c}" for c in TX_COUNTERS),
    *(f"rx_{c}" for c in RX_COUNTERS),
    "seconds",
)
SNR_COLUMNS = (
    "key",
    "grid",
    "scenario",
    "protocol",
    "n_frames",
    "ebn0_db",
    "modulation",
    "channel",
    "fec",
    "threshold_rule",  # fixed (the config's τ) or matched (calibrated on the clean channel)
    "psnr_drop",
    "target_psnr",  # matched: the clip's all-NEW PSNR minus psnr_drop
    "clean_psnr",  # matched: PSNR and bits/frame at the calibrated τ over a clean channel
    "clean_bits_per_frame",
    *CONFIG_FIELDS,
    "codec_digest",
    *POINT_COLUMNS,
    "seconds",
)
MATCHED_COLUMNS = (
    "key",
    "beta",
    "group",
    "rule",
    "method",
    "role",  # calibrated (symmetric); fixed, bisected or slack (one-sided)
    "threshold",
    "target_psnr",
    "ceiling_psnr",
    "psnr_drop",
    "reference_psnr",  # one-sided: the fixed method's PSNR
    "delta_psnr",  # one-sided: this method's PSNR minus the reference
    "n_frames",
    "seed",
    "capacity",
    "cue_bits",
    "codec_digest",
    "bits_per_frame",
    "hit_rate",
    "news",
    "psnr",
    "ssim",
    "compression_ratio",
    "efficiency",
    "reasoning_capacity",
    "wire_bytes_per_frame",
    "evaluated",
    "seconds",
)
TIMELINE_COLUMNS = (
    "key",
    "beta",
    "capacity",
    "group",
    "scenario",
    "method",
    "threshold",
    "seq",
    "hit",
    "bits",
    "psnr",
)
CODEC_COLUMNS = (
    "key",
    "scenario",
    "protocol",
    "n_frames",
    "seed",
    "codec",
    "knob",
    "bits_per_frame",
    "psnr",
    "ssim",
    "seconds",
)
CSV_FILES = {
    "runs": ("runs.csv", RUN_COLUMNS),
    "matched": ("matched.csv", MATCHED_COLUMNS),
    "timeline": ("timeline.csv", TIMELINE_COLUMNS),
    "codecs": ("codecs.csv", CODEC_COLUMNS),
    "snr": ("snr.csv", SNR_COLUMNS),
}


# --- the specification ----------------------------------------------------------------------------


@dataclass
class MatchedSpec:
    """The matched-quality study: per β and group, both comparison rules and the real codecs."""

    betas: tuple[float, ...] = ()  # empty: the base config's β
    capacities: tuple[int, ...] = ()  # memory sizes M; empty: the base config's
    psnr_drop: float = DEFAULT_PSNR_DROP  # target = all-NEW PSNR of the group minus this
    codecs: bool = True


@dataclass
class SweepSpec:
    grids: list[tuple[str, dict[str, tuple[Any, ...]]]] = field(default_factory=list)
    fixed: dict[str, Any] = field(default_factory=dict)  # applied to every run (over the base)
    frames: int | None = None  # frames per clip (None: DEFAULT_FRAMES)
    matched: MatchedSpec | None = None

    @property
    def n_frames(self) -> int:
        return DEFAULT_FRAMES if self.frames is None else self.frames

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.n_frames,
            "fixed": self.fixed,
            "grid": [{"name": n, **{k: list(v) for k, v in g.items()}} for n, g in self.grids],
            "matched": None if self.matched is None else vars(self.matched),
        }


def _canonical(name: str) -> str:
    name = ALIASES.get(name, name).replace("-", "_")
    if name not in CONFIG_FIELDS and name not in RUN_PARAMS:
        valid = ", ".join((*RUN_PARAMS, *CONFIG_FIELDS))
        raise SweepError(f"unknown sweep parameter {name!r}; valid: {valid}")
    return name


def _coerce(name: str, value: Any) -> Any:
    """A value from TOML or the command line, as the parameter's type."""
    if name == "scenario":
        return str(value)
    if name == "threshold" and str(value) == MATCHED_TAU:
        return MATCHED_TAU
    if name in ("rho", "sigma", "ebn0_db", "psnr_drop"):
        kind: Any = float
    elif name in SNR_PARAMS:
        kind = PhyAttributes.model_fields[name].annotation
    else:
        kind = LinkConfig.model_fields[name].annotation
    try:
        if get_origin(kind) is Literal:
            if str(value) not in get_args(kind):
                raise ValueError(f"choose from {', '.join(get_args(kind))}")
            return str(value)
        if kind is bool:
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError("expected true or false")
            return text in ("true", "1", "yes", "on")
        if kind is int:
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError("not an integer")
            return int(as_float)
        if kind is float:
            return float(value)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SweepError(f"sweep parameter {name}: bad value {value!r} ({exc})") from None


def _values(name: str, raw: Any) -> tuple[Any, ...]:
    items = raw if isinstance(raw, list | tuple) else [raw]
    if not items:
        raise SweepError(f"sweep parameter {name} has no values")
    out: list[Any] = []
    for item in items:
        if name == "scenario":
            out += _expand_scenario(str(item))
        else:
            out.append(_coerce(name, item))
    return tuple(dict.fromkeys(out))  # keep order, drop repeats


def _expand_scenario(value: str) -> list[str]:
    if value == "all":
        return list(SCENARIOS)
    if value in PROTOCOLS:
        return list(PROTOCOLS[value])
    if value in SCENARIOS or Path(value).is_file():
        return [value]
    raise SweepError(
        f"unknown scenario {value!r}: use a scenario ({', '.join(SCENARIOS)}), a protocol "
        f"({', '.join(PROTOCOLS)}), 'all', or a video file"
    )


def parse_grid_args(items: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``["threshold=0.9,0.95", "memory=hopfield,vq"]`` -> one grid."""
    grid: dict[str, tuple[Any, ...]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise SweepError(f"--grid {item!r}: expected NAME=V1,V2,...")
        key = _canonical(name.strip())
        grid[key] = _values(key, [v.strip() for v in values.split(",") if v.strip()])
    return grid


def _parse_grid_table(table: dict[str, Any], default_name: str) -> tuple[str, dict]:
    table = dict(table)
    name = str(table.pop("name", default_name))
    grid = {}
    for key, raw in table.items():
        canonical = _canonical(key)
        grid[canonical] = _values(canonical, raw)
    return name, grid


def spec_from_toml(text: str) -> SweepSpec:
    """Parse a sweep file: ``frames``, ``[fixed]``, ``[grid]`` or ``[[grid]]``, ``[matched]``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"sweep file is not valid TOML: {exc}") from None
    known = {"frames", "fixed", "grid", "matched"}
    if unknown := set(data) - known:
        raise SweepError(f"unknown keys in sweep file: {sorted(unknown)}; known: {sorted(known)}")
    grids_raw = data.get("grid", [])
    grids_raw = [grids_raw] if isinstance(grids_raw, dict) else list(grids_raw)
    grids = [_parse_grid_table(g, f"grid{i + 1}") for i, g in enumerate(grids_raw)]
    fixed = {}
    for key, value in data.get("fixed", {}).items():
        canonical = _canonical(key)
        fixed[canonical] = _coerce(canonical, value)
    matched = None
    if "matched" in data:
        m = dict(data["matched"])
        betas = m.pop("beta", m.pop("betas", []))
        betas = betas if isinstance(betas, list) else [betas]
        capacities = m.pop("capacity", m.pop("capacities", []))
        capacities = capacities if isinstance(capacities, list) else [capacities]
        matched = MatchedSpec(
            betas=tuple(float(b) for b in betas),
            capacities=tuple(int(_coerce("capacity", c)) for c in capacities),
            psnr_drop=float(m.pop("psnr_drop", DEFAULT_PSNR_DROP)),
            codecs=bool(m.pop("codecs", True)),
        )
        if m:
            raise SweepError(f"unknown keys in [matched]: {sorted(m)}")
    frames = data.get("frames")
    return SweepSpec(grids, fixed, None if frames is None else int(frames), matched)


PRESETS: dict[str, str] = {
    # Everything docs/results.md shows. ~2 500 simulator runs and the matched study at 7 β.
    "paper": """\
# hoplink sweep preset "paper": Fig. 1(a), 1(b), 2, 3 and the matched-quality table.
frames = 120

[[grid]]
name = "rate"  # Fig. 1(a) and Fig. 2: τ x memory x β on every scenario
scenario = ["all"]
memory = ["hopfield", "vq"]
threshold = [0.9, 0.93, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995, 0.999]
beta = [5, 20, 80]

[[grid]]
name = "soft"  # the soft transmission mode (top-k references + weights), hopfield only
scenario = ["all"]
memory = ["hopfield"]
transmission = ["soft"]
threshold = [0.95, 0.97, 0.98, 0.99, 0.995]
beta = [5, 20, 80]

[[grid]]
name = "memory_size"  # capacity M
scenario = ["all"]
memory = ["hopfield", "vq"]
capacity = [4, 16, 64]
threshold = [0.95, 0.98, 0.99]

[[grid]]
name = "corruption_rho"  # Fig. 3: ID-map desync at mid-clip, cues of K bits
scenario = ["all"]
memory = ["hopfield", "vq"]
threshold = [0.98]
cue_bits = [16, 32]
rho = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8]

[[grid]]
name = "corruption_rho_nocue"  # the same without cues (K = 0 needs tolerance 0)
scenario = ["all"]
memory = ["hopfield", "vq"]
threshold = [0.98]
cue_bits = [0]
cue_tolerance = [0]
rho = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8]

[[grid]]
name = "corruption_sigma"  # Fig. 3: prototype noise at mid-clip
scenario = ["all"]
memory = ["hopfield", "vq"]
threshold = [0.98]
cue_bits = [16, 32]
sigma = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1]

[[grid]]
name = "corruption_sigma_nocue"
scenario = ["all"]
memory = ["hopfield", "vq"]
threshold = [0.98]
cue_bits = [0]
cue_tolerance = [0]
sigma = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1]

[matched]  # hopfield vs vq at matched PSNR, every rule, per β x M; + H.264 and JPEG
beta = [2, 5, 10, 20, 40, 80, 160]
capacity = [4, 16, 64, 256]
psnr_drop = 0.5
codecs = true
""",
    # The link against channel Eb/N0 (docs/results.md, "Channel SNR models"). 3 600 runs.
    "snr": """\
# hoplink sweep preset "snr": every memory kind at its matched τ (each the lowest-rate τ whose
# clean-channel PSNR reaches the clip's all-NEW PSNR − 0.5 dB), QPSK, phy on both directions,
# over AWGN and Rayleigh block fading (one fade per message), 10 seeds.
frames = 120

[fixed]
threshold = "matched"
modulation = "qpsk"
fec = "none"

[[grid]]
name = "snr"
scenario = ["low_motion", "illum_change"]
memory = ["vq", "hopfield", "adaptive"]
channel = ["awgn", "rayleigh"]
seed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
ebn0_db = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 24]

[[grid]]
name = "snr_soft"  # hopfield in the soft mode: top-4 references and their weights per hit
scenario = ["low_motion", "illum_change"]
memory = ["hopfield"]
transmission = ["soft"]
channel = ["awgn", "rayleigh"]
seed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
ebn0_db = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 24]

[[grid]]
name = "snr_hen"  # hopfield with HEN dynamics: 10 update steps, meta-stable states are misses
scenario = ["low_motion", "illum_change"]
memory = ["hopfield"]
hopfield_steps = [10]
metastable_threshold = [0.95]
channel = ["awgn", "rayleigh"]
seed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
ebn0_db = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 24]
""",
    # A seconds-long smoke test of every output (CI uses something like it).
    "smoke": """\
frames = 20

[[grid]]
name = "rate"
scenario = ["static", "illum_change"]
memory = ["hopfield", "vq"]
threshold = [0.95, 0.99]

[[grid]]
name = "corruption"
scenario = ["static"]
memory = ["hopfield", "vq"]
threshold = [0.99]
rho = [0.0, 0.5]
sigma = [0.0, 0.05]
""",
}


# --- tasks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker: a grid run, an SNR-grid run, a matched-study cell, or a
    clip's codec points."""

    kind: Literal["run", "matched", "codecs", "snr"]
    key: str
    params: dict[str, Any]


def _key(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _protocol(scenario: str) -> str:
    if scenario not in SCENARIOS:
        return "file"
    return protocol_of(scenario) or "scene_change"


def _base_values(base: LinkConfig, spec: SweepSpec) -> dict[str, Any]:
    values = base.model_dump()
    values.update({k: v for k, v in spec.fixed.items() if k in CONFIG_FIELDS})
    return values


def expand(spec: SweepSpec, base: LinkConfig, codec_digest: str) -> tuple[list[Task], list[str]]:
    """All tasks of a spec (deduplicated by key), and why invalid combinations were skipped."""
    tasks: dict[str, Task] = {}
    skipped: list[str] = []
    base_values = _base_values(base, spec)
    run_defaults = {"scenario": "low_motion", "rho": 0.0, "sigma": 0.0}
    run_defaults.update({k: v for k, v in spec.fixed.items() if k in RUN_PARAMS})
    n = spec.n_frames
    for grid_name, grid in spec.grids:
        names = list(grid)
        for combo in itertools.product(*(grid[k] for k in names)):
            values = dict(zip(names, combo, strict=True))
            config_values = {
                **base_values,
                **{k: v for k, v in values.items() if k in CONFIG_FIELDS},
            }
            matched_tau = config_values["threshold"] == MATCHED_TAU
            if matched_tau:  # calibrated by the worker; the base τ only keeps the config valid
                config_values["threshold"] = base.threshold
            try:
                config = build_config(config_values, read_env=False)
            except ConfigError as exc:
                reason = str(exc).split(" (got ")[0]
                skipped.append(f"grid {grid_name!r} {values}: {reason}")
                continue
            run = {**run_defaults, **{k: v for k, v in values.items() if k in RUN_PARAMS}}
            if matched_tau or any(k in run for k in SNR_PARAMS):
                task = _snr_task(grid_name, run, config, matched_tau, n, codec_digest)
                tasks.setdefault(task.key, task)
                continue
            corrupt = run["rho"] > 0 or run["sigma"] > 0
            params = {
                "grid": grid_name,
                "scenario": run["scenario"],
                "n_frames": n,
                "rho": float(run["rho"]),
                "sigma": float(run["sigma"]),
                "corrupt_at": n // 2 if corrupt else None,
                "config": config.model_dump(),
                "codec_digest": codec_digest,
            }
            key = _key({k: v for k, v in params.items() if k != "grid"})
            tasks.setdefault(key, Task("run", key, params))
    if spec.matched is not None:
        m = spec.matched
        betas = m.betas or (float(base_values["beta"]),)
        config = build_config(  # its τ is calibrated per cell
            {**base_values, "threshold": base.threshold, "transmission": "index"}, read_env=False
        )
        capacities = m.capacities or (int(base_values["capacity"]),)
        for beta, capacity in itertools.product(betas, capacities):
            cell_config = config.replace(beta=float(beta), capacity=int(capacity))
            for group, members in MATCHED_GROUPS.items():
                params = {
                    "rules": list(RULES),
                    "beta": float(beta),
                    "group": group,
                    "scenarios": list(members),
                    "n_frames": n,
                    "psnr_drop": m.psnr_drop,
                    "config": cell_config.model_dump(),
                    "codec_digest": codec_digest,
                }
                key = _key({"kind": "matched", **params})
                tasks[key] = Task("matched", key, params)
        if m.codecs:
            for scenario in SCENARIOS:
                params = {
                    "scenario": scenario,
                    "n_frames": n,
                    "seed": int(base_values["seed"]),
                    "crfs": list(DEFAULT_CRFS),
                    "qualities": list(DEFAULT_JPEG_QUALITIES),
                    "preset": "medium",
                    "x264_params": X264_EXTRA_PARAMS,
                }
                key = _key({"kind": "codecs", **params})
                tasks[key] = Task("codecs", key, params)
    return list(tasks.values()), skipped


def _snr_task(
    grid_name: str,
    run: dict[str, Any],
    config: LinkConfig,
    matched_tau: bool,
    n_frames: int,
    codec_digest: str,
) -> Task:
    """A run of an SNR grid (module docstring): its phy attributes and τ rule."""
    where = f"grid {grid_name!r}"
    if "ebn0_db" not in run:
        raise SweepError(
            f"{where}: modulation, channel, fec, psnr_drop and threshold = {MATCHED_TAU!r} "
            "belong to SNR grids: give ebn0_db"
        )
    if run["rho"] > 0 or run["sigma"] > 0:
        raise SweepError(f"{where}: rho and sigma are not applied in SNR grids (ebn0_db)")
    if "psnr_drop" in run and not matched_tau:
        raise SweepError(f"{where}: psnr_drop only applies with threshold = {MATCHED_TAU!r}")
    phy = {"snr_db": run["ebn0_db"], "snr_mode": "ebn0"}
    phy.update({k: run[k] for k in PHY_AXES if k in run})
    try:
        phy = PhyAttributes(**phy).model_dump(include={"snr_db", "snr_mode", *PHY_AXES})
    except ValueError as exc:
        raise SweepError(f"{where}: invalid channel {phy}: {exc}") from None
    params = {
        "grid": grid_name,
        "scenario": run["scenario"],
        "n_frames": n_frames,
        "phy": phy,
        "psnr_drop": float(run.get("psnr_drop", DEFAULT_PSNR_DROP)) if matched_tau else None,
        "config": config.model_dump(),
        "codec_digest": codec_digest,
    }
    key = _key({"kind": "snr", **{k: v for k, v in params.items() if k != "grid"}})
    return Task("snr", key, params)


# --- the worker -----------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def init_worker(codec_name: str) -> None:
    """Per process: one torch thread, the codec loaded once, caches of encoded clips and of
    matched thresholds."""
    import torch

    torch.set_num_threads(1)
    codec = load_codec(codec_name)
    _WORKER.update(
        codec=codec, decoder=DecodeCache(codec), clips={}, matched_tau={}, name=codec_name
    )


def _clip(scenario: str, n_frames: int, seed: int):

    cache = _WORKER["clips"]
    key = (scenario, n_frames, seed)
    if key not in cache:
        if len(cache) > 64:
            cache.clear()
        cache[key] = prepare_clips([scenario], _WORKER["codec"], n_frames, seed)[0]
    return cache[key]


TaskResult = tuple[str, dict[str, list[dict[str, Any]]]]  # (key, rows per CSV name)


def run_task(task: Task) -> TaskResult:
    """Run one task in this process (call :func:`init_worker` once first)."""
    started = time.perf_counter()
    if task.kind == "run":
        rows = {"runs": [_run_row(task)]}
    elif task.kind == "matched":
        rows = _matched_rows(task)
    elif task.kind == "codecs":
        rows = {"codecs": _codec_rows(task)}
    elif task.kind == "snr":
        rows = {"snr": [_snr_row(task)]}
    else:  # pragma: no cover - Task.kind is a Literal
        raise SweepError(f"unknown task kind {task.kind!r}")
    seconds = time.perf_counter() - started
    for name in ("runs", "matched", "codecs", "snr"):
        for row in rows.get(name, []):
            row.setdefault("seconds", round(seconds, 3))
    return task.key, rows


def codec_weights_digest(codec_name: str) -> str:
    """Short sha256 of codec ``codec_name``'s weights file (in the sweep's task keys)."""
    weights = codecs_dir() / f"{codec_name}.pt"
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


def _ray_task(task: Task, codec_name: str, codec_digest: str) -> TaskResult:
    """One task on a Ray worker, which may sit on another machine: it checks that its codec
    weights are the driver's (a cluster node with other weights would add wrong rows)."""
    if _WORKER.get("name") != codec_name:
        here = codec_weights_digest(codec_name)
        if here != codec_digest:
            raise SweepError(
                f"a Ray worker's weights for codec {codec_name!r} ({codecs_dir()}) have digest "
                f"{here}, the driver's {codec_digest}: install the same hoplink (and "
                f"HOPLINK_WEIGHTS_DIR) on every node"
            )
        init_worker(codec_name)
    return run_task(task)


def _summary_fields(summary) -> dict[str, Any]:
    s = summary.as_dict()
    outcomes = s.pop("outcomes")
    s["reasoning_capacity"] = s.pop("capacity")
    s.update({f"outcome_{k}": v for k, v in outcomes.items()})
    return s


def _run_row(task: Task) -> dict[str, Any]:

    p = task.params
    config = build_config(p["config"], read_env=False)
    clip = _clip(p["scenario"], p["n_frames"], config.seed)
    corruption = None
    decoder = _WORKER["decoder"]
    if p["corrupt_at"] is not None:
        corruption = Corruption(p["corrupt_at"], p["rho"], p["sigma"], config.seed)
        if p["sigma"] > 0:  # noisy prototypes are new latents: keep them out of the shared cache
            decoder = DecodeCache(_WORKER["codec"])
    result = simulate(
        clip.latents, config, frames=clip.frames, decoder=decoder, corruption=corruption
    )
    row: dict[str, Any] = {
        "key": task.key,
        "grid": p["grid"],
        "scenario": p["scenario"],
        "protocol": _protocol(p["scenario"]),
        "n_frames": p["n_frames"],
        "rho": p["rho"],
        "sigma": p["sigma"],
        "corrupt_at": p["corrupt_at"],
        **p["config"],
        "codec_digest": p["codec_digest"],
        **_summary_fields(result.summary),
        "digests_agree": result.digests_agree,
        "silent_wrong": result.silent_wrong,
    }
    row.update({f"tx_{name}": getattr(result.tx, name) for name in TX_COUNTERS})
    row.update({f"rx_{name}": getattr(result.rx, name) for name in RX_COUNTERS})
    return row


def _clean_target(
    clips: list, config: LinkConfig, psnr_drop: float, decoder
) -> tuple[float, float]:
    """(ceiling, target) of the matched-quality rule: the clips' all-NEW PSNR (every frame sent
    as a quantized latent, the codec's ceiling on this link) and that minus ``psnr_drop``."""

    all_new = config.replace(memory="vq", threshold=1.0, transmission="index")
    ceiling = run_group(clips, all_new, decoder, False)
    return ceiling.summary.psnr, ceiling.summary.psnr - psnr_drop


def _matched_threshold(clip, config: LinkConfig, psnr_drop: float) -> dict[str, float]:
    """The method's matched τ on a clean channel (memoized per worker: every Eb/N0 of a curve
    shares it) with the target, and the PSNR and bits/frame it reaches."""

    cache = _WORKER["matched_tau"]
    key = _key({"config": config.replace(threshold=1.0).model_dump(), "clip": clip.name,
                "n": len(clip.latents), "drop": psnr_drop})  # fmt: skip
    if key not in cache:
        decoder = _WORKER["decoder"]
        _, target = _clean_target([clip], config, psnr_drop, decoder)
        result, _ = calibrate([clip], config, target, decoder)
        cache[key] = {
            "threshold": result.threshold,
            "target_psnr": target,
            "clean_psnr": result.summary.psnr,
            "clean_bits_per_frame": result.summary.bits_per_frame,
        }
    return cache[key]


def _snr_row(task: Task) -> dict[str, Any]:

    p = task.params
    config = build_config(p["config"], read_env=False)
    clip = _clip(p["scenario"], p["n_frames"], config.seed)
    matched: dict[str, Any] = {}
    if p["psnr_drop"] is not None:
        matched = _matched_threshold(clip, config, p["psnr_drop"])
        config = config.replace(threshold=matched["threshold"])
    # A fresh cache: corrupted latents are new and would pile up in the worker's shared one.
    decoder = DecodeCache(_WORKER["codec"])
    point = snr_point(clip.frames, clip.latents, config, p["phy"], decoder, seed=config.seed)
    return {
        "key": task.key,
        "grid": p["grid"],
        "scenario": p["scenario"],
        "protocol": _protocol(p["scenario"]),
        "n_frames": p["n_frames"],
        "ebn0_db": p["phy"]["snr_db"],
        **{k: p["phy"][k] for k in PHY_AXES},
        "threshold_rule": "fixed" if p["psnr_drop"] is None else MATCHED_TAU,
        "psnr_drop": p["psnr_drop"],
        **matched,
        **config.model_dump(),
        "codec_digest": p["codec_digest"],
        **point,
    }


def _matched_rows(task: Task) -> dict[str, list[dict[str, Any]]]:

    p = task.params
    config = build_config(p["config"], read_env=False)
    decoder = _WORKER["decoder"]
    clips = [_clip(s, p["n_frames"], config.seed) for s in p["scenarios"]]
    ceiling, target = _clean_target(clips, config, p["psnr_drop"], decoder)
    common = {
        "key": task.key,
        "beta": p["beta"],
        "group": p["group"],
        "target_psnr": target,
        "ceiling_psnr": ceiling,
        "psnr_drop": p["psnr_drop"],
        "n_frames": p["n_frames"],
        "seed": config.seed,
        "capacity": config.capacity,
        "cue_bits": config.cue_bits,
        "codec_digest": p["codec_digest"],
    }

    def row(rule: str, method: str, role: str, result, evaluated: int, ref=None) -> dict:
        s = result.summary
        return {
            **common,
            "rule": rule,
            "method": method,
            "role": role,
            "threshold": result.threshold,
            "reference_psnr": ref,
            "delta_psnr": None if ref is None else s.psnr - ref,
            "evaluated": evaluated,
            **{k: v for k, v in _summary_fields(s).items() if k in MATCHED_COLUMNS},
        }

    rows = []
    symmetric = {}
    for method in ("hopfield", "vq"):
        result, tried = calibrate(clips, config.replace(memory=method), target, decoder)
        symmetric[method] = result
        rows.append(row("symmetric", method, "calibrated", result, len(tried)))
    for rule in RULES[1:]:
        fixed = "vq" if rule.startswith("one_sided_vq_fixed") else "hopfield"
        moving = "hopfield" if fixed == "vq" else "vq"
        reference = symmetric[fixed]
        moving_config = config.replace(memory=moving)
        if rule.endswith("_slack"):  # the bisected method spends the whole window on rate
            floor = reference.summary.psnr - MATCH_TOLERANCE_DB
            result, tried = calibrate(clips, moving_config, floor, decoder)
            role = "slack"
        else:
            result, tried = bisect_into_window(
                clips, moving_config, reference.summary.psnr, decoder
            )
            role = "bisected"
        rows.append(row(rule, fixed, "fixed", reference, 0))
        rows.append(row(rule, moving, role, result, len(tried), reference.summary.psnr))
    timeline = []
    if p["group"] == "gradual_drift":
        for method, result in symmetric.items():
            for clip, run in zip(clips, result.runs, strict=True):
                for r in run.records:
                    timeline.append(
                        {
                            "key": task.key,
                            "beta": p["beta"],
                            "capacity": config.capacity,
                            "group": p["group"],
                            "scenario": clip.name,
                            "method": method,
                            "threshold": result.threshold,
                            "seq": r.seq,
                            "hit": r.hit,
                            "bits": r.bits,
                            "psnr": r.psnr,
                        }
                    )
    return {"matched": rows, "timeline": timeline}


def _codec_rows(task: Task) -> list[dict[str, Any]]:

    p = task.params
    size = _WORKER["codec"].frame_size  # the very frames the link sees
    frames = load_clip(p["scenario"], n_frames=p["n_frames"], size=size, seed=p["seed"])
    points = h264_points(frames, p["crfs"], p["preset"], x264_params=p["x264_params"])
    points += jpeg_points(frames, p["qualities"])
    base = {
        "key": task.key,
        "scenario": p["scenario"],
        "protocol": _protocol(p["scenario"]),
        "n_frames": p["n_frames"],
        "seed": p["seed"],
    }
    return [
        {
            **base,
            "codec": pt.codec,
            "knob": pt.knob,
            "bits_per_frame": pt.bits_per_frame,
            "psnr": pt.psnr,
            "ssim": pt.ssim,
        }
        for pt in points
    ]


# --- tidy CSV files -------------------------------------------------------------------------------


class TidyCSV:
    """An append-only CSV with a fixed header; rows are flushed as they arrive."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns = path, tuple(columns)
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != self.columns:
                raise SweepError(
                    f"{path} has other columns than this version of hoplink writes; "
                    "use a new --out folder"
                )

    def keys(self) -> set[str]:
        if not self.path.exists():
            return set()
        with self.path.open(newline="") as f:
            return {row["key"] for row in csv.DictReader(f) if row.get("key")}

    def append(self, rows: Iterable[dict[str, Any]]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in self.columns})
            f.flush()
        return len(rows)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return value


# --- running --------------------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    out_dir: Path
    planned: int
    done_before: int
    added: dict[str, int]
    skipped: list[str]
    seconds: float
    figures: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _execute(
    tasks: list[Task], codec_name: str, workers: int, use_ray: bool, ray_address: str | None = None
) -> Iterator[TaskResult]:
    if use_ray or ray_address:
        yield from _execute_ray(tasks, codec_name, workers, ray_address)
        return
    if workers <= 1:  # in this process: restore its torch threads afterwards
        import torch

        threads = torch.get_num_threads()
        init_worker(codec_name)
        try:
            for task in tasks:
                yield run_task(task)
        finally:
            torch.set_num_threads(threads)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn: a fresh interpreter per worker (no forked torch/OpenMP state).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=init_worker, initargs=(codec_name,)
    ) as pool:
        # Matched-study cells are the longest tasks: submit them first.
        order = sorted(tasks, key=lambda t: t.kind != "matched")
        pending = {pool.submit(run_task, t) for t in order}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


# What a Ray worker needs from the driver's environment (the cluster's nodes keep their own).
RAY_WORKER_ENV = ("HOPLINK_WEIGHTS_DIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _execute_ray(
    tasks: list[Task], codec_name: str, workers: int, address: str | None = None
) -> Iterator[TaskResult]:
    """The tasks as Ray tasks. ``address`` (or ``RAY_ADDRESS``) joins a running cluster, which
    sets its own resources; without one, a private one-node Ray with ``workers`` CPUs starts
    here. A Ray this call started or joined is left again when the tasks are done."""
    try:
        import ray
    except ImportError:
        raise SweepError(
            "--ray needs Ray, which is not installed: pip install 'hoplink[ray]' "
            "(or run without --ray to use local processes)"
        ) from None
    address = address or os.environ.get("RAY_ADDRESS") or None
    started = not ray.is_initialized()
    if started and address:
        _check_reachable(address)
    if started:
        env_vars = {k: os.environ[k] for k in RAY_WORKER_ENV if k in os.environ}
        runtime_env = {"env_vars": env_vars} if env_vars else None
        try:
            if address:  # an existing cluster: resources are its own, not ours to set
                ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=workers,
                    include_dashboard=False,
                    runtime_env=runtime_env,
                    log_to_driver=False,
                )
        except ConnectionError as exc:
            raise SweepError(f"--ray-address {address}: no Ray cluster there ({exc})") from None
    digest = codec_weights_digest(codec_name)
    remote = ray.remote(num_cpus=1)(_ray_task)
    pending = [remote.remote(t, codec_name, digest) for t in tasks]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if isinstance(cause, SweepError):
                    raise SweepError(str(cause).splitlines()[-1]) from None
                raise
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail at once, naming the flag, when nothing listens at a HOST:PORT Ray address (Ray
    itself retries such an address for minutes). Other forms (auto, ray://…) go to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise SweepError(f"--ray-address {address}: no Ray cluster answers there ({exc})") from None


def run_sweep(
    spec: SweepSpec,
    base: LinkConfig,
    out_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    use_ray: bool = False,
    ray_address: str | None = None,
    progress: bool = True,
    figures: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Run every task of ``spec`` not yet in ``out_dir``, append the rows, draw the figures."""
    from tqdm import tqdm

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if base.codec not in CODECS:
        raise SweepError(f"unknown codec {base.codec!r}; known: {sorted(CODECS)}")
    codec_digest = codec_weights_digest(base.codec)
    tasks, skipped = expand(spec, base, codec_digest)
    if not tasks:
        raise SweepError("the sweep has no runs: give --grid, --config, --preset or --matched")
    files = {name: TidyCSV(out / fname, cols) for name, (fname, cols) in CSV_FILES.items()}
    done = set().union(*(files[name].keys() for name in ("runs", "matched", "codecs", "snr")))
    pending = [t for t in tasks if t.key not in done]
    workers = max(1, workers or os.cpu_count() or 1)
    added = dict.fromkeys(CSV_FILES, 0)
    if log and skipped:
        log(f"skipped {len(skipped)} invalid combinations, e.g. {skipped[0]}")
    with tqdm(
        total=len(tasks),
        initial=len(tasks) - len(pending),
        desc=f"sweep → {out}",
        unit="task",
        disable=not progress,
        file=sys.stderr,
    ) as bar:
        for _key_done, rows in _execute(
            pending, base.codec, min(workers, max(1, len(pending))), use_ray, ray_address
        ):
            for name, file_rows in rows.items():
                added[name] += files[name].append(file_rows)
            bar.update()
    elapsed = time.perf_counter() - started
    outcome = SweepOutcome(out, len(tasks), len(tasks) - len(pending), added, skipped, elapsed)
    _log_invocation(out, spec, base, outcome, workers, use_ray or bool(ray_address), command)
    if figures:
        outcome.figures = make_figures(out)
    return outcome


def _log_invocation(
    out: Path,
    spec: SweepSpec,
    base: LinkConfig,
    outcome: SweepOutcome,
    workers: int,
    use_ray: bool,
    command: str | None,
) -> None:
    path = out / "sweep.json"
    record = json.loads(path.read_text()) if path.exists() else {"invocations": []}
    record["spec"] = spec.to_dict()
    record["base_config"] = base.model_dump()
    record["invocations"].append(
        {
            "command": command,
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(outcome.seconds, 1),
            "tasks": outcome.planned,
            "already_done": outcome.done_before,
            "rows_added": outcome.added,
            "workers": workers,
            "ray": use_ray,
            "host": f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}",
        }
    )
    path.write_text(json.dumps(record, indent=2) + "\n")


# --- the command line -----------------------------------------------------------------------------


def add_sweep_arguments(parser) -> None:
    """Flags of ``hoplink sweep`` (the link configuration flags are added by the CLI)."""
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="a swept parameter; all --grid flags form one grid (cartesian product). Names: "
        "LinkConfig fields (threshold, capacity, beta, transmission, cue_bits, memory, seed, ...) "
        "or scenario (a scenario, a protocol, 'all', or a video file), rho, sigma; the SNR axes "
        "ebn0_db, modulation, channel (awgn, rayleigh), fec, with threshold=matched (each method "
        "at its matched τ; psnr_drop) -> snr.csv; aliases tau, M, K, mode, fading",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="a sweep file (TOML): frames, [fixed], [[grid]] tables, [matched]; see --print-config",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a bundled sweep file (paper: the paper's figures and tables in docs/results.md; "
        "snr: the link vs Eb/N0, every memory kind at matched τ, 10 seeds)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the --preset (or --config) file and exit"
    )
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (default 120)")
    parser.add_argument("--out", default="runs/sweep", help="output folder (default runs/sweep)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel worker processes (default: os.cpu_count())",
    )
    parser.add_argument(
        "--ray",
        action="store_true",
        help="run the tasks through Ray (pip install 'hoplink[ray]'); without --ray-address "
        "or RAY_ADDRESS a private one-node Ray starts (slower than --workers on one machine)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="HOST:PORT",
        help="join this running Ray cluster (implies --ray; default: $RAY_ADDRESS with --ray); "
        "every node needs this hoplink installed",
    )
    parser.add_argument(
        "--matched",
        action="store_true",
        help="add the matched-quality study (symmetric and one-sided, + codecs)",
    )
    parser.add_argument(
        "--matched-beta",
        default=None,
        metavar="B1,B2,...",
        help="β values of the matched study (implies --matched; default: the "
        "grid's β values, else --beta)",
    )
    parser.add_argument(
        "--matched-capacity",
        default=None,
        metavar="M1,M2,...",
        help="memory sizes M of the matched study (implies --matched; default: the grid's "
        "capacity values, else --capacity)",
    )
    parser.add_argument(
        "--psnr-drop",
        type=float,
        default=None,
        help="matched study: target = all-NEW PSNR minus this (default 0.5 dB)",
    )
    parser.add_argument(
        "--no-codecs", action="store_true", help="matched study without the H.264/JPEG points"
    )
    parser.add_argument("--no-figures", action="store_true", help="write the CSVs only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def spec_from_args(args) -> SweepSpec:
    if args.config and args.preset:
        raise SweepError("give --config or --preset, not both")
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise SweepError(f"sweep file {path} not found")
        spec = spec_from_toml(path.read_text())
    elif args.preset:
        spec = spec_from_toml(PRESETS[args.preset])
    else:
        spec = SweepSpec()
    if args.grid:
        spec.grids.append(("cli", parse_grid_args(args.grid)))
    if args.frames is not None:
        if args.frames < 2:
            raise SweepError(f"--frames must be at least 2, got {args.frames}")
        spec.frames = args.frames
    if (
        args.matched
        or args.matched_beta
        or args.matched_capacity
        or args.psnr_drop is not None
        or (spec.matched is not None)
    ):
        matched = spec.matched or MatchedSpec()
        if args.matched_beta:
            matched.betas = tuple(float(_coerce("beta", b)) for b in args.matched_beta.split(","))
        elif not matched.betas:
            grid_betas = [b for _, g in spec.grids for b in g.get("beta", ())]
            matched.betas = tuple(dict.fromkeys(float(b) for b in grid_betas))
        if args.matched_capacity:
            matched.capacities = tuple(
                int(_coerce("capacity", c)) for c in args.matched_capacity.split(",")
            )
        elif not matched.capacities:
            grid_m = [c for _, g in spec.grids for c in g.get("capacity", ())]
            matched.capacities = tuple(dict.fromkeys(int(c) for c in grid_m))
        if args.psnr_drop is not None:
            matched.psnr_drop = args.psnr_drop
        if args.no_codecs:
            matched.codecs = False
        spec.matched = matched
    return spec


def sweep_command(args, base: LinkConfig) -> int:
    import shlex

    if args.print_config:
        if args.preset:
            print(PRESETS[args.preset], end="")
        elif args.config:
            print(Path(args.config).read_text(), end="")
        else:
            raise SweepError("--print-config needs --preset or --config")
        return 0
    spec = spec_from_args(args)
    outcome = run_sweep(
        spec,
        base,
        args.out,
        workers=args.workers,
        use_ray=args.ray,
        ray_address=args.ray_address,
        progress=not args.quiet,
        figures=not args.no_figures,
        command="hoplink " + shlex.join(sys.argv[1:]),
    )
    added = ", ".join(f"{n} {k}" for k, n in outcome.added.items() if n)
    print(
        f"{outcome.planned} tasks ({outcome.done_before} already in {outcome.out_dir}); "
        f"rows added: {added or 'none'}; {outcome.seconds:.1f} s"
    )
    if outcome.skipped:
        print(f"skipped {len(outcome.skipped)} invalid combinations, e.g. {outcome.skipped[0]}")
    if outcome.figures:
        print(f"figures: {', '.join(sorted({p.stem for p in outcome.figures}))}")
    return 0
