"""The pieces ``Network.fit`` hands its chores to, so that ``fit`` itself can read like the tutorials' loop.

A training loop is five lines per step (``Network.train_step``), but a run that should survive a bad
learning rate, a Ctrl-C or a crash needs more around them.  Each of those jobs lives here, on its own
(in this order):

    History              what a run records: one row per epoch, the loss of every step
    Progress             every line ``fit`` prints: ``Train Epoch: ...``, ``Epoch N: ...``, validation
    EpochTally           one epoch's running sums (loss, samples, correct answers, seconds)
    Checkpointer         last.npz / best.npz after each epoch, resuming a run, interrupted.npz
    DivergenceGuard      turns a nan/inf into a ``NonFiniteLossError`` that says what to do next
    _DeferredInterrupt   holds a Ctrl-C back until the step under way has finished
    check_loss, ...      refuse a loss or optimizer that cannot work, before the first step
    set_lr, cosine_lr    the learning-rate schedule

None of them changes the arithmetic of training: they print, count, save and stop.
"""
import csv
import json
import math
import os
import signal
import sys
import threading
import time

import numpy as np

from ._checks import describe
from .device import to_numpy
from .nn import Module
from .optim import Optimizer

__all__ = ["Checkpointer", "DivergenceGuard", "EpochTally", "History", "NonFiniteLossError", "Progress",
           "check_loss", "check_optimizer", "cosine_lr", "count_correct", "is_classification", "set_lr"]

EPOCH_FIELDS = ("epoch", "train_loss", "running_loss", "train_accuracy", "val_loss", "val_accuracy",
                "seconds", "images_per_sec", "lr")


class History:
    """What ``fit`` records: one row per epoch (``epochs``) and the loss of every step (``steps``).

    ``history["val_accuracy"]`` is that column over the epochs.  ``to_dict``/``from_dict`` make it
    JSON (it travels inside every checkpoint); ``write_csv``/``write_json`` save it.
    """

    def __init__(self, epochs=None, steps=None):
        self.epochs = list(epochs or [])
        self.steps = list(steps or [])

    def __getitem__(self, key):
        return [row.get(key) for row in self.epochs]

    def __len__(self):
        return len(self.epochs)

    def to_dict(self):
        return {"epochs": self.epochs, "steps": self.steps}

    @classmethod
    def from_dict(cls, d):
        d = d or {}
        return cls(d.get("epochs"), d.get("steps"))

    def write_json(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    def write_csv(self, path):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=EPOCH_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in self.epochs:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in EPOCH_FIELDS})

    def __repr__(self):
        return f"History({len(self.epochs)} epochs, {len(self.steps)} steps)"


class Progress:
    """Every line ``fit`` prints, in the tutorials' words.

    Per step, every ``log_interval`` batches: ``Train Epoch: 3 [6400/50000 (13%)]\\tLoss: 1.734210``;
    per epoch: ``Epoch 3: running loss ...`` and, with validation data, ``Validation set: ...``.  On a
    terminal (or with ``bar=True``) a tqdm bar counts the batches, and the step lines go through the bar
    (``bar.write``) so that they do not tear it.  With ``verbose=False`` nothing is printed at all.
    """

    def __init__(self, verbose=True, bar=None, log_interval=100):
        self.verbose, self.want_bar, self.log_interval = verbose, bar, log_interval
        self._bar, self._write = None, print

    def say(self, message):
        if self.verbose:
            print(message, flush=True)

    def start_epoch(self, epoch, steps):
        """Open the epoch's bar: on a terminal (or with bar=True), when tqdm is installed and verbose."""
        self._bar = None
        if self.verbose and self.want_bar is not False and (
                self.want_bar is not None or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())):
            try:
                from tqdm.auto import tqdm
            except ImportError:   # no tqdm: plain lines
                pass
            else:
                self._bar = tqdm(total=steps, desc=f"Epoch {epoch}", unit="batch", leave=False, file=sys.stdout)
        self._write = self._bar.write if self._bar is not None else print

    def step(self, epoch, batch_idx, loader, loss):
        """After step ``batch_idx`` (counted from 0) of ``epoch``, whose loss was ``loss``."""
        if self.verbose and self.log_interval and batch_idx % self.log_interval == 0:
            self._write(f"Train Epoch: {epoch} [{batch_idx * loader.batch_size}/{loader.num_samples} "
                        f"({100. * batch_idx / len(loader):.0f}%)]\tLoss: {loss:.6f}")
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._bar.update(1)

    def stop_bar(self):
        """Close the bar (the epoch ended, or is being left early)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def end_epoch(self, row):
        acc = "" if row["train_accuracy"] is None else f", train accuracy {100 * row['train_accuracy']:.2f}%"
        self.say(f"Epoch {row['epoch']}: running loss {row['running_loss']:.4f} (mean {row['train_loss']:.6f})"
                 f"{acc}, lr {row['lr']:.6g}, {row['seconds']:.1f}s, {row['images_per_sec'] or 0:.0f} images/s")

    def validation(self, result):
        """``result`` is ``Network.evaluate``'s dict."""
        acc = "" if result["accuracy"] is None else (
            f", Accuracy: {result['correct']}/{result['total']} ({100 * result['accuracy']:.2f}%)")
        self.say(f"Validation set: Average loss: {result['loss']:.4f}{acc}")


class EpochTally:
    """The running sums of one epoch: loss, samples seen, correct answers and the time it took.

    An epoch interrupted by Ctrl-C is saved with these sums (``progress``) and the generator state from
    *before* its shuffle; ``EpochTally(loader, resume_from=that)`` puts both back, so the same
    permutation is drawn again, the finished steps are skipped (``first``) and the epoch's row comes
    out as if it had never stopped.  The clock starts when the tally is made.
    """

    def __init__(self, loader, resume_from=None):
        self.loader = loader
        self.first, self.running, self.seen, self.correct, self.seconds_before = 0, 0.0, 0, 0, 0.0
        if resume_from:
            loader.rng.bit_generator.state = resume_from["rng_state"]
            self.first, self.running, self.seen = resume_from["step"], resume_from["running"], resume_from["seen"]
            self.correct, self.seconds_before = resume_from["correct"], resume_from["seconds"]
        self.rng_state = _jsonable(loader.rng.bit_generator.state)  # before the shuffle: replays this epoch's order
        self._start = time.perf_counter()

    def add(self, loss, samples, correct):
        self.running += loss
        self.seen += samples
        self.correct += correct

    def progress(self, step):
        """Where the epoch stands before step ``step`` (what ``interrupted.npz`` keeps)."""
        return {"step": step, "rng_state": self.rng_state, "running": self.running, "seen": self.seen,
                "correct": self.correct, "seconds": self.seconds_before + time.perf_counter() - self._start,
                "batch_size": self.loader.batch_size, "samples": self.loader.num_samples}

    def row(self, epoch, optimizer):
        """The epoch's row of the history (validation columns still empty)."""
        seconds = self.seconds_before + time.perf_counter() - self._start
        steps = len(self.loader)
        classifier = self.seen and is_classification(self.loader.y)
        return {"epoch": epoch, "train_loss": self.running / max(steps, 1), "running_loss": self.running,
                "train_accuracy": self.correct / self.seen if classifier else None,
                "val_loss": None, "val_accuracy": None, "seconds": seconds,
                "images_per_sec": self.seen / seconds if seconds > 0 else None,
                "lr": optimizer.param_groups[0].get("lr")}


def is_classification(y):
    return np.asarray(y).dtype.kind in "iu"


def count_correct(out, y):
    """How many rows of ``out`` (logits) have their largest entry at the class ``y`` names (0 for regression)."""
    if not is_classification(y) or out.ndim != 2 or np.asarray(y).ndim != 1:
        return 0
    out = to_numpy(out)  # logits on the GPU come back (N x C numbers) to be compared with y
    return int((out.argmax(axis=1) == y).sum())


class Checkpointer:
    """Saves a run so that it can go on later, bit for bit, and resumes one.

    After each epoch it writes ``last.npz`` in ``folder`` (and ``best.npz`` when the monitored loss --
    validation loss, or training loss without validation data -- is the lowest so far).  Each holds the
    weights, the optimizer's buffers, the history and the shuffling generator's state, which is all a
    run depends on.  With ``folder=None`` it writes nothing but ``interrupted.npz`` after a Ctrl-C (in
    the current folder).  ``last_good`` remembers the newest ``last.npz`` of this run for error messages.
    """

    def __init__(self, network, optimizer, loader, folder=None):
        self.network, self.optimizer, self.loader, self.folder = network, optimizer, loader, folder
        self.best = np.inf
        self.last_good = {"path": None, "epoch": None}

    def resume(self, path, batch_size, samples, log):
        """Load ``path`` into the model and optimizer; return ``(history, first_epoch, partial)``, where
        ``partial`` is the interrupted epoch's saved progress (None when it stopped between epochs)."""
        header = self.network.load(path, self.optimizer)
        history = History.from_dict(header.get("history"))
        first_epoch = int(header.get("epoch") or 0) + 1
        if header.get("rng_state") is not None:
            self.loader.rng.bit_generator.state = header["rng_state"]
        partial = (header.get("extra") or {}).get("interrupted")
        if partial and (partial.get("batch_size"), partial.get("samples")) != (batch_size, samples):
            raise ValueError(
                f"Network.fit: {os.fspath(path)} was saved part-way through an epoch of "
                f"{partial.get('samples')} samples in batches of {partial.get('batch_size')}; "
                f"resume it with the same data and batch_size (got {samples} samples, batch_size={batch_size})")
        where = (f"during epoch {first_epoch}, after step {partial['step']}"
                 if partial else f"after epoch {first_epoch - 1}")
        log.say(f"Resumed from {os.fspath(path)} {where}")
        self.best = min((_monitor(r) for r in history.epochs), default=np.inf)
        return history, first_epoch, partial

    def end_of_epoch(self, epoch, history):
        """Write ``last.npz`` (and ``best.npz`` when this epoch is the best yet); nothing without a folder."""
        if self.folder is None:
            return
        state = {"optimizer": self.optimizer, "epoch": epoch, "history": history.to_dict(),
                 "rng_state": _jsonable(self.loader.rng.bit_generator.state)}
        last = os.path.join(self.folder, "last.npz")
        self.network.save(last, **state)
        self.last_good.update(path=last, epoch=epoch)
        if _monitor(history.epochs[-1]) < self.best:
            self.best = _monitor(history.epochs[-1])
            self.network.save(os.path.join(self.folder, "best.npz"), **state)

    def save_interrupted(self, stop, history):
        """Write ``interrupted.npz`` (in the folder, or the current one) and say how to resume."""
        path = os.path.join(self.folder if self.folder is not None else ".", "interrupted.npz")
        progress = stop.progress
        partial = None if progress["step"] == 0 else progress
        self.network.save(path, self.optimizer, epoch=stop.epoch - 1, history=history.to_dict(),
                          rng_state=progress["rng_state"], extra={"interrupted": partial})
        where = (f"during epoch {stop.epoch}, after step {progress['step']}" if partial
                 else f"after epoch {stop.epoch - 1}")
        print(f"Interrupted {where}: saved {path}. Continue with fit(..., resume={path!r}) "
              f"(manualbp train --resume {path}).", file=sys.stderr, flush=True)

    def last_good_note(self):
        """A sentence on which checkpoint a diverged run left behind."""
        if self.last_good["path"] is not None:
            return (f"The last good checkpoint, written after epoch {self.last_good['epoch']}, is "
                    f"{self.last_good['path']}; it was left as it was.")
        if self.folder is not None and os.path.exists(os.path.join(self.folder, "last.npz")):
            return f"No epoch finished in this run; {os.path.join(self.folder, 'last.npz')} was left as it was."
        return "No checkpoint was written (pass checkpoint=folder to keep one after every epoch)."


def _monitor(row):
    """The number ``best.npz`` minimises: the validation loss, or the training loss without validation."""
    value = row.get("val_loss")
    return value if value is not None else row.get("train_loss", np.inf)


def _jsonable(obj):
    """A generator state with arrays turned into lists (PCG64's is plain ints already)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


class NonFiniteLossError(FloatingPointError):
    """The loss became nan or inf: training has diverged (``fit`` names the epoch, step and a remedy)."""


NonFiniteLossError.__module__ = "manualbp.network"   # where it is documented; tracebacks name it so


class DivergenceGuard:
    """Turns a nan or inf into an error that says where it happened and what to try.

    ``train_step`` already refuses a non-finite loss before the update; the guard rewrites that error
    with the epoch, the step, a learning rate ten times smaller and the checkpoint that is still good
    (``diverged``).  ``check_weights`` catches the other way to diverge: a finite loss whose update
    overflowed, found before the epoch's checkpoint could save the broken weights over good ones.
    """

    def __init__(self, model, optimizer, checkpointer):
        self.model, self.optimizer, self.checkpointer = model, optimizer, checkpointer

    def diverged(self, exc, epoch):
        lr = self.optimizer.param_groups[0].get("lr")
        step = getattr(exc, "step", "?")
        steps = getattr(exc, "steps", "?")
        return NonFiniteLossError(
            f"Network.fit: training diverged: {exc} at epoch {epoch}, step {step} of {steps}. The weights "
            f"were not updated with it. Try a smaller learning rate (lr is {lr:g}; try {lr / 10:g}), or check "
            f"the data for extreme values. " + self.checkpointer.last_good_note())

    def check_weights(self, epoch):
        """Refuse to checkpoint weights that hold nan/inf (the last step can overflow with a finite loss)."""
        for name, p in self.model.named_parameters():
            if not np.isfinite(to_numpy(p.data)).all():
                raise self.diverged(NonFiniteLossError(f"parameter {name!r} holds nan or inf"), epoch)


class _Interrupted(Exception):
    """Raised between two steps of ``fit`` after a Ctrl-C: where the epoch stood."""

    def __init__(self, epoch, progress):
        super().__init__(epoch)
        self.epoch, self.progress = epoch, progress


class _DeferredInterrupt:
    """During ``fit``, the first Ctrl-C only sets ``requested``; ``fit`` stops at the next step boundary.

    Stopping there, never half-way through ``optimizer.step()`` or a checkpoint write, is what makes the
    saved state resumable.  A second Ctrl-C interrupts at once.  The handler is installed only from the
    main thread and only over Python's default handler (a program with its own handler keeps it).
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def stop_between_epochs(self, epoch, epochs, loader):
        """After epoch ``epoch``'s checkpoint: stop here if Ctrl-C came and epochs remain."""
        if self.requested and epoch < epochs:
            raise _Interrupted(epoch + 1, {"step": 0, "rng_state": _jsonable(loader.rng.bit_generator.state)})


def check_loss(loss_fn, who):
    """A loss module instance that gives one number per batch (a common slip: passing the class)."""
    if isinstance(loss_fn, type):
        raise TypeError(f"{who}: expected a loss module, got the class {loss_fn.__name__}; "
                        f"pass an instance: {loss_fn.__name__}()")
    if not isinstance(loss_fn, Module) or type(loss_fn).backward is Module.backward:
        raise TypeError(f"{who}: expected loss to be a loss module such as nn.CrossEntropyLoss(), got "
                        f"{describe(loss_fn)}")
    if getattr(loss_fn, "reduction", "mean") == "none":
        raise ValueError(f"{who}: the loss has reduction='none', but {who} needs one number per batch: "
                         f"use reduction='mean' or 'sum'")
    return loss_fn


def check_optimizer(optimizer, model, who):
    """An optimizer built from ``model``'s own parameters (one built for another model would train nothing)."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{who}: expected optimizer to be a manualbp.optim optimizer, e.g. "
                        f"optim.SGD(net.parameters(), lr=0.01), got {describe(optimizer)}")
    own = {id(p) for p in model.parameters()}
    foreign = [p for p in optimizer._params() if id(p) not in own]
    if foreign:
        raise ValueError(f"{who}: the optimizer holds {len(foreign)} parameter(s) that are not this "
                         f"model's (first of shape {foreign[0].shape}); was it built for another model? "
                         f"Build it from this network: optim.SGD(net.parameters(), ...)")


def set_lr(optimizer, lr_schedule, epoch):
    """Set ``lr_schedule(epoch)`` on every parameter group (nothing without a schedule)."""
    if lr_schedule is not None:
        for group in optimizer.param_groups:
            group["lr"] = float(lr_schedule(epoch))


def cosine_lr(lr, epochs, min_lr=0.0):
    """A schedule for ``fit(lr_schedule=...)``: ``lr`` at epoch 1, falling along half a cosine towards
    ``min_lr`` after the last epoch (``CosineAnnealingLR`` stepped once per epoch)."""
    def schedule(epoch):
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
    return schedule
