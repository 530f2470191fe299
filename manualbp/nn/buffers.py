"""Buffers: arrays a module keeps and saves that are not trained (BatchNorm's running statistics).

A buffer is registered with ``Module.register_buffer(name, array, persistent=True)``, as in torch: it is
read as an attribute (``bn.running_mean``), listed by ``buffers()`` / ``named_buffers()``, moved by
``.to()`` / ``.cuda()`` / ``.cpu()`` and converted by ``.float()`` / ``.double()`` like a parameter (an
integer buffer such as ``num_batches_tracked`` keeps its dtype, as torch's does), and, when persistent,
saved in ``state_dict()`` after the module's own parameters, under torch's keys.  The optimizer never sees
it and ``summary()`` does not count it as a parameter.
"""
import numpy as np

from .._checks import is_array
from ..device import as_array


def buffer_value(value, name, who):
    """What a buffer may hold: None, a NumPy or numba.cuda device array, or anything ``as_array`` reads
    (a torch tensor: copied, so the buffer owns its memory)."""
    if value is None or is_array(value):
        return value
    from .parameter import Parameter
    if isinstance(value, Parameter):
        raise TypeError(f"{who}: cannot assign a Parameter to buffer {name!r} (a buffer is not trained)")
    a = as_array(value, who, name)
    if not is_array(a):
        raise TypeError(f"cannot assign '{type(value).__name__}' object to buffer '{name}' (an array or None "
                        f"required)")
    return np.array(a, copy=True) if isinstance(a, np.ndarray) else a


def check_buffer_name(module, name):
    """torch's rules for a new buffer's name."""
    if not isinstance(name, str):
        raise TypeError(f"buffer name should be a string. Got {type(name).__name__}")
    if "." in name:
        raise KeyError('buffer name can\'t contain "."')
    if name == "":
        raise KeyError('buffer name can\'t be empty string ""')
    if hasattr(module, name) and name not in module._buffers:
        raise KeyError(f"attribute '{name}' already exists")
