"""Figures of the experiments: line plots in stacked panels and grouped bar charts.

Matplotlib runs on the Agg backend, so figures are written without a display. Values
are plotted as given; callers pass percentages where the paper shows percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


@dataclass
class Curve:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    dashed: bool = False


@dataclass
class Panel:
    ylabel: str
    curves: list[Curve]
    title: str | None = None


def plot_panels(
    panels: list[Panel],
    path: str | Path,
    *,
    xlabel: str,
    title: str | None = None,
    logx: bool = False,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Panels stacked vertically over a shared x axis (like the paper's Figure 1)."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.4, 2.6 + 2.4 * len(panels)), sharex=True, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        for curve in panel.curves:
            ax.plot(curve.x, curve.y, "--o" if curve.dashed else "-o", markersize=4, label=curve.label)
        ax.set_ylabel(panel.ylabel)
        if panel.title:
            ax.set_title(panel.title, fontsize=10)
        if logx:
            ax.set_xscale("log")
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(True, which="major", alpha=0.3)
        if panel.curves:
            ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel(xlabel)
    return _save(fig, path, title)


def plot_bars(
    groups: list[str],
    series: dict[str, Sequence[float | None]],
    path: str | Path,
    *,
    ylabel: str,
    title: str | None = None,
) -> Path:
    """Grouped bars: one group per entry of ``groups``, one bar per series (None: no bar)."""
    fig, ax = plt.subplots(figsize=(max(6.4, 1.4 * len(groups)), 4.2))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        present = [(x, v) for x, v in zip(xs, values) if v is not None]
        ax.bar([x for x, _ in present], [v for _, v in present], width=width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=15, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, title)


def _save(fig, path: str | Path, title: str | None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
