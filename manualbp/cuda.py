"""``manualbp.cuda``: is there a GPU for ``model.to("cuda")``?  As ``torch.cuda.is_available()``.

    import manualbp
    device = "cuda" if manualbp.cuda.is_available() else "cpu"
    model = manualbp.models.lenet5().to(device)

Importing this module (and ``import manualbp``) does not import ``numba.cuda``: each function imports it
when called, so a machine without the CUDA target or a driver gets an answer, not an ImportError.
Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the simulated GPU counts as available.
"""

__all__ = ["device_count", "is_available", "synchronize"]


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
