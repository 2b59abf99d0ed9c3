"""The shipped codecs' files and cards, readable without torch (the channel reads grids here).

A codec ``NAME`` ships as ``shared/codec/weights/NAME.pt`` (weights, loaded by
:mod:`shared.codec.models`) and ``NAME.json``, its card: how the weights were trained, what
they reach, and the quantizer intervals fitted to its latents. ``HOPLINK_WEIGHTS_DIR`` names a
folder of trained weights and cards (``hoplink train --out``) to read instead of the shipped ones.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from shared.coding.quantizer import LatentGrid

WEIGHTS_DIR_ENV = "HOPLINK_WEIGHTS_DIR"


def shipped_codecs_dir() -> Path:
    """Folder of the shipped weights and cards (package data of ``shared``)."""
    return Path(__file__).resolve().parent / "weights"


def codecs_dir() -> Path:
    """Folder the weights and cards are read from: ``$HOPLINK_WEIGHTS_DIR`` when set (read at
    each call, so a child process inherits the choice), else the shipped folder."""
    override = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else shipped_codecs_dir()


def codec_card(name: str, weights_dir: Path | None = None) -> dict:
    """The training card ``<name>.json`` beside the weights ({} when there is none)."""
    path = Path(weights_dir if weights_dir is not None else codecs_dir()) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@functools.cache
def card_grid(name: str, weights_dir: Path | None = None) -> LatentGrid:
    """The per-dimension quantizer grid on codec ``name``'s card (cached: cards do not change
    while a process runs). Raises ValueError naming the codec when its card has none."""
    entry = codec_card(name, weights_dir).get("latent_grid")
    if entry is None:
        raise ValueError(
            f"codec {name!r} has no fitted latent_grid on its card; fit one with "
            f"`python -m experiments.training --name {name} --refit-quantizer`"
        )
    return LatentGrid.from_dict(entry)


@functools.cache
def codec_kind(name: str) -> str:
    """``tokens`` for a token codec (a grid of tokens per frame), ``frame`` for a single-latent
    one, as its card says (cached like the grid)."""
    return codec_card(name).get("kind", "frame")
