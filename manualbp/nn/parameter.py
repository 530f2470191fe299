"""Parameter: an array the optimizer updates, and the gradient that backward fills.

Derivation: derivations/01-chain-rule.md (a parameter used more than once gets the sum of the gradients, (C3)).
"""
import numbers
import operator

import numpy as np

from .. import kernels
from .._checks import FLOAT_DTYPES
from ..device import as_array, assign, cast, device_of, item, move, parse_to, to_numpy


class Parameter:
    """A trainable array, like ``torch.nn.Parameter``.

    ``data`` holds the values (a NumPy array, or a numba.cuda device array after ``Module.to("cuda")``);
    ``grad`` is ``None`` until the first backward pass writes dL/d(data) into it.  Backward passes *add*
    into ``grad`` (gradients of a sum are sums of gradients), so a training loop clears it with
    ``zero_grad()`` before each step, exactly as in PyTorch.

    ``requires_grad = False`` freezes it: backward adds nothing into ``grad`` and the optimizers skip it
    (``for p in model[0].parameters(): p.requires_grad = False`` trains everything but the first layer).

    It reads like a tensor where a learner pokes at it: ``shape``, ``dtype``, ``ndim``, ``numel()``,
    ``size()``, ``len(p)``, ``p[0]``, ``np.asarray(p)``, ``p.numpy()``, ``p.detach()``, ``p.item()``, and
    arithmetic (``p * 2``, ``p - q``) that returns NumPy arrays of the values.  In-place arithmetic
    (``p -= lr * p.grad``) and ``p[0] = ...`` write into ``data``, where it is.  There is no autograd:
    what arithmetic returns is a plain array, not part of any graph.
    """

    def __init__(self, data, requires_grad=True):
        if not isinstance(data, np.ndarray):
            data = to_numpy(data)  # a torch tensor, a device array, a list
        data = np.array(data, copy=True)
        if data.dtype not in FLOAT_DTYPES:
            data = data.astype(np.float32)
        self.data = np.ascontiguousarray(data)
        self.grad = None
        self.requires_grad = requires_grad
        self._slot = None  # (data view, grad view) in an optimizer's flat buffers on the GPU; see grad_buffer

    # --- what it is -----------------------------------------------------------------------------
    @property
    def requires_grad(self):
        """False freezes the parameter: no gradient accumulates and the optimizers skip it."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"Parameter.requires_grad must be a bool, got {type(value).__name__}")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place and return self, as torch's ``requires_grad_``."""
        self.requires_grad = requires_grad
        return self

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return len(self.data.shape)

    def dim(self):
        """The number of dimensions (torch's name for ``ndim``)."""
        return self.ndim

    def numel(self):
        """The number of elements."""
        return int(np.prod(self.data.shape, dtype=np.int64))

    def size(self, dim=None):
        """The shape, or its length along ``dim``, as torch's ``size()`` (``numel()`` counts elements)."""
        return self.shape if dim is None else self.shape[dim]

    @property
    def device(self):
        """``"cuda"`` when ``data`` is a numba.cuda device array (``Module.to("cuda")``), else ``"cpu"``."""
        return device_of(self.data)

    def to(self, *args, **kwargs):
        """Move ``data`` and ``grad`` to a device (``"cpu"``, ``"cuda"``, ``"cuda:0"``, a ``torch.device``)
        and/or convert them to a dtype, in place; returns self (see Module.to)."""
        where, dtype = parse_to(args, kwargs, "Parameter.to")
        if where == "cpu":
            self.data, self.grad = move(self.data, where), move(self.grad, where)
        if dtype is not None:
            self.data = cast(self.data, dtype, "Parameter.to")
            self.grad = None if self.grad is None else cast(self.grad, dtype, "Parameter.to")
        if where not in (None, "cpu"):
            self.data, self.grad = move(self.data, where), move(self.grad, where)
        return self

    def grad_buffer(self):
        """Where the next gradient may be written: None (a kernel makes a new array), except on the GPU
        when an optimizer keeps this parameter in flat buffers (SGD, Adam, AdamW, RMSprop and Adagrad do, to
        update every parameter of a group in one launch) and ``grad`` is None: then this parameter's place in the flat gradient
        buffer, which a layer passes to the kernel as ``out`` so that the gradient lands there."""
        slot = getattr(self, "_slot", None)
        if slot is None or self.grad is not None or slot[0] is not self.data:
            return None  # (slot[0] is not data: the parameter was moved or given new values since)
        return slot[1]

    @staticmethod
    def grad_buffers(weight, bias):
        """(weight.grad_buffer(), bias.grad_buffer()) when both have one, else (None, None): for a layer whose
        kernel writes both gradients or neither (BatchNorm, LayerNorm)."""
        if weight is None or bias is None:
            return None, None
        out = weight.grad_buffer(), bias.grad_buffer()
        return out if out[0] is not None and out[1] is not None else (None, None)

    def accumulate_grad(self, g):
        """Add a freshly computed gradient into ``.grad`` (on the first call, ``g`` itself becomes ``.grad``:
        the kernels return new arrays, or this parameter's own ``grad_buffer()`` when they were given it,
        never views of anything else).  Nothing, when frozen."""
        if not self.requires_grad:
            return
        if tuple(g.shape) != tuple(self.data.shape):
            raise ValueError(f"gradient of shape {tuple(g.shape)} does not match parameter of shape "
                             f"{tuple(self.data.shape)}")
        if self.grad is None:
            self.grad = g
        else:
            kernels.add_(self.grad, g)  # gradients add (C3)

    # --- its values, as NumPy -------------------------------------------------------------------
    def numpy(self):
        """The values as a NumPy array: ``data`` itself on the CPU (changes show in the parameter), a copy
        from the GPU."""
        return to_numpy(self.data)

    def detach(self):
        """The values without the Parameter around them: ``data`` itself (a NumPy or device array)."""
        return self.data

    def item(self):
        """The value of a one-element parameter as a Python float."""
        return item(self.data)

    def tolist(self):
        return self.numpy().tolist()

    def __array__(self, dtype=None, copy=None):
        """NumPy's protocol: ``np.asarray(p)`` is ``data`` itself on the CPU, a copy from the GPU."""
        a = self.numpy()
        if copy is False and self.device != "cpu":
            raise ValueError("Parameter.__array__: the values are on the GPU; reading them needs a copy")
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        return a.copy() if copy else a

    def __getitem__(self, index):
        return self.numpy()[index]

    def __setitem__(self, index, value):
        host = self.numpy()
        host[index] = _operand(value)
        if self.device != "cpu":
            assign(self.data, host)

    def __len__(self):
        if not self.data.shape:
            raise TypeError("len() of a 0-d parameter")
        return self.data.shape[0]

    def __iter__(self):
        return iter(self.numpy())

    def __bool__(self):  # a Parameter is there or not; compare its values with p.numpy()
        return True

    def __repr__(self):
        text = repr(self.numpy())
        extra = (", device='cuda'" if self.device != "cpu" else "") + ("" if self.requires_grad
                                                                        else ", requires_grad=False")
        return f"Parameter containing:\n{text[:-1]}{extra})"

    # --- arithmetic: plain NumPy arrays of the values (in place: into data) -------------------------
    def __neg__(self):
        return -self.numpy()

    def __pos__(self):
        return self.numpy().copy()

    def __abs__(self):
        return np.abs(self.numpy())

    def _inplace(self, op, other):
        if self.device == "cpu":
            op(self.data, _operand(other), out=self.data, casting="same_kind")
        else:  # on the GPU: through the host, then written back into the same device array
            assign(self.data, op(self.numpy(), _operand(other)))
        return self

    def __iadd__(self, other):
        return self._inplace(np.add, other)

    def __isub__(self, other):
        return self._inplace(np.subtract, other)

    def __imul__(self, other):
        return self._inplace(np.multiply, other)

    def __itruediv__(self, other):
        return self._inplace(np.true_divide, other)


def _operand(other):
    """The other side of an arithmetic operation: a number as it is (NumPy keeps the parameter's dtype),
    anything else as host values."""
    if isinstance(other, numbers.Number) and not isinstance(other, np.ndarray):
        return other
    if isinstance(other, Parameter):
        return other.numpy()
    return to_numpy(as_array(other))


def _binary(op, reflected=False):
    def method(self, other):
        a, b = self.numpy(), _operand(other)
        return op(b, a) if reflected else op(a, b)
    method.__name__ = f"__{'r' if reflected else ''}{op.__name__.strip('_')}__"
    return method


for _op in (operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.pow,
            operator.matmul, operator.mod):
    _name = _op.__name__.strip("_")
    setattr(Parameter, f"__{_name}__", _binary(_op))
    setattr(Parameter, f"__r{_name}__", _binary(_op, reflected=True))
del _op, _name
