"""Batches, and the data sets the tutorials train on, as NumPy arrays.

Everything here returns plain arrays: images ``x`` of shape (N, C, H, W), float32 in [0, 1], and
labels ``y`` of shape (N,), int64 -- what ``Network.fit`` and every layer take.

    train = data.digits(train=True, shape=(3, 32, 32))    # offline: ships with scikit-learn
    test = data.digits(train=False, shape=(3, 32, 32))
    train = data.cifar10("data", train=True, download=True)  # through torchvision (optional extra)
    train_loader = data.DataLoader(train, batch_size=64, shuffle=True)   # torch's DataLoader, in NumPy
    for batch_idx, (xb, yb) in enumerate(train_loader):
        ...

``DataLoader`` takes torch's arguments and any map-style dataset -- a torchvision dataset with its
transforms included -- and yields NumPy batches; iterating it again draws a new order, from
``manualbp.random.get_generator()`` (so ``manualbp.manual_seed`` fixes it) or from its ``generator``.
``batches(x, y)`` is the same over a pair of arrays, with a ``seed`` argument.
"""
import contextlib
import io
import math
import os
import shutil

import numpy as np

from ._checks import non_negative_int, positive_int
from .device import to_numpy
from .random import get_generator

__all__ = ["ArrayDataset", "BatchIterator", "DataLoader", "DownloadError", "TensorDataset", "as_numpy", "batches",
           "cifar10", "collate", "digits", "mnist", "pad_to", "resize", "subset", "to_channels"]


# --- batching: DataLoader, as torch.utils.data.DataLoader -------------------------------------------

class ArrayDataset:
    """Samples ``(x[i], y[i])`` of arrays with the same first dimension (torch's ``TensorDataset``).

    ``ArrayDataset(x, y)[i]`` is the tuple ``(x[i], y[i])`` and ``len`` is N.  The arrays may be NumPy
    arrays or torch tensors (read without a copy where possible).  A ``DataLoader`` over it takes each
    batch with one fancy index per array (``x[idx]``) instead of a call per sample.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("ArrayDataset: expected at least one array")
        arrays = tuple(to_numpy(a) for a in arrays)
        if any(a.ndim == 0 for a in arrays) or len({len(a) for a in arrays}) != 1:
            raise ValueError(f"ArrayDataset: the arrays must have the same number of samples (first dimension), "
                             f"got shapes {[tuple(a.shape) for a in arrays]}")
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


TensorDataset = ArrayDataset   # torch's name for the same thing

# torch's DataLoader options that manualbp's loader does not implement, with the default it accepts
_REFUSED = {"sampler": None, "batch_sampler": None, "num_workers": 0, "pin_memory": False, "timeout": 0,
            "worker_init_fn": None, "multiprocessing_context": None, "prefetch_factor": None,
            "persistent_workers": False, "pin_memory_device": "", "in_order": True}


class DataLoader:
    """Mini-batches of a map-style dataset as NumPy arrays: ``torch.utils.data.DataLoader``'s signature.

        loader = DataLoader(torchvision.datasets.MNIST("data", transform=ToTensor()), batch_size=64, shuffle=True)
        for batch_idx, (data, target) in enumerate(loader):   # data float32 (64, 1, 28, 28), target int64 (64,)
            ...
        len(loader)           # batches per pass          len(loader.dataset)   # samples

    Args:
        dataset: anything with ``__len__`` and ``__getitem__`` -- a torchvision dataset (its transform may
            return torch tensors or PIL images), a list of ``(x, y)`` pairs, an ``ArrayDataset``, or an
            ``(x, y)`` tuple of arrays (wrapped in an ``ArrayDataset``, so ``.dataset`` has N samples).
        batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
        shuffle: a fresh permutation of the samples at the start of every pass, drawn from ``generator``
            or, without one, from ``manualbp.random.get_generator()`` (``manualbp.manual_seed`` fixes it).
        collate_fn: a function list-of-samples -> batch; by default samples are stacked field by field.
        drop_last: skip a final batch smaller than ``batch_size``.
        generator: a ``numpy.random.Generator`` for the order.

    Each batch has the structure of one sample, its fields stacked along a new first axis: arrays and
    torch tensors become (N, ...) NumPy arrays of their dtype; PIL images become float32 (N, C, H, W)
    in [0, 1], as ``transforms.ToTensor()`` makes them; Python and NumPy integers (class labels) int64,
    floats float64.  torch is never imported.

    Samples are read in the main process, in order: ``sampler``, ``batch_sampler``, ``num_workers``,
    ``pin_memory``, ``timeout``, ``worker_init_fn``, ``multiprocessing_context``, ``prefetch_factor``,
    ``persistent_workers``, ``pin_memory_device`` and ``in_order`` are accepted only at torch's defaults,
    and any other value is refused by name.  ``Network.fit`` resumes a run over a DataLoader exactly,
    even part-way through an epoch (it saves and restores the generator's state).
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 multiprocessing_context=None, generator=None, *, prefetch_factor=None, persistent_workers=False,
                 pin_memory_device="", in_order=True):
        given = locals()
        for name, default in _REFUSED.items():
            if given[name] is not default and given[name] != default:
                raise ValueError(f"DataLoader: {name}={given[name]!r} is not supported: manualbp's DataLoader "
                                 f"reads the samples in the main process, in the order shuffle and generator "
                                 f"give; leave {name} at {default!r}")
        if batch_size is None:
            raise ValueError("DataLoader: batch_size=None (no automatic batching) is not supported; "
                             "give a batch size")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(f"DataLoader: expected generator to be a numpy.random.Generator "
                            f"(np.random.default_rng(seed)), got {type(generator).__name__}")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {type(collate_fn).__name__}")
        self.dataset = _as_dataset(dataset)
        self.batch_size, self.drop_last = int(batch_size), bool(drop_last)
        self.shuffle, self.collate_fn, self.generator = bool(shuffle), collate_fn, generator

    @property
    def rng(self):
        """The generator the next shuffle draws from."""
        return self.generator if self.generator is not None else get_generator()

    @property
    def num_samples(self):
        return len(self.dataset)

    def __len__(self):
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, first_batch):
        """Draw this pass's order as ``iter`` does, but yield only from batch ``first_batch`` on
        (how ``Network.fit`` resumes an epoch that was interrupted part-way)."""
        n = len(self.dataset)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for i in range(first_batch, len(self)):
            yield self._batch(order[i * self.batch_size:(i + 1) * self.batch_size])

    def _batch(self, idx):
        data = self.dataset
        if isinstance(data, np.ndarray):
            return data[idx]
        if isinstance(data, ArrayDataset) and self.collate_fn is None:
            return tuple(a[idx] for a in data.arrays)
        samples = [data[int(i)] for i in idx]
        return as_numpy(self.collate_fn(samples)) if self.collate_fn is not None else collate(samples)

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last})")


def _as_dataset(dataset):
    if (isinstance(dataset, tuple) and len(dataset) == 2
            and all(hasattr(a, "shape") and len(a.shape) > 0 for a in dataset)):
        return ArrayDataset(*dataset)   # an (x, y) pair of arrays
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")) or isinstance(dataset, (str, bytes)):
        raise TypeError(f"DataLoader: expected a map-style dataset (with __len__ and __getitem__: a torchvision "
                        f"dataset, a list of (x, y) pairs, an (x, y) tuple of arrays), got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("DataLoader: the dataset holds no samples")
    return dataset


def _is_pil(value):
    return type(value).__module__.startswith("PIL.") and hasattr(value, "getbands")


def as_numpy(value):
    """``value`` with every torch tensor in it a NumPy array (a tuple, list or dict is converted field by
    field); a PIL image becomes float32 (C, H, W) in [0, 1] as ``transforms.ToTensor()`` makes it."""
    if isinstance(value, (tuple, list)):
        return tuple(as_numpy(v) for v in value)
    if isinstance(value, dict):
        return {k: as_numpy(v) for k, v in value.items()}
    if _is_pil(value):
        a = np.asarray(value)
        a = (a[None] if a.ndim == 2 else a.transpose(2, 0, 1))   # HWC -> CHW
        return np.ascontiguousarray(a, dtype=np.float32) / (np.float32(255) if a.dtype == np.uint8 else 1)
    return to_numpy(value)


def collate(samples):
    """Stack a list of samples into one batch, field by field (``default_collate``, in NumPy)."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        if any(not isinstance(s, (tuple, list)) or len(s) != len(first) for s in samples):
            raise ValueError(f"DataLoader: every sample must have {len(first)} fields, as the first one has")
        return tuple(collate([s[i] for s in samples]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: collate([s[k] for s in samples]) for k in first}
    if isinstance(first, (str, bytes)):
        return list(samples)
    values = [as_numpy(s) for s in samples]
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu")
           for v in values):
        return np.array(values, dtype=np.int64)   # class labels
    if all(isinstance(v, float) for v in values):
        return np.array(values, dtype=np.float64)
    values = [np.asarray(v) for v in values]
    if len({v.shape for v in values}) != 1:
        raise ValueError(f"DataLoader: cannot stack samples of different shapes "
                         f"{sorted({tuple(v.shape) for v in values})} into one batch")
    return np.stack(values)


class BatchIterator(DataLoader):
    """Mini-batches ``(x[idx], y[idx])`` over paired arrays: a ``DataLoader`` over ``ArrayDataset(x, y)``.

    Args:
        x, y: arrays with the same first dimension N (y may be None: batches of x alone).
        batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
        shuffle: draw a fresh permutation of 0..N-1 at the start of every iteration.
        drop_last: skip a final batch smaller than ``batch_size``.
        seed: an int for a private generator; ``rng``: a ``numpy.random.Generator`` to draw from.
            With neither, the order comes from ``manualbp.random.get_generator()``.

    ``len(it)`` is the number of batches per pass; ``it.num_samples`` is N.
    """

    def __init__(self, x, y=None, batch_size=64, shuffle=True, drop_last=False, seed=None, rng=None):
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("batches: x must have a first (sample) dimension, got a scalar")
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 0 or len(y) != len(x):
                raise ValueError(f"batches: x and y must have the same number of samples, "
                                 f"got x {tuple(x.shape)} and y {tuple(y.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batches: batch_size must be a positive int, got {batch_size!r}")
        if len(x) == 0:
            raise ValueError(f"batches: x holds no samples (shape {tuple(x.shape)})")
        if drop_last and batch_size > len(x):
            raise ValueError(f"batches: batch_size={batch_size} is larger than the {len(x)} samples and "
                             f"drop_last=True, so there would be no batch at all")
        if seed is not None and rng is not None:
            raise ValueError("batches: give seed or rng, not both")
        if seed is not None:
            rng = np.random.default_rng(non_negative_int(seed, "batches", "seed"))
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"batches: expected rng to be a numpy.random.Generator, got {type(rng).__name__}")
        super().__init__(ArrayDataset(x, y) if y is not None else x, batch_size, shuffle=shuffle,
                         drop_last=drop_last, generator=rng)
        self.x, self.y = x, y


def batches(x, y=None, batch_size=64, shuffle=True, drop_last=False, seed=None, rng=None):
    """A ``BatchIterator`` over ``(x, y)``; see its docstring."""
    return BatchIterator(x, y, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rng=rng)


def subset(x, y, limit):
    """The first ``limit`` samples of (x, y) (all of them when limit is None)."""
    if limit is None:
        return x, y
    limit = positive_int(limit, "subset", "limit")
    return x[:limit], y[:limit]


# --- image shape helpers ------------------------------------------------------------------------

def _interp_matrix(n_in, n_out):
    """(n_out, n_in) weights of 1-D linear interpolation with torch's align_corners=False rule."""
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)  # the output pixel's centre, in input coordinates
        i0 = min(math.floor(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        t = src - i0
        m[i, i0] += 1 - t
        m[i, i1] += t
    return m


def _images(x, who):
    """Check that ``x`` is an (N, C, H, W) array of real numbers."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who}: expected images as a numpy array of shape (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.dtype.kind not in "fiub":
        raise ValueError(f"{who}: expected real-valued images of shape (N, C, H, W), got an array of shape "
                         f"{tuple(x.shape)} and dtype {x.dtype}")
    return x


def _size2(size, who):
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in size)):
        raise ValueError(f"{who}: expected size as a pair of positive ints (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def resize(x, size):
    """Bilinear resize of (N, C, H, W) images to (N, C, *size) (``F.interpolate(mode='bilinear')``)."""
    x = _images(x, "resize")
    h, w = _size2(size, "resize")
    rows, cols = _interp_matrix(x.shape[2], h), _interp_matrix(x.shape[3], w)
    out = np.einsum("ih,nchw,jw->ncij", rows, x.astype(np.float64), cols, optimize=True)
    return out.astype(x.dtype)


def pad_to(x, size):
    """Centre (N, C, H, W) images in a zero canvas of (H', W') >= (H, W) (MNIST 28x28 -> 32x32)."""
    x = _images(x, "pad_to")
    h, w = _size2(size, "pad_to")
    dh, dw = h - x.shape[2], w - x.shape[3]
    if dh < 0 or dw < 0:
        raise ValueError(f"pad_to: images of size {x.shape[2:]} do not fit in {tuple(size)}")
    return np.pad(x, ((0, 0), (0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)))


def to_channels(x, channels):
    """Repeat a grey channel to ``channels`` (1 -> 3), or average colour to grey (3 -> 1)."""
    x = _images(x, "to_channels")
    channels = positive_int(channels, "to_channels", "channels")
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return np.repeat(x, channels, axis=1)
    if channels == 1:
        return x.mean(axis=1, keepdims=True, dtype=np.float64).astype(x.dtype)
    raise ValueError(f"to_channels: cannot turn {c} channels into {channels}")


def _shape3(shape, who):
    if len(shape) == 2:
        shape = (1,) + tuple(shape)
    if len(shape) != 3 or any(int(s) <= 0 for s in shape):
        raise ValueError(f"{who}: expected shape (C, H, W), got {shape!r}")
    return tuple(int(s) for s in shape)


# --- the offline default: scikit-learn's handwritten digits -------------------------------------

DIGITS_TEST_SIZE = 360   # held out, the same 360 images every time (20% of 1797)
_DIGITS_SPLIT_SEED = 20240607


def digits(train=True, shape=(1, 8, 8)):
    """scikit-learn's 1,797 handwritten digits (8x8, values 0..16), as images for a CNN.

    Offline: the data ships inside scikit-learn.  Pixels are scaled to [0, 1]; for a larger
    ``shape`` each digit is resized bilinearly into the centre of the canvas with a margin of about
    an eighth of its side (3x32x32: a 24x24 digit, 4 pixels of border, like MNIST's 20x20 digits in
    28x28), and a grey channel is repeated to C channels.

    Args:
        train: the 1,437 training images, or (False) the 360 held-out test images.  The split is
            fixed (it does not depend on manualbp's seed), stratified by class.
        shape: (C, H, W) of each returned image, e.g. (3, 32, 32) for the tutorials' LeNet-5.

    Returns:
        x float32 (N, C, H, W) in [0, 1]; y int64 (N,) in 0..9.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("manualbp.data.digits needs scikit-learn: pip install 'manualbp[train]'") from exc
    c, h, w = _shape3(shape, "digits")
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]   # (1797, 1, 8, 8) in [0, 1]
    labels = bunch.target.astype(np.int64)
    test = _stratified_test_indices(labels, DIGITS_TEST_SIZE, _DIGITS_SPLIT_SEED)
    mask = np.zeros(len(labels), dtype=bool)
    mask[test] = True
    keep = ~mask if train else mask
    x, y = images[keep], labels[keep]
    if (h, w) != (8, 8):
        margin = round(min(h, w) / 8) if min(h, w) >= 16 else 0
        x = pad_to(np.clip(resize(x, (h - 2 * margin, w - 2 * margin)), 0, 1), (h, w))
    return np.ascontiguousarray(to_channels(x, c), dtype=np.float32), y


def _stratified_test_indices(labels, n_test, seed):
    """``n_test`` indices, spread over the classes in proportion, from a fixed private generator."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts * n_test / len(labels)).astype(int)
    # hand the remaining places to the classes with the largest remainders
    rest = counts * n_test / len(labels) - quota
    quota[np.argsort(-rest, kind="stable")[:n_test - quota.sum()]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


# --- torchvision data sets (optional extra) -----------------------------------------------------

def _torchvision(who):
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise ImportError(f"manualbp.data.{who} reads the data set through torchvision, which is not "
                          f"installed: pip install 'manualbp[datasets]' (or use the offline "
                          f"manualbp.data.digits)") from exc
    return tvd


class DownloadError(FileNotFoundError):
    """A data set was not on disk and could not be downloaded (no network, a proxy, a mirror down).

    A ``FileNotFoundError``, so code that falls back when the data is missing keeps working.  Whatever
    the failed download wrote is removed again, and so is the root folder when the download made it.
    """


def _open(cls, who, root, train, download, expected, by_hand):
    root = os.fspath(root)
    if not download:
        try:
            return cls(root=root, train=train, download=False)
        except RuntimeError as exc:
            raise FileNotFoundError(
                f"{who}: no usable copy under root={root!r} (looked for {os.path.join(root, expected)}; "
                f"torchvision says: {exc}) and download=False. Pass download=True (manualbp train --download) "
                f"to fetch it, or point root at the folder that holds {expected}.") from exc
    created, before = _first_missing(root), _listing(root)
    chatter = io.StringIO()   # torchvision's "Downloading ..." lines: shown once the download has worked
    try:
        with contextlib.redirect_stdout(chatter):
            ds = cls(root=root, train=train, download=True)
    except BaseException as exc:
        _remove_new(root, created, before)
        if not isinstance(exc, Exception):   # Ctrl-C: cleaned up, and on its way
            raise
        reason = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        reason = reason[-1].strip().removeprefix("<urlopen error ").removesuffix(">")
        raise DownloadError(f"{who}: could not download it into {root!r} ({reason}); check the network "
                            f"connection, or {by_hand}") from None
    print(chatter.getvalue(), end="")
    return ds


def _first_missing(path):
    """The outermost folder on the way to ``path`` that does not exist yet (None when ``path`` exists)."""
    path, missing = os.path.abspath(path), None
    while not os.path.exists(path):
        path, missing = os.path.dirname(path), path
    return missing


def _listing(root):
    return {os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files}


def _remove_new(root, created, before):
    """Undo a failed download: remove the folder it created, or the files it added to one that was there."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for path in sorted(_listing(root) - before, key=len, reverse=True):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)


def cifar10(root="data", train=True, download=False):
    """CIFAR-10 through ``torchvision.datasets.CIFAR10``: 50,000 train / 10,000 test 32x32 colour images.

    Returns x float32 (N, 3, 32, 32) in [0, 1] (what ``transforms.ToTensor()`` gives, stacked) and
    y int64 (N,).  With ``download=False`` and no data under ``root/cifar-10-batches-py`` it raises
    ``FileNotFoundError`` naming the root and the flag; a download that fails raises ``DownloadError``
    (one sentence) and leaves nothing behind.
    """
    tvd = _torchvision("cifar10")
    ds = _open(tvd.CIFAR10, "cifar10", root, train, download, "cifar-10-batches-py",
               "fetch cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it there")
    x = np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2)   # (N, 32, 32, 3) HWC -> NCHW
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255), np.asarray(ds.targets, dtype=np.int64)


def mnist(root="data", train=True, download=False):
    """MNIST through ``torchvision.datasets.MNIST``: 60,000 train / 10,000 test 28x28 grey images.

    Returns x float32 (N, 1, 28, 28) in [0, 1] and y int64 (N,); ``pad_to(x, (32, 32))`` gives
    LeNet-5's classic 32x32 input.  Missing files with ``download=False`` raise ``FileNotFoundError``, a
    failed download ``DownloadError``.
    """
    tvd = _torchvision("mnist")
    ds = _open(tvd.MNIST, "mnist", root, train, download, os.path.join("MNIST", "raw"),
               "put the four MNIST *-ubyte.gz files in MNIST/raw there")
    x = np.asarray(ds.data.numpy() if hasattr(ds.data, "numpy") else ds.data, dtype=np.uint8)[:, None]
    y = ds.targets.numpy() if hasattr(ds.targets, "numpy") else ds.targets
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255), np.asarray(y, dtype=np.int64)
