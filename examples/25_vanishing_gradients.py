"""Vanishing gradients: a deep sigmoid MLP, the same depth with ReLU and Kaiming init, and with BatchNorm1d.

    python examples/25_vanishing_gradients.py                      # 10 layers, the offline digits, 5 epochs
    python examples/25_vanishing_gradients.py --out grads.png      # where the figure goes (default runs/...)
    python examples/25_vanishing_gradients.py --quick              # 1 epoch on 512 digits

Three networks of ten Linear layers (64 -> 64 -> ... -> 64 -> 10) on the 8x8 digits:

    sigmoid           Linear -> Sigmoid, nine times, then Linear; torch's default init
    relu + kaiming    Linear -> ReLU, nine times, then Linear; weights kaiming_normal_ (std sqrt(2 / fan_in))
    sigmoid + BN      Linear -> BatchNorm1d -> Sigmoid, nine times, then Linear; torch's default init

What to look at:

- the sigmoid net's gradient norms fall layer by layer toward the input.  Going back through one layer
  multiplies dL/d(out) by the sigmoid's slope s (1 - s), at most 1/4 (derivations/06-activations.md, (A6)),
  and by W^T, whose default init (uniform within +-1/sqrt(64)) shrinks a vector further: nine layers of that
  leave the first layer with a gradient about 1e-8 times the last one's, and the network does not learn
  (10% on the test digits: chance);
- ReLU's slope is 1 where the unit is on, and Kaiming's init (variance 2 / fan_in) is chosen so that the
  signal's size is kept from layer to layer, forward and backward: the first layer's gradient is within a
  small factor of the last one's;
- BatchNorm1d before each sigmoid gives its input mean 0 and variance 1, where the slope is largest, and its
  backward divides by the batch's standard deviation, undoing the shrinking of W: the sigmoids are rescued
  without changing their init.

Each network is trained with the same SGD(lr=0.02, momentum=0.9) through ``Network.fit``, whose history keeps
every parameter's gradient norm at the last step of each epoch (``fit(record_gradients="epoch")``); the
figure shows, for each network, each Linear layer's weight-gradient norm at the start (one batch, the
initial weights) and at the end of training, on a log scale.
"""
import argparse

import numpy as np

import manualbp
from manualbp import data, nn, optim
from manualbp.checkpoint import atomic_write
from manualbp.network import Network

DEPTH = 10      # Linear layers
WIDTH = 64


def build(kind):
    """One of the three networks, DEPTH Linear layers deep."""
    layers = []
    for _ in range(DEPTH - 1):
        linear = nn.Linear(WIDTH, WIDTH)
        if kind == "relu + kaiming":
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.ReLU()]
        elif kind == "sigmoid + BN":
            layers += [linear, nn.BatchNorm1d(WIDTH), nn.Sigmoid()]
        else:
            layers += [linear, nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(WIDTH, 10))


def linear_names(model):
    """The state_dict names of the Linear layers' weights, from the input to the output."""
    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def grad_norms_at_init(model, x, y):
    """||dL/dW|| of each Linear layer for one batch, at the initial weights."""
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    grads = dict(model.named_parameters())
    norms = [float(np.linalg.norm(grads[name].grad)) for name in linear_names(model)]
    model.zero_grad()
    return norms


def save_figure(results, path):
    """Per-layer gradient norms (log scale), one panel per network, written atomically.  False without
    matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(12, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(results), sharey=True)
    layers = np.arange(1, DEPTH + 1)
    for ax, (kind, r) in zip(axes, results.items()):
        ax.plot(layers, r["init"], "o-", label="at init (one batch)")
        ax.plot(layers, r["end"], "s-", label=f"after training (last step, epoch {r['epochs']})")
        ax.set_yscale("log")
        ax.set_title(f"{kind}: test accuracy {100 * r['accuracy']:.0f}%", fontsize=10)
        ax.set_xlabel("Linear layer (1 = input side)")
        ax.set_xticks(layers)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("||dL/dW|| of the layer's weight")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Gradient norm per layer, {DEPTH} Linear layers of width {WIDTH} on the digits", fontsize=11)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))  # temp file beside it, then renamed
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N digits only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example-vanishing/gradients.png", help="the figure (PNG)")
    parser.add_argument("--quick", action="store_true", help="a quick run: 1 epoch on 512 digits")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.limit = 1, 512

    (x, y), test = data.digits(True), data.digits(False)
    x, y = data.subset(x, y, args.limit)
    x, xt = x.reshape(len(x), -1), test[0].reshape(len(test[0]), -1)
    print(f"{DEPTH} Linear layers of width {WIDTH} on {len(x)} digits, {args.epochs} epoch(s), "
          f"SGD(lr={args.lr}, momentum=0.9), batch 32, seed {args.seed}")
    results = {}
    for kind in ("sigmoid", "relu + kaiming", "sigmoid + BN"):
        manualbp.manual_seed(args.seed)
        model = build(kind)
        init = grad_norms_at_init(model, x[:256], y[:256])
        net = Network(model)
        history = net.fit((x, y), epochs=args.epochs, batch_size=32, optimizer=optim.SGD(
            net.parameters(), lr=args.lr, momentum=0.9), seed=args.seed, verbose=False, record_gradients="epoch")
        last = {r["param"]: r["grad_norm"] for r in history.gradients if r["epoch"] == args.epochs}
        end = [last[name] for name in linear_names(model)]
        accuracy = net.evaluate((xt, test[1]))["accuracy"]
        results[kind] = {"init": init, "end": end, "accuracy": accuracy, "epochs": args.epochs}

    width = max(len(k) for k in results) + 2
    print("\n||dL/dW|| per Linear layer at init, layer 1 (input side) to layer 10 (output side)")
    for kind, r in results.items():
        print(f"{kind:{width}s}" + " ".join(f"{v:8.1e}" for v in r["init"]))
    print("\nthe same after training (the last step of the last epoch)")
    for kind, r in results.items():
        print(f"{kind:{width}s}" + " ".join(f"{v:8.1e}" for v in r["end"]))
    print("\nfirst layer / last layer, at init and after training; test accuracy")
    for kind, r in results.items():
        print(f"{kind:{width}s}ratio at init {r['init'][0] / r['init'][-1]:.1e}   after training "
              f"{r['end'][0] / r['end'][-1]:.1e}   test accuracy {100 * r['accuracy']:.1f}%")

    if save_figure(results, args.out):
        print(f"figure: {args.out}")
    else:
        print("figure skipped: matplotlib is not installed (pip install matplotlib)")


if __name__ == "__main__":
    main()
