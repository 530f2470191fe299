"""``manualbp.cuda``: is there a GPU for ``model.to("cuda")``?  As ``torch.cuda.is_available()``.

    import manualbp
    device = "cuda" if manualbp.cuda.is_available() else "cpu"
    model = manualbp.models.lenet5().to(device)

Importing this module (and ``import manualbp``) does not import ``numba.cuda``: each function imports it
when called, so a machine without the CUDA target or a driver gets an answer, not an ImportError.
Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the simulated GPU counts as available.
"""

import time

__all__ = ["Counts", "counting", "device_count", "empty_cache", "is_available", "memory_cached", "synchronize"]


def _numba_cuda():
    """``numba.cuda``, or None when it cannot be imported (no numba-cuda, no driver library)."""
    try:
        from numba import cuda
    except Exception:  # noqa: BLE001 - an import failure of the CUDA target, whatever its kind
        return None
    return cuda


def is_available():
    """True when numba.cuda finds a usable CUDA GPU (and its driver); never raises."""
    cuda = _numba_cuda()
    try:
        return bool(cuda is not None and cuda.is_available())
    except Exception:  # noqa: BLE001 - a driver that fails while being asked counts as no GPU
        return False


def device_count():
    """The number of CUDA GPUs numba.cuda sees (0 without one); manualbp uses the current one."""
    if not is_available():
        return 0
    return len(_numba_cuda().gpus)


def synchronize():
    """Wait until every kernel launched so far has finished (for timing: kernel launches return at once)."""
    from .device import require_cuda

    require_cuda("manualbp.cuda.synchronize").synchronize()


def empty_cache():
    """Give the driver back the device arrays the GPU wrappers keep for reuse and nothing refers to any more,
    as ``torch.cuda.empty_cache()``; arrays still in use stay (``kernels/cuda/buffers.py``)."""
    from .device import require_cuda

    require_cuda("manualbp.cuda.empty_cache")
    from .kernels.cuda.buffers import CACHE

    CACHE.release()


def memory_cached():
    """Bytes of device memory held by the GPU wrappers' buffer cache: arrays in use and arrays kept for reuse."""
    from .device import require_cuda

    require_cuda("manualbp.cuda.memory_cached")
    from .kernels.cuda.buffers import CACHE

    return CACHE.cached_bytes()


# --- what a step asks of the GPU ---------------------------------------------------------------------------

class Counts:
    """What the code inside ``manualbp.cuda.counting()`` asked of the GPU, counted on the host.

    launches     kernel launches, as a dict {kernel name: count} (``total_launches`` adds them up)
    allocations  device arrays allocated (``numba.cuda.device_array``/``device_array_like``/``to_device``); an
                 array the GPU wrappers' buffer cache hands out again is not an allocation
    bytes        the bytes those allocations asked for
    uploads      host-to-device copies (``to_device``, ``copy_to_device`` from a host array)
    copies       device-to-device copies (``copy_to_device`` from a device array)
    downloads    device-to-host copies (``copy_to_host``, which also waits for the GPU: a synchronisation)
    wait_s       seconds the host spent inside those copies and in ``synchronize()``, waiting for the GPU;
                 the time inside ``with`` less ``wait_s`` is the host's own work (launches, allocations,
                 Python), which is what a small step is made of.  (Under the simulator a kernel runs at
                 its launch, on the host, so there only the counts mean anything.)

    Every launch and allocation costs host time whatever the kernel does (a launch through numba's
    dispatcher prepares each argument in Python; an allocation calls the driver), so these counts say how
    much of a small step's time is spent on the host.  They are the same under numba's CUDA simulator as
    on a GPU: the same Python code runs.
    """

    def __init__(self):
        self.launches, self.allocations, self.bytes, self.uploads, self.downloads, self.copies = {}, 0, 0, 0, 0, 0
        self.wait_s = 0.0

    @property
    def total_launches(self):
        return sum(self.launches.values())

    def __repr__(self):
        return (f"Counts(launches={self.total_launches}, allocations={self.allocations}, bytes={self.bytes}, "
                f"uploads={self.uploads}, downloads={self.downloads}, copies={self.copies}, wait_s={self.wait_s:.6f})")


_counting = []  # the Counts being filled (at most one)


def _kernel_name(kernel):
    f = getattr(kernel, "py_func", None) or getattr(kernel, "fn", None)
    return getattr(f, "__name__", None) or type(kernel).__name__


class counting:
    """Count the kernel launches, device allocations and copies of the code inside ``with``.

        with manualbp.cuda.counting() as c:
            net.train_step(xb, yb, loss_fn, opt)
        print(c.total_launches, c.allocations, c.downloads)

    It wraps numba.cuda's kernel launch (``kernel[grid, block](...)``), its allocation functions and the
    device array's copies for the duration, then puts them back.  Works on a GPU and under the simulator.
    """

    def __enter__(self):
        if _counting:
            raise RuntimeError("manualbp.cuda.counting: already counting (the counters do not nest)")
        from .device import require_cuda

        cuda = require_cuda("manualbp.cuda.counting")
        self.counts = Counts()
        self._saved = []
        counts = self.counts

        def patch(owner, name, make):
            original = getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, make(original))

        def launch(original):
            def getitem(kernel, config):
                configured = original(kernel, config)
                name = _kernel_name(kernel)

                def run(*args):
                    counts.launches[name] = counts.launches.get(name, 0) + 1
                    return configured(*args)

                return run
            return getitem

        def alloc(original, upload=False):
            def wrapped(*args, **kwargs):
                a = original(*args, **kwargs)
                if not (upload and kwargs.get("to") is not None):
                    counts.allocations += 1
                    counts.bytes += int(getattr(a, "nbytes", 0) or 0)
                if upload:
                    counts.uploads += 1
                return a
            return wrapped

        def copy(original, attr):
            def wrapped(*args, **kwargs):
                if attr == "uploads" and len(args) > 1 and hasattr(args[1], "copy_to_host"):
                    counts.copies += 1  # from another device array: it never leaves the GPU
                    return original(*args, **kwargs)
                setattr(counts, attr, getattr(counts, attr) + 1)
                if attr != "downloads":
                    return original(*args, **kwargs)
                return waiting(original)(*args, **kwargs)
            return wrapped

        def waiting(original):
            def wrapped(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    counts.wait_s += time.perf_counter() - start
            return wrapped

        probe = cuda.device_array(1, dtype="float32")
        kernel_type = type(cuda.jit(_noop_kernel))
        patch(kernel_type, "__getitem__", launch)
        patch(cuda, "device_array", alloc)
        patch(cuda, "device_array_like", alloc)
        patch(cuda, "to_device", lambda f: alloc(f, upload=True))
        array_type = type(probe)
        patch(array_type, "copy_to_host", lambda f: copy(f, "downloads"))
        patch(array_type, "copy_to_device", lambda f: copy(f, "uploads"))
        patch(cuda, "synchronize", waiting)
        _counting.append(counts)
        return counts

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        _counting.clear()
        return False


def _noop_kernel(x):
    """Only compiled lazily (never launched): ``counting`` asks numba.cuda.jit which type its kernels have."""
    x[0] = x[0]
