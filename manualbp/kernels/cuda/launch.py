"""Host-side helpers shared by the CUDA kernel files: argument checks, grid sizes, small constants.

Nothing here runs on the GPU.  The wrappers of this package's files take numba device arrays
(``numba.cuda.to_device(x)``, or arrays a previous wrapper returned), check them here, work out
the launch grid, launch, and return device arrays: data stays on the GPU between calls.

Derivation: derivations/11-gpu-tiled-matmul.md
"""
import numpy as np
from numba import cuda

from .buffers import empty

THREADS = 256  # threads per block of every one-thread-per-element kernel (and of every reduction)

_constants = {}  # small device arrays made once per process: see device_constant


def blocks(n, threads=THREADS):
    """How many blocks of ``threads`` cover ``n`` elements (at least one)."""
    return max(1, (n + threads - 1) // threads)


def pair(v, who, name):
    """An int or a pair of ints as ``(v_h, v_w)``."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    try:
        a, b = v
    except (TypeError, ValueError):
        raise TypeError(f"{who}: expected {name} to be an int or a pair of ints, got {v!r}") from None
    return int(a), int(b)


def device_f32(x, who, name, ndim=None, shape=None):
    """Check that ``x`` is a C-contiguous float32 device array (of ``ndim`` dims / ``shape``); return it.

    A kernel indexing out of bounds does not raise, it corrupts memory: so the shapes are checked here,
    on the host, before anything is launched.
    """
    return _device(x, who, name, np.float32, ndim, shape)


def device_i64(x, who, name, ndim=None, shape=None):
    """As :func:`device_f32` for int64 arrays (class targets, max-pool indices)."""
    return _device(x, who, name, np.int64, ndim, shape)


def _device(x, who, name, dtype, ndim, shape):
    if isinstance(x, np.ndarray) or not hasattr(x, "copy_to_host"):
        raise TypeError(f"{who}: expected {name} to be a numba.cuda device array (move it with "
                        f"numba.cuda.to_device), got {type(x).__name__}")
    if x.dtype != np.dtype(dtype):
        raise TypeError(f"{who}: expected {name} of dtype {np.dtype(dtype)}, got {x.dtype} "
                        f"(the GPU kernels run in float32; gradient checks in float64 run on the CPU)")
    if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{who}: expected {name} with {ndim} dimensions, got shape {tuple(x.shape)}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{who}: expected {name} of shape {tuple(shape)}, got {tuple(x.shape)}")
    if x.size and not x.is_c_contiguous():
        raise ValueError(f"{who}: expected {name} to be C-contiguous")
    return x


def output(out, shape, who, name="out"):
    """``out`` checked against ``shape``, or a new float32 device array of that shape."""
    if out is None:
        return empty(shape)  # a cached buffer when one of this shape is free (buffers.py)
    return device_f32(out, who, name, shape=shape)


def flat(x):
    """A 1-D view of a C-contiguous device array (no copy)."""
    return x.reshape(x.size)


def device_constant(value):
    """A float32 device array ``[value]``, copied to the GPU once per process and then reused."""
    key = float(value)
    if key not in _constants:
        _constants[key] = cuda.to_device(np.array([value], dtype=np.float32))
    return _constants[key]


def empty_f32():
    """A float32 device array with no elements: stands for "no bias" in a kernel argument."""
    if "empty" not in _constants:
        _constants["empty"] = cuda.device_array(0, dtype=np.float32)
    return _constants["empty"]


def unused_i64():
    """An int64 device array ``[0]``, made once: an argument a launch neither reads nor writes (BatchNorm's
    batch count where no running statistics are kept)."""
    if "unused_i64" not in _constants:
        _constants["unused_i64"] = cuda.to_device(np.zeros(1, dtype=np.int64))
    return _constants["unused_i64"]


def scalar_like(s, n, who, name="s"):
    """(rows, step, scale) so that a kernel reads the value for element i as rows[i*step] * scale.

    ``s`` is a Python or NumPy number (or a 1-element NumPy array; the usual 1.0 of ``loss.backward()``):
    one cached device ``[1.0]``, step 0, scale = s; or a float32 device array of shape (1,) (step 0,
    read on the GPU: nothing is copied back) or of ``n`` elements (step 1, one value per element, as
    the upstream gradient of ``reduction='none'``).  Multiplying by an exact 1.0 changes nothing, so
    the kernel's product is the same float32 product the NumPy twin computes.
    """
    if isinstance(s, (int, float, np.floating, np.integer)) and not isinstance(s, bool):
        return device_constant(1.0), 0, np.float32(s)
    if isinstance(s, np.ndarray) and s.size == 1:
        return device_constant(1.0), 0, np.float32(s.reshape(()))
    device_f32(s, who, name)
    if s.size == 1:
        return flat(s), 0, np.float32(1.0)
    if s.size != n:
        raise ValueError(f"{who}: expected {name} with 1 or {n} elements, got shape {tuple(s.shape)}")
    return flat(s), 1, np.float32(1.0)


def optional_f32(x, who, name, shape):
    """``x`` checked as a float32 device array of ``shape``, flattened; ``empty_f32()`` for None."""
    if x is None:
        return empty_f32()
    return flat(device_f32(x, who, name, shape=shape))
