"""Network: the tutorials' training loop, packaged -- fit / evaluate / predict / summary / save / load.

    net = Network(models.lenet5())
    history = net.fit((x_train, y_train), epochs=10, batch_size=64,
                      loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(net.parameters(), lr=0.01, momentum=0.9),
                      val=(x_test, y_test), checkpoint="runs/lenet5")

Each step of ``fit`` is the five lines every PyTorch tutorial writes, with torch's hidden
``loss.backward()`` spelled out as the two calls it stands for (see ``train_step``):

    optimizer.zero_grad()                     # clear last step's gradients
    out = model(x)                            # forward: each layer saves what its backward needs
    loss = loss_fn(out, y)                    # a NumPy scalar
    model.backward(loss_fn.backward())        # dL/d(out), then every layer's backward, in reverse
    optimizer.step()                          # theta <- theta - lr * (momentum-smoothed) grad

It prints progress as the tutorials do (``Train Epoch: 3 [6400/50000 (13%)]\tLoss: 1.734210``), with
a tqdm bar when the output is a terminal; after each epoch the running loss and a validation line.
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

from . import checkpoint as ckpt
from . import data as data_mod
from ._checks import describe, finite_array, non_negative_int, positive_int
from .device import Uploader, item, module_device, to_numpy
from .nn import CrossEntropyLoss, Module, Sequential
from .optim import SGD, Optimizer
from .summary import summary as _summary

__all__ = ["History", "Network", "NonFiniteLossError", "cosine_lr"]

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


class NonFiniteLossError(FloatingPointError):
    """The loss became nan or inf: training has diverged (``fit`` names the epoch, step and a remedy)."""


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


class Network:
    """A model plus the loop that trains it.

    Args:
        layers_or_module: a Module (used as is), or layers (a list, or several arguments) to chain
            in a ``Sequential``.
        device: ``"cuda"`` to move the model to the GPU at once (``Network.to``); by default it stays
            where it is (the CPU for a new model).  On the GPU, ``fit``/``evaluate``/``predict`` copy
            each batch up once, through a reused pinned buffer, and ``predict`` returns NumPy arrays.

    Attributes:
        model: the Module.  ``net(x)``, ``net.backward(g)``, ``net.parameters()``, ``state_dict`` and
            ``load_state_dict`` pass through to it.
        stop_training: a callback may set it to True to end ``fit`` after the current epoch.
    """

    def __init__(self, *layers_or_module, device=None):
        if len(layers_or_module) == 1 and isinstance(layers_or_module[0], Network):
            model = layers_or_module[0].model
        elif len(layers_or_module) == 1 and isinstance(layers_or_module[0], Module):
            model = layers_or_module[0]
        else:
            layers = layers_or_module[0] if len(layers_or_module) == 1 else layers_or_module
            if not isinstance(layers, (list, tuple)) or not layers:
                raise TypeError(f"Network expected a Module or a non-empty list of layers, got "
                                f"{type(layers_or_module[0]).__name__ if layers_or_module else 'nothing'}")
            model = Sequential(*layers)
        self.model = model
        self.stop_training = False
        self._uploader = None  # pinned staging buffers for batches going to the GPU (manualbp/device.py)
        if device is not None:
            self.to(device)

    # --- pass-throughs --------------------------------------------------------------------------
    def __call__(self, x):
        return self.model(x)

    def forward(self, x):
        return self.model(x)

    def backward(self, grad_output):
        return self.model.backward(grad_output)

    def parameters(self):
        return self.model.parameters()

    def named_parameters(self):
        return self.model.named_parameters()

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state_dict, strict=True):
        return self.model.load_state_dict(state_dict, strict=strict)

    def train(self, mode=True):
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def float(self):
        self.model.float()
        return self

    def double(self):
        self.model.double()
        return self

    def to(self, device):
        """Move the model to ``"cuda"`` or ``"cpu"`` (``Module.to``); returns self."""
        self.model.to(device)
        return self

    @property
    def device(self):
        """Where the model's parameters live: ``"cuda"`` or ``"cpu"``."""
        return module_device(self.model)

    def _on_device(self, x, y=None):
        """The batch where the model is: on the GPU, copied up once through pinned buffers reused every step."""
        if self.device == "cpu":
            return x, y
        if getattr(self, "_uploader", None) is None:
            self._uploader = Uploader()
        return self._uploader(x, "x"), (None if y is None else self._uploader(y, "y"))

    @property
    def dtype(self):
        first = next(self.model.parameters(), None)
        return first.dtype if first is not None else np.dtype(np.float32)

    def __repr__(self):
        return "Network(\n  " + repr(self.model).replace("\n", "\n  ") + "\n)"

    # --- one step -------------------------------------------------------------------------------
    def train_step(self, x, y, loss_fn, optimizer):
        """One step of gradient descent on the batch (x, y); returns (loss, output)."""
        x, y = self._on_device(x, y)              #    (a model on the GPU: the batch goes up, once)
        optimizer.zero_grad()                     # 1. clear the gradients of the last step
        out = self.model(x)                       # 2. forward, layer by layer
        loss = loss_fn(out, y)                    # 3. the loss (a NumPy scalar; on the GPU a (1,) device array)
        if not np.all(np.isfinite(to_numpy(loss))):  # (a nan must not reach the weights)
            raise NonFiniteLossError(f"the loss is {loss}")
        self._backward_to_parameters(loss_fn.backward())  # 4. backward: dL/d(out), every layer in reverse
        optimizer.step()                          # 5. update every parameter from its .grad
        return loss, out

    def _backward_to_parameters(self, grad_output):
        """``model.backward(grad_output)`` for a training step, where dL/d(images) is not needed.

        A ``Sequential`` (every model built here) is told so with ``input_grad=False`` and stops at its
        first layer with parameters, skipping that layer's dL/dx, as torch does for inputs that do not
        require a gradient.  Any other Module runs its own backward as it is.
        """
        if isinstance(self.model, Sequential):
            self.model.backward(grad_output, input_grad=False)
        else:
            self.model.backward(grad_output)

    # --- training ---------------------------------------------------------------------------------
    def fit(self, train, epochs=1, batch_size=64, loss=None, optimizer=None, val=None, shuffle=True,
            callbacks=None, checkpoint=None, resume=None, log_interval=100, seed=None, drop_last=False,
            lr_schedule=None, verbose=True, progress=None):
        """Train on ``train = (x, y)`` for ``epochs`` epochs; return a ``History``.

        Args:
            train, val: ``(x, y)`` array pairs; ``val`` is evaluated after every epoch.
            epochs: the epoch to stop after (with ``resume``, counted from the start of the run).
            batch_size, shuffle, drop_last: how batches are drawn (``manualbp.data.batches``).
            loss: a loss module (default ``nn.CrossEntropyLoss()``).
            optimizer: default ``optim.SGD(lr=0.01, momentum=0.9)``, the tutorials' choice.
            callbacks: callables ``cb(network, epoch, logs)`` (or objects with ``on_epoch_end`` of
                that signature) run after each epoch, once its checkpoint is written.
            checkpoint: a folder; after every epoch ``last.npz`` is written there, and ``best.npz``
                when the validation loss (training loss without ``val``) is the lowest so far.
            resume: a checkpoint written by ``fit``: restores weights, optimizer buffers, history and
                the shuffling generator's state, and continues with the next epoch -- the result is
                the same, bit for bit, as a run that was never interrupted.
            log_interval: print a ``Train Epoch`` line every this many batches (0: never).
            seed: an int for a private shuffling generator; by default shuffling draws from
                ``manualbp.random.get_generator()`` (seeded by ``manualbp.manual_seed``).
            lr_schedule: a function epoch -> learning rate, set on every parameter group at the start
                of each epoch (e.g. ``cosine_lr(0.01, epochs)``); default: the optimizer's lr throughout.
            verbose: print progress; progress: a tqdm bar (default: when stdout is a terminal).

        When the loss becomes nan or inf, ``fit`` stops before that step's update and raises
        ``NonFiniteLossError`` naming the epoch, the step and a smaller learning rate to try; the last
        good checkpoint is left as it was.  Ctrl-C finishes the step under way, writes
        ``interrupted.npz`` (in ``checkpoint``, or the current folder) and raises ``KeyboardInterrupt``;
        ``resume`` from that file continues the interrupted epoch exactly.  See docs/reliability.md.
        """
        who = "Network.fit"
        epochs = positive_int(epochs, who, "epochs")
        batch_size = positive_int(batch_size, who, "batch_size")
        log_interval = non_negative_int(log_interval, who, "log_interval")
        x, y = self._pair(train, "fit")
        if batch_size > len(x) and drop_last:   # without drop_last: one smaller batch, as torch's DataLoader
            raise ValueError(f"{who}: batch_size={batch_size} is larger than the {len(x)} training samples and "
                             f"drop_last=True, so an epoch would have no batch; use batch_size <= {len(x)}")
        if val is not None:
            val = self._pair(val, "fit (val)")
        loss_fn = self._check_loss(loss if loss is not None else CrossEntropyLoss(), who)
        if optimizer is None:
            optimizer = SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self._check_optimizer(optimizer, who)
        if lr_schedule is not None and not callable(lr_schedule):
            raise TypeError(f"{who}: expected lr_schedule to be a function epoch -> lr, got {describe(lr_schedule)}")
        loader = data_mod.batches(x, y, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
        history, first_epoch, progress_in_epoch = History(), 1, None
        if resume is not None:
            header = self.load(resume, optimizer)
            history = History.from_dict(header.get("history"))
            first_epoch = int(header.get("epoch") or 0) + 1
            if header.get("rng_state") is not None:
                loader.rng.bit_generator.state = header["rng_state"]
            progress_in_epoch = (header.get("extra") or {}).get("interrupted")
            if progress_in_epoch and (progress_in_epoch.get("batch_size"), progress_in_epoch.get("samples")) != (
                    batch_size, len(x)):
                raise ValueError(
                    f"{who}: {os.fspath(resume)} was saved part-way through an epoch of "
                    f"{progress_in_epoch.get('samples')} samples in batches of {progress_in_epoch.get('batch_size')}; "
                    f"resume it with the same data and batch_size (got {len(x)} samples, batch_size={batch_size})")
            where = (f"during epoch {first_epoch}, after step {progress_in_epoch['step']}"
                     if progress_in_epoch else f"after epoch {first_epoch - 1}")
            self._say(verbose, f"Resumed from {os.fspath(resume)} {where}")
        best = min((self._monitor(r) for r in history.epochs), default=np.inf)
        callbacks = list(callbacks or [])
        self.stop_training = False
        self.model.train()
        last_good = {"path": None, "epoch": None}
        with _DeferredInterrupt() as interrupt:
            try:
                for epoch in range(first_epoch, epochs + 1):
                    if lr_schedule is not None:
                        for group in optimizer.param_groups:
                            group["lr"] = float(lr_schedule(epoch))
                    try:
                        row = self._train_epoch(epoch, loader, loss_fn, optimizer, history, log_interval, verbose,
                                                progress, interrupt, progress_in_epoch)
                    except NonFiniteLossError as exc:
                        raise self._diverged(exc, epoch, optimizer, checkpoint, last_good) from None
                    progress_in_epoch = None
                    self._check_finite_weights(epoch, optimizer, checkpoint, last_good)
                    if val is not None:
                        result = self.evaluate(val, loss=loss_fn, batch_size=max(batch_size, 256))
                        row.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
                        acc = "" if result["accuracy"] is None else (
                            f", Accuracy: {result['correct']}/{result['total']} "
                            f"({100 * result['accuracy']:.2f}%)")
                        self._say(verbose, f"Validation set: Average loss: {result['loss']:.4f}{acc}")
                    history.epochs.append(row)
                    if checkpoint is not None:
                        state = {"optimizer": optimizer, "epoch": epoch, "history": history.to_dict(),
                                 "rng_state": _jsonable(loader.rng.bit_generator.state)}
                        self.save(os.path.join(checkpoint, "last.npz"), **state)
                        last_good.update(path=os.path.join(checkpoint, "last.npz"), epoch=epoch)
                        if self._monitor(row) < best:
                            best = self._monitor(row)
                            self.save(os.path.join(checkpoint, "best.npz"), **state)
                    for cb in callbacks:
                        (cb.on_epoch_end if hasattr(cb, "on_epoch_end") else cb)(self, epoch, row)
                    if interrupt.requested and epoch < epochs:
                        raise _Interrupted(epoch + 1, {"step": 0, "rng_state": _jsonable(
                            loader.rng.bit_generator.state)})
                    if self.stop_training:
                        break
            except _Interrupted as stop:
                self._save_interrupted(stop, optimizer, history, checkpoint, verbose)
                raise KeyboardInterrupt from None
        return history

    def _train_epoch(self, epoch, loader, loss_fn, optimizer, history, log_interval, verbose, progress,
                     interrupt=None, resume_from=None):
        """One pass over the batches.  ``resume_from`` continues an epoch interrupted part-way: its
        generator state (before this epoch's shuffle), the number of steps done and their running sums."""
        n, steps = loader.num_samples, len(loader)
        first = 0
        running, seen, correct, seconds_before = 0.0, 0, 0, 0.0
        if resume_from:
            loader.rng.bit_generator.state = resume_from["rng_state"]
            first, running, seen = resume_from["step"], resume_from["running"], resume_from["seen"]
            correct, seconds_before = resume_from["correct"], resume_from["seconds"]
        rng_state = _jsonable(loader.rng.bit_generator.state)  # before the shuffle: replays this epoch's order
        bar = _progress_bar(steps, epoch, verbose, progress)
        say = bar.write if bar is not None else print
        start = time.perf_counter()
        for batch_idx, (xb, yb) in enumerate(loader.iter_from(first), start=first):
            if interrupt is not None and interrupt.requested:
                if bar is not None:
                    bar.close()
                raise _Interrupted(epoch, {"step": batch_idx, "rng_state": rng_state, "running": running,
                                           "seen": seen, "correct": correct,
                                           "seconds": seconds_before + time.perf_counter() - start,
                                           "batch_size": loader.batch_size, "samples": n})
            try:
                loss, out = self.train_step(xb, yb, loss_fn, optimizer)
            except NonFiniteLossError as exc:
                if bar is not None:
                    bar.close()
                exc.step, exc.steps = batch_idx + 1, steps
                raise
            loss = item(loss)  # a NumPy scalar, or a (1,) device array on the GPU
            running += loss
            seen += len(xb)
            correct += _correct(out, yb)
            history.steps.append(loss)
            if verbose and log_interval and batch_idx % log_interval == 0:
                say(f"Train Epoch: {epoch} [{batch_idx * loader.batch_size}/{n} "
                    f"({100. * batch_idx / steps:.0f}%)]\tLoss: {loss:.6f}")
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        seconds = seconds_before + time.perf_counter() - start
        row = {"epoch": epoch, "train_loss": running / max(steps, 1), "running_loss": running,
               "train_accuracy": correct / seen if seen and _is_classification(loader.y) else None,
               "val_loss": None, "val_accuracy": None, "seconds": seconds,
               "images_per_sec": seen / seconds if seconds > 0 else None,
               "lr": optimizer.param_groups[0].get("lr")}
        acc = "" if row["train_accuracy"] is None else f", train accuracy {100 * row['train_accuracy']:.2f}%"
        self._say(verbose, f"Epoch {epoch}: running loss {running:.4f} (mean {row['train_loss']:.6f}){acc}, "
                           f"lr {row['lr']:.6g}, {seconds:.1f}s, {row['images_per_sec'] or 0:.0f} images/s")
        return row

    # --- what fit does when things go wrong ---------------------------------------------------------
    @staticmethod
    def _last_good_note(checkpoint, last_good):
        if last_good["path"] is not None:
            return (f"The last good checkpoint, written after epoch {last_good['epoch']}, is "
                    f"{last_good['path']}; it was left as it was.")
        if checkpoint is not None and os.path.exists(os.path.join(checkpoint, "last.npz")):
            return f"No epoch finished in this run; {os.path.join(checkpoint, 'last.npz')} was left as it was."
        return "No checkpoint was written (pass checkpoint=folder to keep one after every epoch)."

    def _diverged(self, exc, epoch, optimizer, checkpoint, last_good):
        lr = optimizer.param_groups[0].get("lr")
        step = getattr(exc, "step", "?")
        steps = getattr(exc, "steps", "?")
        return NonFiniteLossError(
            f"Network.fit: training diverged: {exc} at epoch {epoch}, step {step} of {steps}. The weights "
            f"were not updated with it. Try a smaller learning rate (lr is {lr:g}; try {lr / 10:g}), or check "
            f"the data for extreme values. " + self._last_good_note(checkpoint, last_good))

    def _check_finite_weights(self, epoch, optimizer, checkpoint, last_good):
        """Refuse to checkpoint weights that hold nan/inf (the last step can overflow with a finite loss)."""
        for name, p in self.model.named_parameters():
            if not np.isfinite(to_numpy(p.data)).all():
                raise self._diverged(NonFiniteLossError(f"parameter {name!r} holds nan or inf"), epoch,
                                     optimizer, checkpoint, last_good)

    def _save_interrupted(self, stop, optimizer, history, checkpoint, verbose):
        """Write ``interrupted.npz`` (in ``checkpoint``, or the current folder) and say how to resume."""
        path = os.path.join(checkpoint if checkpoint is not None else ".", "interrupted.npz")
        progress = stop.progress
        partial = None if progress["step"] == 0 else progress
        self.save(path, optimizer, epoch=stop.epoch - 1, history=history.to_dict(),
                  rng_state=progress["rng_state"], extra={"interrupted": partial})
        where = (f"during epoch {stop.epoch}, after step {progress['step']}" if partial
                 else f"after epoch {stop.epoch - 1}")
        print(f"Interrupted {where}: saved {path}. Continue with fit(..., resume={path!r}) "
              f"(manualbp train --resume {path}).", file=sys.stderr, flush=True)

    @staticmethod
    def _monitor(row):
        value = row.get("val_loss")
        return value if value is not None else row.get("train_loss", np.inf)

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate(self, data, loss=None, batch_size=256):
        """Loss (mean over samples) and accuracy on ``data = (x, y)``, without updating anything."""
        x, y = self._pair(data, "evaluate")
        loss_fn = self._check_loss(loss if loss is not None else CrossEntropyLoss(), "Network.evaluate")
        was_training = self.model.training
        self.model.eval()
        total_loss, correct = 0.0, 0
        try:
            for xb, yb in data_mod.batches(x, y, batch_size, shuffle=False):
                xd, yd = self._on_device(xb, yb)
                out = self.model(xd)
                value = item(loss_fn(out, yd))
                total_loss += value if getattr(loss_fn, "reduction", "mean") == "sum" else value * len(xb)
                correct += _correct(out, yb)
        finally:
            self.model.train(was_training)
        n = len(x)
        return {"loss": total_loss / n, "accuracy": correct / n if _is_classification(y) else None,
                "correct": correct, "total": n}

    def predict(self, x, batch_size=256):
        """The model's outputs for ``x`` (logits for a classifier: ``.argmax(1)`` gives the classes)."""
        x = self._input(x, "predict")
        was_training = self.model.training
        self.model.eval()
        try:
            outs = [to_numpy(self.model(self._on_device(xb)[0]))
                    for xb in data_mod.batches(x, None, batch_size, shuffle=False)]
        finally:
            self.model.train(was_training)
        return np.concatenate(outs)

    def summary(self, input_shape, batch_size=-1, dtype=None, verbose=True):
        """torchsummary's table; see ``manualbp.summary.summary``."""
        return _summary(self.model, input_shape, batch_size=batch_size, dtype=dtype, verbose=verbose)

    # --- checkpoints --------------------------------------------------------------------------
    def save(self, path, optimizer=None, epoch=None, history=None, rng_state=None, extra=None):
        """Write the model (and optimizer) to ``path`` atomically; see ``manualbp.checkpoint``."""
        if isinstance(history, History):
            history = history.to_dict()
        return ckpt.save(path, self.model, optimizer, epoch=epoch, history=history, rng_state=rng_state,
                         extra=extra)

    def load(self, path, optimizer=None, strict=True):
        """Load weights (and optimizer state) from ``path``; return the header. Bad files raise ValueError."""
        return ckpt.load(path, self.model, optimizer, strict=strict)

    # --- bookkeeping ----------------------------------------------------------------------------
    def _input(self, x, who):
        where = f"Network.{who}"
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{where}: expected x to be a numpy array, got {type(x).__name__}")
        if x.dtype.kind != "f":
            hint = " (convert images with x.astype(np.float32) / 255)" if x.dtype.kind in "iub" else ""
            raise TypeError(f"{where}: expected x of a float dtype, got {x.dtype}{hint}")
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(f"{where}: expected x with at least one sample, got shape {tuple(x.shape)}")
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)   # float32 data into a float64 model (or back)
        return finite_array(x, where, "x")   # one nan pixel would turn every weight into nan

    def _pair(self, pair, who):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"Network.{who}: expected an (x, y) pair of arrays, got {type(pair).__name__}")
        x, y = self._input(pair[0], who), np.asarray(pair[1])
        if y.dtype.kind not in "fiub":
            raise TypeError(f"Network.{who}: expected y of integer class indices or float targets, got "
                            f"dtype {y.dtype}")
        if y.ndim == 0 or len(x) != len(y):
            raise ValueError(f"Network.{who}: x has {len(x)} samples but y has "
                             f"{len(y) if y.ndim else 'none (a scalar)'}")
        return x, finite_array(y, f"Network.{who}", "y")

    def _check_loss(self, loss_fn, who):
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

    def _check_optimizer(self, optimizer, who):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{who}: expected optimizer to be a manualbp.optim optimizer, e.g. "
                            f"optim.SGD(net.parameters(), lr=0.01), got {describe(optimizer)}")
        own = {id(p) for p in self.model.parameters()}
        foreign = [p for p in optimizer._params() if id(p) not in own]
        if foreign:
            raise ValueError(f"{who}: the optimizer holds {len(foreign)} parameter(s) that are not this "
                             f"model's (first of shape {foreign[0].shape}); was it built for another model? "
                             f"Build it from this network: optim.SGD(net.parameters(), ...)")

    @staticmethod
    def _say(verbose, message):
        if verbose:
            print(message, flush=True)


def cosine_lr(lr, epochs, min_lr=0.0):
    """A schedule for ``fit(lr_schedule=...)``: ``lr`` at epoch 1, falling along half a cosine towards
    ``min_lr`` after the last epoch (``CosineAnnealingLR`` stepped once per epoch)."""
    def schedule(epoch):
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
    return schedule


def _is_classification(y):
    return np.asarray(y).dtype.kind in "iu"


def _correct(out, y):
    if not _is_classification(y) or out.ndim != 2 or np.asarray(y).ndim != 1:
        return 0
    out = to_numpy(out)  # logits on the GPU come back (N x C numbers) to be compared with y
    return int((out.argmax(axis=1) == y).sum())


def _jsonable(obj):
    """A generator state with arrays turned into lists (PCG64's is plain ints already)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _progress_bar(steps, epoch, verbose, progress):
    """A tqdm bar on a terminal (or when progress=True); None for plain lines."""
    if not verbose or progress is False:
        return None
    if progress is None and not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=steps, desc=f"Epoch {epoch}", unit="batch", leave=False, file=sys.stdout)
