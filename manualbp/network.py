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
What ``fit`` does around those steps -- printing, checkpoints and resuming, Ctrl-C, the nan guard, the
learning-rate schedule -- is done by small helpers in ``manualbp/training.py``, one job each.
"""
import numpy as np

from . import checkpoint as ckpt
from . import data as data_mod
from . import training
from ._checks import describe, finite_array, non_negative_int, positive_int
from .device import Uploader, host_array, item, module_device, read_back, to_numpy
from .nn import CrossEntropyLoss, Module, Sequential
from .optim import SGD
from .summary import summary as _summary
from .training import History, NonFiniteLossError, _DeferredInterrupt, _Interrupted, cosine_lr

__all__ = ["History", "Network", "NonFiniteLossError", "cosine_lr"]


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
        value = read_back(loss)                   #    (on the GPU the step's one copy back, kept for item())
        if not np.all(np.isfinite(value)):        #    (a nan must not reach the weights)
            raise NonFiniteLossError(f"the loss is {value}")
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
            lr_schedule=None, verbose=True, progress=None, scheduler=None, record_gradients="epoch"):
        """Train on ``train`` for ``epochs`` epochs; return a ``History``.

        Args:
            train, val: an ``(x, y)`` pair of arrays, a ``manualbp.data.DataLoader``, or any other iterable
                of ``(x, y)`` batches -- torch's own DataLoader included (its tensors are read as NumPy
                arrays), or a list of pairs.  ``val`` is evaluated after every epoch.
            epochs: the epoch to stop after (with ``resume``, counted from the start of the run).
            batch_size, shuffle, drop_last, seed: how batches are drawn from an ``(x, y)`` pair
                (``manualbp.data.batches``); a DataLoader or other iterable brings its own, and these
                must then be left at their defaults.  ``seed``: an int for a private shuffling
                generator; by default shuffling draws from ``manualbp.random.get_generator()``.
            loss: a loss module (default ``nn.CrossEntropyLoss()``).
            optimizer: default ``optim.SGD(lr=0.01, momentum=0.9)``, the tutorials' choice.
            callbacks: callables ``cb(network, epoch, logs)`` (or objects with ``on_epoch_end`` of
                that signature) run after each epoch, once its checkpoint is written.
            checkpoint: a folder; after every epoch ``last.npz`` is written there, and ``best.npz``
                when the validation loss (training loss without ``val``) is the lowest so far.
            resume: a checkpoint written by ``fit``: restores weights, optimizer buffers, history and
                the shuffling generator's state, and continues with the next epoch.  Over ``(x, y)``
                arrays or a manualbp DataLoader the result is the same, bit for bit, as a run that was
                never interrupted.  A generic iterable (torch's DataLoader) shuffles with a generator
                fit cannot save: its run resumes at epoch boundaries only, in whatever order it draws.
            log_interval: print a ``Train Epoch`` line every this many batches (0: never).
            lr_schedule: a function epoch -> learning rate, set on every parameter group at the start
                of each epoch (e.g. ``cosine_lr(0.01, epochs)``); default: the optimizer's lr throughout.
                A resumed run goes on along the cosine it began with, over the epochs it began with.
            verbose: print progress; progress: a tqdm bar (default: when stdout is a terminal).
            scheduler: a ``manualbp.optim.lr_scheduler`` scheduler of ``optimizer`` (instead of lr_schedule),
                stepped as torch's examples step it: once at the end of every epoch, after validation
                (ReduceLROnPlateau with the validation loss, or the training loss without ``val``), or, for
                OneCycleLR, after every batch.  Its state travels in the checkpoints, so a resumed run goes
                on along it bit for bit; pass a scheduler built the same way when resuming.
            record_gradients: the gradient flow kept in ``history.gradients``: per parameter (by its
                state_dict name) the norm of its ``.grad``, the norm of its weights before the step and the
                update/weight ratio ||w_after - w_before|| / ||w_before||.  ``"epoch"`` (default): the last
                step of every epoch; ``"step"``: every step; None: nothing.  See ``History``.  The rows
                travel in the checkpoints with the rest of the history, so ``"step"`` (a row per parameter
                per step) is meant for short runs: over a long run of a large model it makes every
                checkpoint's header and history.json megabytes long.

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
        loader = self._loader(train, epochs, batch_size, shuffle, drop_last, seed)
        if val is not None and not training.is_batches(val):
            val = self._pair(val, "fit (val)")
        loss_fn = training.check_loss(loss if loss is not None else CrossEntropyLoss(), who)
        if optimizer is None:
            optimizer = SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        training.check_optimizer(optimizer, self.model, who)
        if lr_schedule is not None and not callable(lr_schedule):
            raise TypeError(f"{who}: expected lr_schedule to be a function epoch -> lr, got {describe(lr_schedule)}")
        scheduler = training.check_scheduler(scheduler, optimizer, lr_schedule, who)
        record_gradients = training.check_mode(record_gradients, who)

        log = training.Progress(verbose, progress, log_interval, compiles=self.device == "cpu")  # what fit prints
        saver = training.Checkpointer(self, optimizer, loader, checkpoint, lr_schedule, scheduler)  # last/best/...
        guard = training.DivergenceGuard(self.model, optimizer, saver)      # nan/inf -> an error saying why
        recorder = training.GradientRecorder(self.model, record_gradients) if record_gradients else None
        history, first_epoch, partial = History(), 1, None   # partial: an epoch that a Ctrl-C cut short
        if resume is not None:
            history, first_epoch, partial, lr_schedule = saver.resume(resume, log, lr_schedule, epochs)
        callbacks = list(callbacks or [])
        self.stop_training = False
        self.model.train()
        with _DeferredInterrupt() as interrupt:   # a Ctrl-C waits for the step under way to finish
            try:
                for epoch in range(first_epoch, epochs + 1):
                    training.set_lr(optimizer, lr_schedule, epoch)
                    try:
                        row = self._train_epoch(epoch, loader, loss_fn, optimizer, history, log, interrupt, partial,
                                                scheduler if training.steps_per_batch(scheduler) else None,
                                                recorder)
                    except NonFiniteLossError as exc:
                        raise guard.diverged(exc, epoch) from None
                    partial = None
                    guard.check_weights(epoch)
                    if val is not None:
                        result = self.evaluate(val, loss=loss_fn, batch_size=max(batch_size, 256))
                        row.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
                        log.validation(result)
                    history.epochs.append(row)
                    training.step_after_epoch(scheduler, row)   # the next epoch's rate (None: nothing to do)
                    saver.end_of_epoch(epoch, history)
                    for cb in callbacks:
                        (cb.on_epoch_end if hasattr(cb, "on_epoch_end") else cb)(self, epoch, row)
                    interrupt.stop_between_epochs(epoch, epochs, loader)
                    if self.stop_training:
                        break
            except _Interrupted as stop:
                saver.save_interrupted(stop, history)
                raise KeyboardInterrupt from None
        return history

    def _loader(self, train, epochs, batch_size, shuffle, drop_last, seed):
        """The batches of ``train``: an (x, y) pair through ``data.batches`` (checked once, whole), a
        DataLoader or other iterable as it is (each batch checked as it comes)."""
        who = "Network.fit"
        if training.is_batches(train):
            given = {"batch_size": (batch_size, 64), "shuffle": (shuffle, True), "drop_last": (drop_last, False),
                     "seed": (seed, None)}
            for name, (value, default) in given.items():
                if value is not default and value != default:
                    raise ValueError(f"{who}: {name}={value!r} is for (x, y) arrays; a {type(train).__name__} "
                                     f"brings its own batches (set {name} where it is made, e.g. DataLoader(...))")
            return training.as_loader(train, who, epochs)
        x, y = self._pair(train, "fit")
        if batch_size > len(x) and drop_last:   # without drop_last: one smaller batch, as torch's DataLoader
            raise ValueError(f"{who}: batch_size={batch_size} is larger than the {len(x)} training samples and "
                             f"drop_last=True, so an epoch would have no batch; use batch_size <= {len(x)}")
        loader = data_mod.batches(x, y, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
        loader.checked = True   # x and y were checked whole: the batches need no second look
        return loader

    def _train_epoch(self, epoch, loader, loss_fn, optimizer, history, log, interrupt=None, resume_from=None,
                     batch_scheduler=None, recorder=None):
        """One pass over the batches: ``train_step`` on each, its loss counted and logged; returns the
        epoch's row.  ``resume_from`` continues an epoch interrupted part-way (see ``EpochTally``).

        The loop checks for a Ctrl-C only between steps, so a step is never left half-done.  A step
        whose loss is nan or inf raises ``NonFiniteLossError`` with the step's number attached.
        ``recorder`` (a ``GradientRecorder``) measures the steps it is asked to, around them."""
        log.start_epoch(epoch, loader)
        tally = training.EpochTally(loader, resume_from)
        checked = getattr(loader, "checked", False)
        steps = training.length(loader) if recorder is not None else None
        for batch_idx, batch in enumerate(loader.iter_from(tally.first), start=tally.first):
            if interrupt is not None and interrupt.requested:
                log.stop_bar()
                raise _Interrupted(epoch, tally.progress(batch_idx))
            xb, yb = batch if checked else self._pair(batch, "fit (batch)")
            if recorder is not None:
                recorder.before_step(None if steps is None else batch_idx == steps - 1)
            try:
                loss, out = self.train_step(xb, yb, loss_fn, optimizer)
            except NonFiniteLossError as exc:
                log.stop_bar()
                exc.step, exc.steps = batch_idx + 1, training.length(loader) or "?"
                raise
            if batch_scheduler is not None:
                batch_scheduler.step()  # OneCycleLR: the next batch's rate
            loss = item(loss)  # a NumPy scalar, or a (1,) device array on the GPU
            tally.add(loss, len(xb), training.count_correct(out, yb), training.is_classification(yb))
            history.steps.append(loss)
            if recorder is not None:
                recorder.after_step(epoch, len(history.steps), history)
            log.step(epoch, batch_idx, len(xb), loss)
        log.stop_bar()
        if recorder is not None:
            recorder.end_epoch(history)
        row = tally.row(epoch, optimizer)
        log.end_epoch(row)
        return row

    # --- evaluation -----------------------------------------------------------------------------
    def evaluate(self, data, loss=None, batch_size=256):
        """Loss (mean over samples) and accuracy on ``data``, without updating anything.

        ``data`` is an ``(x, y)`` pair (taken ``batch_size`` samples at a time), a DataLoader or any
        other iterable of ``(x, y)`` batches (taken as they come)."""
        if training.is_batches(data):
            source = training.as_loader(data, "Network.evaluate")
            batches = (self._pair(b, "evaluate (batch)") for b in source.iter_from(0))
        else:
            x, y = self._pair(data, "evaluate")
            batches = data_mod.batches(x, y, batch_size, shuffle=False)
        loss_fn = training.check_loss(loss if loss is not None else CrossEntropyLoss(), "Network.evaluate")
        was_training = self.model.training
        self.model.eval()
        total_loss, correct, n, classifier = 0.0, 0, 0, False
        try:
            for xb, yb in batches:
                xd, yd = self._on_device(xb, yb)
                out = self.model(xd)
                value = item(loss_fn(out, yd))
                total_loss += value if getattr(loss_fn, "reduction", "mean") == "sum" else value * len(xb)
                correct += training.count_correct(out, yb)
                n, classifier = n + len(xb), training.is_classification(yb)
        finally:
            self.model.train(was_training)
        if n == 0:
            raise ValueError("Network.evaluate: the data gave no batch at all")
        return {"loss": total_loss / n, "accuracy": correct / n if classifier else None,
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
        x = host_array(x, where, "x")  # a torch tensor (or anything with __array__ / __dlpack__): a view
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
        x, y = self._input(pair[0], who), np.asarray(host_array(pair[1], f"Network.{who}", "y"))
        if y.dtype.kind not in "fiub":
            raise TypeError(f"Network.{who}: expected y of integer class indices or float targets, got "
                            f"dtype {y.dtype}")
        if y.ndim == 0 or len(x) != len(y):
            raise ValueError(f"Network.{who}: x has {len(x)} samples but y has "
                             f"{len(y) if y.ndim else 'none (a scalar)'}")
        return x, finite_array(y, f"Network.{who}", "y")
