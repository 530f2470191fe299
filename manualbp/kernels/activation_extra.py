"""The smooth activations: GELU (exact and tanh forms), SiLU, ELU and Softplus, dispatched like every
operation of ``kernels/__init__.py`` (NumPy arrays to ``cpu/activation_extra.py`` or
``reference_activation_extra.py``, device arrays to ``cuda/activation_extra.py``).

Derivation: derivations/17-gelu-silu-elu.md (U1)-(U10).  Every backward takes the layer's input x: each
local slope is written with x (ELU's could be written with its output, but not as accurately, see (U8)).
"""
from . import _impl


def gelu_forward(x, approximate):
    """y = x Phi(x) = x/2 (1 + erf(x / sqrt 2))  (U1), or with approximate='tanh'
    y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (U3)."""
    return _impl("gelu_forward", x).gelu_forward(x, approximate)


def gelu_backward(grad_y, x, approximate):
    """dL/dx = dL/dy (Phi(x) + x phi(x))  (U2), or the derivative of the tanh form  (U4)."""
    return _impl("gelu_backward", grad_y, x).gelu_backward(grad_y, x, approximate)


def silu_forward(x):
    """y = x sigma(x) = x / (1 + e^-x)  (U5)."""
    return _impl("silu_forward", x).silu_forward(x)


def silu_backward(grad_y, x):
    """dL/dx = dL/dy sigma(x) (1 + x (1 - sigma(x)))  (U6)."""
    return _impl("silu_backward", grad_y, x).silu_backward(grad_y, x)


def elu_forward(x, alpha):
    """y = x where x > 0, else alpha (e^x - 1)  (U7)."""
    return _impl("elu_forward", x).elu_forward(x, alpha)


def elu_backward(grad_y, x, alpha):
    """dL/dx = dL/dy where x > 0 (or x is NaN), else dL/dy alpha e^x  (U8)."""
    return _impl("elu_backward", grad_y, x).elu_backward(grad_y, x, alpha)


def softplus_forward(x, beta, threshold):
    """y = log(1 + e^(beta x)) / beta, or x where beta x > threshold  (U9)."""
    return _impl("softplus_forward", x).softplus_forward(x, beta, threshold)


def softplus_backward(grad_y, x, beta, threshold):
    """dL/dx = dL/dy e^(beta x) / (1 + e^(beta x)), or dL/dy where beta x > threshold  (U10)."""
    return _impl("softplus_backward", grad_y, x).softplus_backward(grad_y, x, beta, threshold)
