"""Gradient flow over a run, from ``History.gradients`` (``fit(record_gradients=...)``): each parameter's
gradient norm and update/weight ratio, on log scales (``manualbp train``'s gradients.png).

Lines are coloured by depth, from the first parameter (dark) to the last (light); a gap between the first
layers' gradient norms and the last layers' is a vanishing (or exploding) gradient.  The dashed line at 1e-3
on the ratio panel is CS231n's rule of thumb for a healthy update.
"""
import math

from . import new_figure

LEGEND_AT_MOST = 12   # more parameters than this: the colour scale alone says which line is which


def _rows_by_param(history):
    """param -> [(x, grad_norm, update_ratio)] with x the epoch (one measured step per epoch) or the step."""
    per_epoch = len({(r["param"], r["epoch"]) for r in history.gradients}) == len(history.gradients)
    series = {}
    for r in history.gradients:
        series.setdefault(r["param"], []).append((r["epoch"] if per_epoch else r["step"], r["grad_norm"],
                                                  r["update_ratio"]))
    return series, per_epoch


def _positive(points, index):
    """The points whose value is a positive finite number (a log scale shows nothing else)."""
    return [(p[0], p[index]) for p in points if p[index] is not None and math.isfinite(p[index]) and p[index] > 0]


def gradients_figure(history, title=None):
    """Two panels over the run: ||grad|| per parameter, and ||w_after - w_before|| / ||w_before||."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator
    if not history.gradients:
        raise ValueError("gradients_figure: the history holds no gradient norms: it comes from fit(..., "
                         "record_gradients=None), or from a run older than the recording; fit records them by default")
    series, per_epoch = _rows_by_param(history)
    names = list(series)
    cmap = colormaps["viridis"]
    fig = new_figure(12, 4.6)
    axes = fig.subplots(1, 2)
    xs = [p[0] for points in series.values() for p in points]
    for ax, index, label in ((axes[0], 1, "gradient norm ||grad||"),
                             (axes[1], 2, "update / weight  ||w' - w|| / ||w||")):
        drawn = False
        for n, name in enumerate(names):
            points = _positive(series[name], index)
            if not points:
                continue
            x, y = zip(*points)
            ax.plot(x, y, "o-", ms=3.5, lw=1.2, color=cmap(0.9 * n / max(len(names) - 1, 1)), label=name)
            drawn = True
        if drawn:
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "nothing positive to draw", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(label)
        ax.set_xlabel("epoch (its last step)" if per_epoch else "step")
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
        if len(set(xs)) <= 12:
            ax.set_xticks(sorted(set(xs)))   # a one-epoch run: one tick, at 1
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="major", alpha=0.3)
    axes[1].axhline(1e-3, color="0.5", ls="--", lw=1)
    axes[1].annotate("1e-3", (1, 1e-3), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                     textcoords="offset points", ha="right", fontsize=8, color="0.4")
    if len(names) <= LEGEND_AT_MOST:
        axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    else:
        axes[1].text(1.02, 0.5, f"{len(names)} parameters:\ndark = {names[0]}\n(first)\nlight = {names[-1]}\n(last)",
                     transform=axes[1].transAxes, va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
