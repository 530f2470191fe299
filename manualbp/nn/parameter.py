"""Parameter: an array the optimizer updates, and the gradient that backward fills."""
import numpy as np

from .._checks import FLOAT_DTYPES
from ..device import device_of, move, normalize


class Parameter:
    """A trainable array, like ``torch.nn.Parameter``.

    ``data`` holds the values; ``grad`` is ``None`` until the first backward
    pass writes dL/d(data) into it.  Backward passes *add* into ``grad``
    (gradients of a sum are sums of gradients), so a training loop clears it
    with ``zero_grad()`` before each step, exactly as in PyTorch.
    """

    def __init__(self, data, requires_grad=True):
        data = np.array(data, copy=True)
        if data.dtype not in FLOAT_DTYPES:
            data = data.astype(np.float32)
        self.data = np.ascontiguousarray(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def device(self):
        """``"cuda"`` when ``data`` is a numba.cuda device array (``Module.to("cuda")``), else ``"cpu"``."""
        return device_of(self.data)

    def to(self, device):
        """Move ``data`` and ``grad`` to ``"cuda"`` or ``"cpu"`` in place; returns self (see Module.to)."""
        where = normalize(device)
        self.data, self.grad = move(self.data, where), move(self.grad, where)
        return self

    def accumulate_grad(self, g):
        """Add a freshly computed gradient into ``.grad`` (creating it on the first call)."""
        if not self.requires_grad:
            return
        if g.shape != self.data.shape:
            raise ValueError(f"gradient of shape {g.shape} does not match parameter of shape {self.data.shape}")
        if self.grad is None:
            self.grad = np.array(g, dtype=self.data.dtype, copy=True)
        else:
            self.grad += g

    def __repr__(self):
        return f"Parameter containing:\n{self.data!r}"
