"""What keeps a run from ending badly: a nan/inf turned into an error that says what to do, a Ctrl-C held back
until the step under way has finished, and a loss or optimizer that cannot work refused before the first step."""
import signal
import sys
import threading

import numpy as np

from .._checks import describe
from ..device import to_numpy
from ..nn import Module
from ..optim import Optimizer
from .batches import rng_state


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
            raise _Interrupted(epoch + 1, {"step": 0, "rng_state": rng_state(loader)})


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
