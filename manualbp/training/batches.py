"""What ``fit`` reads its batches from, and one epoch's running sums (``EpochTally``).

``fit`` takes ``(x, y)`` arrays (batched by ``data.batches``), a ``data.DataLoader``, or any other
iterable of ``(x, y)`` batches -- torch's own DataLoader, a list of pairs -- which ``IterableBatches``
reads as NumPy arrays.  The first two draw their order from a generator that checkpoints can save, so
a run over them resumes exactly, even part-way through an epoch; a generic iterable has its own order,
so a run over it resumes at epoch boundaries only.
"""
import time

import numpy as np

from .. import data
from ..device import to_numpy


def is_batches(obj):
    """True for a DataLoader or another iterable of batches; False for an ``(x, y)`` pair (or anything else,
    which ``Network._pair`` then refuses with its own message)."""
    if isinstance(obj, data.DataLoader):
        return True
    if isinstance(obj, (tuple, list)):   # a list of (x, y) batches, not an (x, y) pair of arrays
        return len(obj) > 0 and all(isinstance(b, (tuple, list)) and len(b) == 2 for b in obj)
    if obj is None or isinstance(obj, (str, bytes, dict)) or hasattr(obj, "shape"):
        return False
    return hasattr(obj, "__iter__")


def as_loader(obj, who, epochs=1):
    """A manualbp DataLoader as it is; any other iterable of batches wrapped in ``IterableBatches``."""
    if isinstance(obj, data.DataLoader):
        return obj
    if iter(obj) is obj and epochs > 1:
        raise ValueError(f"{who}: the batches come from an iterator (a generator?), which can be gone through "
                         f"only once, but {epochs} epochs need them {epochs} times: pass a list of batches or a "
                         f"DataLoader, or epochs=1")
    return IterableBatches(obj)


class IterableBatches:
    """Any iterable of ``(x, y)`` batches, read as NumPy arrays (torch tensors converted without torch).

    ``len`` is the iterable's own (when it has one); ``num_samples`` is ``len(source.dataset)`` (torch's
    DataLoader) or the sum over a list's batches, None when it cannot be known before the epoch.
    """
    rng = None          # no generator of ours: the iterable shuffles (or not) by itself
    batch_size = None

    def __init__(self, source):
        self.source = source
        if hasattr(source, "dataset") and hasattr(source.dataset, "__len__"):
            self.num_samples = len(source.dataset)
        elif isinstance(source, (tuple, list)):
            self.num_samples = sum(len(b[0]) for b in source)
        else:
            self.num_samples = None

    def __len__(self):
        return len(self.source)

    def iter_from(self, first_batch):
        if first_batch:
            raise ValueError("a generic iterable of batches cannot start part-way through an epoch")
        return (data.as_numpy(batch) for batch in self.source)


def length(loader):
    """``len(loader)``, or None for an iterable that does not know its length."""
    try:
        return len(loader)
    except TypeError:
        return None


def rng_state(loader):
    """The state of the generator ``loader`` shuffles with, as JSON (None for a generic iterable)."""
    rng = loader.rng
    return None if rng is None else _jsonable(rng.bit_generator.state)


def _jsonable(obj):
    """A generator state with arrays turned into lists (PCG64's is plain ints already)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


class EpochTally:
    """The running sums of one epoch: loss, steps, samples seen, correct answers and the time it took.

    An epoch interrupted by Ctrl-C is saved with these sums (``progress``) and the generator state from
    *before* its shuffle; ``EpochTally(loader, resume_from=that)`` puts both back, so the same
    permutation is drawn again, the finished steps are skipped (``first``) and the epoch's row comes
    out as if it had never stopped.  The clock starts when the tally is made.
    """

    def __init__(self, loader, resume_from=None):
        self.loader = loader
        self.first, self.running, self.seen, self.correct, self.seconds_before = 0, 0.0, 0, 0, 0.0
        self.classifier = False
        if resume_from:
            loader.rng.bit_generator.state = resume_from["rng_state"]
            self.first, self.running, self.seen = resume_from["step"], resume_from["running"], resume_from["seen"]
            self.correct, self.seconds_before = resume_from["correct"], resume_from["seconds"]
            self.classifier = self.seen > 0 and resume_from.get("classifier", True)
        self.steps = self.first
        self.rng_state = rng_state(loader)  # before the shuffle: replays this epoch's order
        self._start = time.perf_counter()

    def add(self, loss, samples, correct, classifier):
        self.running += loss
        self.steps += 1
        self.seen += samples
        self.correct += correct
        self.classifier = classifier

    def progress(self, step):
        """Where the epoch stands before step ``step`` (what ``interrupted.npz`` keeps)."""
        return {"step": step, "rng_state": self.rng_state, "running": self.running, "seen": self.seen,
                "correct": self.correct, "seconds": self.seconds_before + time.perf_counter() - self._start,
                "classifier": bool(self.classifier),
                "batch_size": self.loader.batch_size, "samples": self.loader.num_samples}

    def row(self, epoch, optimizer):
        """The epoch's row of the history (validation columns still empty)."""
        seconds = self.seconds_before + time.perf_counter() - self._start
        return {"epoch": epoch, "train_loss": self.running / max(self.steps, 1), "running_loss": self.running,
                "train_accuracy": self.correct / self.seen if self.classifier and self.seen else None,
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
