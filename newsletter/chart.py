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

from newsletter.stats import EditionStats, WeekGrowth

if TYPE_CHECKING:
    from matplotlib.axes import Axes

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
) -> bytes:
    """The chart as PNG or SVG bytes, 800x400 px (at 100 dpi).

    Left (or alone): recipients per edition as bars, unsubscribes on a second y axis. Right,
    when ``growth`` has rows: active subscriptions at the end of each week, with joins and
    leaves as bars. With no editions the panel says so; the file is still valid.
    """
    if fmt not in ("png", "svg"):
        raise ValueError(f"chart format must be png or svg, not {fmt!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself; savefig below renders through it
    axes = figure.subplots(1, 2 if growth else 1, squeeze=False)[0]
    _editions(axes[0], stats)
    if growth:
        _growth(axes[1], growth)
    figure.suptitle(title, parse_math=False)
    out = io.BytesIO()
    # SVG: the title in <dc:title>; no date, so the same data gives the same file.
    metadata = {"Title": title, "Date": None} if fmt == "svg" else {"Title": title}
    figure.savefig(out, format=fmt, metadata=metadata)
    return out.getvalue()


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
    # Headroom above the tallest bar and point, where the legend goes.
    ax.set_ylim(0, max(1, *(s.recipients for s in stats)) * 1.3)
    right = ax.twinx()
    (line,) = right.plot(
        x, [s.unsubscribes for s in stats], color="#C44E52", marker="o", label="unsubscribes"
    )
    right.set_ylabel("unsubscribes")
    right.set_ylim(0, max(1, *(s.unsubscribes for s in stats)) * 1.3)
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    labels = []
    for s in stats:
        moment = s.sent_at or s.send_started_at
        labels.append(f"{moment:%Y-%m-%d}" if moment else f"#{s.edition_id}")
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
    bars = ax.twinx()
    joined = bars.bar(x, [w.joined for w in growth], color="#8172B2", alpha=0.5, label="joined")
    left = bars.bar(x, [-w.left for w in growth], color="#C44E52", alpha=0.5, label="left")
    bars.axhline(0, color="#888888", linewidth=0.5)
    bars.set_ylabel("joined / left")
    bars.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_zorder(bars.get_zorder() + 1)  # the line in front of the bars
    ax.patch.set_visible(False)
    _ticks(ax, [w.week for w in growth])
    ax.set_title("list growth per ISO week", fontsize=10)
    ax.legend(handles=[line, joined, left], loc="upper left", fontsize=8)
