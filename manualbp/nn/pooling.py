"""MaxPool2d: the largest value of each window, and a gradient that goes to the winner only.

Derivation: derivations/05-maxpool.md

Shapes: x (N, C, H, W) or (C, H, W), y (N, C, OH, OW) with
OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1 and OW likewise, rounded up with ceil_mode  (P5); (P2) for
dilation 1.  Padding is -inf: it never wins.
"""
import numpy as np

from .. import kernels
from .._checks import float_array, pair
from ..kernels.reference import pool_out_size
from .module import Module


def _torch_style(value):
    """torch prints kernel_size=2 as 2 and kernel_size=(2, 3) as (2, 3): keep what the user gave."""
    return tuple(value) if isinstance(value, (tuple, list)) else value


class MaxPool2d(Module):
    r"""y[n, c, i, j] = max_{p < KH, q < KW} xpad[n, c, i*SH + p*DH, j*SW + q*DW]   (P1), (P6).

    Args (torch's, in torch's order):
        kernel_size: KH x KW window, an int or an (h, w) pair.
        stride: SH x SW step between windows (default: kernel_size, non-overlapping windows).
        padding: PH x PW of -inf added on each side; at most half the kernel size, as in torch.
        dilation: DH x DW step between the window's taps (default 1).
        return_indices: forward returns (y, indices), the int64 flat positions h*W + w of the maxima
            (torch's, for ``MaxUnpool2d``); backward still takes the gradient of y alone.
        ceil_mode: round the output size up: a last, partial window where input is left over (P5).

    Shape:
        input (N, C, H, W) or (C, H, W) -> output (N, C, OH, OW) or (C, OH, OW),
        OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1, OW likewise (P2), (P5); rounded up with ceil_mode, but
        a window never starts in the right padding.  An empty batch gives an empty output, as torch.

    Forward keeps, for every output, the flat position h*W + w of the first maximum of its window
    (P3), exactly like torch's ``return_indices``.  Backward (derivations/05-maxpool.md):
        dL/dx[n,c,h,w] = sum of dL/dy[n,c,i,j] over the windows whose maximum was x[n,c,h,w]   (P4)
    (every other input, which did not affect y, gets 0).
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size = _torch_style(kernel_size)
        self.stride = _torch_style(kernel_size if stride is None else stride)
        self.padding = _torch_style(padding)
        self.dilation = _torch_style(dilation)
        self.return_indices = bool(return_indices)
        self.ceil_mode = bool(ceil_mode)
        self._k = pair(kernel_size, "MaxPool2d", "kernel_size")
        self._s = pair(self.stride, "MaxPool2d", "stride")
        self._p = pair(padding, "MaxPool2d", "padding", minimum=0)
        self._d = pair(dilation, "MaxPool2d", "dilation")
        if self._p[0] > self._k[0] // 2 or self._p[1] > self._k[1] // 2:
            raise ValueError(
                f"MaxPool2d: pad should be at most half of effective kernel size, but got "
                f"padding={self.padding} and kernel_size={self.kernel_size}")
        self._argmax = None  # flat index of each window's maximum: backward routes dL/dy there, eq. (P4)
        self._x_shape = None  # the (4-D) input shape, to size dL/dx, eq. (P4)
        self._unbatched = False
        self._dtype = None

    def _check_windows(self, h, w, shape):
        """Every window must hold at least one input pixel (torch returns -inf and an index outside the
        image for one that does not, and its backward then writes outside the gradient)."""
        for size, k, s, p, d, axis in ((h, self._k[0], self._s[0], self._p[0], self._d[0], "height"),
                                       (w, self._k[1], self._s[1], self._p[1], self._d[1], "width")):
            out = pool_out_size(size, k, s, p, d, self.ceil_mode)  # (P5)
            if out < 1:
                raise ValueError(
                    f"MaxPool2d(kernel_size={self.kernel_size}): kernel {self._k} with dilation {self._d} is "
                    f"larger than the padded input ({h + 2 * self._p[0]}, {w + 2 * self._p[1]}) (input of shape "
                    f"{shape}, padding {self.padding})")
            for i in range(min(out, p // s + 1)):  # only windows that start in the left padding can miss
                start = i * s - p
                first = start if start >= 0 else start + (-start + d - 1) // d * d  # first tap inside, (P6)
                if first >= size or first > start + d * (k - 1):
                    raise ValueError(
                        f"MaxPool2d: with kernel_size={self.kernel_size}, padding={self.padding} and "
                        f"dilation={self.dilation}, window {i} along the {axis} reads only padding (input of "
                        f"shape {shape}); torch returns -inf there with an index outside the image")

    def forward(self, input):
        x = float_array(input, "MaxPool2d", ndim=(3, 4), allow_empty=True)
        shape = tuple(x.shape)
        self._unbatched = x.ndim == 3
        if self._unbatched:
            x = x.reshape((1,) + shape)  # (1, C, H, W), a view
        _, c, h, w = x.shape
        if c == 0 or h == 0 or w == 0:
            raise ValueError(f"MaxPool2d: expected an input with non-zero channels, height and width (only the "
                             f"batch may be empty), got shape {shape}")
        self._check_windows(h, w, shape)
        y, self._argmax = kernels.maxpool2d_forward(x, self._k, self._s, self._p, self._d,
                                                    self.ceil_mode)  # eqs. (P1), (P3), (P5), (P6)
        self._x_shape = tuple(x.shape)
        self._dtype = x.dtype  # backward's gradient must match it
        if self._unbatched:
            y = y.reshape(tuple(y.shape)[1:])
        if not self.return_indices:
            return y
        indices = self._argmax if self._argmax.dtype == np.int64 else self._argmax.astype(np.int64)  # torch's
        return y, (indices.reshape(tuple(indices.shape)[1:]) if self._unbatched else indices)

    def backward(self, grad_output):
        argmax = self._saved(self._argmax, "the positions of the maxima")
        g = float_array(grad_output, "MaxPool2d.backward", "grad_output", dtype=self._dtype, like=argmax,
                        allow_empty=True)
        expected = tuple(argmax.shape[1:]) if self._unbatched else tuple(argmax.shape)
        if tuple(g.shape) != expected:
            raise ValueError(f"MaxPool2d.backward: expected grad_output of shape {expected}, got {tuple(g.shape)}")
        if self._unbatched:
            g = g.reshape(tuple(argmax.shape))
        grad_x = kernels.maxpool2d_backward(g, argmax, self._x_shape, self._k, self._s, self._p, self._d,
                                            self.ceil_mode)  # eq. (P4)
        return grad_x.reshape(self._x_shape[1:]) if self._unbatched else grad_x

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")
