"""Convolution on the GPU.

Derivations: derivations/11-gpu-tiled-matmul.md (the tiled product and implicit GEMM, (G8)),
derivations/04-conv2d.md (the three passes, (K1), (K3)-(K5))

The three convolution passes are matrix products whose matrices are never built (implicit GEMM):
the tiled kernel of ``gemm.py`` fetches each element straight from the image, the weights or
the output gradient, and the store writes straight into NCHW.  With P = N*OH*OW output positions
and R = C*KH*KW weights per output channel:

    forward      y[o, p]  = sum_r  w[o, r] * col[r, p]        M = O, N = P,       K = R
    grad-weight  dw[o, r] = sum_p  gy[o, p] * col[r, p]       M = O, N = R,       K = P  (split-K)
    grad-input   dx[c, q] = sum_s  wt[c, s] * gcol[s, q]      M = C, N = N*H*W,   K = O*KH*KW

where col[(c, kh, kw), (n, i, j)] = xpad[n, c, i*SH + kh, j*SW + kw] is the im2col matrix and
gcol[(o, kh, kw), (n, h, w)] = gy[n, o, (h + PH - kh) / SH, (w + PW - kw) / SW] when that division is
exact and lands inside the output, else 0: each input pixel *gathers* from every output that read
it, so no two threads ever write the same dx element and no atomics are needed.

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
SH/SW stride, PH/PW padding.  ``geom`` = (N, C, H, W, O, KH, KW, OH, OW, SH, SW, PH, PW, PLH, PLW), where
PLH x PLW is the plane of the NCHW array the product writes: OH x OW forward, H x W for grad-input.
"""

import numpy as np
from numba import cuda, float32

from .elementwise import bias_grad
from .gemm import SMALL, choose_split, launch_gemm, load_rows, make_gemm_kernel, matrix_col, slice_row, sum_slices
from .launch import device_f32, empty_f32, flat, output, pair

# --- element fetches of the implicit matrices --------------------------------------------------------


@cuda.jit(device=True, inline=True)
def im2col(x, geom, r, p):
    """col[r, p] = xpad[n, c, i*SH + kh, j*SW + kw] with r = (c, kh, kw), p = (n, i, j); 0 in the padding."""
    hh, ww, kh_, kw_, oh_, ow_ = geom[2], geom[3], geom[5], geom[6], geom[7], geom[8]
    sh, sw, ph, pw = geom[9], geom[10], geom[11], geom[12]
    c = r // (kh_ * kw_)
    kh = (r // kw_) % kh_
    kw = r % kw_
    n = p // (oh_ * ow_)
    i = (p // ow_) % oh_
    j = p % ow_
    h = i * sh - ph + kh
    w = j * sw - pw + kw
    if h < 0 or h >= hh or w < 0 or w >= ww:
        return float32(0.0)
    return x[n, c, h, w]


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
    """A[m, k] = gy[n, m, i, j] with k = (n, i, j): the output gradient as an (O, N*OH*OW) matrix."""
    oh_ = geom[7]
    ow_ = geom[8]
    n = k // (oh_ * ow_)
    i = (k // ow_) % oh_
    j = k % ow_
    return gy[n, m, i, j]


@cuda.jit(device=True, inline=True)
def weight_t(w, geom, m, k):
    """A[m, k] = w[o, m, kh, kw] with k = (o, kh, kw): the weights as a (C, O*KH*KW) matrix."""
    kh_ = geom[5]
    kw_ = geom[6]
    o = k // (kh_ * kw_)
    kh = (k // kw_) % kh_
    kw = k % kw_
    return w[o, m, kh, kw]


@cuda.jit(device=True, inline=True)
def grad_col(gy, geom, k, n):
    """B[k, n] = gy[b, o, (h+PH-kh)/SH, (w+PW-kw)/SW] for k = (o, kh, kw), n = (b, h, w); 0 if no output read it."""
    hh, ww, kh_, kw_, oh_, ow_ = geom[2], geom[3], geom[5], geom[6], geom[7], geom[8]
    sh, sw, ph, pw = geom[9], geom[10], geom[11], geom[12]
    o = k // (kh_ * kw_)
    kh = (k // kw_) % kh_
    kw = k % kw_
    b = n // (hh * ww)
    h = (n // ww) % hh
    w = n % ww
    ti = h + ph - kh  # = i*SH for the output row i whose window put weight row kh on input row h
    tj = w + pw - kw
    if ti < 0 or tj < 0 or ti % sh != 0 or tj % sw != 0:
        return float32(0.0)
    i = ti // sh
    j = tj // sw
    if i >= oh_ or j >= ow_:
        return float32(0.0)
    return gy[b, o, i, j]


@cuda.jit(device=True, inline=True)
def nchw_row(geom, M, N, z, m):
    """Channel m of an NCHW output: where plane m of image 0 starts (planes of PLH x PLW = geom[13:15])."""
    return m * geom[13] * geom[14]


@cuda.jit(device=True, inline=True)
def nchw_col(geom, M, N, q):
    """Position q = (n, h, w) of an NCHW array with M channels: image n's offset plus h*W + w."""
    plane = geom[13] * geom[14]
    n = q // plane
    return n * M * plane + (q - n * plane)


conv2d_forward_kernel = cuda.jit(
    make_gemm_kernel(load_rows, True, col_of_x, False, nchw_row, nchw_col, SMALL, with_bias=True))
conv2d_grad_input_kernel = cuda.jit(make_gemm_kernel(weight_t, True, grad_col, False, nchw_row, nchw_col, SMALL))
conv2d_grad_weight_kernel = cuda.jit(
    make_gemm_kernel(grad_y_rows, True, col_of_x_t, True, slice_row, matrix_col, SMALL))


def _geometry(x_shape, w_shape, stride, padding, who):
    nb, c, h, w = (int(v) for v in x_shape)
    o, c2, kh, kw = (int(v) for v in w_shape)
    sh, sw = pair(stride, who, "stride")
    ph, pw = pair(padding, who, "padding")
    if c != c2:
        raise ValueError(f"{who}: the input has {c} channels but the weight (O, C, KH, KW) = {tuple(w_shape)} "
                         f"expects {c2}")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{who}: expected stride >= 1 and padding >= 0, got stride {stride}, padding {padding}")
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{who}: a {kh}x{kw} kernel does not fit the padded {h + 2 * ph}x{w + 2 * pw} input")
    return (nb, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw, 0, 0)  # the plane is set per pass


def conv2d_forward(x, w, b, stride, padding, out=None):
    """y[n,o,i,j] = b[o] + sum_{c,kh,kw} w[o,c,kh,kw] * xpad[n,c,i*SH+kh,j*SW+kw]: (N,C,H,W) -> (N,O,OH,OW).

    NumPy twin: ``manualbp.kernels.reference.conv2d_forward``.  x (N,C,H,W), w (O,C,KH,KW), b (O,) or
    None: float32 device arrays; stride, padding: int or (h, w).  OH = (H + 2*PH - KH) // SH + 1.
    """
    who = "cuda conv2d_forward"
    device_f32(x, who, "x", ndim=4)
    device_f32(w, who, "weight", ndim=4)
    g = _geometry(x.shape, w.shape, stride, padding, who)
    nb, c, _, _, o, kh, kw, oh, ow = g[:9]
    g = g[:13] + (oh, ow)  # the product writes y, of planes OH x OW
    if b is None:
        b = empty_f32()
    else:
        device_f32(b, who, "bias", shape=(o,))
    y = output(out, (nb, o, oh, ow), who)
    M, N, K = o, nb * oh * ow, c * kh * kw
    if y.size:
        launch_gemm(conv2d_forward_kernel, SMALL, w.reshape(o, K), x, flat(y), b, g, M, N, K, K, 1, False)
    return y


def conv2d_grad_input(grad_y, w, x_shape, stride, padding, out=None):
    """dL/dx: each input pixel gathers sum_{o,kh,kw} w[o,c,kh,kw] * gy[n,o,i,j] over the outputs that read it.

    NumPy twin: ``manualbp.kernels.reference.conv2d_grad_input``.  grad_y (N,O,OH,OW), w (O,C,KH,KW)
    float32 device arrays; returns (N,C,H,W) = x_shape.  Deterministic: a gather, no atomics.
    """
    who = "cuda conv2d_grad_input"
    device_f32(w, who, "weight", ndim=4)
    g = _geometry(x_shape, w.shape, stride, padding, who)
    nb, c, h, ww, o, kh, kw, oh, ow = g[:9]
    g = g[:13] + (h, ww)  # the product writes dx, of planes H x W
    device_f32(grad_y, who, "grad_y", shape=(nb, o, oh, ow))
    dx = output(out, (nb, c, h, ww), who)
    M, N, K = c, nb * h * ww, o * kh * kw
    if dx.size:
        launch_gemm(conv2d_grad_input_kernel, SMALL, w, grad_y, flat(dx), empty_f32(), g, M, N, K, K, 1, False)
    return dx


def conv2d_grad_weight(grad_y, x, w_shape, stride, padding, out=None, accumulate=False):
    """dL/dw[o,c,kh,kw] = sum_{n,i,j} gy[n,o,i,j] * xpad[n,c,i*SH+kh,j*SW+kw] -> (O,C,KH,KW).

    NumPy twin: ``manualbp.kernels.reference.conv2d_grad_weight``.  grad_y (N,O,OH,OW), x (N,C,H,W)
    float32 device arrays.  ``out`` receives the gradient, or it is added to ``out`` when
    ``accumulate`` (``Parameter.grad +=``).  The sum over the batch is cut into fixed K slices
    added in order (G7): deterministic, no atomics.
    """
    who = "cuda conv2d_grad_weight"
    device_f32(x, who, "x", ndim=4)
    g = _geometry(x.shape, w_shape, stride, padding, who)
    nb, c, _, _, o, kh, kw, oh, ow = g[:9]
    device_f32(grad_y, who, "grad_y", shape=(nb, o, oh, ow))
    dw = output(out, (o, c, kh, kw), who)
    M, N, K = o, c * kh * kw, nb * oh * ow
    if dw.size == 0:
        return dw
    k_split, splits = choose_split(M, N, K, SMALL)
    if splits == 1:
        launch_gemm(conv2d_grad_weight_kernel, SMALL, grad_y, x, flat(dw), empty_f32(), g,
                    M, N, K, K, 1, bool(accumulate))
    else:
        partial = cuda.device_array((splits, M, N), dtype=np.float32)
        launch_gemm(conv2d_grad_weight_kernel, SMALL, grad_y, x, flat(partial), empty_f32(), g,
                    M, N, K, k_split, splits, False)
        sum_slices(partial.reshape(splits, M * N), flat(dw), accumulate)
    return dw


def conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias):
    """(dL/dw, dL/db): ``conv2d_grad_weight`` (K4) and, if ``with_bias``, ``bias_grad`` (K3); else (dL/dw, None).

    NumPy twin: ``manualbp.kernels.reference.conv2d_grad_params``.  Two launches: the implicit GEMM,
    then one block per output channel adding grad_y over (n, i, j) in a fixed order.
    """
    grad_w = conv2d_grad_weight(grad_y, x, w_shape, stride, padding)
    return grad_w, (bias_grad(grad_y) if with_bias else None)
