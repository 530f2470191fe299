"""``manualbp explain``: watch the chain rule happen on the tutorials' 2-2-2 sigmoid network.

Derivation: derivations/01-chain-rule.md (and the sigmoid's slope s (1 - s), (A6) of
derivations/06-activations.md)

Prints the forward pass, then every weight's gradient twice: once by hand, as the
product of its local derivatives (C6), (C9), summed over paths where a hidden
neuron feeds both outputs (C3), (C8); and once from manualbp itself
(``Sequential.backward``, which fills each ``Parameter.grad``), side by side.
Then the gradient-descent step (C10), using the gradients of the weights from
before the step.

    python -m manualbp explain            # or: manualbp explain
    python -m manualbp explain --lr 0.1 --digits 12
    python -m manualbp explain --plot net.png    # also draw the network with these numbers (or net.svg)
"""
import argparse
import math
import sys

import numpy as np

# The network of the tutorials: inputs, weights w1..w8, biases, targets.
INPUTS = (0.05, 0.10)                      # i1, i2
HIDDEN_W = ((0.15, 0.20), (0.25, 0.30))    # row j: weights into h_j from (i1, i2): w1 w2 / w3 w4
OUTPUT_W = ((0.40, 0.45), (0.50, 0.55))    # row j: weights into o_j from (h1, h2): w5 w6 / w7 w8
B1, B2 = 0.35, 0.60                        # one bias per layer, as in the tutorial
TARGETS = (0.01, 0.99)                     # t1, t2
HIDDEN_NAMES = (("w1", "w2"), ("w3", "w4"))
OUTPUT_NAMES = (("w5", "w6"), ("w7", "w8"))


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def by_hand():
    """Every intermediate quantity of the derivation, in plain Python floats (no manualbp)."""
    i = INPUTS
    net_h = [HIDDEN_W[j][0] * i[0] + HIDDEN_W[j][1] * i[1] + B1 for j in range(2)]          # (C4)
    out_h = [sigmoid(z) for z in net_h]
    net_o = [OUTPUT_W[j][0] * out_h[0] + OUTPUT_W[j][1] * out_h[1] + B2 for j in range(2)]  # (C4)
    out_o = [sigmoid(z) for z in net_o]
    e_o = [0.5 * (TARGETS[j] - out_o[j]) ** 2 for j in range(2)]                           # (C5)
    de_dout_o = [out_o[j] - TARGETS[j] for j in range(2)]                # factor 1 of (C6)
    dout_dnet_o = [out_o[j] * (1 - out_o[j]) for j in range(2)]          # factor 2 of (C6), (A6)
    delta_o = [de_dout_o[j] * dout_dnet_o[j] for j in range(2)]          # (C7)
    paths = [[delta_o[j] * OUTPUT_W[j][k] for j in range(2)] for k in range(2)]  # (C8), one term per path
    de_dout_h = [sum(paths[k]) for k in range(2)]                        # (C8)
    dout_dnet_h = [out_h[k] * (1 - out_h[k]) for k in range(2)]
    grad_output_w = [[delta_o[j] * out_h[k] for k in range(2)] for j in range(2)]                   # (C6)
    grad_hidden_w = [[de_dout_h[j] * dout_dnet_h[j] * i[m] for m in range(2)] for j in range(2)]   # (C9)
    return {"net_h": net_h, "out_h": out_h, "net_o": net_o, "out_o": out_o, "e_o": e_o, "e_total": sum(e_o),
                "de_dout_o": de_dout_o, "dout_dnet_o": dout_dnet_o, "delta_o": delta_o, "paths": paths,
                "de_dout_h": de_dout_h, "dout_dnet_h": dout_dnet_h,
                "grad_output_w": grad_output_w, "grad_hidden_w": grad_hidden_w}


def by_manualbp(lr):
    """The same network as manualbp layers (float64): loss, gradients from backward(), weights after SGD."""
    t = manualbp_trace(lr)
    return t["e_total"], t["grads"], t["new_weights"]


def manualbp_trace(lr):
    """Everything manualbp computes for the network, in one run (the text trace and ``--plot`` both read it):

    ``e_total``; ``grads`` and ``new_weights`` (hidden (w1 w2 / w3 w4), output (w5 w6 / w7 w8)), from
    backward() and one SGD step; ``bias_grads`` (hidden, output), and ``net_h``, ``out_h``, ``net_o``,
    ``out_o``, each layer's values from manualbp's forward."""
    from . import nn, optim
    from .nn.saved import no_grad

    net = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 2), nn.Sigmoid()).double()
    net.load_state_dict({
        "0.weight": np.array(HIDDEN_W), "0.bias": np.array([B1, B1]),
        "2.weight": np.array(OUTPUT_W), "2.bias": np.array([B2, B2]),
    })
    x, t = np.array([INPUTS]), np.array([TARGETS])
    with no_grad():   # each layer's values for the picture; saves nothing for backward
        values = [x]
        for layer in net:
            values.append(layer(values[-1]))
    loss_fn = nn.MSELoss(reduction="sum")           # sum (out - t)^2 = 2 * E_total
    e_total = 0.5 * float(loss_fn(net(x), t))
    net.backward(loss_fn.backward(0.5))             # 0.5 * d(2E)/d(out) = dE/d(out)
    grads = (net[0].weight.grad.copy(), net[2].weight.grad.copy())
    bias_grads = (net[0].bias.grad.copy(), net[2].bias.grad.copy())
    optim.SGD(net.parameters(), lr=lr).step()       # (C10), after every gradient exists
    return {"e_total": e_total, "grads": grads, "bias_grads": bias_grads,
            "new_weights": (net[0].weight.data.copy(), net[2].weight.data.copy()),
            "net_h": values[1][0], "out_h": values[2][0], "net_o": values[3][0], "out_o": values[4][0]}


def _equal(a, b):
    return "equal" if abs(a - b) <= 1e-12 * max(1.0, abs(a)) else "DIFFERENT"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="manualbp explain",
        description="Print the chain-rule trace of the 2-2-2 sigmoid network, by hand and by manualbp's backward().")
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate of the update step (default 0.5)")
    parser.add_argument("--digits", type=int, default=9, help="decimals to print (default 9)")
    parser.add_argument("--plot", metavar="FILE", default=None,
                        help="also draw the network, its numbers and the two paths to w1 into FILE (.png or .svg; "
                             "needs matplotlib)")
    args = parser.parse_args(argv)
    if not (args.lr > 0 and math.isfinite(args.lr)):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    if not 1 <= args.digits <= 17:
        parser.error(f"--digits must be between 1 and 17, got {args.digits}")
    if args.plot is not None:
        from .viz import figure_format
        try:
            figure_format(args.plot, "--plot")
        except ValueError as exc:
            parser.error(str(exc))
    d = args.digits

    def f(v):
        return f"{v:.{d}f}" if v >= 0 else f"({v:.{d}f})"

    h = by_hand()
    trace = manualbp_trace(args.lr)   # the one run of manualbp that the text and the picture both show
    e_total, (g_hidden, g_output), (w_hidden, w_output) = trace["e_total"], trace["grads"], trace["new_weights"]
    ok = True
    out = print

    out("The 2-2-2 sigmoid network of derivations/01-chain-rule.md")
    out(f"  inputs i1 = {INPUTS[0]:g}, i2 = {INPUTS[1]:g}; targets t1 = {TARGETS[0]:g}, t2 = {TARGETS[1]:g}")
    out("  weights w1 w2 w3 w4 = 0.15 0.20 0.25 0.30 (into h1, h2), w5 w6 w7 w8 = 0.40 0.45 0.50 0.55 (into o1, o2)")
    out(f"  biases b1 = {B1:g} (hidden), b2 = {B2:g} (output); E_total = sum over outputs of 1/2 (t - out)^2")
    out("")
    out("Forward pass (C4), (C5)")
    for layer, names, ins, w, b in (("h", HIDDEN_NAMES, ("i1", "i2"), HIDDEN_W, "b1"),
                                    ("o", OUTPUT_NAMES, ("out_h1", "out_h2"), OUTPUT_W, "b2")):
        given = layer == "h"
        vals = INPUTS if given else h["out_h"]
        bias = B1 if given else B2
        for j in range(2):
            net, o = h[f"net_{layer}"][j], h[f"out_{layer}"][j]
            v0, v1 = (f"{vals[0]:g}", f"{vals[1]:g}") if given else (f(vals[0]), f(vals[1]))
            out(f"  net_{layer}{j + 1} = {names[j][0]}*{ins[0]} + {names[j][1]}*{ins[1]} + {b}"
                f" = {w[j][0]:g}*{v0} + {w[j][1]:g}*{v1} + {bias:g} = {f(net)}")
            out(f"  out_{layer}{j + 1} = sigmoid(net_{layer}{j + 1}) = {f(o)}")
    for j in range(2):
        out(f"  E_o{j + 1} = 1/2 (t{j + 1} - out_o{j + 1})^2 = 1/2 ({TARGETS[j]:g} - {f(h['out_o'][j])})^2"
            f" = {f(h['e_o'][j])}")
    ok &= _equal(h["e_total"], e_total) == "equal"
    out(f"  E_total = E_o1 + E_o2 = {f(h['e_o'][0])} + {f(h['e_o'][1])} = {f(h['e_total'])}")
    out(f"            manualbp, 0.5 * MSELoss(reduction='sum'): {f(e_total)}   {_equal(h['e_total'], e_total)}")
    out("")
    out("Backward, output layer: each of w5..w8 reaches the error along one path,")
    out("so its gradient is a product of three local derivatives (C6)")
    for j in range(2):
        n = j + 1
        out(f"  dE/dout_o{n}      = out_o{n} - t{n}          = {f(h['de_dout_o'][j])}")
        out(f"  dout_o{n}/dnet_o{n} = out_o{n} (1 - out_o{n})  = {f(h['dout_dnet_o'][j])}   (A6)")
        out(f"  delta_o{n} = dE/dnet_o{n} = {f(h['de_dout_o'][j])} * {f(h['dout_dnet_o'][j])}"
            f" = {f(h['delta_o'][j])}   (C7)")
    for j in range(2):
        for k in range(2):
            name, mine, theirs = OUTPUT_NAMES[j][k], h["grad_output_w"][j][k], float(g_output[j, k])
            ok &= _equal(mine, theirs) == "equal"
            out(f"  dE/d{name} = dE/dout_o{j + 1} * dout_o{j + 1}/dnet_o{j + 1} * dnet_o{j + 1}/d{name}")
            out(f"         = {f(h['de_dout_o'][j])} * {f(h['dout_dnet_o'][j])} * {f(h['out_h'][k])} (out_h{k + 1})")
            out(f"         = {f(mine)}        backward(): {f(theirs)}   {_equal(mine, theirs)}")
    out("")
    out("Backward, hidden layer: each hidden neuron feeds both outputs, so the two paths add (C3), (C8),")
    out("then the chain continues through the hidden sigmoid into the weight (C9)")
    for k in range(2):
        p1, p2 = h["paths"][k]
        out(f"  dE/dout_h{k + 1} = delta_o1 * {OUTPUT_NAMES[0][k]} + delta_o2 * {OUTPUT_NAMES[1][k]}"
            f"   (the weights from before the step)")
        out(f"             = {f(h['delta_o'][0])} * {OUTPUT_W[0][k]:.2f} + {f(h['delta_o'][1])} * {OUTPUT_W[1][k]:.2f}"
            f" = {f(p1)} + {f(p2)} = {f(h['de_dout_h'][k])}")
        out(f"  dout_h{k + 1}/dnet_h{k + 1} = out_h{k + 1} (1 - out_h{k + 1}) = {f(h['dout_dnet_h'][k])}   (A6)")
    for j in range(2):
        for m in range(2):
            name, mine, theirs = HIDDEN_NAMES[j][m], h["grad_hidden_w"][j][m], float(g_hidden[j, m])
            ok &= _equal(mine, theirs) == "equal"
            out(f"  dE/d{name} = dE/dout_h{j + 1} * dout_h{j + 1}/dnet_h{j + 1} * dnet_h{j + 1}/d{name}")
            out(f"         = {f(h['de_dout_h'][j])} * {f(h['dout_dnet_h'][j])} * {INPUTS[m]:g} (i{m + 1})")
            out(f"         = {f(mine)}        backward(): {f(theirs)}   {_equal(mine, theirs)}")
    out("")
    out(f"Update w <- w - lr * dE/dw with lr = {args.lr:g} (C10): every gradient above was computed first,")
    out("with the weights from before the step; only then does any weight change")
    for names, w0, grads_hand, w_new in ((OUTPUT_NAMES, OUTPUT_W, h["grad_output_w"], w_output),
                                         (HIDDEN_NAMES, HIDDEN_W, h["grad_hidden_w"], w_hidden)):
        for j in range(2):
            for k in range(2):
                mine, theirs = w0[j][k] - args.lr * grads_hand[j][k], float(w_new[j, k])
                ok &= _equal(mine, theirs) == "equal"
                out(f"  {names[j][k]} = {w0[j][k]:.2f} - {args.lr:g} * {f(grads_hand[j][k])} = {f(mine)}"
                    f"        SGD.step(): {f(theirs)}   {_equal(mine, theirs)}")
    out("")
    out(f"Summary     {'by hand':>{d + 7}} {'by manualbp':>{d + 7}}")
    for name, mine, theirs in (("E_total", h["e_total"], e_total),
                               ("dE/dw5", h["grad_output_w"][0][0], float(g_output[0, 0])),
                               ("dE/dw1", h["grad_hidden_w"][0][0], float(g_hidden[0, 0])),
                               ("w5 new", OUTPUT_W[0][0] - args.lr * h["grad_output_w"][0][0], float(w_output[0, 0])),
                               ("w1 new", HIDDEN_W[0][0] - args.lr * h["grad_hidden_w"][0][0], float(w_hidden[0, 0]))):
        out(f"  {name:9s} {f(mine):>{d + 7}} {f(theirs):>{d + 7}}   {_equal(mine, theirs)}")
    verdict = "every number by hand equals manualbp's" if ok else "MISMATCH between the hand computation and manualbp"
    out("  " + verdict)
    if args.plot is not None and not _plot(args.plot, args.lr, d, trace):
        return 1
    return 0 if ok else 1


def _plot(path, lr, digits, trace):
    """Draw the network with ``trace``'s numbers into ``path``; False (and a message) without matplotlib."""
    try:
        from .viz import save_figure
        from .viz.two_two_two import two_two_two_figure
        fig, _ = two_two_two_figure(lr, digits, trace=trace)
    except ImportError as exc:
        print(f"manualbp explain: --plot needs matplotlib ({exc}): pip install matplotlib", file=sys.stderr)
        return False
    print(f"figure: {save_figure(fig, path)}")
    return True


if __name__ == "__main__":
    raise SystemExit(main())
