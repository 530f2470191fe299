"""Conv2d: a 2-D convolution over NCHW images.

Derivation: derivations/04-conv2d.md

Shapes: x (N, C, H, W), weight (O, C, KH, KW), bias (O,), y (N, O, OH, OW) with
OH = (H + 2*PH - KH) // SH + 1 and OW = (W + 2*PW - KW) // SW + 1  (K2).
The arithmetic is in ``manualbp.kernels`` (``reference.py`` spells it out in NumPy).
"""
import numpy as np

from .. import kernels
from .._checks import float_array, pair, positive_int
from . import init
from .module import Module
from .parameter import Parameter


class Conv2d(Module):
    r"""y[n, o] = b[o] + sum_c  w[o, c] \star x[n, c]   (\star: 2-D cross-correlation, eq. (K1)).

    Args:
        in_channels: C, channels of the input image.
        out_channels: O, number of filters (channels of the output).
        kernel_size: KH x KW, an int or an (h, w) pair.
        stride: SH x SW step between windows, an int or a pair (default 1).
        padding: PH x PW zeros added on each side, an int or a pair (default 0).
        bias: learn an additive bias per output channel (default True).

    Shape:
        input (N, C, H, W) -> output (N, O, OH, OW), OH = (H + 2*PH - KH) // SH + 1,
        OW = (W + 2*PW - KW) // SW + 1   (K2).

    Backward (derivations/04-conv2d.md):
        dL/db[o]       = sum_{n,i,j} dL/dy[n,o,i,j]                             (K3)
        dL/dw[o,c,p,q] = sum_{n,i,j} dL/dy[n,o,i,j] * xpad[n,c,i*SH+p,j*SW+q]   (K4)
        dL/dx          = every dL/dy[n,o,i,j] sent back along the weights w[o,:,:,:]
                         to the inputs its window read (padding dropped)         (K5)

    ``backward(grad_output, input_grad=False)`` computes (K3) and (K4) only and returns None: the first
    layer of a network does not need (K5), since nothing updates the images (``Sequential.backward``).
    """

    _skips_input_grad = True  # backward understands input_grad=False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels = positive_int(in_channels, "Conv2d", "in_channels")
        self.out_channels = positive_int(out_channels, "Conv2d", "out_channels")
        self.kernel_size = pair(kernel_size, "Conv2d", "kernel_size")
        self.stride = pair(stride, "Conv2d", "stride")
        if isinstance(padding, str):
            raise TypeError(
                f"Conv2d: padding must be an int or an (h, w) pair of ints, got the string {padding!r} "
                f"('same'/'valid' are not supported; 'valid' is padding=0)")
        self.padding = pair(padding, "Conv2d", "padding", minimum=0)
        kh, kw = self.kernel_size
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels, kh, kw), dtype=np.float32))
        self.bias = Parameter(np.empty(self.out_channels, dtype=np.float32)) if bias else None
        init.default_init_(self.weight, self.bias)
        self._x = None  # the input (N, C, H, W): dL/dw correlates it with dL/dy, eq. (K4)

    def _name(self):
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"

    def forward(self, x):
        x = float_array(x, self._name(), ndim=4, dtype=self.weight.dtype, like=self.weight.data)
        _, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(
                f"{self._name()}: expected input of shape (N, {self.in_channels}, H, W), "
                f"got shape {tuple(x.shape)} with {c} channels")
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ValueError(
                f"{self._name()}: kernel size ({kh}, {kw}) is larger than the padded input "
                f"({h + 2 * ph}, {w + 2 * pw}) (input of shape {tuple(x.shape)}, padding {self.padding})")
        self._x = x
        bias = self.bias.data if self.bias is not None else None
        return kernels.conv2d_forward(x, self.weight.data, bias, self.stride, self.padding)  # eq. (K1)

    def backward(self, grad_output, input_grad=True):
        x = self._saved(self._x)
        g = float_array(grad_output, f"{self._name()}.backward", "grad_output", dtype=self.weight.dtype, like=x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, _, h, w = x.shape
        expected = (n, self.out_channels, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)  # (K2)
        if tuple(g.shape) != expected:
            raise ValueError(
                f"{self._name()}.backward: expected grad_output of shape {expected}, got {tuple(g.shape)}")
        grad_w, grad_b = kernels.conv2d_grad_params(g, x, self.weight.shape, self.stride, self.padding,
                                                    self.bias is not None)  # eqs. (K4), (K3)
        self.weight.accumulate_grad(grad_w)
        if self.bias is not None:
            self.bias.accumulate_grad(grad_b)
        if not input_grad:  # nobody needs dL/dx (the images of a training step)
            return None
        return kernels.conv2d_grad_input(g, self.weight.data, x.shape, self.stride, self.padding)  # eq. (K5)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        return s
