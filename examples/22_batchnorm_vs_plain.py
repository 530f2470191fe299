"""The same small CNN with and without BatchNorm2d, trained side by side on the digits.

    python examples/22_batchnorm_vs_plain.py                # 10 epochs on the 1,437 training digits (16x16)
    python examples/22_batchnorm_vs_plain.py --out bn.png   # where the figure goes (default runs/...)
    python examples/22_batchnorm_vs_plain.py --quick        # a few seconds: 256 digits, 2 epochs

The two networks differ only by a ``BatchNorm2d`` after each convolution:

    Conv2d(1, 8, 3, padding=1) -> [BatchNorm2d(8)]  -> ReLU -> MaxPool2d(2)
    Conv2d(8, 16, 3, padding=1) -> [BatchNorm2d(16)] -> ReLU -> MaxPool2d(2) -> Flatten -> Linear(256, 10)

BatchNorm draws no random numbers (its weight starts at ones, its bias at zeros), so with the same seed both
networks start from the same convolution and Linear weights; both see the batches in the same order and are
trained by the same SGD(lr, momentum).  Whatever differs in the two curves is BatchNorm's doing.

What to look at:

- the first epochs: the plain network's loss stays near ln 10 = 2.30 (a uniform guess over ten classes)
  for a couple of epochs before it starts to fall, while the BatchNorm network's falls at once.  Normalising
  each channel by its batch's mean and spread keeps the next layer's inputs at a scale the learning rate
  suits, whatever scale the weights happen to start at;
- the test numbers are taken in ``eval()`` mode, where BatchNorm uses its running mean and variance
  instead of the batch's: the same network, a different (deterministic) function of each image;
- the last line: the convolution's bias gets (almost) no gradient in the BatchNorm network.  Adding a
  constant to a channel moves its batch mean by the same constant, and BatchNorm subtracts the mean, so
  the loss cannot depend on that bias -- which is why ResNets build their convolutions with ``bias=False``.

The derivation of BatchNorm's forward and backward, and of its eval mode: derivations/14-batchnorm.md.
"""
import argparse
import time

import numpy as np

import manualbp
from manualbp import data, nn, optim
from manualbp.checkpoint import atomic_write


def build(batchnorm):
    """The CNN of the docstring; BatchNorm2d after each convolution when ``batchnorm``."""
    def norm(channels):
        return [nn.BatchNorm2d(channels)] if batchnorm else []
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), *norm(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), *norm(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def evaluate(model, x, y, loss_fn, batch_size=256):
    """(mean loss, accuracy) on (x, y) in eval mode: BatchNorm with its running statistics, nothing saved."""
    model.eval()
    total, correct = 0.0, 0
    with manualbp.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size])
            total += float(loss_fn(logits, y[i:i + batch_size])) * len(logits)
            correct += int((logits.argmax(axis=1) == y[i:i + batch_size]).sum())
    model.train()
    return total / len(x), correct / len(x)


def train_epoch(model, opt, loss_fn, x, y, order, batch_size):
    """One epoch over ``order``; the loss of every step."""
    losses = []
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        model.backward(loss_fn.backward())
        opt.step()
        losses.append(float(loss))
    return losses


def save_figure(runs, path):
    """The two loss curves side by side (one panel per network, the same y axis), written atomically: into a
    temporary file beside ``path``, then renamed over it.  Returns False when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (name, run) in zip(axes, runs.items()):
        steps = np.asarray(run["steps"])
        epochs = np.arange(1, len(run["train_loss"]) + 1)
        ax.plot(np.arange(1, len(steps) + 1) / (len(steps) / len(epochs)), steps, color="0.75", lw=0.8,
                label="train loss per step")
        ax.plot(epochs, run["train_loss"], "o-", label="train loss (epoch mean)")
        ax.plot(epochs, run["test_loss"], "s-", label="test loss (eval mode)")
        ax.set_title(f"{name}: test accuracy {100 * run['test_accuracy'][-1]:.1f}%")
        ax.set_xlabel("epoch")
        ax.legend()
    axes[0].set_ylabel("cross-entropy loss")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))  # temp file beside it, then renamed
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/example-batchnorm/loss.png", help="the figure (PNG)")
    parser.add_argument("--quick", action="store_true", help="a quick run: 256 training digits, 2 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 2

    (x, y), (x_test, y_test) = data.digits(True, (1, 16, 16)), data.digits(False, (1, 16, 16))
    if args.quick:
        x, y = data.subset(x, y, 256)
    orders = [np.random.default_rng(args.seed + e).permutation(len(x)) for e in range(args.epochs)]
    print(f"{len(x)} training and {len(x_test)} test digits (1x16x16); SGD(lr={args.lr}, momentum={args.momentum}), "
          f"batch size {args.batch_size}, seed {args.seed}")

    started, runs = time.perf_counter(), {}
    for name, batchnorm in (("plain", False), ("BatchNorm", True)):
        manualbp.manual_seed(args.seed)   # the same weights in both: BatchNorm draws no random numbers
        model, loss_fn = build(batchnorm), nn.CrossEntropyLoss()
        opt = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
        run = runs[name] = {"model": model, "steps": [], "train_loss": [], "test_loss": [], "test_accuracy": []}
        for order in orders:
            losses = train_epoch(model, opt, loss_fn, x, y, order, args.batch_size)
            test_loss, test_acc = evaluate(model, x_test, y_test, loss_fn)
            run["steps"] += losses
            run["train_loss"].append(float(np.mean(losses)))
            run["test_loss"].append(test_loss)
            run["test_accuracy"].append(test_acc)

    print(f"\n{'':7s}{'plain':>34s}{'BatchNorm':>34s}")
    print(f"{'epoch':7s}" + f"{'train loss':>12s}{'test loss':>11s}{'test acc':>11s}" * 2)
    for e in range(args.epochs):
        print(f"{e + 1:5d}  " + "".join(f"{r['train_loss'][e]:12.4f}{r['test_loss'][e]:11.4f}"
                                        f"{100 * r['test_accuracy'][e]:10.2f}%" for r in runs.values()))
    for name, run in runs.items():
        print(f"{name:9s} final test accuracy {100 * run['test_accuracy'][-1]:.2f}%")
    print(f"both trained in {time.perf_counter() - started:.1f} s")

    # The convolution's bias before BatchNorm: the last step's gradients, still in .grad
    for name, run in runs.items():
        conv = run["model"][0]
        print(f"{name:9s} first conv: max |dL/dbias| {np.abs(conv.bias.grad).max():.1e}, "
              f"max |dL/dweight| {np.abs(conv.weight.grad).max():.1e}")

    if save_figure(runs, args.out):
        print(f"\nfigure: {args.out}")
    else:
        print("\nfigure skipped: matplotlib is not installed (pip install matplotlib)")


if __name__ == "__main__":
    main()
