"""The derivations' figures, each computed with manualbp and drawn with matplotlib.

    python -m manualbp.figures [FOLDER]     write the four PNGs into FOLDER (default derivations/figures)

| file | page | what it shows |
|---|---|---|
| ``04-im2col.png`` | derivations/04-conv2d.md | (K7): each 3 x 3 window becomes a column; one row times that matrix is the convolution |
| ``05-maxpool-routing.png`` | derivations/05-maxpool.md | (P3), (P4): the argmax of each window receives the gradient, the rest 0 |
| ``09-momentum-bowl.png`` | derivations/09-sgd-momentum.md | (O1), (O4)-(O6): SGD and SGD with momentum on a long, narrow bowl |
| ``10-variance-per-layer.png`` | derivations/10-initialisation.md | (I1), (I3): the variance of each layer's output in a deep ReLU stack |

Each ``draw_*`` function computes its numbers (``*_data``, no matplotlib needed), draws them into a figure of a
fixed size (``SIZES``, in pixels), writes it with ``checkpoint.atomic_write`` and returns the numbers it drew,
so a test can hold the picture to the code. Needs matplotlib (``pip install -e ".[notebooks]"``).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from . import nn, optim
from .checkpoint import atomic_write
from .random import manual_seed

DPI = 100
SIZES = {"04-im2col.png": (1150, 800), "05-maxpool-routing.png": (900, 640),
         "09-momentum-bowl.png": (1100, 450), "10-variance-per-layer.png": (900, 560)}
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")

__all__ = ["DPI", "SIZES", "draw_all", "draw_im2col", "draw_maxpool_routing", "draw_momentum_bowl",
           "draw_variance_per_layer", "im2col_data", "maxpool_routing_data", "momentum_bowl_data",
           "variance_per_layer_data"]


# --- the numbers ------------------------------------------------------------------------------------------------

def im2col_data():
    """A 4 x 4 image, a 3 x 3 kernel: the column matrix (K7), the product W2 @ col and Conv2d's output."""
    x = np.array([[3, 1, 0, 2], [1, 4, 2, 0], [0, 2, 5, 1], [2, 0, 1, 3]], dtype=np.float64)
    w = np.array([[1, 0, -1], [2, 1, 0], [0, -1, 1]], dtype=np.float64)
    windows = [(i, j) for i in range(2) for j in range(2)]             # s = i * OW + j
    col = np.stack([x[i:i + 3, j:j + 3].ravel() for i, j in windows], axis=1)   # (R, P) = (9, 4)
    product = w.reshape(1, 9) @ col                                    # (K7): (1, 9) @ (9, 4)
    conv = nn.Conv2d(1, 1, 3, bias=False).double()
    conv.load_state_dict({"weight": w.reshape(1, 1, 3, 3)})
    y = conv(x.reshape(1, 1, 4, 4))[0, 0]                              # (K1)
    return {"x": x, "w": w, "windows": windows, "col": col, "product": product, "y": y}


def maxpool_routing_data():
    """The example of derivations/05-maxpool.md through MaxPool2d(2): forward, argmax and backward."""
    x = np.array([[1, 3, 2, 1], [4, 2, 0, 1], [5, 6, 1, 2], [0, 2, 7, 3]], dtype=np.float64)
    G = np.array([[1.0, 2.0], [3.0, 4.0]])
    pool = nn.MaxPool2d(2, return_indices=True)
    y, argmax = pool(x.reshape(1, 1, 4, 4))                            # (P1), (P3)
    grad_x = pool.backward(G.reshape(1, 1, 2, 2))                      # (P4)
    return {"x": x, "y": y[0, 0], "argmax": argmax[0, 0], "G": G, "grad_x": grad_x[0, 0]}


BOWL = (1.0, 20.0)  # L = (a theta_1^2 + b theta_2^2) / 2


def momentum_bowl_data(lr=0.09, momentum=0.7, steps=40, start=(-4.0, 1.5)):
    """Paths of SGD without and with momentum on the bowl ``BOWL``, each (steps + 1, 2), run by optim.SGD."""
    a, b = BOWL
    paths = {}
    for mu in (0.0, momentum):
        theta = nn.Parameter(np.array(start, dtype=np.float64))
        opt = optim.SGD([theta], lr=lr, momentum=mu)
        path = [theta.data.copy()]
        for _ in range(steps):
            opt.zero_grad()
            theta.grad = np.array([a, b]) * theta.data                 # dL/dtheta
            opt.step()                                                 # (O1), or (O4)-(O6)
            path.append(theta.data.copy())
        paths[mu] = np.array(path)
    return {"lr": lr, "momentum": momentum, "plain": paths[0.0], "with_momentum": paths[momentum]}


INITS = {  # name (with the factor per layer for width 256): (initialise a weight, n -> n * sigma_w^2)
    "normal, std 0.01: × 0.0128 per layer": (lambda w: nn.init.normal_(w, 0.0, 0.01), lambda n: n * 1e-4),
    "PyTorch default (I8): × 1/6": (lambda w: nn.init.kaiming_uniform_(w, a=5 ** 0.5), lambda n: 1 / 3),
    "Xavier normal (I4): × 1/2": (lambda w: nn.init.xavier_normal_(w), lambda n: 2 * n / (n + n)),
    "Kaiming normal, ReLU (I6): × 1": (lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"), lambda n: 2.0),
}


def variance_per_layer_data(depth=20, width=256, batch=512, seed=0):
    """Var of each Linear's output y_l (l = 1..depth) in Linear(width, width, bias=False) + ReLU layers, float64.

    Returns {"measured": {name: (depth,)}, "predicted": {name: (depth,)}}: the prediction is (I1) with the
    ReLU's halving (I3), Var(y_1) = n sigma^2 and each later layer n sigma^2 / 2 times the one before.
    """
    x0 = np.random.default_rng(seed).standard_normal((batch, width))
    measured, predicted = {}, {}
    for k, (name, (initialise, n_sigma2_of)) in enumerate(INITS.items()):
        n_sigma2 = n_sigma2_of(width)
        manual_seed(seed + k)
        x, out = x0, []
        for _ in range(depth):
            layer = nn.Linear(width, width, bias=False).double()
            initialise(layer.weight)
            y = layer(x)
            out.append(float(np.mean(y ** 2)))                         # the mean of y is 0: this is Var(y)
            x = nn.ReLU()(y)
        measured[name] = np.array(out)
        predicted[name] = n_sigma2 * (n_sigma2 / 2) ** np.arange(depth)
    return {"measured": measured, "predicted": predicted}


# --- drawing ----------------------------------------------------------------------------------------------------

def _figure(name):
    from matplotlib.figure import Figure

    w, h = SIZES[name]
    return Figure(figsize=(w / DPI, h / DPI), dpi=DPI)


def _save(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None}))


def _cell(r, c, x0, y0, gap):
    """Bottom-left corner of cell (r, c); ``gap`` separates the 2 x 2 blocks (0: a plain grid)."""
    return x0 + c + gap * (c // 2), y0 - r - 1 - gap * (r // 2)


def _grid(ax, values, x0, y0, fills=None, bold=(), fmt="{:g}", fontsize=11, faint=(), gap=0.0):
    """Draw ``values`` as a grid of unit cells, top-left corner at (x0, y0), rows going down."""
    from matplotlib.patches import Rectangle

    values = np.atleast_2d(values)
    for (r, c), v in np.ndenumerate(values):
        fill = (fills or {}).get((r, c), "white")
        x, y = _cell(r, c, x0, y0, gap)
        ax.add_patch(Rectangle((x, y), 1, 1, facecolor=fill, edgecolor="0.35", lw=0.8))
        ax.text(x + 0.5, y + 0.5, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                fontweight="bold" if (r, c) in bold else "normal", color="0.6" if (r, c) in faint else "black")


def _tint(colour, alpha):
    from matplotlib.colors import to_rgb

    return tuple(1 - alpha * (1 - c) for c in to_rgb(colour))


def draw_im2col(path):
    d = im2col_data()
    fig = _figure("04-im2col.png")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.5, 24.5)
    ax.set_ylim(-3.5, 16)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.text(12, 15.3, "im2col: every 3 × 3 window of the image x becomes one column of a matrix", ha="center",
            fontsize=14)
    for s, (i, j) in enumerate(d["windows"]):                          # the four windows, one picture each
        x0 = 0.75 + 6 * s
        fills = {(i + p, j + q): _tint(COLOURS[s], 0.45) for p in range(3) for q in range(3)}
        _grid(ax, d["x"], x0, 14, fills, fontsize=10)
        ax.text(x0 + 2, 9.4, f"window s = {s}  (i={i}, j={j})", ha="center", fontsize=10, color=COLOURS[s])
    fills = {(r, s): _tint(COLOURS[s], 0.45) for r in range(9) for s in range(4)}
    _grid(ax, d["w"].reshape(1, 9), 0, 4, fontsize=10)                 # W2: the kernel as one row
    ax.text(4.5, 4.6, "kernel w as a row W2 (1 x 9)", ha="center", fontsize=10)
    ax.text(9.6, 3.5, "×", ha="center", va="center", fontsize=16)
    _grid(ax, d["col"], 10.5, 8, fills, fontsize=10)                   # col: (9, 4)
    ax.text(12.5, 8.3, "col (9 x 4)", ha="center", fontsize=10)
    for s in range(4):
        ax.text(11 + s, -1.4, f"s={s}", ha="center", fontsize=9, color=COLOURS[s])
    ax.text(15.5, 3.5, "=", ha="center", va="center", fontsize=16)
    fills_y = {(0, s): _tint(COLOURS[s], 0.45) for s in range(4)}
    _grid(ax, d["product"], 16.3, 4, fills_y, fontsize=10)
    ax.text(18.3, 4.6, "W2 @ col (1 x 4)", ha="center", fontsize=10)
    ax.annotate("", xy=(21.5, 3.5), xytext=(20.5, 3.5), arrowprops={"arrowstyle": "->", "lw": 1.2})
    _grid(ax, d["y"], 21.8, 4.5, {(i, j): _tint(COLOURS[2 * i + j], 0.45) for i in range(2) for j in range(2)},
          fontsize=10)
    ax.text(22.8, 5.1, "y (2 x 2)", ha="center", fontsize=10)
    ax.text(12, -2.9, "Column s holds window s read row by row (K7); the convolution of x with w (K1) is one "
            "matrix product, reshaped.", ha="center", fontsize=10.5)
    _save(fig, path)
    return d


def draw_maxpool_routing(path):
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as Polyline

    d = maxpool_routing_data()
    fig = _figure("05-maxpool-routing.png")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-1, 14)
    ax.set_ylim(-1.2, 12.2)
    ax.set_aspect("equal")
    ax.axis("off")
    gap, top, bottom = 1.0, 11, 5                                       # the 2 x 2 windows drawn apart
    window = {(h, v): 2 * (h // 2) + v // 2 for h in range(4) for v in range(4)}   # which window a cell is in
    winners = {divmod(int(a), 4): s for s, a in enumerate(d["argmax"].ravel())}     # (P3): cell -> its window
    drawn = np.zeros((4, 4))
    for (h, v), s in winners.items():                                   # (P4): route G along the argmax
        drawn[h, v] += d["G"].ravel()[s]
    tint = {c: _tint(COLOURS[s], 0.25 if c not in winners else 0.75) for c, s in window.items()}
    yfill = {(i, j): _tint(COLOURS[2 * i + j], 0.75) for i in range(2) for j in range(2)}
    _grid(ax, d["x"], 0, top, tint, bold=winners, gap=gap)
    ax.text(2.5, top + 0.4, "input x, four 2 × 2 windows; each argmax dark", ha="center", fontsize=10.5)
    _grid(ax, d["y"], 10, top - 1.5, yfill)
    ax.text(11, top - 1.1, "y = max per window", ha="center", fontsize=10.5)
    ax.annotate("forward (P1)", xy=(9.6, top - 2.5), xytext=(5.6, top - 2.5), va="center", fontsize=10,
                arrowprops={"arrowstyle": "->", "lw": 1.2}, ha="left")
    _grid(ax, drawn, 0, bottom, {c: tint[c] for c in winners}, bold=winners,
          faint=set(window) - set(winners), gap=gap)
    ax.text(2.5, -0.9, "dL/dx: each G on its window's argmax, the rest 0", ha="center", fontsize=10.5)
    gx, gy = 11, bottom - 1.5                                           # G, 2 x 2, top-left corner
    _grid(ax, d["G"], gx, gy, yfill)
    ax.text(gx + 1.35, gy - 2.6, "G = dL/dy", ha="right", fontsize=10.5)   # clear of the red path
    lane = {0: bottom + 0.45, 1: bottom - 2 - 0.3, 2: bottom - 2 - gap + 0.3, 3: bottom - 4 - gap - 0.45}
    for (h, v), s in winners.items():                                   # one path per routed gradient
        i, j = divmod(s, 2)
        cx, cy = _cell(h, v, 0, bottom, gap)
        end = (cx + 0.5, cy + 1 if h % 2 == 0 else cy)                  # the winner's outer edge
        if j == 1:                                                      # leave G through its top or bottom
            start = (gx + 1.5, gy - i * 2 if i == 0 else gy - 2)
            points = [start, (start[0], lane[h]), (end[0], lane[h]), end]
        else:                                                           # leave G through its left side
            start, turn = (gx, gy - i - 0.5), gx - 1.2 + 0.6 * i
            points = [start, (turn, start[1]), (turn, lane[h]), (end[0], lane[h]), end]
        ax.add_patch(FancyArrowPatch(path=Polyline(points), arrowstyle="-|>", mutation_scale=12,
                                     color=COLOURS[s], lw=1.4))
    ax.text(8.2, bottom + 0.85, "backward (P4)", ha="center", fontsize=10)
    _save(fig, path)
    return {**d, "drawn": drawn}


def draw_momentum_bowl(path):
    d = momentum_bowl_data()
    a, b = BOWL
    fig = _figure("09-momentum-bowl.png")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": (2.2, 1)})
    t1, t2 = np.meshgrid(np.linspace(-4.6, 1.6, 300), np.linspace(-1.9, 1.9, 200))
    left.contour(t1, t2, 0.5 * (a * t1 ** 2 + b * t2 ** 2), levels=np.geomspace(0.02, 40, 12), colors="0.75",
                 linewidths=0.8)
    styles = (("plain", f"SGD, lr {d['lr']} (O1)", COLOURS[0]),
              ("with_momentum", f"SGD, lr {d['lr']}, momentum {d['momentum']} (O4)-(O6)", COLOURS[3]))
    for key, label, colour in styles:
        p = d[key]
        left.plot(p[:, 0], p[:, 1], "o-", color=colour, ms=3, lw=1.2, label=label)
        loss = 0.5 * (a * p[:, 0] ** 2 + b * p[:, 1] ** 2)
        right.semilogy(loss, color=colour, lw=1.5)
    left.plot([0], [0], "k*", ms=10)
    left.set_xlabel(r"$\theta_1$")
    left.set_ylabel(r"$\theta_2$")
    start = "({:g}, {:g})".format(*d["plain"][0])
    left.set_title(rf"$L = (\theta_1^2 + {b:g}\,\theta_2^2)/2$, both from {start}", fontsize=11)
    left.legend(loc="upper right", fontsize=9)
    left.set_aspect("equal")
    right.set_xlabel("step")
    right.set_ylabel("loss")
    right.set_title("loss per step", fontsize=11)
    right.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return d


def draw_variance_per_layer(path):
    d = variance_per_layer_data()
    fig = _figure("10-variance-per-layer.png")
    ax = fig.subplots()
    layers = np.arange(1, len(next(iter(d["measured"].values()))) + 1)
    for colour, name in zip(COLOURS, d["measured"]):
        ax.semilogy(layers, d["measured"][name], "o-", color=colour, ms=4, label=name)
        ax.semilogy(layers, d["predicted"][name], "--", color=colour, lw=1, alpha=0.6)
    ax.set_xlabel("layer l (Linear(256, 256) + ReLU)")
    ax.set_ylabel(r"Var($y_l$), the layer's output before its ReLU")
    ax.set_title("Variance per layer for four initialisations (dashed: predicted by (I1) and (I3))", fontsize=11)
    ax.set_xticks(layers[::2])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return d


DRAW = {"04-im2col.png": draw_im2col, "05-maxpool-routing.png": draw_maxpool_routing,
        "09-momentum-bowl.png": draw_momentum_bowl, "10-variance-per-layer.png": draw_variance_per_layer}


def draw_all(folder="derivations/figures"):
    """Write every figure into ``folder``; return {file name: the numbers it drew}."""
    return {name: draw(Path(folder) / name) for name, draw in DRAW.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m manualbp.figures", description="Draw the derivations' figures.")
    parser.add_argument("folder", nargs="?", default="derivations/figures")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("manualbp.figures needs matplotlib: pip install -e \".[notebooks]\"", file=sys.stderr)
        return 2
    for name in draw_all(args.folder):
        print(f"wrote {Path(args.folder) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
