"""A small, quick training run used by the reliability tests as a child process.

    python tests/reliability_child.py OUT_DIR --epochs 2 [--ready] [--resume PATH]

Trains a tiny CNN (two Conv2d/MaxPool2d stages, the first with BatchNorm2d, and two Linear layers) with Adam
and a StepLR schedule on fixed random 3x16x16 images,
with a checkpoint folder OUT_DIR (``last.npz`` after every epoch) and a final ``weights.npz``.
``--ready`` prints "ready" once the first checkpoint is on disk, so a parent knows that every later
moment is a moment inside the training loop (and, most of the time, inside a checkpoint write).
``build()`` and ``dataset()`` are imported by the tests to run the same thing in-process.
"""
import argparse
import os
import sys

import numpy as np

SEED = 1234
EPOCHS = 2


def dataset():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((96, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    return x, y


def build():
    """The network, its optimizer and its learning-rate scheduler, seeded: the same weights in every process.

    A checkpoint then holds parameters, BatchNorm's buffers (running statistics and the int64 batch count),
    Adam's state (step, exp_avg, exp_avg_sq) and the scheduler's state: everything a resume must restore."""
    import manualbp
    from manualbp import Network, nn, optim

    manualbp.manual_seed(SEED)
    net = Network(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                  nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                  nn.Linear(144, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    return net, opt


def fit(net, opt, epochs, out=None, resume=None, callbacks=None):
    from manualbp import optim

    scheduler = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
    return net.fit(dataset(), epochs=epochs, batch_size=32, optimizer=opt, checkpoint=out, resume=resume,
                   callbacks=callbacks, verbose=False, scheduler=scheduler)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--ready", action="store_true")
    parser.add_argument("--resume")
    args = parser.parse_args(argv)
    net, opt = build()

    def ready(network, epoch, logs):
        if epoch == 1:
            print("ready", flush=True)

    fit(net, opt, args.epochs, out=args.out, resume=args.resume, callbacks=[ready] if args.ready else None)
    np.savez(os.path.join(args.out, "weights.npz"), **net.state_dict())
    import numba
    print(f"threads {numba.get_num_threads()} layer {numba.threading_layer()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
