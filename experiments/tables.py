"""Plain-text tables for the command line (the JSON output carries the same numbers)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


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


TERMINAL_WIDTH = 120  # what a table printed for a person must fit


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    width: int | None = None,
    keep: int = 1,
) -> str:
    """A right-aligned plain-text table. With ``width``, a table wider than that is cut into
    column blocks printed one under the other, each repeating the first ``keep`` columns (the
    row's key), so every line fits."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    blocks = [list(range(len(headers)))]
    if width is not None and _line_width(widths) > width:
        blocks = _column_blocks(widths, width, keep)
    parts = []
    for columns in blocks:
        line = "  ".join(headers[i].rjust(widths[i]) for i in columns)
        rule = "  ".join("-" * widths[i] for i in columns)
        body = ["  ".join(r[i].rjust(widths[i]) for i in columns) for r in cells]
        parts.append("\n".join([line, rule, *body]))
    return "\n\n".join(parts)


def _line_width(widths: Sequence[int]) -> int:
    return sum(widths) + 2 * max(len(widths) - 1, 0)


def _column_blocks(widths: Sequence[int], width: int, keep: int) -> list[list[int]]:
    """Columns ``keep:`` split greedily into blocks that fit ``width`` beside the key columns."""
    key = list(range(min(keep, len(widths))))
    blocks: list[list[int]] = []
    block = list(key)
    for i in range(len(key), len(widths)):
        if len(block) > len(key) and _line_width([widths[j] for j in [*block, i]]) > width:
            blocks.append(block)
            block = list(key)
        block.append(i)
    blocks.append(block)
    return blocks


# A link run's figures as every table prints them (sim, Table I): the three bit figures first.
LINK_HEADERS = ["link b/f", "semantic b/f", "wire b/f", "hit rate", "NEW", "CR", "η", "C"]


def link_cells(summary: Any) -> list[object]:
    """The :data:`LINK_HEADERS` cells of a :class:`shared.accounting.LinkSummary`."""
    s = summary
    return [
        s.link_bits_per_frame,
        s.semantic_bits_per_frame,
        s.wire_bits_per_frame,
        s.hit_rate,
        s.news,
        s.compression_ratio,
        s.efficiency,
        s.capacity,
    ]
