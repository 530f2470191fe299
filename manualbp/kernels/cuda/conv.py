"""Convolution on the GPU.

Derivations: derivations/11-gpu-tiled-matmul.md (the tiled product and implicit GEMM, (G8)),
derivations/04-conv2d.md (the three passes, (K1), (K3)-(K5); dilation and groups, (K10)-(K13);
the padding modes, (K15), (K16))

The three convolution passes are matrix products whose matrices are never built (implicit GEMM):
the tiled kernel of ``gemm.py`` fetches each element straight from the image, the weights or
the output gradient, and the store writes straight into NCHW.  With P = N*OH*OW output positions
and R = C*KH*KW weights per output channel:

    forward      y[o, p]  = sum_r  w[o, r] * col[r, p]        M = O, N = P,       K = R
    grad-weight  dw[o, r] = sum_p  gy[o, p] * col[r, p]       M = O, N = R,       K = P  (split-K)
    grad-input   dx[c, q] = sum_s  wt[c, s] * gcol[s, q]      M = C, N = N*H*W,   K = O*KH*KW

where col[(c, kh, kw), (n, i, j)] = xpad[n, c, i*SH + kh*DH, j*SW + kw*DW] is the im2col matrix and
gcol[(o, kh, kw), (n, h, w)] = gy[n, o, (h + PH - kh*DH) / SH, (w + PW - kw*DW) / SW] when that division
is exact and lands inside the output, else 0: each input pixel *gathers* from every output that read
it, so no two threads ever write the same dx element and no atomics are needed.  DH, DW is the
dilation (K10) (1: taps side by side).

Groups (K10): each group is a convolution of its own C/G input and O/G output channels, launched on
its own (a loop over the groups on the host); the fetches add the group's first channels c0 and o0,
and the product writes into the group's channels of the whole NCHW output.

Padding modes (K15), (K16): ``pad2d`` copies each padded pixel from the input pixel it mirrors, repeats
or wraps (a gather, one thread per padded pixel); ``pad2d_backward`` is a gather too: one thread per
input pixel adds the gradients of its copies, found in a small table of the padded rows (and columns)
that copy each row (and column), in a fixed order.

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
SH/SW stride, PH/PW padding, DH/DW dilation, G groups.  ``geom`` = (N, C, H, W, O, KH, KW, OH, OW, SH, SW,
PH, PW, PLH, PLW, DH, DW, c0, o0, PLC), where C and O count one group's channels, c0 and o0 are the
group's first input and output channel, and PLH x PLW is the plane, PLC the number of channels, of the
NCHW array the product writes: O x OH x OW forward, C x H x W for grad-input (all channels, not a group's).
"""

import numpy as np
from numba import cuda, float32

from ..reference import PAD_MODES, pad_source
from .buffers import empty
from .elementwise import bias_grad
from .gemm import SMALL, choose_split, launch_gemm, load_rows, make_gemm_kernel, matrix_col, slice_row, sum_slices
from .launch import THREADS, blocks, device_f32, empty_f32, flat, output, pair

# --- element fetches of the implicit matrices --------------------------------------------------------


@cuda.jit(device=True, inline=True)
def im2col(x, geom, r, p):
    """col[r, p] = xpad[n, c0 + c, i*SH + kh*DH, j*SW + kw*DW] with r = (c, kh, kw), p = (n, i, j); 0 in the
    padding.  (K10)"""
    hh, ww, kh_, kw_, oh_, ow_ = geom[2], geom[3], geom[5], geom[6], geom[7], geom[8]
    sh, sw, ph, pw, dh, dw = geom[9], geom[10], geom[11], geom[12], geom[15], geom[16]
    c = r // (kh_ * kw_)
    kh = (r // kw_) % kh_
    kw = r % kw_
    n = p // (oh_ * ow_)
    i = (p // ow_) % oh_
    j = p % ow_
    h = i * sh - ph + kh * dh
    w = j * sw - pw + kw * dw
    if h < 0 or h >= hh or w < 0 or w >= ww:
        return float32(0.0)
    return x[n, geom[17] + c, h, w]


@cuda.jit(device=True, inline=True)
def col_of_x(x, geom, k, n):
    """B[k, n] = col[k, n] of the forward pass (k over C*KH*KW, n over N*OH*OW)."""
    return im2col(x, geom, k, n)


@cuda.jit(device=True, inline=True)
def col_of_x_t(x, geom, k, n):
    """B[k, n] = col[n, k] of the weight gradient (k over N*OH*OW, n over C*KH*KW)."""
    return im2col(x, geom, n, k)


@cuda.jit(device=True, inline=True)
def grad_y_rows(gy, geom, m, k):
    """A[m, k] = gy[n, o0 + m, i, j] with k = (n, i, j): the output gradient as an (O, N*OH*OW) matrix."""
    oh_ = geom[7]
    ow_ = geom[8]
    n = k // (oh_ * ow_)
    i = (k // ow_) % oh_
    j = k % ow_
    return gy[n, geom[18] + m, i, j]


@cuda.jit(device=True, inline=True)
def weight_t(w, geom, m, k):
    """A[m, k] = w[o, m, kh, kw] with k = (o, kh, kw): the weights as a (C, O*KH*KW) matrix (w: one group's)."""
    kh_ = geom[5]
    kw_ = geom[6]
    o = k // (kh_ * kw_)
    kh = (k // kw_) % kh_
    kw = k % kw_
    return w[o, m, kh, kw]


@cuda.jit(device=True, inline=True)
def grad_col(gy, geom, k, n):
    """B[k, n] = gy[b, o0 + o, (h+PH-kh*DH)/SH, (w+PW-kw*DW)/SW] for k = (o, kh, kw), n = (b, h, w); 0 if no
    output read it.  (K13)"""
    hh, ww, kh_, kw_, oh_, ow_ = geom[2], geom[3], geom[5], geom[6], geom[7], geom[8]
    sh, sw, ph, pw, dh, dw = geom[9], geom[10], geom[11], geom[12], geom[15], geom[16]
    o = k // (kh_ * kw_)
    kh = (k // kw_) % kh_
    kw = k % kw_
    b = n // (hh * ww)
    h = (n // ww) % hh
    w = n % ww
    ti = h + ph - kh * dh  # = i*SH for the output row i whose window put weight row kh on input row h
    tj = w + pw - kw * dw
    if ti < 0 or tj < 0 or ti % sh != 0 or tj % sw != 0:
        return float32(0.0)
    i = ti // sh
    j = tj // sw
    if i >= oh_ or j >= ow_:
        return float32(0.0)
    return gy[b, geom[18] + o, i, j]


@cuda.jit(device=True, inline=True)
def nchw_row(geom, M, N, z, m):
    """Channel m of an NCHW output: where plane m of image 0 starts (planes of PLH x PLW = geom[13:15])."""
    return m * geom[13] * geom[14]


@cuda.jit(device=True, inline=True)
def nchw_col(geom, M, N, q):
    """Position q = (n, h, w) of an NCHW array with PLC = geom[19] channels: image n's offset plus h*W + w."""
    plane = geom[13] * geom[14]
    n = q // plane
    return n * geom[19] * plane + (q - n * plane)


conv2d_forward_kernel = cuda.jit(
    make_gemm_kernel(load_rows, True, col_of_x, False, nchw_row, nchw_col, SMALL, with_bias=True))
conv2d_grad_input_kernel = cuda.jit(make_gemm_kernel(weight_t, True, grad_col, False, nchw_row, nchw_col, SMALL))
conv2d_grad_weight_kernel = cuda.jit(
    make_gemm_kernel(grad_y_rows, True, col_of_x_t, True, slice_row, matrix_col, SMALL))


def _geometry(x_shape, w_shape, stride, padding, dilation, groups, who):
    """(geom for group 0, G): geom as in the module docstring, with C and O one group's channel counts."""
    nb, c, h, w = (int(v) for v in x_shape)
    o, cg, kh, kw = (int(v) for v in w_shape)
    sh, sw = pair(stride, who, "stride")
    ph, pw = pair(padding, who, "padding")
    dh, dw = pair(dilation, who, "dilation")
    g = int(groups)
    if g < 1 or c % g or o % g:
        raise ValueError(f"{who}: groups must be a positive integer dividing the {c} input and {o} output "
                         f"channels, got {groups}")
    if c != cg * g:
        raise ValueError(f"{who}: the input has {c} channels but the weight (O, C/G, KH, KW) = {tuple(w_shape)} "
                         f"with groups={g} expects {cg * g}")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0 or dh < 1 or dw < 1:
        raise ValueError(f"{who}: expected stride >= 1, padding >= 0 and dilation >= 1, got stride {stride}, "
                         f"padding {padding}, dilation {dilation}")
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1  # (K11)
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{who}: a {kh}x{kw} kernel with dilation ({dh}, {dw}) does not fit the padded "
                         f"{h + 2 * ph}x{w + 2 * pw} input")
    # the plane and its channel count are set per pass; c0, o0 per group
    return (nb, cg, h, w, o // g, kh, kw, oh, ow, sh, sw, ph, pw, 0, 0, dh, dw, 0, 0, 0), g


def _group(geom, k, plane_h, plane_w, plane_c):
    """geom for group k, writing planes of plane_h x plane_w in an NCHW array of plane_c channels."""
    return geom[:13] + (plane_h, plane_w) + geom[15:17] + (k * geom[1], k * geom[4], plane_c)


def conv2d_forward(x, w, b, stride, padding, dilation=1, groups=1, out=None):
    """y[n,o,i,j] = b[o] + sum_{c,kh,kw} w[o,c,kh,kw] * xpad[n,c0+c,i*SH+kh*DH,j*SW+kw*DW]: (N,C,H,W) -> (N,O,OH,OW).

    NumPy twin: ``manualbp.kernels.reference.conv2d_forward``.  x (N,C,H,W), w (O,C/G,KH,KW), b (O,) or
    None: float32 device arrays; stride, padding, dilation: int or (h, w); groups G (c0: the first input
    channel of output channel o's group).  OH = (H + 2*PH - DH*(KH-1) - 1) // SH + 1.
    """
    who = "cuda conv2d_forward"
    device_f32(x, who, "x", ndim=4)
    device_f32(w, who, "weight", ndim=4)
    geom, groups = _geometry(x.shape, w.shape, stride, padding, dilation, groups, who)
    nb, c, _, _, o, kh, kw, oh, ow = geom[:9]
    if b is not None:
        device_f32(b, who, "bias", shape=(o * groups,))
    y = output(out, (nb, o * groups, oh, ow), who)
    M, N, K = o, nb * oh * ow, c * kh * kw
    if y.size == 0:
        return y
    w2 = w.reshape(o * groups, K)
    for k in range(groups):  # one product per group, written into its channels of y (K10)
        bias = empty_f32() if b is None else b[k * o:(k + 1) * o]
        launch_gemm(conv2d_forward_kernel, SMALL, w2[k * o:(k + 1) * o], x, flat(y)[k * o * oh * ow:], bias,
                    _group(geom, k, oh, ow, o * groups), M, N, K, K, 1, False)
    return y


def conv2d_grad_input(grad_y, w, x_shape, stride, padding, dilation=1, groups=1, out=None):
    """dL/dx: each input pixel gathers sum_{o,kh,kw} w[o,c,kh,kw] * gy[n,o,i,j] over the outputs that read it.

    NumPy twin: ``manualbp.kernels.reference.conv2d_grad_input``.  grad_y (N,O,OH,OW), w (O,C/G,KH,KW)
    float32 device arrays; returns (N,C,H,W) = x_shape.  Deterministic: a gather, no atomics.
    """
    who = "cuda conv2d_grad_input"
    device_f32(w, who, "weight", ndim=4)
    geom, groups = _geometry(x_shape, w.shape, stride, padding, dilation, groups, who)
    nb, c, h, ww, o, kh, kw, oh, ow = geom[:9]
    device_f32(grad_y, who, "grad_y", shape=(nb, o * groups, oh, ow))
    dx = output(out, (nb, c * groups, h, ww), who)
    M, N, K = c, nb * h * ww, o * kh * kw
    if dx.size == 0:
        return dx
    for k in range(groups):  # each group's outputs flow back into its own input channels (K13)
        launch_gemm(conv2d_grad_input_kernel, SMALL, w[k * o:(k + 1) * o], grad_y, flat(dx)[k * c * h * ww:],
                    empty_f32(), _group(geom, k, h, ww, c * groups), M, N, K, K, 1, False)
    return dx


def conv2d_grad_weight(grad_y, x, w_shape, stride, padding, dilation=1, groups=1, out=None, accumulate=False):
    """dL/dw[o,c,kh,kw] = sum_{n,i,j} gy[n,o,i,j] * xpad[n,c0+c,i*SH+kh*DH,j*SW+kw*DW] -> (O,C/G,KH,KW).

    NumPy twin: ``manualbp.kernels.reference.conv2d_grad_weight``.  grad_y (N,O,OH,OW), x (N,C,H,W)
    float32 device arrays.  ``out`` receives the gradient, or it is added to ``out`` when
    ``accumulate`` (``Parameter.grad +=``).  The sum over the batch is cut into fixed K slices
    added in order (G7): deterministic, no atomics.  An empty batch gives zeros (a sum of nothing).
    """
    who = "cuda conv2d_grad_weight"
    device_f32(x, who, "x", ndim=4)
    geom, groups = _geometry(x.shape, w_shape, stride, padding, dilation, groups, who)
    nb, c, _, _, o, kh, kw, oh, ow = geom[:9]
    device_f32(grad_y, who, "grad_y", shape=(nb, o * groups, oh, ow))
    dw = output(out, (o * groups, c, kh, kw), who)
    M, N, K = o, c * kh * kw, nb * oh * ow
    if dw.size == 0:
        return dw
    k_split, splits = choose_split(M, N, K, SMALL)
    for k in range(groups):  # each group's weights see its own channels (K12): rows k*O/G.. of dw
        g = _group(geom, k, 0, 0, 0)
        dwk = flat(dw)[k * M * N:(k + 1) * M * N]
        if splits == 1:
            launch_gemm(conv2d_grad_weight_kernel, SMALL, grad_y, x, dwk, empty_f32(), g,
                        M, N, K, K, 1, bool(accumulate))
        else:
            partial = empty((splits, M, N), dtype=np.float32)
            launch_gemm(conv2d_grad_weight_kernel, SMALL, grad_y, x, flat(partial), empty_f32(), g,
                        M, N, K, k_split, splits, False)
            sum_slices(partial.reshape(splits, M * N), dwk, accumulate)
    return dw


def conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias, dilation=1, groups=1, out=(None, None)):
    """(dL/dw, dL/db): ``conv2d_grad_weight`` (K4), (K12) and, if ``with_bias``, ``bias_grad`` (K3); else
    (dL/dw, None).

    NumPy twin: ``manualbp.kernels.reference.conv2d_grad_params``.  Two launches: the implicit GEMM,
    then one block per output channel adding grad_y over (n, i, j) in a fixed order.  ``out``: the arrays
    to write dL/dw and dL/db into (None: new ones).
    """
    grad_w = conv2d_grad_weight(grad_y, x, w_shape, stride, padding, dilation, groups, out=out[0])
    return grad_w, (bias_grad(grad_y, out=out[1]) if with_bias else None)


# --- padding modes: a gather and its gather-shaped backward (K15), (K16) ---------------------------------

def _pad_forward(x, rows, cols, y):
    """One thread per padded pixel y[n, c, u, v] = x[n, c, rows[u], cols[v]], or 0 where a map is -1  (K15)."""
    t = cuda.grid(1)
    nb, cc, hp, wp = y.shape
    if t < nb * cc * hp * wp:
        v = t % wp
        u = (t // wp) % hp
        c = (t // (wp * hp)) % cc
        n = t // (wp * hp * cc)
        r = rows[u]
        q = cols[v]
        value = float32(0.0)
        if r >= 0 and q >= 0:
            value = x[n, c, r, q]
        y[n, c, u, v] = value


def _pad_backward(g, row_copies, col_copies, dx):
    """One thread per input pixel dx[n, c, h, w]: the sum of g over the padded pixels that copied it  (K16).

    row_copies[h] lists, in increasing order, the padded rows u with rho_H(u) = h (then -1s); the same for
    columns: the sum runs over u, then v, the order of the CPU's scatter, so the results agree bit for bit.
    """
    t = cuda.grid(1)
    nb, cc, hh, ww = dx.shape
    if t < nb * cc * hh * ww:
        w = t % ww
        h = (t // ww) % hh
        c = (t // (ww * hh)) % cc
        n = t // (ww * hh * cc)
        total = float32(0.0)
        for a in range(row_copies.shape[1]):
            u = row_copies[h, a]
            if u >= 0:
                for e in range(col_copies.shape[1]):
                    v = col_copies[w, e]
                    if v >= 0:
                        total += g[n, c, u, v]
        dx[n, c, h, w] = total


pad2d_forward_kernel = cuda.jit(_pad_forward)
pad2d_backward_kernel = cuda.jit(_pad_backward)

_pad_tables = {}  # (size, before, after, mode) -> (rho as a device array, its inverse table): a few ints


def _pad_maps(size, before, after, mode, who):
    key = (size, before, after, mode)
    if key not in _pad_tables:
        if mode not in PAD_MODES:
            raise ValueError(f"{who}: expected mode in {PAD_MODES}, got {mode!r}")
        rho = pad_source(size, before, after, mode).astype(np.int64)
        copies = [np.flatnonzero(rho == s) for s in range(size)]  # increasing u
        table = np.full((size, max([1] + [len(u) for u in copies])), -1, dtype=np.int64)
        for s_, u in enumerate(copies):
            table[s_, :len(u)] = u
        _pad_tables[key] = (cuda.to_device(rho), cuda.to_device(table))
    return _pad_tables[key]


def _pads(pads, who):
    try:
        left, right, top, bottom = (int(p) for p in pads)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: expected pads = (left, right, top, bottom), got {pads!r}") from None
    if min(left, right, top, bottom) < 0:
        raise ValueError(f"{who}: expected pads >= 0, got {pads!r}")
    return left, right, top, bottom


def pad2d(x, pads, mode):
    """x padded by pads = (left, right, top, bottom) with ``mode``: (N,C,H,W) -> (N,C,top+H+bottom,left+W+right).

    NumPy twin: ``manualbp.kernels.reference.pad2d``.  x: a float32 device array.
    """
    who = "cuda pad2d"
    device_f32(x, who, "x", ndim=4)
    left, right, top, bottom = _pads(pads, who)
    nb, c, h, w = (int(v) for v in x.shape)
    y = empty((nb, c, top + h + bottom, left + w + right), dtype=np.float32)
    if y.size:
        rows, _ = _pad_maps(h, top, bottom, mode, who)
        cols, _ = _pad_maps(w, left, right, mode, who)
        pad2d_forward_kernel[blocks(y.size), THREADS](x, rows, cols, y)
    return y


def pad2d_backward(grad_y, x_shape, pads, mode, out=None):
    """dL/dx of ``pad2d`` (x_shape): each input pixel gathers the gradients of its copies, in a fixed order.

    NumPy twin: ``manualbp.kernels.reference.pad2d_backward`` (a scatter-add; the sums are the same).
    """
    who = "cuda pad2d_backward"
    left, right, top, bottom = _pads(pads, who)
    nb, c, h, w = (int(v) for v in x_shape)
    device_f32(grad_y, who, "grad_y", shape=(nb, c, top + h + bottom, left + w + right))
    dx = output(out, (nb, c, h, w), who)
    if dx.size:
        _, row_copies = _pad_maps(h, top, bottom, mode, who)
        _, col_copies = _pad_maps(w, left, right, mode, who)
        pad2d_backward_kernel[blocks(dx.size), THREADS](grad_y, row_copies, col_copies, dx)
    return dx
