"""Input checks shared by layers, losses and the optimizer.

Numba kernels do not check bounds: an array of the wrong shape does not raise
inside a kernel, it reads or writes the wrong memory.  So every public entry
point validates here first and raises a ``TypeError``/``ValueError`` that names
who is complaining, what was expected and what was received.
"""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def describe(x):
    """A short description of an array for error messages."""
    if isinstance(x, np.ndarray):
        return f"array of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def float_array(x, who, name="input", ndim=None, min_ndim=None, dtype=None):
    """Check that ``x`` is a floating NumPy array and return it C-contiguous.

    ``ndim``/``min_ndim`` constrain the number of dimensions; ``dtype`` (when
    given) is the dtype ``x`` must already have (a layer's parameter dtype).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who}: expected {name} to be a numpy array, got {describe(x)}")
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
    return np.ascontiguousarray(x)


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
