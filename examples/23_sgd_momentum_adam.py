"""SGD, SGD with momentum and Adam on the same network, the same data and the same starting weights.

    python examples/23_sgd_momentum_adam.py                   # 1,000 full-batch steps on two spirals
    python examples/23_sgd_momentum_adam.py --out opt.png     # where the figure goes (default runs/...)
    python examples/23_sgd_momentum_adam.py --quick           # 200 steps

The problem is example 04's: two interleaved spirals of 100 points each, and the MLP
Linear(2, 64) -> ReLU -> Linear(64, 64) -> ReLU -> Linear(64, 2).  Every optimizer starts from the same
weights (the same seed), and every step uses all 200 points, so the curves hold no sampling noise: what
differs is only how each optimizer turns a gradient into a step.

    SGD(lr=0.1)                  w -= lr * g
    SGD(lr=0.1, momentum=0.9)    v = 0.9 v + g;  w -= lr * v
    Adam(lr=0.01)                m, s = running means of g and g^2;  w -= lr * m_hat / (sqrt(s_hat) + eps)

What to look at:

- plain SGD crawls: the loss is still far from zero after 1,000 steps.  Its step is ``lr`` times the
  gradient, and this network's gradients are small: the line "first step" shows SGD moving the first
  layer's weights by about 1e-4, where Adam moves each by 1e-2;
- momentum adds up the gradients of the last ~1 / (1 - 0.9) = 10 steps, so while they agree in direction
  the step is up to ten times larger: the same rate, a much faster fall;
- Adam divides each weight's step by the size of that weight's own gradient, so every weight moves by
  about ``lr`` per step however small its gradient is.  The line "first step" shows it: SGD's (and
  momentum's, whose first step is SGD's) changes spread over orders of magnitude, like the gradients;
  Adam's are all about ``lr`` = 0.01 (derivations/12-adaptive-optimizers.md: the first step is lr);
- the rates are not the same on purpose: each is a usual value for its optimizer (Adam's effective step is
  ``lr``, SGD's is ``lr`` times the gradient).  Try ``--adam-lr 0.001`` (torch's default) or ``--lr 0.5``.

The derivations: derivations/12-adaptive-optimizers.md (Adam) and derivations/09-sgd-momentum.md (momentum).
"""
import argparse
import time

import numpy as np

import manualbp
from manualbp import nn, optim
from manualbp.checkpoint import atomic_write


def spirals(points_per_arm=100):
    """Example 04's two spirals: (x float32 (2n, 2), y int (2n,))."""
    rng = np.random.default_rng(0)
    t = np.sqrt(rng.uniform(0, 1, points_per_arm)) * 3 * np.pi       # angle along the arm
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0, 0.02, (2 * points_per_arm, 2))
    return x.astype(np.float32), np.repeat([0, 1], points_per_arm)


def train(make_optimizer, x, y, steps, seed):
    """Train a fresh MLP (same seed, same weights) with ``make_optimizer``; (losses per step, final accuracy,
    the first step's change of the first layer's weights)."""
    manualbp.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    loss_fn, opt = nn.CrossEntropyLoss(), make_optimizer(model.parameters())
    losses, first_change = [], None
    for step in range(steps):
        before = model[0].weight.data.copy() if step == 0 else None
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
        losses.append(float(loss))
        if step == 0:
            first_change = np.abs(model[0].weight.data - before).ravel()
    with manualbp.no_grad():
        accuracy = float((model(x).argmax(axis=1) == y).mean())
    return losses, accuracy, first_change


def save_figure(curves, path):
    """The three loss curves on one (logarithmic) axis, written atomically: into a temporary file beside
    ``path``, then renamed over it.  Returns False when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(7, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, losses in curves.items():
        ax.plot(np.arange(1, len(losses) + 1), losses, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step (all 200 points each)")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("two spirals, MLP 2-64-64-2, the same starting weights")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))  # temp file beside it, then renamed
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.1, help="SGD's rate, with and without momentum")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--adam-lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example-optimizers/loss.png", help="the figure (PNG)")
    parser.add_argument("--quick", action="store_true", help="a quick run: 200 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 200

    x, y = spirals()
    print(f"two spirals, {len(x)} points; MLP 2-64-64-2 from seed {args.seed}; {args.steps} full-batch steps")
    optimizers = {
        f"SGD(lr={args.lr})": lambda p: optim.SGD(p, lr=args.lr),
        f"SGD(lr={args.lr}, momentum={args.momentum})": lambda p: optim.SGD(p, lr=args.lr, momentum=args.momentum),
        f"Adam(lr={args.adam_lr})": lambda p: optim.Adam(p, lr=args.adam_lr),
    }
    started, results = time.perf_counter(), {}
    for name, make in optimizers.items():
        results[name] = train(make, x, y, args.steps, args.seed)
    seconds = time.perf_counter() - started

    report = sorted({1, *range(args.steps // 5, args.steps + 1, args.steps // 5)}) if args.steps >= 5 \
        else list(range(1, args.steps + 1))
    width = max(len(name) for name in results) + 2
    print(f"\n{'loss after step':{width}s}" + "".join(f"{s:>9d}" for s in report))
    for name, (losses, _, _) in results.items():
        print(f"{name:{width}s}" + "".join(f"{losses[s - 1]:9.4f}" for s in report))
    print()
    for name, (losses, accuracy, _) in results.items():
        print(f"{name:{width}s} final loss {losses[-1]:.2e}, accuracy {accuracy:.0%}")
    print("\nfirst step: how far the 128 weights of the first layer moved (those that moved)")
    for name, (_, _, change) in results.items():
        moved = change[change > 0]
        print(f"{name:{width}s} min {moved.min():.1e}  median {np.median(moved):.1e}  max {moved.max():.1e}")
    print(f"\nall three trained in {seconds:.1f} s")

    if save_figure({name: r[0] for name, r in results.items()}, args.out):
        print(f"figure: {args.out}")
    else:
        print("figure skipped: matplotlib is not installed (pip install matplotlib)")


if __name__ == "__main__":
    main()
