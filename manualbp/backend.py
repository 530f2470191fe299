"""Which implementation of the kernels the layers call.

``"numba"`` (the default) runs the jitted kernels in ``manualbp/kernels/cpu.py``;
``"numpy"`` runs the plain NumPy twins in ``manualbp/kernels/reference.py``,
which are the readable specification: step through them in a debugger to see
exactly what a convolution or a max-pool does.
"""
_BACKENDS = ("numba", "numpy")
_current = "numba"


def set_backend(name):
    """Select ``"numba"`` or ``"numpy"`` kernels for every layer."""
    global _current
    if name not in _BACKENDS:
        raise ValueError(f"set_backend expected one of {_BACKENDS}, got {name!r}")
    _current = name


def get_backend():
    """The name of the kernels in use: ``"numba"`` or ``"numpy"``."""
    return _current
