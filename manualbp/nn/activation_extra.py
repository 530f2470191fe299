"""The smooth activations: GELU, SiLU, ELU and Softplus.

Derivation: derivations/17-gelu-silu-elu.md

Each is element-wise, so its backward multiplies the incoming gradient by the local slope, element by
element (the diagonal Jacobian of derivations/06-activations.md).  Each forward keeps its input x, from
which every slope is written most directly: GELU's needs Phi(x) and phi(x) (U2), (U4), SiLU's sigma(x)
(U6), Softplus's e^(beta x) (U10); ELU's slope alpha e^x could be read off its output as y + alpha, but
that subtraction loses the digits of a small e^x (U8).

As torch, an input of any shape is taken: 0-d, empty, batched or not.  ``inplace=True`` is refused by
name: the layers here always return a new array (the input is what backward needs).
"""
from .. import kernels
from .._checks import float_array, real_number
from .activation import _Elementwise


class _Smooth(_Elementwise):
    """Shared bookkeeping: the input (any shape, empty included) is saved for backward."""

    def _input(self, input):
        self._x = float_array(input, type(self).__name__, allow_empty=True)
        return self._x

    def _grad(self, grad_output):
        x = self._saved(self._x)
        g = float_array(grad_output, f"{type(self).__name__}.backward", "grad_output", like=x, allow_empty=True)
        if tuple(g.shape) != tuple(x.shape):
            raise ValueError(
                f"{type(self).__name__}.backward: expected grad_output of shape {tuple(x.shape)}, got {tuple(g.shape)}")
        if g.dtype != x.dtype:
            raise TypeError(f"{type(self).__name__}.backward: expected grad_output of dtype {x.dtype} (the input's), "
                            f"got {g.dtype}")
        return g, x


def _no_inplace(inplace, who):
    if not isinstance(inplace, bool):
        raise TypeError(f"{who}: expected inplace to be a bool, got {type(inplace).__name__}")
    if inplace:
        raise ValueError(f"{who}: inplace=True is not supported: backward needs the input, so the output is always a "
                         f"new array (use inplace=False)")
    return False


class GELU(_Smooth):
    r"""y = x Phi(x), Phi the standard normal CDF: y = x/2 (1 + erf(x / sqrt 2))  (U1);
    dy/dx = Phi(x) + x phi(x)  (U2).

    With ``approximate='tanh'``: y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (U3), and its
    derivative (U4).
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: expected approximate to be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self._x = None  # the input: Phi(x) and phi(x) of (U2), or tanh of (U4), are evaluated there

    def forward(self, input):
        return kernels.gelu_forward(self._input(input), self.approximate)  # (U1) or (U3)

    def backward(self, grad_output):
        g, x = self._grad(grad_output)
        return kernels.gelu_backward(g, x, self.approximate)  # (U2) or (U4)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(_Smooth):
    """y = x sigma(x)  (U5) (also called swish);  dy/dx = sigma(x) (1 + x (1 - sigma(x)))  (U6)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = _no_inplace(inplace, "SiLU")
        self._x = None  # the input, for sigma(x) in (U6)

    def forward(self, input):
        return kernels.silu_forward(self._input(input))  # (U5)

    def backward(self, grad_output):
        g, x = self._grad(grad_output)
        return kernels.silu_backward(g, x)  # (U6)

    def extra_repr(self):
        return ""


class ELU(_Smooth):
    """y = x where x > 0, else alpha (e^x - 1)  (U7);  dy/dx = 1 where x > 0, else alpha e^x  (U8)."""

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        real_number(alpha, "ELU", "alpha")
        self.alpha = alpha  # as given: torch prints ELU(alpha=2) for alpha=2
        self.inplace = _no_inplace(inplace, "ELU")
        self._x = None  # the input: its sign picks the branch of (U8), e^x its slope

    def forward(self, input):
        return kernels.elu_forward(self._input(input), float(self.alpha))  # (U7)

    def backward(self, grad_output):
        g, x = self._grad(grad_output)
        return kernels.elu_backward(g, x, float(self.alpha))  # (U8)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Softplus(_Smooth):
    """y = log(1 + e^(beta x)) / beta  (U9), a smooth ReLU; where beta x > threshold, y = x (the two agree to
    within e^-threshold there, and the exponential would overflow).  dy/dx = sigma(beta x), or 1  (U10)."""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        real_number(beta, "Softplus", "beta")
        real_number(threshold, "Softplus", "threshold")
        self.beta = beta  # as given, for torch's repr
        self.threshold = threshold
        self._x = None  # the input: beta x picks the branch of (U10) and gives e^(beta x)

    def forward(self, input):
        return kernels.softplus_forward(self._input(input), float(self.beta), float(self.threshold))  # (U9)

    def backward(self, grad_output):
        g, x = self._grad(grad_output)
        return kernels.softplus_backward(g, x, float(self.beta), float(self.threshold))  # (U10)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"
