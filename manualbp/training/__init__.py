"""The pieces ``Network.fit`` hands its chores to, so that ``fit`` itself can read like the tutorials' loop.

A training loop is five lines per step (``Network.train_step``), but a run that should survive a bad
learning rate, a Ctrl-C or a crash needs more around them.  Each of those jobs lives here, on its own
(in this order):

    batches.py      what fit reads: (x, y) arrays, a DataLoader, or any iterable of batches
                    (``is_batches``, ``IterableBatches``); ``EpochTally``, one epoch's running sums
    history.py      ``History``: what a run records, one row per epoch, the loss of every step
    gradients.py    ``GradientRecorder``: per parameter, gradient norm, weight norm and update/weight ratio
    progress.py     ``Progress``: every line fit prints (``Train Epoch: ...``, ``Epoch N: ...``, validation),
                    and the word about compiling the kernels on a first run
    checkpoints.py  ``Checkpointer``: last.npz / best.npz after each epoch, resuming a run, interrupted.npz
    guards.py       ``DivergenceGuard`` (a nan/inf becomes a ``NonFiniteLossError`` that says what to do),
                    ``_DeferredInterrupt`` (a Ctrl-C waits for the step under way), ``check_loss``, ...
    schedule.py     ``set_lr``, ``cosine_lr``: the learning-rate schedule; ``check_scheduler``,
                    ``step_after_epoch``, ...: a torch-style scheduler (``fit(scheduler=...)``)

None of them changes the arithmetic of training: they read, print, count, save and stop.
"""
from .batches import EpochTally, IterableBatches, as_loader, count_correct, is_batches, is_classification, length
from .checkpoints import Checkpointer
from .gradients import GRADIENT_FIELDS, GradientRecorder, check_mode
from .guards import DivergenceGuard, NonFiniteLossError, check_loss, check_optimizer
from .guards import _DeferredInterrupt as _DeferredInterrupt
from .guards import _Interrupted as _Interrupted
from .history import EPOCH_FIELDS, History
from .progress import CompileNote, Progress, kernel_cache_is_empty
from .schedule import check_scheduler, cosine_lr, set_lr, step_after_epoch, steps_per_batch

__all__ = ["EPOCH_FIELDS", "GRADIENT_FIELDS", "Checkpointer", "CompileNote", "DivergenceGuard", "EpochTally",
           "GradientRecorder", "History",
           "IterableBatches", "NonFiniteLossError", "Progress", "as_loader", "check_loss", "check_mode", "check_optimizer",
           "check_scheduler", "cosine_lr", "count_correct", "is_batches", "is_classification", "kernel_cache_is_empty",
           "length", "set_lr", "step_after_epoch", "steps_per_batch"]
