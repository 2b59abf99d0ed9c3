"""Plain-text tables for the command line (the JSON output carries the same numbers)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def fmt(value: object, digits: int = 2) -> str:
    """Floats to ``digits`` decimals; a ``Precise`` float keeps four."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Precise):
        digits = 4
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}f}"
    return str(value)


class Precise(float):
    """A float shown with four decimals (thresholds near 1 differ in the third)."""


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body])
