"""MaxPool2d: the largest value of each window, and a gradient that goes to the winner only.

Derivation: derivations/05-maxpool.md

Shapes: x (N, C, H, W) or (C, H, W), y (N, C, OH, OW) with
OH = (H + 2*PH - KH) // SH + 1 and OW likewise  (P2).  Padding is -inf: it never wins.
"""
from .. import kernels
from .._checks import float_array, pair
from .module import Module


def _torch_style(value):
    """torch prints kernel_size=2 as 2 and kernel_size=(2, 3) as (2, 3): keep what the user gave."""
    return tuple(value) if isinstance(value, (tuple, list)) else value


class MaxPool2d(Module):
    r"""y[n, c, i, j] = max_{p < KH, q < KW} xpad[n, c, i*SH + p, j*SW + q]   (P1).

    Args:
        kernel_size: KH x KW window, an int or an (h, w) pair.
        stride: SH x SW step between windows (default: kernel_size, non-overlapping windows).
        padding: PH x PW of -inf added on each side; at most half the kernel size, as in torch.

    Shape:
        input (N, C, H, W) or (C, H, W) -> output (N, C, OH, OW) or (C, OH, OW),
        OH = (H + 2*PH - KH) // SH + 1, OW = (W + 2*PW - KW) // SW + 1   (P2).

    Forward keeps, for every output, the flat position h*W + w of the first maximum of its window
    (P3), exactly like torch's ``return_indices``.  Backward (derivations/05-maxpool.md):
        dL/dx[n,c,h,w] = sum of dL/dy[n,c,i,j] over the windows whose maximum was x[n,c,h,w]   (P4)
    (every other input, which did not affect y, gets 0).
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _torch_style(kernel_size)
        self.stride = _torch_style(kernel_size if stride is None else stride)
        self.padding = _torch_style(padding)
        self._k = pair(kernel_size, "MaxPool2d", "kernel_size")
        self._s = pair(self.stride, "MaxPool2d", "stride")
        self._p = pair(padding, "MaxPool2d", "padding", minimum=0)
        if self._p[0] > self._k[0] // 2 or self._p[1] > self._k[1] // 2:
            raise ValueError(
                f"MaxPool2d: pad should be at most half of effective kernel size, but got "
                f"padding={self.padding} and kernel_size={self.kernel_size}")
        self._argmax = None  # flat index of each window's maximum: backward routes dL/dy there, eq. (P4)
        self._x_shape = None  # the (4-D) input shape, to size dL/dx, eq. (P4)
        self._unbatched = False
        self._dtype = None

    def forward(self, x):
        x = float_array(x, "MaxPool2d", ndim=(3, 4))
        self._unbatched = x.ndim == 3
        if self._unbatched:
            x = x.reshape((1,) + tuple(x.shape))  # (1, C, H, W), a view
        _, _, h, w = x.shape
        (kh, kw), (ph, pw) = self._k, self._p
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ValueError(
                f"MaxPool2d(kernel_size={self.kernel_size}): kernel ({kh}, {kw}) is larger than the padded "
                f"input ({h + 2 * ph}, {w + 2 * pw}) (input of shape {tuple(x.shape)}, padding {self.padding})")
        y, self._argmax = kernels.maxpool2d_forward(x, self._k, self._s, self._p)  # eqs. (P1), (P3)
        self._x_shape = tuple(x.shape)
        self._dtype = x.dtype  # backward's gradient must match it
        return y.reshape(tuple(y.shape)[1:]) if self._unbatched else y

    def backward(self, grad_output):
        argmax = self._saved(self._argmax, "the positions of the maxima")
        g = float_array(grad_output, "MaxPool2d.backward", "grad_output", dtype=self._dtype, like=argmax)
        if self._unbatched:
            g = g.reshape((1,) + tuple(g.shape))
        if tuple(g.shape) != tuple(argmax.shape):
            shape = tuple(argmax.shape[1:]) if self._unbatched else tuple(argmax.shape)
            raise ValueError(
                f"MaxPool2d.backward: expected grad_output of shape {shape}, "
                f"got {tuple(g.shape[1:]) if self._unbatched else tuple(g.shape)}")
        grad_x = kernels.maxpool2d_backward(g, argmax, self._x_shape, self._k, self._s, self._p)  # eq. (P4)
        return grad_x.reshape(self._x_shape[1:]) if self._unbatched else grad_x

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation=1, ceil_mode=False")
