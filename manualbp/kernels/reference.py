"""The kernels in plain NumPy: the readable specification.

Derivations: derivations/03-linear.md (matmul), derivations/04-conv2d.md (convolution),
derivations/05-maxpool.md (max-pooling), derivations/06-activations.md (activations, softmax),
derivations/09-sgd-momentum.md (the update), derivations/01-chain-rule.md (gradients add, (C3)); the
losses' twins are in ``reference_loss.py`` and are imported here, so every operation of
``kernels/__init__.py`` is ``reference.<name>``.

Every optimized kernel in ``kernels/cpu/`` and ``kernels/cuda/`` has a twin here with the same name and
signature, and ``tests/test_kernels.py`` (and the simulator tests of ``tests/cuda/``) hold them equal.
These versions are written to be read (and stepped through in a debugger with
``manualbp.set_backend("numpy")``), not to be fast.

Legend (as in ``kernels/__init__.py``): N batch, C input channels, H/W input height/width,
O output channels, KH/KW kernel height/width, OH/OW output height/width, SH/SW stride,
PH/PW zero padding, DH/DW dilation, G groups.  ``stride``, ``padding``, ``dilation`` and ``kernel_size``
are (h, w) pairs of ints.

Equation labels cited in the comments:
  (L1) y = x W^T + b                       Linear forward           derivations/03-linear.md
  (L2) dL/dx = dL/dy W                     Linear grad-input
  (L3) dL/dW = (dL/dy)^T x                 Linear grad-weight
  (K1) y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] * xpad[n,c,i*SH+p,j*SW+q]
                                           conv forward, xpad = x zero-padded by PH/PW on each side
                                                                    derivations/04-conv2d.md
  (K2) OH = (H + 2*PH - KH) // SH + 1,  OW = (W + 2*PW - KW) // SW + 1
                                           conv output size
  (K3) dL/db[o] = sum_{n,i,j} dL/dy[n,o,i,j]
                                           conv grad-bias
  (K4) dL/dw[o,c,p,q] = sum_{n,i,j} dL/dy[n,o,i,j] * xpad[n,c,i*SH+p,j*SW+q]
                                           conv grad-weight: correlate the input with dL/dy
  (K5) dL/dxpad[n,c,i*SH+p,j*SW+q] += w[o,c,p,q] * dL/dy[n,o,i,j]   (summed over o,i,j,p,q),
       dL/dx = dL/dxpad without its padding border
                                           conv grad-input: each gradient flows back along the weight
                                           that carried it (for stride 1: a "full" convolution of
                                           dL/dy with the flipped kernel)
  (P1) y[n,c,i,j] = max_{p,q} xpad[n,c,i*SH+p,j*SW+q]
                                           max-pool forward, xpad = x padded with -inf
                                                                    derivations/05-maxpool.md
  (P2) OH = (H + 2*PH - KH) // SH + 1,  OW = (W + 2*PW - KW) // SW + 1
                                           max-pool output size
  (P3) a[n,c,i,j] = h*W + w of the first maximum of the window, scanning p then q
       (a NaN counts as a maximum, as in torch); h, w index the unpadded input
                                           max-pool argmax (torch's return_indices)
  (P4) dL/dx[n,c,h,w] = sum_{i,j : a[n,c,i,j] = h*W+w} dL/dy[n,c,i,j]
                                           max-pool backward: the gradient goes to the winner only
  (K10) y[n,o,i,j] = b[o] + sum_{c<C/G,p,q} w[o,c,p,q] * xpad[n, g(o)*C/G + c, i*SH + p*DH, j*SW + q*DW],
        g(o) = o // (O/G)                  dilated, grouped conv forward     derivations/04-conv2d.md
  (K11) OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1   output size with dilation
  (K12), (K13) its weight and input gradients: (K4), (K5) with the same index map
  (K14) padding='same': PH + PH' = DH*(KH-1), PH = that // 2 before, the rest after
  (K15), (K16) padding modes: xpad[n,c,u,v] = x[n,c,rho_H(u),rho_W(v)] (a gather), and its backward,
        a scatter-add: dL/dx[n,c,h,w] = sum_{rho_H(u)=h, rho_W(v)=w} dL/dxpad[n,c,u,v]
  (P5) OH = (H + 2*PH - DH*(KH-1) - 1 [+ SH - 1 with ceil_mode]) // SH + 1, minus 1 when ceil_mode
       lets the last window start at or after H + PH        max-pool output size   derivations/05-maxpool.md
  (P6) y[n,c,i,j] = max_{p,q} xpad[n,c,i*SH + p*DH, j*SW + q*DW]   dilated max-pool window
"""
import numpy as np

from .outputs import written

# --- matrix product ----------------------------------------------------------------------------------


def matmul(a, b, transpose_a=False, transpose_b=False, out=None):
    """op(a) @ op(b), where op transposes when asked (written into ``out`` if given: ``outputs.written``).

    Inputs:
    - a: (M, K) array, or (K, M) when transpose_a
    - b: (K, N) array, or (N, K) when transpose_b
    - transpose_a, transpose_b: bools

    Returns:
    - c: (M, N) C-contiguous array of a's dtype, c[m, n] = sum_k op(a)[m, k] * op(b)[k, n]

    Linear uses it three ways: x @ W^T (L1), dL/dy @ W (L2), (dL/dy)^T @ x (L3).
    """
    a = a.T if transpose_a else a  # (M, K)
    b = b.T if transpose_b else b  # (K, N)
    return written(out, np.ascontiguousarray(a @ b))


# --- convolution -------------------------------------------------------------------------------------


def _out_size(size, kernel, stride, padding, dilation=1):
    """(K11): how many window positions fit in the padded input along one axis.  The window spans
    dilation*(kernel - 1) + 1 input positions; with dilation 1 this is (K2)/(P2)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _window(p, q, OH, OW, stride, dilation=(1, 1)):
    """The index tuple that picks xpad[:, :, i*SH + p*DH, j*SW + q*DW] for all i < OH, j < OW.

    Sliding the kernel over the image and looking at its (p, q) tap gives, for all output positions at
    once, a strided slice of the padded input of shape (N, C, OH, OW).  With dilation D, tap p sits
    p*D rows below the window's corner (K10).
    """
    SH, SW = stride
    h0, w0 = p * dilation[0], q * dilation[1]
    return (slice(None), slice(None), slice(h0, h0 + SH * (OH - 1) + 1, SH), slice(w0, w0 + SW * (OW - 1) + 1, SW))


def _pad(x, padding, value=0.0):
    PH, PW = padding
    return np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)), constant_values=value)


def _groups(C, O, groups):
    """For each group g: (slice of its C/G input channels, slice of its O/G output channels)  (K10)."""
    Cg, Og = C // groups, O // groups
    return [(slice(g * Cg, (g + 1) * Cg), slice(g * Og, (g + 1) * Og)) for g in range(groups)]


def conv2d_forward(x, w, b, stride, padding, dilation=(1, 1), groups=1):
    """Forward pass of a 2-D convolution (cross-correlation, as in every deep-learning library).

    Inputs:
    - x: input images, (N, C, H, W)
    - w: filters, (O, C/G, KH, KW): output channel o sees only the C/G input channels of its group
    - b: biases, (O,), or None
    - stride: (SH, SW) ints
    - padding: (PH, PW) ints, zeros added on each side of each image
    - dilation: (DH, DW) ints, the step between kernel taps (1: neighbouring pixels)
    - groups: G, dividing C and O; output channels [g*O/G, (g+1)*O/G) read input channels
      [g*C/G, (g+1)*C/G) only (G = C = O: a depthwise convolution)

    Returns:
    - y: (N, O, OH, OW), with OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1, OW likewise  (K11), (K2)
    """
    N, C, H, W = x.shape  # (N, C, H, W)
    O, _, KH, KW = w.shape  # (O, C/G, KH, KW)
    OH = _out_size(H, KH, stride[0], padding[0], dilation[0])  # (K11)
    OW = _out_size(W, KW, stride[1], padding[1], dilation[1])
    xpad = _pad(x, padding)  # (N, C, H + 2*PH, W + 2*PW)
    y = np.zeros((N, O, OH, OW), dtype=x.dtype)
    # One kernel tap (p, q) at a time: every output position looks at xpad[n, c, i*SH+p*DH, j*SW+q*DW],
    # which for all (i, j) is one strided slice; the tap's weights w[:, :, p, q] mix the channels of a
    # group into its output channels.  One group at a time: a group is a convolution of its own.
    for cs, os in _groups(C, O, groups):
        for p in range(KH):
            for q in range(KW):
                patch = xpad[:, cs][_window(p, q, OH, OW, stride, dilation)]  # (N, C/G, OH, OW)
                y[:, os] += np.einsum("nchw,oc->nohw", patch, w[os, :, p, q])  # sum of w * xpad, (K1), (K10)
    if b is not None:
        y += b[None, :, None, None]  # + b[o], eq. (K1)
    return y


def conv2d_grad_input(grad_y, w, x_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dx of a 2-D convolution.

    Inputs:
    - grad_y: dL/dy, (N, O, OH, OW)
    - w: filters, (O, C/G, KH, KW)
    - x_shape: (N, C, H, W), the shape of the forward input
    - stride, padding, dilation: (h, w) int pairs, and groups, as in the forward pass

    Returns:
    - grad_x: dL/dx, (N, C, H, W)
    """
    N, C, H, W = x_shape
    O, _, KH, KW = w.shape
    _, _, OH, OW = grad_y.shape
    PH, PW = padding
    grad_xpad = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=grad_y.dtype)
    # Input xpad[n, c, i*SH+p*DH, j*SW+q*DW] reached y[n, o, i, j] through w[o, c, p, q], so it receives
    # w[o, c, p, q] * dL/dy[n, o, i, j]; one tap at a time, that is a strided slice again.  Where
    # windows overlap (stride < kernel), an input receives from several taps: the += adds them.
    for cs, os in _groups(C, O, groups):
        for p in range(KH):
            for q in range(KW):
                grad_xpad[:, cs][_window(p, q, OH, OW, stride, dilation)] += np.einsum(
                    "nohw,oc->nchw", grad_y[:, os], w[os, :, p, q])  # eqs. (K5), (K13)
    # The padding border was not an input: its gradient is dropped, eq. (K5).
    return np.ascontiguousarray(grad_xpad[:, :, PH:PH + H, PW:PW + W])


def conv2d_grad_weight(grad_y, x, w_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dw of a 2-D convolution.

    Inputs:
    - grad_y: dL/dy, (N, O, OH, OW)
    - x: the forward input, (N, C, H, W)
    - w_shape: (O, C/G, KH, KW)
    - stride, padding, dilation: (h, w) int pairs, and groups, as in the forward pass

    Returns:
    - grad_w: dL/dw, (O, C/G, KH, KW)
    """
    O, _, KH, KW = w_shape  # (O, C/G, KH, KW)
    _, _, OH, OW = grad_y.shape
    xpad = _pad(x, padding)  # (N, C, H + 2*PH, W + 2*PW)
    grad_w = np.zeros(w_shape, dtype=grad_y.dtype)
    # w[o, c, p, q] multiplied xpad[n, c, i*SH+p*DH, j*SW+q*DW] into every y[n, o, i, j]: its gradient
    # sums dL/dy times that input over the batch and over all output positions.
    for cs, os in _groups(x.shape[1], O, groups):
        for p in range(KH):
            for q in range(KW):
                patch = xpad[:, cs][_window(p, q, OH, OW, stride, dilation)]  # (N, C/G, OH, OW)
                grad_w[os, :, p, q] = np.einsum("nohw,nchw->oc", grad_y[:, os], patch)  # eqs. (K4), (K12)
    return grad_w


def conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias, dilation=(1, 1), groups=1, out=(None, None)):
    """(dL/dw, dL/db) of a 2-D convolution: ``conv2d_grad_weight`` and, if ``with_bias``, the bias
    gradient, dL/db[o] = sum over n, i, j of grad_y[n, o, i, j] (eq. (K3)); else (dL/dw, None).
    ``out``: where each goes, if anywhere (``outputs.written``)."""
    grad_w = written(out[0], conv2d_grad_weight(grad_y, x, w_shape, stride, padding, dilation, groups))
    return grad_w, (written(out[1], grad_y.sum(axis=(0, 2, 3))) if with_bias else None)  # eq. (K3)


# --- padding modes: a gather, and its scatter-add (derivations/04-conv2d.md (K15), (K16)) ---------------

PAD_MODES = ("zeros", "reflect", "replicate", "circular")


def pad_source(size, before, after, mode):
    """rho(u) for every padded position u < before + size + after: the input position it copies, or -1
    where it holds a zero (K15).  With t = u - before, the position relative to the input:

    - zeros: t inside [0, size), else -1
    - reflect: mirror at the edge without repeating it: -t left, 2*(size-1) - t right (pad < size)
    - replicate: the nearest edge, clip(t, 0, size-1)
    - circular: wrap around, t mod size (pad <= size)
    """
    t = np.arange(-before, size + after)
    if mode == "zeros":
        return np.where((t >= 0) & (t < size), t, -1)
    if mode == "reflect":
        t = np.abs(t)
        return np.where(t >= size, 2 * (size - 1) - t, t)
    if mode == "replicate":
        return np.clip(t, 0, size - 1)
    if mode == "circular":
        return t % size
    raise ValueError(f"pad_source: unknown padding mode {mode!r}, expected one of {PAD_MODES}")


def pad2d(x, pads, mode):
    """x padded with ``mode`` (torch's F.pad order): (N, C, H, W) -> (N, C, top+H+bottom, left+W+right).

    Inputs:
    - x: (N, C, H, W)
    - pads: (left, right, top, bottom) ints >= 0, as torch's ``F.pad(x, pads)``
    - mode: 'zeros', 'reflect', 'replicate' or 'circular' (Conv2d's ``padding_mode``)

    Every padded pixel is a copy of one input pixel (or a zero): xpad[n, c, u, v] = x[n, c, rho_H(u),
    rho_W(v)], with the index maps of ``pad_source``: a gather  (K15).
    """
    left, right, top, bottom = pads
    _, _, H, W = x.shape
    rows, cols = pad_source(H, top, bottom, mode), pad_source(W, left, right, mode)
    xpad = x[:, :, np.maximum(rows, 0)[:, None], np.maximum(cols, 0)[None, :]]  # the gather, eq. (K15)
    if mode == "zeros":
        inside = (rows >= 0)[:, None] & (cols >= 0)[None, :]
        xpad = np.where(inside, xpad, x.dtype.type(0))
    return np.ascontiguousarray(xpad)


def pad2d_backward(grad_y, x_shape, pads, mode):
    """dL/dx of ``pad2d``: every padded pixel's gradient goes back to the input pixel it copied, and the
    copies of one pixel add up (a scatter-add, eq. (K16)); the zeros of mode 'zeros' copied nothing.

    Inputs:
    - grad_y: dL/dxpad, (N, C, top+H+bottom, left+W+right)
    - x_shape: (N, C, H, W)
    - pads, mode: as in ``pad2d``

    Returns:
    - grad_x: (N, C, H, W)
    """
    left, right, top, bottom = pads
    N, C, H, W = x_shape
    rows, cols = pad_source(H, top, bottom, mode), pad_source(W, left, right, mode)
    g = grad_y[:, :, rows >= 0][:, :, :, cols >= 0]  # the copies of real pixels
    by_row = np.zeros((N, C, H, g.shape[3]), dtype=grad_y.dtype)
    np.add.at(by_row, (slice(None), slice(None), rows[rows >= 0]), g)  # rows that copy one row add, (K16)
    grad_x = np.zeros((N, C, H, W), dtype=grad_y.dtype)
    np.add.at(grad_x, (slice(None), slice(None), slice(None), cols[cols >= 0]), by_row)  # then columns
    return grad_x


def linear_forward(x, w, b):
    """y = x W^T + b  (L1).  x (N, in), w (out, in), b (out,) or None -> y (N, out)."""
    y = matmul(x, w, transpose_b=True)  # x W^T
    if b is not None:
        y += b  # broadcast b over the rows
    return y


def bias_grad(grad_y, out=None):
    """dL/db: grad_y summed over every axis but 1, the channel (or feature) axis  (L4), (K3).
    (N, O) -> (O,);  (N, O, OH, OW) -> (O,).  Written into ``out`` if given (``outputs.written``)."""
    return written(out, grad_y.sum(axis=(0,) + tuple(range(2, grad_y.ndim))))


# --- max-pooling -------------------------------------------------------------------------------------


def pool_out_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """(P5): the number of windows along one axis, torch's rule.  Rounding down, this is (K11); with
    ``ceil_mode`` a last, partial window is added when some input is left over, unless it would start at
    or after the end of the input and its left padding (it must start inside the input or the padding
    before it: a window of right padding alone is never made)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1  # where the last window may start, (K11)
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start in the right padding
    return out


def maxpool2d_forward(x, kernel_size, stride, padding, dilation=(1, 1), ceil_mode=False):
    """Forward pass of 2-D max-pooling, with torch's argmax indices.

    Inputs:
    - x: (N, C, H, W)
    - kernel_size: (KH, KW) ints
    - stride: (SH, SW) ints
    - padding: (PH, PW) ints, -inf added on each side (it never wins), PH <= KH // 2
    - dilation: (DH, DW) ints, the step between the window's taps
    - ceil_mode: round the output size up (P5): the last windows may hang over the bottom/right edge

    Returns a tuple of:
    - y: window maxima, (N, C, OH, OW), OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1 (P2), (P5)
    - indices: int64 (N, C, OH, OW), the flat position h*W + w of each maximum in its (unpadded)
      H x W plane; on ties the first in window order (p, then q) wins, and a NaN beats everything  (P3)
    """
    N, C, H, W = x.shape
    KH, KW = kernel_size
    PH, PW = padding
    DH, DW = dilation
    OH = pool_out_size(H, KH, stride[0], PH, DH, ceil_mode)  # (P5)
    OW = pool_out_size(W, KW, stride[1], PW, DW, ceil_mode)
    # -inf around the image; with ceil_mode the last windows may reach past H + 2*PH: more -inf there.
    HP = max(H + 2 * PH, (OH - 1) * stride[0] + DH * (KH - 1) + 1)
    WP = max(W + 2 * PW, (OW - 1) * stride[1] + DW * (KW - 1) + 1)
    xpad = np.pad(x, ((0, 0), (0, 0), (PH, HP - H - PH), (PW, WP - W - PW)), constant_values=-np.inf)
    # Flat index h*W + w of every padded position (meaningless, and never chosen, in the border).
    hh = np.arange(-PH, HP - PH)[:, None]
    ww = np.arange(-PW, WP - PW)[None, :]
    flat = np.broadcast_to(hh * W + ww, xpad.shape)
    inside = np.broadcast_to((hh >= 0) & (hh < H) & (ww >= 0) & (ww < W), xpad.shape)

    y = np.full((N, C, OH, OW), -np.inf, dtype=x.dtype)
    indices = np.full((N, C, OH, OW), -1, dtype=np.int64)
    # Visit the window's taps in order, p then q, keeping the best so far (P1), (P6).  A tap takes over
    # when it is strictly greater (so the first of equal maxima stays, (P3)), or is NaN (torch lets NaN
    # win), or when nothing real has been seen yet (a window of -inf values reports its first real position).
    for p in range(KH):
        for q in range(KW):
            win = _window(p, q, OH, OW, stride, dilation)
            val, pos, real = xpad[win], flat[win], inside[win]  # each (N, C, OH, OW)
            take = real & ((val > y) | np.isnan(val) | (indices < 0))
            y = np.where(take, val, y)  # eqs. (P1), (P6)
            indices = np.where(take, pos, indices)  # eq. (P3)
    return y, indices


def maxpool2d_backward(grad_y, indices, x_shape, kernel_size=None, stride=None, padding=None, dilation=None,
                       ceil_mode=False):
    """Backward pass of 2-D max-pooling.

    Inputs:
    - grad_y: dL/dy, (N, C, OH, OW)
    - indices: int64 (N, C, OH, OW), the argmax positions returned by ``maxpool2d_forward``
    - x_shape: (N, C, H, W)
    - kernel_size, stride, padding, dilation, ceil_mode: the window geometry; not needed here, since the
      indices say where each gradient goes (the GPU's kernel, a gather, uses it to find the windows of
      an input)

    Returns:
    - grad_x: dL/dx, (N, C, H, W): each dL/dy goes to the input that won the max; an input that won
      several overlapping windows receives the sum (P4), everything else gets 0
    """
    N, C, H, W = x_shape
    grad_x = np.zeros((N * C, H * W), dtype=grad_y.dtype)  # one row per (n, c) plane
    rows = np.arange(N * C)[:, None]  # (N*C, 1)
    # np.add.at adds repeated indices one by one (a plain += would keep only one of them), in order.
    P = grad_y.shape[2] * grad_y.shape[3]  # outputs per plane
    np.add.at(grad_x, (rows, indices.reshape(N * C, P)), grad_y.reshape(N * C, P))  # eq. (P4)
    return grad_x.reshape(N, C, H, W)


# --- the optimizer step (twin of cpu/optim.py) -------------------------------------------------------


def sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One step of SGD on a parameter, in place, as torch.optim.SGD computes it (O3)-(O6).

    Derivation: derivations/09-sgd-momentum.md.

    Inputs:
    - p: the parameter's values, any shape, updated in place
    - g: dL/dp, p's shape (not modified)
    - buf: the momentum buffer, p's shape, updated in place (written at the first step); None when
      momentum is 0
    - lr, momentum, dampening, weight_decay: floats; nesterov, first: bools

    Every scalar is cast to p's dtype first, so a float32 parameter is updated in float32.
    """
    t = p.dtype.type
    if weight_decay != 0:
        g = g + t(weight_decay) * p  # (O3)
    if momentum != 0:
        if first:
            buf[...] = g  # the first buffer is the gradient itself, undamped (O4)
        else:
            buf *= t(momentum)
            buf += t(1 - dampening) * g  # (O4)
        g = g + t(momentum) * buf if nesterov else buf  # (O5)
    p -= t(lr) * g  # (O6)


def add_(a, b):
    """a += b in place (gradients accumulate: a parameter used twice gets the sum, (C3)); returns a."""
    a += b
    return a


def scale(a, s):
    """s * a: s is a scalar (a NumPy scalar, or a 1-element array) or an array of a's shape."""
    return s * a


# --- activations and softmax (derivations/06-activations.md) ----------------------------------------


def relu_forward(x):
    """y = max(x, 0)  (A1); a NaN stays NaN (0 only where x <= 0), as in torch."""
    return np.where(x <= 0, x.dtype.type(0), x)


def relu_backward(grad_y, x):
    """dL/dx = 0 where x <= 0, else dL/dy  (A2) (torch's choice at x = 0; at a NaN the gradient passes)."""
    return np.where(x <= 0, grad_y.dtype.type(0), grad_y)


def leaky_relu_forward(x, negative_slope):
    """y = x where x > 0, else slope * x  (A3)."""
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


def leaky_relu_backward(grad_y, x, negative_slope):
    """dL/dx = dL/dy where x > 0, else slope * dL/dy  (A4)."""
    return np.where(x > 0, grad_y, grad_y * grad_y.dtype.type(negative_slope))


def sigmoid_forward(x):
    """s = 1 / (1 + e^-x)  (A5), evaluating e^-|x| only, so no exponent overflows: for x < 0 the
    same value is written e^x / (1 + e^x)."""
    e = np.exp(-np.abs(x))
    one = x.dtype.type(1)
    return np.where(x >= 0, one / (one + e), e / (one + e))


def sigmoid_backward(grad_y, s):
    """dL/dx = dL/dy * s (1 - s)  (A6): only the output s is needed."""
    return grad_y * s * (s.dtype.type(1) - s)


def tanh_forward(x):
    """t = tanh(x)  (A7)."""
    return np.tanh(x)


def tanh_backward(grad_y, t):
    """dL/dx = dL/dy * (1 - t^2)  (A8)."""
    return grad_y * (t.dtype.type(1) - t * t)


def softmax_forward(x, axis):
    """p = e^x / sum e^x along ``axis``  (A9), with the maximum subtracted first (it cancels)."""
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def log_softmax_forward(x, axis):
    """log p = (x - m) - log sum e^(x - m) along ``axis``, m the maximum  (A12): never the log of a rounded 0."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax_backward(grad_y, y, axis):
    """dL/dx = g - e^y * sum_j g_j along ``axis``, from the output y = log p  (A13)."""
    return grad_y - np.exp(y) * grad_y.sum(axis=axis, keepdims=True)


def softmax_backward(grad_y, p, axis):
    """dL/dx = p * (g - sum_j g_j p_j) along ``axis``  (A11): the Jacobian (A10) applied without building it."""
    return p * (grad_y - (grad_y * p).sum(axis=axis, keepdims=True))


from .reference_activation_extra import *
from .reference_adaptive import *
from .reference_loss import *
from .reference_norm import *
from .reference_norm_relu import *
from .reference_pooling_avg import *
from .reference_residual import *
