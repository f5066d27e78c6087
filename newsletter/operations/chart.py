"""The stats chart: recipients and unsubscribes per edition, and the list's weekly growth.

matplotlib is imported inside :func:`draw_chart` and drawn on a :class:`~matplotlib.figure.Figure`
with its own Agg canvas, never through ``pyplot``: no global figure or backend state, so a web
server may draw charts in several threads at once, and the CLI does not pay for matplotlib
unless it asks for a chart.

No text from the database reaches the chart (labels are dates and ids, the title is the
caller's); whatever text there is goes in with ``parse_math=False`` (a ``$`` is not mathtext)
and matplotlib escapes it in SVG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from newsletter.operations.stats import EditionStats, WeekGrowth

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ChartFormat = Literal["png", "svg"]
DEFAULT_TITLE = "Recipients and unsubscribes per edition"
EMPTY_MESSAGE = "No editions sent yet"
#: At 800 px wide, more x labels than this overlap.
MAX_LABELS = 12


def draw_chart(
    stats: Sequence[EditionStats],
    growth: Sequence[WeekGrowth] = (),
    *,
    fmt: ChartFormat,
    title: str = DEFAULT_TITLE,
    narrow: bool = False,
) -> bytes:
    """The chart as PNG or SVG bytes, 800x400 px (at 100 dpi), or 400x640 with ``narrow``
    (the panels stacked, for a phone).

    Left (or alone): recipients per edition as bars, unsubscribes on a second y axis. Right,
    when ``growth`` has rows: active subscriptions at the end of each week, with joins and
    leaves as bars. With no editions the panel says so; the file is still valid.
    """
    if fmt not in ("png", "svg"):
        raise ValueError(f"chart format must be png or svg, not {fmt!r}")
    figure = build_figure(stats, growth, title=title, narrow=narrow)
    out = io.BytesIO()
    # SVG: the title in <dc:title>; no date, so the same data gives the same file.
    metadata = {"Title": title, "Date": None} if fmt == "svg" else {"Title": title}
    figure.savefig(out, format=fmt, metadata=metadata)
    return out.getvalue()


def build_figure(
    stats: Sequence[EditionStats],
    growth: Sequence[WeekGrowth] = (),
    *,
    title: str = DEFAULT_TITLE,
    narrow: bool = False,
) -> Figure:
    """The matplotlib figure behind :func:`draw_chart` (tests read its axes). Counts have
    integer ticks only; x labels are never repeated (two editions on one day get their ids)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = (4, 6.4) if narrow else (8, 4)
    figure = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself; savefig renders through it
    shape = (2 if growth else 1, 1) if narrow else (1, 2 if growth else 1)
    axes = list(figure.subplots(*shape, squeeze=False).flat)
    _editions(axes[0], stats)
    if growth:
        _growth(axes[1], growth)
    figure.suptitle(title, parse_math=False, fontsize=10 if narrow else 12)
    return figure


def _ticks(ax: Axes, labels: Sequence[str]) -> None:
    """Label at most MAX_LABELS positions, evenly spaced, so many editions stay readable."""
    step = max(1, math.ceil(len(labels) / MAX_LABELS))
    positions = list(range(0, len(labels), step))
    ax.set_xticks(positions, [labels[i] for i in positions], rotation=30, ha="right")
    ax.tick_params(axis="x", labelsize=8)


def _editions(ax: Axes, stats: Sequence[EditionStats]) -> None:
    from matplotlib.ticker import MaxNLocator

    if not stats:
        ax.set_axis_off()
        ax.text(
            0.5,
            0.5,
            EMPTY_MESSAGE,
            ha="center",
            va="center",
            fontsize=14,
            transform=ax.transAxes,
            parse_math=False,
        )
        return
    x = range(len(stats))
    bars = ax.bar(x, [s.recipients for s in stats], color="#4C72B0", label="recipients")
    ax.set_ylabel("recipients")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    # Headroom above the tallest bar and point, where the legend goes.
    ax.set_ylim(0, max(1, *(s.recipients for s in stats)) * 1.3)
    right = ax.twinx()
    (line,) = right.plot(
        x, [s.unsubscribes for s in stats], color="#C44E52", marker="o", label="unsubscribes"
    )
    right.set_ylabel("unsubscribes")
    right.set_ylim(0, max(1, *(s.unsubscribes for s in stats)) * 1.3)
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    dates = [
        f"{moment:%Y-%m-%d}" if (moment := s.sent_at or s.send_started_at) else "" for s in stats
    ]
    labels = [
        date if date and dates.count(date) == 1 else f"{date} #{s.edition_id}".strip()
        for date, s in zip(dates, stats, strict=True)
    ]
    _ticks(ax, labels)
    ax.set_title("per edition", fontsize=10)
    ax.legend(handles=[bars, line], loc="upper left", ncols=2, fontsize=8)


def _growth(ax: Axes, growth: Sequence[WeekGrowth]) -> None:
    from matplotlib.ticker import MaxNLocator

    x = range(len(growth))
    (line,) = ax.plot(
        x, [w.active_at_end for w in growth], color="#55A868", marker=".", label="active"
    )
    ax.set_ylabel("active at end of week")
    # From zero, with room for whole-number ticks even when the list barely moves.
    ax.set_ylim(0, max(1, *(w.active_at_end for w in growth)) * 1.2 + 1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    bars = ax.twinx()
    joined = bars.bar(x, [w.joined for w in growth], color="#8172B2", alpha=0.5, label="joined")
    left = bars.bar(x, [-w.left for w in growth], color="#C44E52", alpha=0.5, label="left")
    bars.axhline(0, color="#888888", linewidth=0.5)
    bars.set_ylabel("joined / left")
    swing = max(1, *(w.joined for w in growth), *(w.left for w in growth))
    bars.set_ylim(-swing * 1.3 - 1, swing * 1.3 + 1)
    bars.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_zorder(bars.get_zorder() + 1)  # the line in front of the bars
    ax.patch.set_visible(False)
    _ticks(ax, [w.week for w in growth])
    ax.set_title("list growth per ISO week", fontsize=10)
    ax.legend(handles=[line, joined, left], loc="upper left", fontsize=8)
