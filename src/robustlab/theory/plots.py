"""Figures for the two theorems (matplotlib, written to a file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure  # no pyplot: no backend or global figure state

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D
    from matplotlib.typing import ColorType  # matplotlib >= 3.8; only for the checker

MARKERS = {"sign": "s", "1nn": "o", "mlp": "^", "lipschitz-mlp": "v", "oracle": "D"}
LEARNER_LABELS = {
    "sign": "sign(x_d)",
    "1nn": "1-NN (L2)",
    "mlp": "standard MLP",
    "lipschitz-mlp": "1-Lipschitz MLP (AOL)",
    "oracle": "oracle phi(sign(x_1..x_{d-1}))",
}


def plot_theorem1(sweeps: dict[str, dict], path: str | Path) -> Path:
    """One column per sweep (e.g. {"d = ceil(log2 n) + 7": ..., "d = 10": ...}): clean
    accuracy on top, robust accuracy with the bound below."""
    columns = list(sweeps.items())
    figure = Figure(figsize=(6.2 * len(columns), 9.2))
    axes = figure.subplots(2, len(columns), squeeze=False, sharey=True)
    for column, (title, sweep) in enumerate(columns):
        rows = sweep["rows"]
        ns = sorted({r["n"] for r in rows})
        for name in dict.fromkeys(r["learner"] for r in rows):
            mine = sorted((r for r in rows if r["learner"] == name), key=lambda r: r["n"])
            label = LEARNER_LABELS.get(name, name)
            style = {"marker": MARKERS.get(name, "o"), "linestyle": "--" if name == "oracle" else "-"}
            line = _band(axes[0, column], mine, "clean", label, **style)
            _band(axes[1, column], mine, "robust", label, color=line.get_color(), **style)
            if name == "lipschitz-mlp":
                _band(
                    axes[1, column],
                    mine,
                    "certified",
                    f"{label}, certified",
                    color=line.get_color(),
                    marker=style["marker"],
                    linestyle=":",
                )
        per_n = {r["n"]: r for r in rows}
        axes[1, column].plot(
            ns, [min(per_n[n]["bound"], 1.0) for n in ns], "k--", linewidth=2, label="bound 1/2 + n/2^d (clipped at 1)"
        )
        axes[1, column].plot(
            ns,
            [per_n[n]["ceiling"] for n in ns],
            color="grey",
            linestyle=":",
            linewidth=2,
            label="1/2 + P(test bits seen)/2",
        )
        eps = sweep["settings"]["eps"]
        axes[0, column].set_title(f"{title}: clean accuracy")
        axes[1, column].set_title(f"{title}: robust accuracy (L2, eps = {eps:g})")
        for ax in axes[:, column]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("training set size n")
            ax.set_ylim(-0.03, 1.05)
            ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (mean over phi, 95% CI)")
    figure.legend(*axes[1, 0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=9)
    delta = columns[0][1]["settings"]["delta"]
    figure.suptitle(
        f"Theorem 1 (no free robustness), delta = {delta:g}: accurate is easy, robust needs n comparable to 2^d",
        fontsize=12,
    )
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(figure, path, layout=False)


def plot_theorem2(sweep: dict, path: str | Path) -> Path:
    """Clean, certified and exact robust accuracy of L-inf 1-NN against n, with the theorem's
    sufficient n and the 99% level."""
    rows = sorted(sweep["rows"], key=lambda r: r["n"])
    settings = sweep["settings"]
    figure = Figure(figsize=(7.5, 5))
    ax = figure.subplots()
    _band(ax, rows, "clean", "clean accuracy")
    _band(ax, rows, "robust", f"robust accuracy at L-inf radius {settings['radius']:g} (exact)")
    _band(ax, rows, "certified", "certified by d_other - d_own > 2r", linestyle=":")
    sufficient = settings["sufficient_n"]
    ax.axvline(sufficient, color="k", linestyle="--", label=f"sufficient n = 37 ceil(1/delta)^d = {sufficient}")
    ax.axhline(0.99, color="grey", linestyle=":", label="99%")
    ax.set_xscale("log")
    ax.set_xlabel("training set size n")
    ax.set_ylabel("accuracy (mean over training sets, 95% CI)")
    lowest = min(r[key] for r in rows for key in ("clean", "certified", "robust"))
    ax.set_ylim(min(0.4, lowest - 0.05), 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(
        f"Theorem 2: L-inf 1-NN on a checkerboard, d = {settings['d']}, "
        f"{settings['cells']} cells per axis, margin delta = {settings['delta']:g}",
        fontsize=10,
    )
    return _save(figure, path)


def _band(
    ax: Axes,
    rows: list[dict[str, Any]],
    key: str,
    label: str,
    color: ColorType | None = None,
    linestyle: str = "-",
    marker: str = "o",
) -> Line2D:
    """A mean line with markers and its confidence band (clipped to [0, 1]); rows without a
    value are skipped."""
    rows = [r for r in rows if r.get(key) is not None]
    ns = [r["n"] for r in rows]
    mean = [r[key] for r in rows]
    (line,) = ax.plot(ns, mean, marker=marker, markersize=5, color=color, linestyle=linestyle, label=label)
    half = [r.get(f"{key}_ci") or 0.0 for r in rows]
    ax.fill_between(
        ns,
        [max(m - h, 0.0) for m, h in zip(mean, half)],
        [min(m + h, 1.0) for m, h in zip(mean, half)],
        color=line.get_color(),
        alpha=0.15,
        linewidth=0,
    )
    return line


def _save(figure: Figure, path: str | Path, layout: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout:
        figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
