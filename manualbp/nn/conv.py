"""Conv2d: a 2-D convolution over NCHW images.

Derivation: derivations/04-conv2d.md

Shapes: x (N, C, H, W) or (C, H, W), weight (O, C/G, KH, KW), bias (O,), y (N, O, OH, OW) or (O, OH, OW)
with OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1 and OW likewise  (K11); (K2) for dilation 1.
The arithmetic is in ``manualbp.kernels`` (``reference.py`` spells it out in NumPy).
"""
import numbers

import numpy as np

from .. import kernels
from .._checks import float_array, float_dtype, pair, positive_int
from ..device import normalize
from . import init
from .module import Module
from .parameter import Parameter

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def same_padding(kernel_size, dilation):
    """(left, right, top, bottom) of padding='same' (K14): D*(K-1) in all, half (rounded down) before, the
    rest after, as torch (an odd total puts the extra row below and the extra column on the right)."""
    (kh, kw), (dh, dw) = kernel_size, dilation
    th, tw = dh * (kh - 1), dw * (kw - 1)
    return tw // 2, tw - tw // 2, th // 2, th - th // 2


class Conv2d(Module):
    r"""y[n, o] = b[o] + sum_c  w[o, c] \star x[n, c]   (\star: 2-D cross-correlation, eq. (K1)).

    Args (torch's, in torch's order):
        in_channels: C, channels of the input image.
        out_channels: O, number of filters (channels of the output).
        kernel_size: KH x KW, an int or an (h, w) pair.
        stride: SH x SW step between windows, an int or a pair (default 1).
        padding: PH x PW added on each side, an int or a pair (default 0); or 'valid' (no padding) or
            'same' (stride 1 only: the output has the input's size; D*(K-1) rows in all, the odd one below
            and the odd column on the right, eq. (K14)).
        dilation: DH x DW step between kernel taps, an int or a pair (default 1: neighbouring pixels).
        groups: G, dividing C and O: output channels [g*O/G, (g+1)*O/G) see only input channels
            [g*C/G, (g+1)*C/G) (default 1; G = C: a depthwise convolution), eq. (K10).
        bias: learn an additive bias per output channel (default True).
        padding_mode: what the padding holds: 'zeros' (default), 'reflect', 'replicate' or 'circular'
            (a gather of input pixels, eq. (K15); its backward adds the copies' gradients, (K16)).
        device: None or 'cpu' (where the parameters are made); 'cuda' moves them, as ``.to('cuda')``.
        dtype: the parameters' dtype, float32 (default) or float64.

    Shape:
        input (N, C, H, W) or (C, H, W) -> output (N, O, OH, OW) or (O, OH, OW),
        OH = (H + PH_top + PH_bottom - DH*(KH-1) - 1) // SH + 1, OW likewise   (K11), (K2).
        weight (O, C/G, KH, KW), initialised as torch's (U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        fan_in = C/G*KH*KW).  An empty batch (N = 0) gives an empty output, as torch.

    Backward (derivations/04-conv2d.md):
        dL/db[o]       = sum_{n,i,j} dL/dy[n,o,i,j]                             (K3)
        dL/dw[o,c,p,q] = sum_{n,i,j} dL/dy[n,o,i,j] * xpad[n,c,i*SH+p,j*SW+q]   (K4), (K12) dilated, grouped
        dL/dx          = every dL/dy[n,o,i,j] sent back along the weights w[o,:,:,:]
                         to the inputs its window read (padding dropped)         (K5), (K13)

    ``backward(grad_output, input_grad=False)`` computes (K3) and (K4) only and returns None: the first
    layer of a network does not need (K5), since nothing updates the images (``Sequential.backward``).
    """

    _skips_input_grad = True  # backward understands input_grad=False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        self.in_channels = positive_int(in_channels, "Conv2d", "in_channels")
        self.out_channels = positive_int(out_channels, "Conv2d", "out_channels")
        self.kernel_size = pair(kernel_size, "Conv2d", "kernel_size")
        self.stride = pair(stride, "Conv2d", "stride")
        self.dilation = pair(dilation, "Conv2d", "dilation")
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
            raise TypeError(f"Conv2d: expected groups to be an int, got {type(groups).__name__}")
        if groups <= 0:
            raise ValueError(f"Conv2d: groups must be a positive integer, got {groups}")
        for name, channels in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if channels % groups:
                raise ValueError(f"Conv2d: {name} must be divisible by groups, got {name}={channels}, "
                                 f"groups={groups}")
        self.groups = int(groups)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"Conv2d: padding='same' is not supported for strided convolutions "
                                 f"(stride={self.stride})")
            self.padding = padding  # kept as the string, as torch does
            pads = same_padding(self.kernel_size, self.dilation) if padding == "same" else (0, 0, 0, 0)
        else:
            self.padding = pair(padding, "Conv2d", "padding", minimum=0)
            pads = (self.padding[1], self.padding[1], self.padding[0], self.padding[0])
        self._pads = pads  # (left, right, top, bottom), torch's F.pad order
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"Conv2d: padding_mode must be one of {list(PADDING_MODES)}, but got "
                             f"padding_mode={padding_mode!r}")
        self.padding_mode = padding_mode
        dt = float_dtype(dtype, "Conv2d")
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        self.weight = Parameter(np.empty(shape, dtype=dt))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dt)) if bias else None
        init.default_init_(self.weight, self.bias)
        self._x = None  # the (explicitly padded) input (N, C, H, W): dL/dw correlates it with dL/dy, eq. (K4)
        self._x_shape = None  # the input's shape (4-D): dL/dx has it, eq. (K5)
        self._unbatched = False
        if device is not None and normalize(str(device)) != "cpu":
            self.to("cuda")

    def _name(self):
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"

    def _plan(self):
        """(explicit, padding): pad with ``kernels.pad2d`` first and convolve with padding (0, 0) (a padding
        mode other than zeros, or an uneven 'same'), or let the convolution add the zeros itself."""
        left, right, top, bottom = self._pads
        if self.padding_mode != "zeros" or left != right or top != bottom:
            return True, (0, 0)
        return False, (top, left)

    def _output_shape(self, x_shape, padding):
        """(N, O, OH, OW) for a (padded) input of x_shape convolved with ``padding``, eq. (K11)."""
        n, _, h, w = x_shape
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = self.kernel_size, self.stride, self.dilation, padding
        return (n, self.out_channels, (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
                (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

    def _check_input(self, x, shape):
        """Channels, image size, and what the padding mode needs, before any kernel runs."""
        _, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(
                f"{self._name()}: expected input of shape (N, {self.in_channels}, H, W) or "
                f"({self.in_channels}, H, W), got shape {shape} with {c} channels")
        if h == 0 or w == 0:
            raise ValueError(f"{self._name()}: expected an input of non-zero height and width (only the batch "
                             f"may be empty), got shape {shape}")
        left, right, top, bottom = self._pads
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # the rows and columns a dilated kernel spans
        if eh > h + top + bottom or ew > w + left + right:
            spans = f" with dilation {self.dilation} (spanning ({eh}, {ew}))" if (dh, dw) != (1, 1) else ""
            raise ValueError(
                f"{self._name()}: kernel size ({kh}, {kw}){spans} is larger than the padded input "
                f"({h + top + bottom}, {w + left + right}) (input of shape {shape}, padding {self.padding})")
        mode = self.padding_mode
        if mode == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
            raise ValueError(f"{self._name()}: padding_mode='reflect' needs a padding smaller than the input "
                             f"(a mirror does not repeat the edge), got padding {self.padding} for an input of "
                             f"shape {shape}")
        if mode == "circular" and (max(top, bottom) > h or max(left, right) > w):
            raise ValueError(f"{self._name()}: padding_mode='circular' needs a padding at most the input's size "
                             f"(it would wrap around more than once), got padding {self.padding} for an input of "
                             f"shape {shape}")

    def forward(self, input):
        x = float_array(input, self._name(), ndim=(3, 4), dtype=self.weight.dtype, like=self.weight.data,
                        allow_empty=True)
        shape = tuple(x.shape)
        self._unbatched = x.ndim == 3
        if self._unbatched:
            x = x.reshape((1,) + shape)  # (1, C, H, W), a view
        self._check_input(x, shape)
        explicit, padding = self._plan()
        self._x_shape = tuple(x.shape)
        if explicit:
            x = kernels.pad2d(x, self._pads, self.padding_mode)  # xpad: a gather of the input, eq. (K15)
        self._x = x
        bias = self.bias.data if self.bias is not None else None
        y = kernels.conv2d_forward(x, self.weight.data, bias, self.stride, padding, self.dilation,
                                   self.groups)  # eqs. (K1), (K10)
        return y.reshape(tuple(y.shape)[1:]) if self._unbatched else y

    def backward(self, grad_output, input_grad=True):
        x = self._saved(self._x)
        who = f"{self._name()}.backward"
        g = float_array(grad_output, who, "grad_output", dtype=self.weight.dtype, like=x, allow_empty=True)
        explicit, padding = self._plan()
        expected = self._output_shape(x.shape, padding)  # (K11)
        if self._unbatched:
            expected = expected[1:]
        if tuple(g.shape) != expected:
            raise ValueError(f"{who}: expected grad_output of shape {expected}, got {tuple(g.shape)}")
        if self._unbatched:
            g = g.reshape((1,) + expected)
        out = (self.weight.grad_buffer(), None if self.bias is None else self.bias.grad_buffer())
        grad_w, grad_b = kernels.conv2d_grad_params(g, x, self.weight.shape, self.stride, padding,
                                                    self.bias is not None, self.dilation,
                                                    self.groups, out=out)  # eqs. (K4), (K12), (K3)
        self.weight.accumulate_grad(grad_w)
        if self.bias is not None:
            self.bias.accumulate_grad(grad_b)
        if not input_grad:  # nobody needs dL/dx (the images of a training step)
            return None
        grad_x = kernels.conv2d_grad_input(g, self.weight.data, x.shape, self.stride, padding, self.dilation,
                                           self.groups)  # eqs. (K5), (K13)
        if explicit:  # the padded pixels' gradients go back to the pixels they copied, eq. (K16)
            grad_x = kernels.pad2d_backward(grad_x, self._x_shape, self._pads, self.padding_mode)
        return grad_x.reshape(self._x_shape[1:]) if self._unbatched else grad_x

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):  # a pair, or the string 'same' / 'valid', printed as torch does
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s
