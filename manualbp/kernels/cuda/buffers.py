"""Device arrays kept and handed out again: the kernels' outputs without an allocation per training step.

Derivation: derivations/11-gpu-tiled-matmul.md (host cost per step).

Every GPU wrapper returns new arrays: a layer's output, a gradient, a loss.  Asking the driver for memory
each time (``numba.cuda.device_array``) costs host time on every call, and a training step makes the same
requests, shape for shape, as the step before.  So the wrappers ask ``empty(shape, dtype)`` instead: it
keeps every array it has made, by shape and dtype, and hands one out again once nothing outside this
cache refers to it any more.  After the first step or two of a run, a step is served from arrays the
earlier steps made (``manualbp.cuda.counting()`` shows the allocations per step fall to the uploads').

When is an array free?  Python counts the references to every object.  The cache notes, when it makes an
array, how many references there are while only the cache holds it: to the array object, to the memory
it owns (``gpu_data``; under the simulator, the NumPy array inside), and numba's own count of the views
cut from that memory (``refct``: a slice holds the memory through a weak proxy and raises that count).
A reshaped view refers to the same memory object, a slice raises ``refct``, and a layer that saved the
array for its backward holds the object itself: while any of these exist, the counts are above what
was noted and the array is not handed out.  Kernels run in launch order on one stream, so a kernel
queued later cannot write an array before an earlier kernel has finished reading it.

Anything that remembers an array by its identity (the host copy of a loss that ``train_step`` read
back, which ``item()`` reuses; the loss's note of which output its gradient belongs to) is told when
the array is handed out again (``device.forget``), since the same object then holds new values.

``empty_cache()`` (``manualbp.cuda.empty_cache``) lets go of every array nothing else holds, as
``torch.cuda.empty_cache``; the environment variable ``MANUALBP_NO_CUDA_MEMORY_CACHING=1`` turns the
cache off (every request goes to the driver), as PyTorch's ``PYTORCH_NO_CUDA_MEMORY_CACHING``.
"""
import os
import sys

import numpy as np
from numba import cuda


def _memory(a):
    """The object that owns ``a``'s memory, and whether it keeps numba's count of views (``refct``)."""
    mem = getattr(a, "gpu_data", None)
    if mem is None or not hasattr(mem, "refct"):  # the simulator: a NumPy array inside
        return a._ary, False
    return mem, True


class _Entry:
    """An array the cache made, the owner of its memory, and its counts while only the cache holds it."""

    __slots__ = ("array", "counts", "mem", "views")

    def __init__(self, array):
        self.array = array
        self.mem, self.views = _memory(array)
        self.counts = None  # taken by the cache once nothing but this entry holds the array


    def holders(self):
        """(references to the array, references to its memory, numba's count of views of that memory)."""
        return sys.getrefcount(self.array), sys.getrefcount(self.mem), (self.mem.refct if self.views else 0)

    def free(self):
        return self.holders() == self.counts


class BufferCache:
    """Device arrays by (shape, dtype), each handed out again when nothing else refers to it."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self._entries = {}  # (shape, dtype.str) -> [list of _Entry, where the next search starts]
        self.hits = 0  # requests served from the cache
        self.misses = 0  # requests that allocated

    def empty(self, shape, dtype=np.float32):
        """A device array of ``shape`` and ``dtype`` with unspecified values, as ``numba.cuda.device_array``.

        The search for a free array starts after the last one handed out for this key: a step asks for its
        arrays in the same order as the step before, which let them go in about that order, so the next
        free one is usually the first one looked at."""
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        dt = np.dtype(dtype)
        if not self.enabled:
            return cuda.device_array(shape, dtype=dt)
        slot = self._entries.get((shape, dt.str))
        if slot is None:
            slot = self._entries[(shape, dt.str)] = [[], 0]
        entries, start = slot
        n = len(entries)
        for k in range(n):
            i = start + k
            if i >= n:
                i -= n
            entry = entries[i]
            if entry.free():
                slot[1] = i + 1 if i + 1 < n else 0
                self.hits += 1
                _forget(entry.array)
                return entry.array
        self.misses += 1
        entry = _Entry(cuda.device_array(shape, dtype=dt))
        entry.counts = entry.holders()  # (no variable here refers to the array itself: only the entry)
        entries.append(entry)
        slot[1] = 0
        return entry.array

    def release(self):
        """Drop every array nothing else refers to (the memory goes back to the driver); keep the others."""
        for key in list(self._entries):
            kept = [entry for entry in self._entries[key][0] if not entry.free()]
            if kept:
                self._entries[key] = [kept, 0]
            else:
                del self._entries[key]

    def cached_bytes(self):
        """Bytes of device memory this cache holds, in use or free."""
        return sum(e.array.size * e.array.dtype.itemsize for entries, _ in self._entries.values() for e in entries)

    def __len__(self):
        return sum(len(entries) for entries, _ in self._entries.values())


_forget_hook = []  # device.forget, imported on first use (device.py imports no numba.cuda)


def _forget(a):
    """Tell the host side that ``a`` will hold new values (its notes about this object by identity go)."""
    if not _forget_hook:
        from ...device import forget

        _forget_hook.append(forget)
    _forget_hook[0](a)


CACHE = BufferCache(enabled=os.environ.get("MANUALBP_NO_CUDA_MEMORY_CACHING", "0") in ("", "0"))


def empty(shape, dtype=np.float32):
    """``CACHE.empty``: what the wrappers call instead of ``numba.cuda.device_array``."""
    return CACHE.empty(shape, dtype)
