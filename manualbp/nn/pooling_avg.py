"""AvgPool2d, AdaptiveAvgPool2d and AdaptiveMaxPool2d: the mean (or maximum) of each window, and a gradient
shared evenly by the window (or sent to its winner).

Derivation: derivations/16-average-pooling.md

Shapes: x (N, C, H, W) or (C, H, W) -> y (N, C, OH, OW) or (C, OH, OW).  AvgPool2d's OH, OW are
max-pooling's (P5) (derivations/05-maxpool.md) with dilation 1; adaptive pooling takes OH, OW from
``output_size`` and derives the windows from them (V5).  An empty batch gives an empty output, as torch.
"""
import numbers

from .. import kernels
from .._checks import float_array, pair
from ..kernels.reference import pool_out_size
from .module import Module
from .pooling import _torch_style


class _Pool2d(Module):
    """Shared bookkeeping: unbatched inputs, and a backward that checks grad_output against the output."""

    def _input(self, input):
        who = type(self).__name__
        x = float_array(input, who, ndim=(3, 4), allow_empty=True)
        self._unbatched = x.ndim == 3
        if self._unbatched:
            x = x.reshape((1,) + tuple(x.shape))  # (1, C, H, W), a view
        if x.shape[1] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"{who}: expected an input with non-zero channels, height and width (only the batch "
                             f"may be empty), got shape {tuple(input.shape)}")
        return x

    def _output(self, y):
        self._y = y  # the output, for its shape, dtype and device only: backward needs no values (V4), (V7)
        return y.reshape(tuple(y.shape)[1:]) if self._unbatched else y

    def _grad(self, grad_output):
        who = type(self).__name__
        y = self._saved(self._y, "the shape of its output")
        g = float_array(grad_output, f"{who}.backward", "grad_output", dtype=y.dtype, like=y, allow_empty=True)
        expected = tuple(y.shape)[1:] if self._unbatched else tuple(y.shape)
        if tuple(g.shape) != expected:
            raise ValueError(f"{who}.backward: expected grad_output of shape {expected}, got {tuple(g.shape)}")
        return g.reshape(tuple(y.shape)) if self._unbatched else g

    def _grad_input(self, grad_x):
        return grad_x.reshape(self._x_shape[1:]) if self._unbatched else grad_x


class AvgPool2d(_Pool2d):
    r"""y[n, c, i, j] = (1 / d_ij) sum_{p < KH, q < KW} xpad[n, c, i*SH + p, j*SW + q]   (V1).

    Args (torch's, in torch's order):
        kernel_size: KH x KW window, an int or an (h, w) pair.
        stride: SH x SW step between windows (default: kernel_size).
        padding: PH x PW of zeros added on each side; at most half the kernel size, as in torch.
        ceil_mode: round the output size up (P5): a last, partial window where input is left over.
        count_include_pad: divide by the window's size in the padded input (True) or by the number of
            input pixels it holds (False)  (V2).
        divisor_override: divide every window's sum by this non-zero int instead  (V2).

    The divisor d_ij (V2): ``divisor_override`` if given; else, with ``count_include_pad``, the window's size
    after cutting it at the end of the padding (a ceil_mode window that hangs past it counts only what is
    left); else the number of input pixels in it.  Backward (V4): each dL/dy[n,c,i,j] / d_ij is added to
    every input of window (i, j).
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size = _torch_style(kernel_size)
        self.stride = _torch_style(kernel_size if stride is None else stride)
        self.padding = _torch_style(padding)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self._k = pair(kernel_size, "AvgPool2d", "kernel_size")
        self._s = pair(self.stride, "AvgPool2d", "stride")
        self._p = pair(padding, "AvgPool2d", "padding", minimum=0)
        if self._p[0] > self._k[0] // 2 or self._p[1] > self._k[1] // 2:
            raise ValueError(f"AvgPool2d: pad should be at most half of effective kernel size, but got "
                             f"padding={self.padding} and kernel_size={self.kernel_size}")
        if divisor_override is not None and (isinstance(divisor_override, bool)
                                             or not isinstance(divisor_override, numbers.Integral)):
            raise TypeError(f"AvgPool2d: expected divisor_override to be an int or None, got "
                            f"{type(divisor_override).__name__}")
        if divisor_override == 0:
            raise ValueError("AvgPool2d: divisor_override must not be zero (None divides by the window's size)")
        self.divisor_override = None if divisor_override is None else int(divisor_override)
        self._y = None  # the output: its shape sizes dL/dx's windows, eq. (V4)
        self._x_shape = None  # the (4-D) input shape, the shape of dL/dx
        self._unbatched = False

    def _options(self):
        return self._k, self._s, self._p, self.ceil_mode, self.count_include_pad, self.divisor_override

    def forward(self, input):
        x = self._input(input)
        _, _, h, w = x.shape
        oh = pool_out_size(h, self._k[0], self._s[0], self._p[0], 1, self.ceil_mode)  # (P5)
        ow = pool_out_size(w, self._k[1], self._s[1], self._p[1], 1, self.ceil_mode)
        if oh < 1 or ow < 1:
            raise ValueError(f"AvgPool2d(kernel_size={self.kernel_size}): kernel {self._k} is larger than the padded "
                             f"input ({h + 2 * self._p[0]}, {w + 2 * self._p[1]}) (input of shape "
                             f"{tuple(input.shape)}, padding {self.padding})")
        self._x_shape = tuple(x.shape)
        return self._output(kernels.avgpool2d_forward(x, *self._options()))  # eqs. (V1), (V2)

    def backward(self, grad_output):
        g = self._grad(grad_output)
        return self._grad_input(kernels.avgpool2d_backward(g, self._x_shape, *self._options()))  # eq. (V4)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _output_size(value, who):
    """torch's output_size: an int, or a pair whose entries are ints or None (keep the input's size)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise ValueError(f"{who}: expected output_size to be an int or a pair, got {value!r}")
    for v in items:
        if v is None and isinstance(value, (tuple, list)):
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{who}: expected output_size to be an int or a pair whose entries are ints or None, got {value!r}")
        if v < 0:
            raise ValueError(f"{who}: expected output_size >= 0, got {value!r}")
    return tuple(None if v is None else int(v) for v in items)


class _Adaptive(_Pool2d):
    def _sizes(self, x):
        """(OH, OW): output_size with each None replaced by the input's size."""
        return tuple(int(x.shape[2 + a]) if s is None else s for a, s in enumerate(self._size))

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_Adaptive):
    r"""y[n, c, i, j] = mean of x[n, c, h, w] over h_0(i) <= h < h_1(i), w_0(j) <= w < w_1(j)   (V6), with
    h_0(i) = floor(i H / OH) and h_1(i) = ceil((i + 1) H / OH)   (V5) (and the same for w).

    ``output_size``: OH x OW, an int or a pair; an entry None keeps the input's size along that axis.
    Backward (V7): each dL/dy is shared evenly by the inputs of its window.
    """

    def __init__(self, output_size):
        super().__init__()
        self._size = _output_size(output_size, "AdaptiveAvgPool2d")
        self.output_size = _torch_style(output_size)
        self._y = None  # the output: its shape says which windows to spread dL/dy over, eq. (V7)
        self._x_shape = None
        self._unbatched = False

    def forward(self, input):
        x = self._input(input)
        self._x_shape = tuple(x.shape)
        return self._output(kernels.adaptive_avgpool2d_forward(x, self._sizes(x)))  # eqs. (V5), (V6)

    def backward(self, grad_output):
        g = self._grad(grad_output)
        return self._grad_input(kernels.adaptive_avgpool2d_backward(g, self._x_shape))  # eq. (V7)


class AdaptiveMaxPool2d(_Adaptive):
    r"""y[n, c, i, j] = max of x[n, c, h, w] over the adaptive window (i, j) of (V5)   (V8).

    ``output_size`` as AdaptiveAvgPool2d's.  ``return_indices``: forward returns (y, indices), the int64 flat
    positions h*W + w of the maxima, as torch's (a NaN wins a window; of equal maxima the first, row by row).
    Backward (V9): each dL/dy goes to the input that won its window.
    """

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self._size = _output_size(output_size, "AdaptiveMaxPool2d")
        self.output_size = _torch_style(output_size)
        self.return_indices = bool(return_indices)
        self._y = None
        self._argmax = None  # flat index of each window's maximum: backward routes dL/dy there, eq. (V9)
        self._x_shape = None
        self._unbatched = False

    def forward(self, input):
        x = self._input(input)
        self._x_shape = tuple(x.shape)
        y, self._argmax = kernels.adaptive_maxpool2d_forward(x, self._sizes(x))  # eqs. (V5), (V8)
        y = self._output(y)
        if not self.return_indices:
            return y
        return y, (self._argmax.reshape(tuple(self._argmax.shape)[1:]) if self._unbatched else self._argmax)

    def backward(self, grad_output):
        argmax = self._saved(self._argmax, "the positions of the maxima")
        g = self._grad(grad_output)
        return self._grad_input(kernels.adaptive_maxpool2d_backward(g, argmax, self._x_shape))  # eq. (V9)
