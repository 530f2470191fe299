"""The ``manualbp`` command (also ``python -m manualbp``).

    manualbp train                         # LeNet-5 on the offline digits: >= 95% test accuracy in about a minute
    manualbp train --model cifar10net --dataset cifar10 --download --epochs 20
    manualbp train --model resnet20 --epochs 6
    manualbp train --optimizer adamw --lr 0.001 --scheduler onecycle   # any of torch.optim's five, seven schedules
    manualbp explain                       # the chain rule, step by step, on the 2-2-2 network
    manualbp explain --plot net.png        # ... and the network drawn with the same numbers (or net.svg)

``train`` prints the model's summary table and the tutorials' progress lines, and writes into ``--out``
(default ``runs/<model>-<dataset>``): history.csv, history.json, gradients.csv (per parameter, at the last
step of each epoch: gradient norm, weight norm, update/weight ratio), curve.png and gradients.png (when
matplotlib is installed), and the checkpoints best.npz (lowest test loss) and last.npz (``--resume`` continues
from it; ``--epochs`` counts from the start of the run, and the learning-rate scheduler goes on as it began: the
default cosine, CosineAnnealingLR over the first run's epochs, climbs back up past them, as torch's does).
On a first run, when Numba's cache holds none of the kernels, it says so and compiles them first.
"""
import argparse
import copy
import os
import sys
import time

import numpy as np

DEFAULT_EPOCHS = 10
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULERS = ("cosine", "constant", "step", "multistep", "exponential", "onecycle", "plateau")


def _train_parser(prog="manualbp train"):
    p = argparse.ArgumentParser(
        prog=prog, description="Train one of the tutorials' networks with manualbp's hand-written backward passes.")
    p.add_argument("--model", choices=("mlp", "lenet5", "cifar10net", "resnet20"), default="lenet5",
                   help="mlp: Linear(inputs, 64) -> ReLU -> Linear(64, 10) on the flattened images (about 92%% "
                        "on the digits; 96%% with --lr 0.05); lenet5: the tutorials' 3-channel LeNet-5 (default); "
                        "cifar10net: the tutorials' CIFAR-10 network; resnet20: He et al.'s ResNet-20 "
                        "(BatchNorm, residual blocks)")
    p.add_argument("--dataset", choices=("digits", "mnist", "cifar10"), default="digits",
                   help="digits: scikit-learn's handwritten digits, offline (default); mnist/cifar10: through "
                        "torchvision (add --download the first time)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"the epoch to stop after, counted from the start of the run, also with --resume "
                        f"(default {DEFAULT_EPOCHS})")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per step (default 32 on digits, a small data set that wants more steps per "
                        "epoch; 64, the tutorials' choice, on mnist and cifar10)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="the update rule: sgd (default, with --momentum), adam, adamw, rmsprop or adagrad "
                        "(manualbp.optim, torch's defaults)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--momentum", type=float, default=None,
                   help="SGD momentum (default 0.9); RMSprop's momentum (default 0)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay lambda (default 0; AdamW's default 0.01, decoupled)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default=None,
                   help="learning rate over the run: cosine (default), CosineAnnealingLR(T_max=--epochs), from --lr "
                        "down towards 0; constant, as in the tutorials; step (x0.1 every third of the epochs); "
                        "multistep (x0.1 at half and at three quarters); exponential (x0.9 per epoch); onecycle (up "
                        "to --lr and down, per batch); plateau (x0.5 when the test loss stops improving for 2 "
                        "epochs). A resumed run goes on with the scheduler it saved, as it began (the cosine's "
                        "T_max stays the first run's --epochs, and past it the rate climbs back up, as torch's)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=None,
                   help="the older name of --scheduler cosine/constant")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights and the shuffling (default 0)")
    p.add_argument("--out", default=None, help="output folder (default runs/<model>-<dataset>)")
    p.add_argument("--download", action="store_true", help="download MNIST/CIFAR-10 into --data-root if missing")
    p.add_argument("--data-root", default="data", help="where torchvision keeps MNIST/CIFAR-10 (default ./data)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training and N test samples (a quick run)")
    p.add_argument("--log-interval", type=int, default=None,
                   help="print a 'Train Epoch' line every N batches (default 10 on digits, 100 otherwise)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="parameter dtype")
    p.add_argument("--backend", choices=("numba", "numpy"), default=None,
                   help="kernels: numba (default, fast) or numpy (the readable reference, slow)")
    p.add_argument("--resume", default=None,
                   help="continue from a checkpoint (e.g. runs/lenet5-digits/last.npz) up to --epochs in all, "
                        "with the --scheduler it was trained with, which goes on where it stopped")
    p.add_argument("--no-progress", action="store_true", help="plain lines even on a terminal (no tqdm bar)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu (default): the Numba CPU kernels; cuda: the numba.cuda kernels on an NVIDIA GPU "
                        "(float32; needs pip install -e \".[cuda]\")")
    return p


def _load_data(args, image_shape):
    """(train, test) pairs shaped for the model: ``image_shape`` (C, H, W), or None for a flat MLP input."""
    from . import data
    if args.dataset == "digits":
        shape = image_shape if image_shape is not None else (1, 8, 8)
        train, test = data.digits(True, shape), data.digits(False, shape)
    else:
        loader = data.cifar10 if args.dataset == "cifar10" else data.mnist
        train = loader(args.data_root, train=True, download=args.download)
        test = loader(args.data_root, train=False, download=args.download)
        if image_shape is not None:   # MNIST's 28x28 grey into LeNet-5's 32x32 (C as the model wants)
            train, test = [(data.to_channels(data.pad_to(x, image_shape[1:]), image_shape[0]), y)
                           for x, y in (train, test)]
    train, test = data.subset(*train, args.limit), data.subset(*test, args.limit)
    if image_shape is None:   # the MLP takes flat rows
        train, test = [(x.reshape(len(x), -1), y) for x, y in (train, test)]
    return train, test


def _build_model(args):
    """(model, image shape for the data or None for flat rows, input shape for the summary)."""
    from . import models, nn
    channels = 1 if args.dataset == "mnist" else 3
    if args.model == "mlp":   # sized for the data: the tutorials' 3-4-2-3 MLP cannot tell 10 classes apart
        features = {"digits": 64, "mnist": 28 * 28, "cifar10": 3 * 32 * 32}[args.dataset]
        return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 10)), None, (features,)
    shape = (channels, 32, 32)
    return models.build(args.model, in_channels=channels, num_classes=10), shape, shape


def write_curve(history, path, title=None):
    """Loss (per step and per epoch) and accuracy per epoch, side by side, as a PNG under ``title``.
    Returns False without matplotlib."""
    try:
        fig = curve_figure(history, title)
    except ImportError:
        return False
    from .checkpoint import atomic_write
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))  # never a half-written PNG
    return True


def write_gradients(history, path, title=None):
    """Each parameter's gradient norm and update/weight ratio over the epochs (``manualbp.viz.gradients_figure``)
    as a PNG.  Returns False without matplotlib or without recorded gradients."""
    if not history.gradients:
        return False
    try:
        from .viz import gradients_figure, save_figure
        fig = gradients_figure(history, title)
    except ImportError:
        return False
    save_figure(fig, path)
    return True


def curve_figure(history, title=None):
    """The matplotlib Figure ``write_curve`` saves.  Every epoch is a marker, so a one-epoch run shows its
    points, and the last accuracies are written beside their markers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    fig = Figure(figsize=(10, 4.4))
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = history["epoch"]
    if history.steps:
        steps_per_epoch = len(history.steps) / max(len(epochs), 1)
        ax_loss.plot(np.arange(1, len(history.steps) + 1) / steps_per_epoch, history.steps,
                     color="0.75", lw=0.8, label="train loss per step")
    ax_loss.plot(epochs, history["train_loss"], "o-", label="train loss (epoch mean)")
    if any(v is not None for v in history["val_loss"]):
        ax_loss.plot(epochs, history["val_loss"], "s-", label="test loss")
    ax_loss.set_ylabel("loss")
    finals = {key: history[key][-1] for key in ("train_accuracy", "val_accuracy") if history[key]}
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "test")):
        values = [None if v is None else 100 * v for v in history[key]]
        if any(v is not None for v in values):
            line, = ax_acc.plot(epochs, values, "o-", label=label)
            if values[-1] is None:
                continue
            # the higher of the two last values gets its label above its point, the lower one below
            others = [v for k, v in finals.items() if k != key and v is not None]
            dy = 3 if not others or 100 * max(others) <= values[-1] else -11
            ax_acc.annotate(f"{values[-1]:.1f}%", (epochs[-1], values[-1]), textcoords="offset points",
                            xytext=(6, dy), fontsize=8, color=line.get_color())
    ax_acc.set_ylim(0, 106)  # room for the last values' labels above 100
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.set_xlim(0, max(epochs, default=1) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _compile_kernels(net, train_data, test_data, args):
    """On a first run (Numba's cache holds none of the kernels), compile them on a throwaway copy of the model
    -- one training step and one evaluation -- and say how long it took; the run itself is not touched."""
    import manualbp
    from manualbp import nn, optim, training
    from manualbp.network import Network
    if args.device != "cpu" or manualbp.get_backend() != "numba" or not training.kernel_cache_is_empty():
        return
    from manualbp.training.compile_progress import announce_families
    print("compiling kernels (first run only) ...", end=" ", flush=True)
    start = time.perf_counter()
    # each family of kernels named as Numba starts on it: "... conv gemm pool ... done in 25.1s"
    with announce_families(lambda family: print(family, end=" ", flush=True)):
        scratch = Network(copy.deepcopy(net.model))
        opt = optim.SGD(scratch.parameters(), lr=args.lr, momentum=0.9)
        (x, y), (xt, yt), b = train_data, test_data, args.batch_size
        for size in sorted({min(b, len(x)), len(x) % b} - {0}):   # a full batch and the epoch's last one
            scratch.train_step(x[:size].astype(scratch.dtype), y[:size], nn.CrossEntropyLoss(), opt)
        b = max(b, 256)   # fit evaluates in batches of this many, then the rest
        scratch.evaluate((xt[:b + len(xt) % b], yt[:b + len(xt) % b]), batch_size=b)
    print(f"done in {time.perf_counter() - start:.1f}s (Numba caches them: later runs start at once)", flush=True)


def _optimizer(args, params):
    """The optimizer --optimizer names, and its description for the first line and the curve's title."""
    from manualbp import optim
    name = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad"}[args.optimizer]
    kwargs = {"lr": args.lr}
    if args.optimizer == "sgd" or (args.optimizer == "rmsprop" and args.momentum is not None):
        kwargs["momentum"] = args.momentum if args.momentum is not None else 0.9
    if args.weight_decay is not None:
        kwargs["weight_decay"] = args.weight_decay
    opt = getattr(optim, name)(params, **kwargs)
    return opt, f"{name}({', '.join(f'{k}={v}' for k, v in kwargs.items())}, {args.scheduler} schedule)"


def _scheduler(args, opt, steps_per_epoch, saved=None):
    """(scheduler, lr_schedule) for fit from --scheduler: a manualbp.optim.lr_scheduler object, which fit steps
    and checkpoints (None for constant).  A checkpoint (``saved``: its header's extra) written before the cosine
    was a CosineAnnealingLR holds the function epoch -> lr it began with (``cosine_lr``) instead: resuming it
    goes on along that function."""
    from manualbp.network import cosine_lr
    from manualbp.optim import lr_scheduler
    e = args.epochs
    if args.scheduler == "cosine" and _old_cosine(saved):
        return None, cosine_lr(args.lr, e)   # fit takes the lr and epochs the run began with from the checkpoint
    make = {
        "cosine": lambda: lr_scheduler.CosineAnnealingLR(opt, T_max=e), "constant": None,
        "step": lambda: lr_scheduler.StepLR(opt, step_size=max(1, e // 3), gamma=0.1),
        "multistep": lambda: lr_scheduler.MultiStepLR(opt, milestones=[max(1, e // 2), max(1, 3 * e // 4)]),
        "exponential": lambda: lr_scheduler.ExponentialLR(opt, gamma=0.9),
        "onecycle": lambda: lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=e, steps_per_epoch=steps_per_epoch),
        "plateau": lambda: lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2),
    }[args.scheduler]
    return (make() if make is not None else None), None


def _old_cosine(saved):
    """Whether a checkpoint's extra is an older run's cosine: an lr_schedule function, no scheduler."""
    return bool(saved) and not saved.get("scheduler") and (saved.get("lr_schedule") or {}).get("name") == "cosine"


def _resumed_scheduler_note(args, scheduler, saved):
    """A resumed run goes on with the scheduler it saved (``saved``: the checkpoint header's extra): refuse
    another (without one, fit goes on at the last rate and says so); for a cosine that --epochs takes past its
    T_max, a sentence saying that the rate climbs back."""
    had = (saved.get("scheduler") or {}).get("type")
    if scheduler is not None and had != type(scheduler).__name__:
        began = had or ("the older cosine schedule" if _old_cosine(saved) else "a constant learning rate")
        raise ValueError(f"{args.resume} was trained with {began}, not --scheduler {args.scheduler}; resume it "
                         f"with the --scheduler it began with, or start a new run")
    t_max = (saved.get("scheduler") or {}).get("state", {}).get("T_max") if had == "CosineAnnealingLR" else None
    if t_max is not None and args.epochs > t_max:
        return (f"The learning rate goes on along the cosine the run began with (CosineAnnealingLR, T_max {t_max}): "
                f"past epoch {t_max} it climbs back up, as torch's does")
    return None


def _check_cycle_length(args):
    """A resumed one-cycle run can only finish the cycle it began: its steps were laid out over that run's epochs."""
    from .checkpoint import read
    header = read(args.resume)[0]
    saved = ((header.get("extra") or {}).get("scheduler") or {}).get("state") or {}
    total = saved.get("total_steps")
    done = int(header.get("epoch") or 0)
    if total is not None and done and args.epochs * saved.get("last_epoch", 0) // done > total:
        raise ValueError(f"{args.resume} was trained with OneCycleLR over {total} steps in all, which --epochs "
                         f"{args.epochs} would go past; resume it with the --epochs it began with, or start a new run")


def _saved_extra(path):
    """The ``extra`` of a checkpoint's header (its schedule or scheduler); {} when it has none."""
    from .checkpoint import read
    return read(path)[0].get("extra") or {}


def _epochs_done(path):
    """The epochs a checkpoint has finished (``--resume``); raises ValueError/FileNotFoundError for a bad file."""
    from .checkpoint import read
    return int(read(path)[0].get("epoch") or 0)


def train(argv=None):
    args = _train_parser().parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 32 if args.dataset == "digits" else 64
    for name in ("epochs", "batch_size"):
        if getattr(args, name) <= 0:
            _train_parser().error(f"--{name.replace('_', '-')} must be positive")
    if args.schedule is not None and args.scheduler is not None and args.schedule != args.scheduler:
        _train_parser().error(f"--schedule {args.schedule} and --scheduler {args.scheduler} disagree; "
                              f"--schedule is the older name of --scheduler: give one")
    args.scheduler = args.scheduler or args.schedule or "cosine"
    if args.momentum is not None and args.optimizer not in ("sgd", "rmsprop"):
        _train_parser().error(f"--momentum is for sgd and rmsprop; {args.optimizer} has betas")
    import manualbp
    from manualbp import nn
    from manualbp.network import Network

    if args.backend is not None:
        manualbp.set_backend(args.backend)
    manualbp.manual_seed(args.seed)
    model, image_shape, input_shape = _build_model(args)
    if args.dtype == "float64":
        model.double()
    done = 0
    if args.resume is not None:
        try:
            done = _epochs_done(args.resume)
        except (FileNotFoundError, ValueError) as exc:
            print(f"manualbp train: {exc}", file=sys.stderr)
            return 1
        if done >= args.epochs:
            print(f"manualbp train: {args.resume} has finished {done} epochs already, and --epochs counts from "
                  f"the start of the run: pass --epochs {done + 5} to train 5 more", file=sys.stderr)
            return 1
    try:
        train_data, test_data = _load_data(args, image_shape)
    except (FileNotFoundError, ImportError) as exc:   # a failed download included (data.DownloadError)
        print(f"manualbp train: {exc}", file=sys.stderr)
        return 1
    out = args.out or os.path.join("runs", f"{args.model}-{args.dataset}")
    os.makedirs(out, exist_ok=True)
    try:
        net = Network(model, device=None if args.device == "cpu" else args.device)
    except (RuntimeError, TypeError, ImportError) as exc:   # no GPU or driver, or a float64 model for the GPU
        print(f"manualbp train: {exc}", file=sys.stderr)
        return 1
    try:
        opt, optimizer = _optimizer(args, net.parameters())
        saved = _saved_extra(args.resume) if args.resume is not None else None
        scheduler, lr_schedule = _scheduler(args, opt, -(-len(train_data[0]) // args.batch_size), saved)
        note = _resumed_scheduler_note(args, scheduler, saved) if saved is not None else None
        if args.resume is not None and args.scheduler == "onecycle":
            _check_cycle_length(args)
    except (TypeError, ValueError) as exc:   # a hyper-parameter the optimizer or scheduler refuses
        print(f"manualbp train: {exc}", file=sys.stderr)
        return 1
    shape = "x".join(str(s) for s in input_shape)
    print(f"manualbp train: {args.model} on {args.dataset} ({len(train_data[0])} training / {len(test_data[0])} "
          f"test samples of {shape}), {optimizer}, batch {args.batch_size}, {args.epochs} epoch"
          + ("s" if args.epochs != 1 else "")
          + (f" (resuming after epoch {done})" if args.resume is not None else "") + f", seed {args.seed}, "
          + ("device cuda" if args.device == "cuda" else f"backend {manualbp.get_backend()}"))
    if note:
        print(note)
    _compile_kernels(net, train_data, test_data, args)
    net.summary(input_shape)
    log_interval = args.log_interval if args.log_interval is not None else (10 if args.dataset == "digits" else 100)
    start = time.perf_counter()
    try:
        history = net.fit(train_data, epochs=args.epochs, batch_size=args.batch_size, loss=nn.CrossEntropyLoss(),
                          optimizer=opt, val=test_data, checkpoint=out, resume=args.resume,
                          log_interval=log_interval, progress=False if args.no_progress else None,
                          lr_schedule=lr_schedule, scheduler=scheduler)
    except KeyboardInterrupt:   # Ctrl-C: fit has saved interrupted.npz and printed how to resume
        return 130
    elapsed = time.perf_counter() - start
    history.write_csv(os.path.join(out, "history.csv"))
    history.write_json(os.path.join(out, "history.json"))
    history.write_gradients_csv(os.path.join(out, "gradients.csv"))
    curve, gradients = os.path.join(out, "curve.png"), os.path.join(out, "gradients.png")
    title = f"{args.model} on {args.dataset}, {optimizer}, batch {args.batch_size}"
    curve_note = curve if write_curve(history, curve, title) else "skipped (pip install matplotlib to draw curve.png)"
    if curve_note == curve and write_gradients(history, gradients, title):
        curve_note += f", {gradients}"
    ran = [row["epoch"] for row in history.epochs if row["epoch"] > done]
    if ran:
        best = min(history.epochs, key=lambda r: r["val_loss"])
        last = history.epochs[-1]
        which = f" ({ran[0]}-{ran[-1]})" if len(ran) > 1 else f" ({ran[0]})"
        so_far = f", {len(history.epochs)} in all" if done else ""
        print(f"Finished {len(ran)} epoch{'s' if len(ran) != 1 else ''}{which if done else ''} in {elapsed:.1f}s"
              f"{so_far}. Test accuracy after the last epoch: {100 * last['val_accuracy']:.2f}%")
        print(f"Best checkpoint: {os.path.join(out, 'best.npz')} (epoch {best['epoch']}, test loss "
              f"{best['val_loss']:.4f}, test accuracy {100 * best['val_accuracy']:.2f}%)")
    print(f"Wrote {os.path.join(out, 'history.csv')}, {os.path.join(out, 'history.json')}, "
          f"{os.path.join(out, 'gradients.csv')}; curve: {curve_note}")
    return 0


def bench(argv):
    """``manualbp bench``: benchmarks/run.py of the checkout this package lives in (it needs PyTorch)."""
    import importlib.util
    import runpy
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "run.py")
    if not os.path.isfile(script):
        print(f"manualbp bench: {script} not found (the benchmarks come with a source checkout)", file=sys.stderr)
        return 1
    no_torch = ("manualbp bench times manualbp against PyTorch, which is not installed: pip install torch (a "
                "CPU-only build: pip install torch --index-url https://download.pytorch.org/whl/cpu), or pip "
                "install -e \".[test]\"")
    try:
        missing = importlib.util.find_spec("torch") is None
    except (ImportError, ValueError):   # a torch that cannot be imported
        missing = True
    if missing and not {"-h", "--help"} & set(argv):
        print(no_torch, file=sys.stderr)
        return 1
    try:
        return runpy.run_path(script)["main"](argv)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "torch":
            raise
        print(no_torch, file=sys.stderr)
        return 1


def main(argv=None):
    """Entry point of the ``manualbp`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "explain":
        from . import explain  # imported only when asked for
        return explain.main(argv[1:]) or 0
    if argv and argv[0] == "train":
        return train(argv[1:])
    if argv and argv[0] == "bench":
        return bench(argv[1:])
    parser = argparse.ArgumentParser(prog="manualbp", description="Backpropagation by hand, on Numba kernels.")
    sub = parser.add_subparsers(dest="command", metavar="{train,explain,bench}")
    sub.add_parser("train", help="train LeNet-5 (default), the CIFAR-10 net or an MLP; --help for options")
    sub.add_parser("explain", help="trace the chain rule through the tutorials' 2-2-2 network (--plot FILE: "
                                   "draw it too)")
    sub.add_parser("bench", help="benchmark against PyTorch and NumPy, write BENCHMARKS.md (benchmarks/run.py; "
                                 "needs torch; --help for options)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0  # pragma: no cover - "train"/"explain" are dispatched above


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
