"""What a sweep's tidy CSVs mean: the matched groups, the matching rules and their labels, and
reading rows back with their types (the sweep writes them; figures and the report read them)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from shared.scenarios import PROTOCOLS

MATCHED_GROUPS: dict[str, tuple[str, ...]] = {**PROTOCOLS, "scene_change": ("scene_change",)}
RULES = (
    "symmetric",
    "one_sided_vq_fixed",
    "one_sided_hopfield_fixed",
    "one_sided_vq_fixed_slack",
    "one_sided_hopfield_fixed_slack",
)
RULE_LABELS = {
    "symmetric": "symmetric (both τ calibrated: lowest rate with PSNR ≥ target)",
    "one_sided_vq_fixed": (
        "ONE-SIDED, the paper's protocol (vq τ fixed; hopfield τ bisected until its PSNR is "
        "within 0.2 dB of vq's, first τ in the window kept)"
    ),
    "one_sided_hopfield_fixed": "ONE-SIDED, reversed (hopfield τ fixed; vq τ bisected likewise)",
    "one_sided_vq_fixed_slack": (
        "ONE-SIDED, slack spent (vq τ fixed; hopfield at its lowest-rate τ with "
        "PSNR ≥ vq's − 0.2 dB)"
    ),
    "one_sided_hopfield_fixed_slack": (
        "ONE-SIDED, slack spent, reversed (hopfield τ fixed; vq at its lowest-rate τ with "
        "PSNR ≥ hopfield's − 0.2 dB)"
    ),
}


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer() and "." not in text and "e" not in text.lower() and "n" not in text:
        return int(number)
    return number


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a sweep CSV with numbers, booleans and empty cells (None) parsed back."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]
