"""Figures of the experiments: line plots in panels and grouped bar charts.

Matplotlib runs on the Agg backend, so figures are written without a display. Values are
plotted as given (callers pass percentages where the paper shows percentages). Every figure
is written twice: as the PNG its path names and as an SVG beside it.

Two habits keep figures honest: error bars or bands wherever a value is a mean over seeds,
and percentage axes that span at least ``MIN_SPAN`` points, so that noise within a few points
is not stretched across the whole panel into what looks like a trend.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MIN_SPAN = 20.0  # percentage points: the smallest y range a percentage panel shows
CURVES_INSIDE = 6  # more curves than this: the legend goes beside the axes


@dataclass
class Curve:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    dashed: bool = False
    linestyle: str | None = None  # a matplotlib line style that overrides solid / dashed, e.g. "-." for a fit
    marker: str = "o"
    yerr: Sequence[float | None] | None = None  # error bars, e.g. the standard deviation over seeds
    band: tuple[Any, Any] | None = None  # a shaded (low, high) region: two sequences (or arrays) like y
    markers: bool = True
    colour: str | None = None  # curves with the same key share a colour (default: the label)


@dataclass
class Panel:
    ylabel: str
    curves: list[Curve]
    title: str | None = None
    percent: bool = True  # y values are percentages: axis within [0, 100], at least MIN_SPAN wide


@dataclass
class BarPanel:
    ylabel: str
    series: dict[str, Sequence[float | None]]  # one bar per group and series (None: no bar)
    errors: dict[str, Sequence[float | None]] = field(default_factory=dict)
    logy: bool = False


@functools.cache
def _pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend, imported when the first figure is drawn: the
    experiments build their ``Curve`` and ``Panel`` records here also when they only list a
    sweep's points (``--status``), which must not spend a second importing matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_panels(
    panels: list[Panel],
    path: str | Path,
    *,
    xlabel: str,
    title: str | None = None,
    logx: bool = False,
) -> Path:
    """Panels stacked vertically over a shared x axis (like the paper's Figure 1)."""
    return plot_panel_grid([panels], path, xlabel=xlabel, title=title, logx=logx)


def plot_panel_grid(
    columns: list[list[Panel]],
    path: str | Path,
    *,
    xlabel: str,
    title: str | None = None,
    column_titles: Sequence[str] = (),
    logx: bool = False,
) -> Path:
    """Columns of stacked panels (like the paper's Figure 2: one column per dataset).

    A label keeps its colour in every panel, so a model is one colour throughout.
    """
    rows = max(len(column) for column in columns)
    fig, axes = _pyplot().subplots(
        rows, len(columns), figsize=(6.4 * len(columns), 2.6 + 2.4 * rows), sharex="col", squeeze=False
    )
    colours: dict[str, str] = {}
    for j, column in enumerate(columns):
        for i, panel in enumerate(column):
            _draw_panel(axes[i, j], panel, colours, logx)
        if j < len(column_titles):
            axes[0, j].set_title(column_titles[j], fontsize=11)
        axes[len(column) - 1, j].set_xlabel(xlabel)
        for i in range(len(column), rows):
            axes[i, j].set_visible(False)
    return _save(fig, path, title)


def _draw_panel(ax: Axes, panel: Panel, colours: dict[str, str], logx: bool) -> None:
    palette = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    for curve in panel.curves:
        key = curve.colour or curve.label
        colour = colours.setdefault(key, palette[len(colours) % len(palette)])
        style = (curve.linestyle or ("--" if curve.dashed else "-")) + (curve.marker if curve.markers else "")
        errors = None if curve.yerr is None else [0.0 if e is None else e for e in curve.yerr]
        ax.errorbar(curve.x, curve.y, yerr=errors, fmt=style, color=colour, markersize=4, capsize=3, label=curve.label)
        if curve.band is not None:
            ax.fill_between(curve.x, *curve.band, color=colour, alpha=0.15, linewidth=0)
    ax.set_ylabel(panel.ylabel)
    if panel.title:
        ax.set_title(panel.title, fontsize=10)
    if logx:
        ax.set_xscale("log")
    if panel.percent:
        ax.set_ylim(*percent_limits([v for c in panel.curves for v in c.y if v is not None]))
    ax.grid(True, which="major", alpha=0.3)
    if len(panel.curves) > CURVES_INSIDE:  # beside the axes, where it cannot hide a point
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    elif panel.curves:
        ax.legend(fontsize=8)


def percent_limits(values: Sequence[float], min_span: float = MIN_SPAN) -> tuple[float, float]:
    """Y limits within [0, 100] (a little room around it) that span at least ``min_span`` points."""
    if not values:
        return 0.0, 100.0
    low, high = min(values), max(values)
    pad = max(0.0, min_span - (high - low)) / 2
    low, high = low - pad - 2, high + pad + 2
    if low < -2:
        low, high = -2.0, high + (-2 - low)
    if high > 102:
        low, high = max(-2.0, low - (high - 102)), 102.0
    return low, high


def plot_bars(
    groups: list[str],
    series: dict[str, Sequence[float | None]],
    path: str | Path,
    *,
    ylabel: str,
    title: str | None = None,
    errors: dict[str, Sequence[float | None]] | None = None,
) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per series (None: no bar)."""
    return plot_bar_panels(groups, [BarPanel(ylabel, series, errors or {})], path, title=title)


def plot_bar_panels(groups: list[str], panels: list[BarPanel], path: str | Path, *, title: str | None = None) -> Path:
    """Grouped bar charts stacked over the same groups, e.g. accuracies above and the explained
    variance (log scale) below, so that a 0.02% bar is not drawn beside 85% ones."""
    heights = [4.2 if i == 0 else 2.6 for i in range(len(panels))]
    fig, axes = _pyplot().subplots(
        len(panels),
        1,
        figsize=(max(6.4, 1.4 * len(groups)), sum(heights)),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, panel in zip(axes[:, 0], panels):
        width = 0.8 / max(len(panel.series), 1)
        for i, (label, values) in enumerate(panel.series.items()):
            offsets = [g + (i - (len(panel.series) - 1) / 2) * width for g in range(len(groups))]
            errors = panel.errors.get(label) or [None] * len(values)
            present = [(x, v, e or 0.0) for x, v, e in zip(offsets, values, errors) if v is not None]
            if present:
                xs, ys, es = zip(*present)
                ax.bar(xs, ys, width=width, yerr=es if any(es) else None, capsize=2, label=label)
        ax.set_ylabel(panel.ylabel)
        if panel.logy:
            ax.set_yscale("log")
        else:  # percentages: the whole scale, so that bar heights compare honestly
            ax.set_ylim(0, 102)
        ax.grid(True, axis="y", alpha=0.3)
        if panel.series:
            ax.legend(fontsize=8)
    axes[-1, 0].set_xticks(range(len(groups)), groups, rotation=15, fontsize=8)
    return _save(fig, path, title)


def _save(fig: Figure, path: str | Path, title: str | None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight" keeps a legend beside the axes
    fig.savefig(path.with_suffix(".svg"), bbox_inches="tight")
    _pyplot().close(fig)
    return path
