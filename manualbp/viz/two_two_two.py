"""The tutorials' 2-2-2 sigmoid network as a picture (``manualbp explain --plot FILE``).

Derivation: derivations/01-chain-rule.md

Every number drawn comes from ``manualbp.explain.manualbp_trace``, the one run of manualbp's forward,
backward() and SGD step that the text trace of ``manualbp explain`` prints too: the neurons' net inputs and
outputs from the forward, each weight's dE/dw from its ``Parameter.grad``, the new w5 and w1 from
``SGD.step()``.  The two paths by which w1 reaches the error (through o1 and w5, through o2 and w7) are
drawn in two colours, and their terms delta_o * w, which add up to dE/dout_h1 (C8), are spelled out below
the network; delta_o is dE/dnet_o, the output layer's bias gradient.
"""
from .. import explain
from . import new_figure

# where each neuron sits (x: layer, y: first neuron on top)
X = {"i": 0.0, "h": 4.2, "o": 8.4, "E": 11.6}
Y = (3.0, 0.0)
PATH_COLOURS = ("tab:red", "tab:orange")   # the path through o1 (w5), the path through o2 (w7)
QUIET = "0.55"


def two_two_two_figure(lr=0.5, digits=9, trace=None):
    """The figure, and ``drawn``: a dict from what each label shows ("dE/dw1", "net_h1", "w5 new", ...) to
    ``(value, text)``, the number as computed and the string drawn for it.

    Args:
        lr: the learning rate of the step whose update of w5 and w1 is shown (default 0.5, the tutorials').
        digits: decimals of every number drawn (default 9, as ``manualbp explain``).
        trace: ``explain.manualbp_trace(lr)`` when the caller has it already (``manualbp explain`` prints it).
    """
    t = explain.manualbp_trace(lr) if trace is None else trace
    g_hidden, g_output = t["grads"]
    w_hidden, w_output = t["new_weights"]
    delta_o = t["bias_grads"][1]      # dE/dnet_o, (C7): the output layer's bias gradient
    drawn = {}

    def num(key, value):
        text = f"{float(value):.{digits}f}"
        drawn[key] = (float(value), text)
        return text

    fig = new_figure(15, 8)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.90))
    ax.set_xlim(-1.3, 14.2)
    ax.set_ylim(-3.1, 4.1)
    ax.axis("off")
    fig.suptitle(f"The 2-2-2 sigmoid network: forward values, dE/dw from backward(), one SGD step (lr = {lr:g})",
                 fontsize=13)

    # edges first, so that the neurons' boxes sit on top of them
    on_path = {("h", 0, 0): (PATH_COLOURS[0],), ("h", 0, 1): (PATH_COLOURS[1],)}   # w5: h1 -> o1, w7: h1 -> o2
    layers = (("i", "h", explain.HIDDEN_W, explain.HIDDEN_NAMES, g_hidden),
              ("h", "o", explain.OUTPUT_W, explain.OUTPUT_NAMES, g_output))
    for src, dst, weights, names, grads in layers:
        for j in range(2):            # into neuron j of dst
            for k in range(2):        # from neuron k of src
                colours = PATH_COLOURS if (src, k, j) == ("i", 0, 0) else on_path.get((src, k, j), ())
                _edge(ax, (X[src], Y[k]), (X[dst], Y[j]), colours)
                name = names[j][k]
                label = f"{name} = {weights[j][k]:.2f}\ndE/d{name} = {num('dE/d' + name, grads[j, k])}"
                # straight edges labelled at their middle, the crossing ones near their start
                frac = 0.5 if j == k else 0.3
                x = X[src] + frac * (X[dst] - X[src])
                y = Y[k] + frac * (Y[j] - Y[k])
                ax.text(x, y, label, ha="center", va="center", fontsize=9, family="monospace", zorder=4,
                        color=colours[0] if colours else "black",
                        bbox={"boxstyle": "round,pad=0.25", "fc": "white",
                              "ec": colours[0] if colours else QUIET, "lw": 1.5 if colours else 0.8})
    for j in range(2):                # o_j -> E_oj
        _edge(ax, (X["o"], Y[j]), (X["E"], Y[j]), (PATH_COLOURS[j],))

    # neurons
    for j in range(2):
        ax.text(X["i"], Y[j], f"i{j + 1}\n{explain.INPUTS[j]:g}", ha="center", va="center", fontsize=11, zorder=5,
                bbox={"boxstyle": "circle,pad=0.4", "fc": "#eef3fb", "ec": "0.3"})
        for layer, name in (("h", "h"), ("o", "o")):
            net = num(f"net_{name}{j + 1}", t[f"net_{layer}"][j])
            out = num(f"out_{name}{j + 1}", t[f"out_{layer}"][j])
            hot = (layer == "h" and j == 0) or layer == "o"
            edge = ("purple" if layer == "h" else PATH_COLOURS[j]) if hot else "0.3"
            ax.text(X[layer], Y[j], f"{name}{j + 1}\nnet {net}\nout {out}", ha="center", va="center", fontsize=9.5,
                    family="monospace", zorder=5,
                    bbox={"boxstyle": "round,pad=0.5", "fc": "#fff8e7" if hot else "#f4f4f4", "ec": edge,
                          "lw": 2.2 if hot else 1})
        e = 0.5 * (explain.TARGETS[j] - t["out_o"][j]) ** 2
        ax.text(X["E"], Y[j], f"E_o{j + 1} = {num(f'E_o{j + 1}', e)}\ntarget t{j + 1} = {explain.TARGETS[j]:g}",
                ha="center", va="center", fontsize=9.5, family="monospace", zorder=5,
                bbox={"boxstyle": "round,pad=0.5", "fc": "#fdecec", "ec": PATH_COLOURS[j], "lw": 1.5})
    for layer, b, name in (("h", explain.B1, "b1"), ("o", explain.B2, "b2")):
        ax.text(X[layer], Y[1] - 0.85, f"bias {name} = {b:g} (both neurons)", ha="center", va="center", fontsize=9,
                color=QUIET)
    ax.text(X["E"], 1.5, f"E_total =\n{num('E_total', t['e_total'])}", ha="center", va="center", fontsize=10.5,
            family="monospace", zorder=5, bbox={"boxstyle": "round,pad=0.5", "fc": "white", "ec": "0.3"})
    for x, text in ((X["i"], "inputs"), (X["h"], "hidden layer (sigmoid)"), (X["o"], "output layer (sigmoid)"),
                    (X["E"], "errors 1/2 (t - out)^2")):
        ax.text(x, 3.85, text, ha="center", va="center", fontsize=10, color="0.25")

    # the two paths to w1, and the update
    p = [num(f"path {n + 1}", delta_o[n] * explain.OUTPUT_W[n][0]) for n in range(2)]
    d = [num(f"delta_o{n + 1}", delta_o[n]) for n in range(2)]
    lines = [("w1 reaches the error along two paths, which add (C3), (C8):", "black"),
             ("  path 1: E_o1 <- out_o1 <- net_o1 <- w5 <- out_h1 <- net_h1 <- w1    "
              + f"delta_o1 * w5 = {d[0]} * {explain.OUTPUT_W[0][0]:.2f} = {p[0]}", PATH_COLOURS[0]),
             ("  path 2: E_o2 <- out_o2 <- net_o2 <- w7 <- out_h1 <- net_h1 <- w1    "
              + f"delta_o2 * w7 = {d[1]} * {explain.OUTPUT_W[1][0]:.2f} = {p[1]}", PATH_COLOURS[1]),
             (f"  dE/dw1 = (path 1 + path 2) * out_h1 (1 - out_h1) * i1 = {drawn['dE/dw1'][1]}   (C9)", "purple")]
    for n, (text, colour) in enumerate(lines):
        ax.text(-1.1, -1.55 - 0.33 * n, text, ha="left", va="center", fontsize=9.5, family="monospace",
                color=colour)
    w5_new, w1_new = num("w5 new", w_output[0, 0]), num("w1 new", w_hidden[0, 0])
    ax.text(14.1, -2.05, f"after one SGD step, w <- w - {lr:g} dE/dw (C10):\n"
                        f"w5: 0.40 -> {w5_new}\nw1: 0.15 -> {w1_new}",
            ha="right", va="center", multialignment="left", fontsize=10, family="monospace", zorder=5,
            bbox={"boxstyle": "round,pad=0.5", "fc": "#eefaf0", "ec": "tab:green", "lw": 1.5})
    return fig, drawn


def _edge(ax, start, end, colours):
    """A line from ``start`` to ``end``; on a highlighted path one line per colour, side by side."""
    if not colours:
        ax.plot(*zip(start, end), color=QUIET, lw=1, zorder=1)
        return
    (x0, y0), (x1, y1) = start, end
    length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length       # unit normal, to set parallel lines apart
    for n, colour in enumerate(colours):
        shift = 0.045 * (n - (len(colours) - 1) / 2)
        ax.plot((x0 + shift * nx, x1 + shift * nx), (y0 + shift * ny, y1 + shift * ny), color=colour, lw=2.6,
                zorder=2, solid_capstyle="round")
