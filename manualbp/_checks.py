"""Input checks shared by layers, losses and the optimizer.

Numba kernels do not check bounds: an array of the wrong shape does not raise
inside a kernel, it reads or writes the wrong memory.  So every public entry
point validates here first and raises a ``TypeError``/``ValueError`` that names
who is complaining, what was expected and what was received.

What a learner hands in may be a NumPy array, a torch tensor or anything with ``__array__`` /
``__dlpack__`` (on the GPU: a numba.cuda device array or anything with ``__cuda_array_interface__``):
the checks read it with ``device.as_array`` first, without a copy where none is needed, and torch is
never imported.
"""
import numbers
import warnings

import numpy as np

from .device import as_array, host_copy, is_cuda_array, mixed_message
from .device import float_dtype as device_float_dtype

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def describe(x):
    """A short description of an array for error messages."""
    if isinstance(x, np.ndarray):
        return f"array of shape {tuple(x.shape)} and dtype {x.dtype}"
    if is_cuda_array(x):
        return f"a numba.cuda device array of shape {tuple(x.shape)} and dtype {x.dtype} (on the GPU)"
    return f"{type(x).__name__}"


def expected_array(who, name, x):
    """The TypeError message for something that is not an array at all (a list, a number, None)."""
    return (f"{who}: expected {name} to be a numpy array, a torch tensor or anything with __array__ / "
            f"__dlpack__ (a model on the GPU: a numba.cuda device array or anything with "
            f"__cuda_array_interface__), got {describe(x)}")


def same_device(x, like, who, name):
    """Refuse an array on one device when ``like`` (a parameter, or what forward saved) is on the other,
    with a message that says how to move the batch."""
    if like is not None and is_cuda_array(x) != is_cuda_array(like):
        raise TypeError(mixed_message(who, name, x, is_cuda_array(like)))


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def float_array(x, who, name="input", ndim=None, min_ndim=None, dtype=None, allow_empty=False, like=None):
    """Check that ``x`` is a floating array and return it C-contiguous (and, on the CPU, writeable).

    ``x`` may be a NumPy array or a numba.cuda device array (a model on the GPU), or anything ``as_array``
    reads into one (a torch tensor: a view of its memory): the checks read shape, ndim and dtype.
    ``like`` (a parameter's data, or an array forward saved) says which
    device ``x`` must be on.  ``ndim``/``min_ndim`` constrain the number of dimensions; ``dtype`` (when
    given) is the dtype ``x`` must already have (a layer's parameter dtype).  A zero-sized array (an empty
    batch, or a zero-sized spatial dimension) is refused unless ``allow_empty``: it would give a silent
    ``nan`` mean or an empty output that fails much later, far from its cause.  On the CPU, non-contiguous
    and read-only arrays are accepted and copied, so every kernel sees one memory layout (and Numba
    compiles one specialisation per dtype, not one per flag); on the GPU they are refused (no hidden copy).
    """
    if type(x) is np.ndarray:  # the common case, for every layer at every step, checked in one go
        if ((x.dtype == _F32 or x.dtype == _F64) and x.size and x.flags.c_contiguous and x.flags.writeable
                and (like is None or type(like) is np.ndarray) and (dtype is None or x.dtype == dtype)
                and (ndim is None or x.ndim in (ndim if isinstance(ndim, tuple) else (ndim,)))
                and (min_ndim is None or x.ndim >= min_ndim)):
            return x
    else:
        x = as_array(x, who, name)
    on_gpu = is_cuda_array(x)
    if not on_gpu and not isinstance(x, np.ndarray):
        raise TypeError(expected_array(who, name, x))
    same_device(x, like, who, name)
    if on_gpu and x.dtype != np.float32:
        raise TypeError(f"{who}: expected {name} of dtype float32 on the GPU (its kernels compute in float32), "
                        f"got {x.dtype}")
    if x.dtype not in FLOAT_DTYPES:
        hint = " (convert images with x.astype(np.float32) / 255)" if x.dtype.kind in "iub" else ""
        raise TypeError(f"{who}: expected {name} of dtype float32 or float64, got {x.dtype}{hint}")
    if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{who}: expected {name} with {ndim} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(
            f"{who}: expected {name} with at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{who}: expected {name} of dtype {dtype} (the dtype of its parameters), got {x.dtype}; "
            f"convert the input with x.astype(np.{dtype}) or the model with .float()/.double()")
    if x.size == 0 and not allow_empty:
        raise ValueError(f"{who}: expected a non-empty {name}, got an empty array of shape {tuple(x.shape)} "
                         f"(a zero-sized batch or dimension)")
    if on_gpu:
        if not x.is_c_contiguous():
            raise ValueError(f"{who}: expected a C-contiguous {name} on the GPU (make one with "
                             f"numba.cuda.as_cuda_array or manualbp.to_device of a contiguous array)")
        return x
    if not x.flags.writeable:
        return np.array(x, order="C", copy=True)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)  # (ascontiguousarray would make 0-d 1-d)


def is_array(x):
    """A NumPy array or a numba.cuda device array."""
    return isinstance(x, np.ndarray) or is_cuda_array(x)


def host_values(x):
    """The values of ``x`` as a NumPy array, for checks that read values (class indices in range, targets
    in [0, 1]): a device array is copied to the host (a target: small next to the step's work), unless it
    is a batch the Uploader sent up, whose pinned host copy is read instead (``device.host_copy``)."""
    return host_copy(x)


def _all_finite(x, chunk=1 << 22):
    """``np.isfinite(x).all()``, a slice of about ``chunk`` elements at a time (a data set can be large)."""
    if x.ndim == 0 or x.size <= chunk:
        return bool(np.isfinite(x).all())
    rows = max(1, chunk // max(1, x[0].size))
    return all(np.isfinite(x[i:i + rows]).all() for i in range(0, len(x), rows))


def finite_array(x, who, name="input"):
    """Raise ``ValueError`` if a float array holds nan or inf, naming the first bad element."""
    if x.dtype.kind in "fc" and not _all_finite(x):
        bad = np.argwhere(~np.isfinite(x))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(f"{who}: expected finite values in {name}, got {x[where]} at index {where} "
                         f"({int((~np.isfinite(x)).sum())} non-finite of {x.size})")
    return x


def positive_int(value, who, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{who}: expected {name} to be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{who}: expected {name} > 0, got {value}")
    return int(value)


def non_negative_int(value, who, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{who}: expected {name} to be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{who}: expected {name} >= 0, got {value}")
    return int(value)


def pair(value, who, name, minimum=1):
    """An int or a pair of ints, as torch takes ``kernel_size=3`` or ``(3, 5)``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{who}: expected {name} to be an int or a pair, got {value!r}")
        items = tuple(value)
    else:
        items = (value, value)
    check = positive_int if minimum == 1 else non_negative_int
    return tuple(check(v, who, name) for v in items)


def real_number(value, who, name, low=None, high=None, low_open=False):
    """A finite real number, optionally in [low, high) or (low, high)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{who}: expected {name} to be a number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{who}: expected a finite {name}, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        op = ">" if low_open else ">="
        raise ValueError(f"{who}: expected {name} {op} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{who}: expected {name} <= {high}, got {value}")
    return value


def reduction(value, who):
    if value not in ("mean", "sum", "none"):
        raise ValueError(f"{who}: expected reduction 'mean', 'sum' or 'none', got {value!r}")
    return value


def scalar_multiplier(grad, who, reduction, dtype, like=None):
    """The gradient of a scalar loss ('mean'/'sum'): a number (returned in ``dtype``), a 0-d NumPy array,
    or, for a loss on the GPU, a one-element float32 device array (returned as it is)."""
    grad = as_array(grad, who, "grad")
    if is_cuda_array(grad) and grad.size == 1:
        same_device(grad, like, who, "grad")
        return float_array(grad, who, "grad")
    if isinstance(grad, np.ndarray) and grad.shape == ():
        grad = grad[()]
    if isinstance(grad, (bool, np.bool_)) or not isinstance(grad, numbers.Real):
        raise TypeError(f"{who}: with reduction={reduction!r} grad is a scalar multiplier "
                        f"of the loss, got {describe(grad)}")
    return dtype(grad)


def same_shape_target(x, target, who, finite=True):
    """A real-valued target with exactly the input's shape and dtype (cast on the CPU), on x's device.

    torch would broadcast a differently shaped target for the regression losses (with a warning
    that the result is probably wrong); here that is an error.
    """
    target = as_array(target, who, "target")
    if not isinstance(target, np.ndarray) and not is_cuda_array(target):
        raise TypeError(expected_array(who, "target", target))
    same_device(target, x, who, "the target")
    if target.dtype.kind not in "fiub":
        raise TypeError(f"{who}: expected a real-valued target, got dtype {target.dtype}")
    if tuple(target.shape) != tuple(x.shape):
        raise ValueError(f"{who}: expected target of shape {tuple(x.shape)} (the input's), "
                         f"got {tuple(target.shape)}")
    if is_cuda_array(target):
        float_array(target, who, "target", allow_empty=True)  # float32 and contiguous, as the input
    if finite:
        finite_array(host_values(target), who, "target")  # a nan target would make every later loss nan
    if is_cuda_array(target):
        return target
    return np.asarray(target, dtype=x.dtype, order="C")  # (ascontiguousarray would make 0-d 1-d)


def legacy_reduction(size_average, reduce, reduction):
    """torch's old ``size_average``/``reduce`` arguments mapped onto ``reduction``, with torch's warning:
    both unset -> ``reduction`` as given; else 'mean' (both true), 'sum' (reduce only) or 'none'."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    result = "mean" if size_average and reduce else ("sum" if reduce else "none")
    warnings.warn(f"size_average and reduce args will be deprecated, please use reduction='{result}' instead.",
                  UserWarning, stacklevel=4)
    return result


def float_dtype(dtype, who):
    """The parameter dtype a constructor's ``dtype=`` asks for: None (float32, torch's default), or float32 or
    float64 given as a NumPy dtype, a name or a torch dtype (``device.float_dtype``)."""
    if dtype is None:
        return np.dtype(np.float32)
    return device_float_dtype(dtype, who)
