"""Tables that fit the terminal: names abbreviated from the middle, value columns folded
into several tables when one would be wider than the console.

Rich shrinks a table that does not fit by wrapping or cropping its cells ("grad_no..."
headers, "-0.08..." numbers, a layer name over four lines). Here nothing is cropped:
numbers keep their full text, a name loses its middle ("encoder.layers.1…attn.q_proj"),
and columns that do not fit move to a continuation table under the same row names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

MIN_NAME = 16  # a name column narrower than this folds the value columns instead
ELLIPSIS = "…"


def abbreviate(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: its start and end kept, the middle
    replaced by one ellipsis (the end, a layer's own name, gets the larger share)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 3
    return text[:head] + ELLIPSIS + text[len(text) - (width - 1 - head):]


def _shorten(parts: list[str], counts: Counter[tuple[int, str]], width: int) -> str:
    """Drop dotted parts of one name until it fits: the parts most names share first (the
    longest of them first), then the first part, then parts with digits (a layer index),
    the parts only this name has last, the last part never; each run of dropped parts is one ellipsis."""
    drop: set[int] = set()
    order = sorted(range(len(parts) - 1),
                   key=lambda i: (counts[i, parts[i]] == 1, any(c.isdigit() for c in parts[i]), i == 0,
                                  -counts[i, parts[i]], -len(parts[i])))
    text = ".".join(parts)
    for index in order:
        if len(text) <= width:
            break
        drop.add(index)
        text, gap = "", False
        for i, part in enumerate(parts):
            if i in drop:
                text, gap = (text if gap else text + ELLIPSIS), True
                continue
            text += part if gap or not text else "." + part
            gap = False
    return abbreviate(text, width)


def abbreviate_all(names: Sequence[str], width: int) -> list[str]:
    """Each of ``names`` in at most ``width`` characters and all still distinct: dotted
    parts shared by many names go first (``model.…0.q_proj``, not twelve identical
    ``model.deco…q_proj``); names that would still collide get more room, up to whole."""
    split = [n.split(".") for n in names]
    counts: Counter[tuple[int, str]] = Counter((i, p) for parts in split for i, p in enumerate(parts))
    out = [_shorten(parts, counts, width) for parts in split]
    room = width
    while len(set(out)) < len(set(names)) and room < max(map(len, names), default=0):
        room += 2
        seen = Counter(out)
        out = [_shorten(p, counts, room) if seen[o] > 1 else o for p, o in zip(split, out)]
    return out


@dataclass(frozen=True)
class Column:
    header: str
    cells: Sequence[Text | str]
    justify: str = "right"


def _cell_width(cell: Text | str) -> int:
    return max((len(line) for line in str(cell).split("\n")), default=0)


def column_width(column: Column) -> int:
    return max([len(column.header), *(_cell_width(c) for c in column.cells)])


def cost(column: Column) -> int:
    """Characters a value column takes: its width, the divider and one space of padding."""
    return column_width(column) + 2


def _chunks(columns: Sequence[Column], room: int, keep: int) -> list[list[Column]]:
    """Groups of value columns that fit ``room`` characters; the first ``keep`` columns
    repeat in every group."""
    fixed, rest = list(columns[:keep]), list(columns[keep:])
    used = sum(cost(c) for c in fixed)
    groups: list[list[Column]] = []
    current: list[Column] = []
    for column in rest:
        if current and used + cost(column) > room:
            groups.append(fixed + current)
            current, used = [], sum(cost(c) for c in fixed)
        current.append(column)
        used += cost(column)
    if current or not groups:
        groups.append(fixed + current)
    return groups


def folded_table(title: str, name_header: str, names: Sequence[str], columns: Sequence[Column],
                 width: int, keep: int = 0, caption: str = "", whole_names: bool = False) -> RenderableType:
    """A table of ``names`` by ``columns`` in ``width`` characters: the name column gets
    what the values leave, and at least MIN_NAME or 2/5 of the width (names abbreviated
    beyond that, unless ``whole_names``: metric names, which a reader types into rules);
    value columns that do not fit continue in further tables below."""
    longest = max([len(name_header), *(len(n) for n in names)])
    values = sum(cost(c) for c in columns)
    name_width = min(longest, max(MIN_NAME, width - values, width * 2 // 5))  # folding: names keep 2/5
    if whole_names:
        name_width = min(longest, max(name_width, width - min((cost(c) for c in columns), default=0)))
    short = abbreviate_all(names, name_width)
    name_width = max([name_width, *map(len, short)])  # names that only differ deep inside keep more
    tables: list[RenderableType] = []
    for index, group in enumerate(_chunks(columns, width - name_width, keep)):
        suffix = "" if index == 0 else " (continued)"
        tables.append(Text(title + suffix, style="italic"))  # the full width, not the table's
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0, 0, 1),
                      header_style="bold", collapse_padding=True)
        table.add_column(abbreviate(name_header, name_width), no_wrap=True, min_width=name_width)
        for column in group:
            table.add_column(column.header, justify=column.justify, no_wrap=True)  # type: ignore[arg-type]
        for row, name in enumerate(short):
            table.add_row(Text(name), *(c.cells[row] for c in group))
        tables.append(table)
    if caption:
        tables.append(Text(caption, style="dim"))
    return Group(*tables)
