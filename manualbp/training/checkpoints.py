"""Saving a run so that it can go on later, and resuming one (``Checkpointer``)."""
import os
import sys

import numpy as np

from .batches import rng_state
from .history import History
from .schedule import load_scheduler_state, resumed_schedule, schedule_config, scheduler_state


class Checkpointer:
    """Saves a run so that it can go on later, bit for bit, and resumes one.

    After each epoch it writes ``last.npz`` in ``folder`` (and ``best.npz`` when the monitored loss --
    validation loss, or training loss without validation data -- is the lowest so far).  Each holds the
    weights, the optimizer's buffers, the history, the shuffling generator's state and the learning-rate
    schedule's settings (or the scheduler's state_dict), which is all a run depends on.  With ``folder=None`` it writes nothing but
    ``interrupted.npz`` after a Ctrl-C (in the current folder).  ``last_good`` remembers the newest
    ``last.npz`` of this run for error messages.

    A run over a generic iterable of batches (torch's DataLoader, a list) has no generator of ours to
    save: it resumes at an epoch boundary, and an epoch cut short by Ctrl-C starts again from its first batch.
    """

    def __init__(self, network, optimizer, loader, folder=None, lr_schedule=None, scheduler=None):
        self.network, self.optimizer, self.loader, self.folder = network, optimizer, loader, folder
        self.scheduler = scheduler
        self.extra = {"lr_schedule": schedule_config(lr_schedule)}
        self.best = np.inf
        self.last_good = {"path": None, "epoch": None}

    def resume(self, path, log, lr_schedule=None, epochs=None):
        """Load ``path`` into the model and optimizer; return ``(history, first_epoch, partial, lr_schedule)``,
        where ``partial`` is the interrupted epoch's saved progress (None when it stopped between epochs)
        and ``lr_schedule`` the schedule to go on with (the one the run began with, when it was a cosine)."""
        header = self.network.load(path, self.optimizer)
        history = History.from_dict(header.get("history"))
        first_epoch = int(header.get("epoch") or 0) + 1
        extra = header.get("extra") or {}
        partial = extra.get("interrupted")
        rng = self.loader.rng
        if partial and rng is None:
            raise ValueError(
                f"Network.fit: {os.fspath(path)} was saved part-way through epoch {first_epoch}, and a generic "
                f"iterable of batches can only resume at an epoch boundary: resume it with the (x, y) arrays or "
                f"a manualbp DataLoader, or from the last.npz written after epoch {first_epoch - 1}")
        samples, batch_size = self.loader.num_samples, self.loader.batch_size
        if partial and (partial.get("batch_size"), partial.get("samples")) != (batch_size, samples):
            raise ValueError(
                f"Network.fit: {os.fspath(path)} was saved part-way through an epoch of "
                f"{partial.get('samples')} samples in batches of {partial.get('batch_size')}; "
                f"resume it with the same data and batch_size (got {samples} samples, batch_size={batch_size})")
        if header.get("rng_state") is not None and rng is not None:
            rng.bit_generator.state = header["rng_state"]
        where = (f"during epoch {first_epoch}, after step {partial['step']}"
                 if partial else f"after epoch {first_epoch - 1}")
        log.say(f"Resumed from {os.fspath(path)} {where}")
        lr_schedule = resumed_schedule(lr_schedule, extra.get("lr_schedule"), epochs, log)
        if self.scheduler is not None:
            if not extra.get("scheduler"):
                raise ValueError(f"Network.fit: {os.fspath(path)} was written by a run without a scheduler; "
                                 f"resume it without one (or start a new run with the scheduler)")
            load_scheduler_state(self.scheduler, extra["scheduler"], os.fspath(path))
        elif extra.get("scheduler"):
            log.say(f"Note: the run was saved with a {extra['scheduler'].get('type')}; without a scheduler it goes "
                    f"on at the optimizer's last learning rate")
        self.extra["lr_schedule"] = schedule_config(lr_schedule)
        self.best = min((_monitor(r) for r in history.epochs), default=np.inf)
        return history, first_epoch, partial, lr_schedule

    def end_of_epoch(self, epoch, history):
        """Write ``last.npz`` (and ``best.npz`` when this epoch is the best yet); nothing without a folder."""
        if self.folder is None:
            return
        state = {"optimizer": self.optimizer, "epoch": epoch, "history": history.to_dict(),
                 "rng_state": rng_state(self.loader), "extra": self._extra()}
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
        resumable = self.loader.rng is not None   # a generic iterable: epoch boundaries only
        partial = None if progress["step"] == 0 or not resumable else progress
        self.network.save(path, self.optimizer, epoch=stop.epoch - 1, history=history.to_dict(),
                          rng_state=progress["rng_state"], extra={**self._extra(), "interrupted": partial})
        where = (f"during epoch {stop.epoch}, after step {progress['step']}" if progress["step"]
                 else f"after epoch {stop.epoch - 1}")
        again = ("" if partial or not progress["step"] else
                 f" (batches from a generic iterable resume at an epoch boundary: epoch {stop.epoch} will start "
                 f"again from its first batch, with these weights)")
        print(f"Interrupted {where}: saved {path}{again}. Continue with fit(..., resume={path!r}) "
              f"(manualbp train --resume {path}).", file=sys.stderr, flush=True)

    def _extra(self):
        """The header's extra: the schedule's settings and, with a scheduler, its state as it is now."""
        if self.scheduler is None:
            return self.extra
        return {**self.extra, "scheduler": scheduler_state(self.scheduler)}

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
