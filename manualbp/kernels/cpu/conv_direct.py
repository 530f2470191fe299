"""Stride-1 convolution without im2col: every weight tap reads a shifted row of the padded image.

Derivation: derivations/04-conv2d.md, eqs. (K1), (K4), (K6); readable twins: ``reference.conv2d_forward``,
``reference.conv2d_grad_input`` and ``reference.conv2d_grad_weight``.  Used by ``conv.py`` for stride 1
(any stride goes through the im2col kernels of ``conv_im2col.py``).

The idea.  Pad one image to (C, HP, WP), HP = H + 2*PH, WP = W + 2*PW, and lay each channel out flat,
xf[c, h*WP + w].  Compute the output on a "wide" grid of OH rows of WP columns, s = i*WP + j: then

    ywide[o, s] = sum_{c,p,q} w[o,c,p,q] * xf[c, s + p*WP + q]                            (K1)

because moving p rows down and q columns right in the padded image is adding p*WP + q to the flat
index.  For a fixed tap (c, p, q) the inputs of all outputs are one contiguous run of xf[c], starting
at p*WP + q: a row of im2col's matrix, read in place instead of copied.  Columns j >= OW of the wide
grid straddle two image rows and are thrown away (the price: WP / OW times the useful work).  Each
channel's flat row carries KW - 1 extra zeros, so the last tap's run stays inside it.

The tiling.  Output channels go four at a time and taps four at a time: one pass over s adds four
shifted input runs into four output rows, a 4 x 4 block of weights held in registers
(``c_m[s] += w_m0*x0[s] + w_m1*x1[s] + w_m2*x2[s] + w_m3*x3[s]``, 16 multiply-adds for 4 + 4 loads and
4 stores).  The rows of one image's wide output (a few KB) stay in L1 while all taps stream by.
Every output sums its taps in the order r = (c*KH + p)*KW + q, four at a time, as ``gemm_dot.nn_rows``.

Gradient with respect to the input.  For stride 1, dL/dx is itself such a convolution: of dL/dy,
padded by (KH-1-PH, KW-1-PW), with the kernel flipped and its two channel axes swapped,
wf[c, o, u, v] = w[o, c, KH-1-u, KW-1-v]  ((K6): (K5) read as a forward convolution); ``conv.py`` calls the same
kernels with those arguments.

Parallel over images: worker t takes images t, t + T, ... with its own workspaces (the padded image
and the wide output), and writes only its own outputs; no sum is ever split between threads.

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
PH/PW padding, HP/WP padded size.
"""
import numpy as np
from numba import njit, prange

from .tile import U2, U3  # unsigned constants (an int times an unsigned int is a float in Numba)

# Helpers get ints as these or as computed values, never as the literals 0 and 1, and parallel loops pass
# np.int64(t): Numba compiles a helper once per literal argument and once more for an unsigned prange index.
ZERO = np.int64(0)
ONE = np.int64(1)


@njit(cache=True, fastmath=True)
def _pad_image(xn, xf, PH, PW, WP):
    """xf[c] (flat, HP*WP + KW-1) = xn[c] (H, W) with PH rows and PW columns of zeros around it.

    Like every loop of this file it reads and writes flat views at unsigned offsets: a slice (``xf[c]``,
    ``xn[c, h]``) is a new array whose reference count Numba raises and drops, two atomic operations,
    and a signed index is tested for Python's negative indices."""
    C, H, W = xn.shape
    LX = xf.shape[1]
    zero = xf.dtype.type(0)
    xff, xnf = xf.reshape(-1), xn.reshape(-1)
    for k in range(C * LX):
        xff[k] = zero
    for c in range(C):
        for h in range(H):
            d = np.uint64(c * LX + (h + PH) * WP + PW)
            s = np.uint64((c * H + h) * W)
            for w in range(W):
                xff[d + np.uint64(w)] = xnf[s + np.uint64(w)]


@njit(cache=True, fastmath=True)
def _taps4(w2, xflat, offs, ywf, L, m, k):
    """yw[m:m+4] += w2[m:m+4, k:k+4] applied to the four shifted runs of taps k..k+3 (one pass over s);
    ywf: the wide output (O, L) flat.

    offs[k] is where tap k's run starts in the flattened padded image: c*LX + p*WP + q.
    """
    uL = np.uint64(L)
    c0 = np.uint64(m * L)
    c1, c2, c3 = c0 + uL, c0 + U2 * uL, c0 + U3 * uL
    x0, x1, x2, x3 = np.uint64(offs[k]), np.uint64(offs[k + 1]), np.uint64(offs[k + 2]), np.uint64(offs[k + 3])
    a00, a01, a02, a03 = w2[m, k], w2[m, k + 1], w2[m, k + 2], w2[m, k + 3]
    a10, a11, a12, a13 = w2[m + 1, k], w2[m + 1, k + 1], w2[m + 1, k + 2], w2[m + 1, k + 3]
    a20, a21, a22, a23 = w2[m + 2, k], w2[m + 2, k + 1], w2[m + 2, k + 2], w2[m + 2, k + 3]
    a30, a31, a32, a33 = w2[m + 3, k], w2[m + 3, k + 1], w2[m + 3, k + 2], w2[m + 3, k + 3]
    for s in range(L):
        u = np.uint64(s)
        v0 = xflat[x0 + u]
        v1 = xflat[x1 + u]
        v2 = xflat[x2 + u]
        v3 = xflat[x3 + u]
        ywf[c0 + u] += a00 * v0 + a01 * v1 + a02 * v2 + a03 * v3
        ywf[c1 + u] += a10 * v0 + a11 * v1 + a12 * v2 + a13 * v3
        ywf[c2 + u] += a20 * v0 + a21 * v1 + a22 * v2 + a23 * v3
        ywf[c3 + u] += a30 * v0 + a31 * v1 + a32 * v2 + a33 * v3


@njit(cache=True, fastmath=True)
def _tap_rows(w2, xflat, offs, ywf, L, m0, m1, k0, k1):
    """yw[m] += sum_{k0 <= k < k1} w2[m, k] * run_k for m0 <= m < m1, one row at a time (the edges).

    Taps go four at a time as in ``_taps4``, so each output sums in the same order either way.
    """
    for m in range(m0, m1):
        c = np.uint64(m * L)
        k = k0
        while k + 4 <= k1:
            x0, x1, x2, x3 = np.uint64(offs[k]), np.uint64(offs[k + 1]), np.uint64(offs[k + 2]), np.uint64(offs[k + 3])
            a0, a1, a2, a3 = w2[m, k], w2[m, k + 1], w2[m, k + 2], w2[m, k + 3]
            for s in range(L):
                u = np.uint64(s)
                ywf[c + u] += a0 * xflat[x0 + u] + a1 * xflat[x1 + u] + a2 * xflat[x2 + u] + a3 * xflat[x3 + u]
            k += 4
        for kk in range(k, k1):
            x0 = np.uint64(offs[kk])
            a0 = w2[m, kk]
            for s in range(L):
                u = np.uint64(s)
                ywf[c + u] += a0 * xflat[x0 + u]


@njit(cache=True, fastmath=True)
def _direct_images(x, w2, b, y, xf, yw, n0, step, KH, KW, PH, PW, has_bias):
    """y[n] for images n = n0, n0 + step, ...: pad into xf, accumulate the wide output yw, copy it out."""
    O, R = w2.shape
    OH, OW = y.shape[2], y.shape[3]
    WP = x.shape[3] + 2 * PW
    L = yw.shape[1]  # OH * WP, rounded up to whole 16-float vectors by the caller
    R4 = R - R % 4
    zero = y.dtype.type(0)
    C, LX = xf.shape
    xflat = xf.reshape(C * LX)
    offs = np.empty(R, dtype=np.int64)  # where each tap's run starts in xflat
    for k in range(R):
        offs[k] = (k // (KH * KW)) * LX + ((k // KW) % KH) * WP + k % KW  # c*LX + p*WP + q
    ywf, yf = yw.reshape(-1), y.reshape(-1)
    OY = y.shape[1]
    for n in range(n0, x.shape[0], step):
        _pad_image(x[n], xf, PH, PW, WP)
        for s in range(O * L):
            ywf[s] = zero
        m = ZERO
        while m + 4 <= O:
            for k in range(0, R4, 4):
                _taps4(w2, xflat, offs, ywf, L, m, k)  # 4 x 4 register block, eq. (K1)
            _tap_rows(w2, xflat, offs, ywf, L, m, m + 4, R4, R)  # leftover taps
            m += 4
        _tap_rows(w2, xflat, offs, ywf, L, m, O, ZERO, R)  # leftover output channels
        for o in range(OY):  # the real output channels (w2 may carry zero rows up to a multiple of 4)
            bo = b[o] if has_bias else zero
            for i in range(OH):
                s = np.uint64(o * L + i * WP)
                d = np.uint64(((n * OY + o) * OH + i) * OW)
                for j in range(OW):
                    yf[d + np.uint64(j)] = ywf[s + np.uint64(j)] + bo  # keep the OW real columns, + b[o], eq. (K1)


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_direct(x, w2, b, y, xf_ws, yw_ws, KH, KW, PH, PW, has_bias):
    """y (N, O, OH, OW) = stride-1 convolution of x (N, C, H, W) with w2 (O, C*KH*KW) (+ b).

    Parallel over images (prange over the T = len(xf_ws) workers, each with its own workspaces
    xf_ws[t] (C, HP*WP + KW-1) and yw_ws[t] (O, OH*WP)).
    """
    T = xf_ws.shape[0]
    for t in prange(T):
        _direct_images(x, w2, b, y, xf_ws[t], yw_ws[t], np.int64(t), T, KH, KW, PH, PW, has_bias)


@njit(cache=True, fastmath=True)
def conv2d_direct_serial(x, w2, b, y, xf_ws, yw_ws, KH, KW, PH, PW, has_bias):
    """``conv2d_direct`` on the calling thread alone (small batches)."""
    _direct_images(x, w2, b, y, xf_ws[0], yw_ws[0], ZERO, ONE, KH, KW, PH, PW, has_bias)


# --- grad-weight -------------------------------------------------------------------------------------
#
# dL/dw[o, k] = sum_n sum_{i,j} dL/dy[n,o,i,j] * xpad[n, c, i+p, j+q]                       (K4)
#             = sum_n sum_s gw_n[o, s] * xf_n[offs[k] + s]
#
# with gw_n the gradient laid on the same wide grid as the forward output (zeros in the thrown-away
# columns, so they add nothing) and offs[k] = c*LX + p*WP + q the start of tap k's run.  For each
# pair (o, k) that is one long dot product, over all images and positions.  The tiling: a 4 x 4 tile
# of 4 output channels x 4 taps keeps its 16 sums in registers over one image's positions (8 loads per
# 16 multiply-adds) and then adds them into the output.  A task owns 4 output channels and a range of
# tap tiles, and goes image by image: it lays its 4 gradient rows of the image on the wide grid in a
# small buffer of its own, and that buffer and the padded image stay in L1 while all its tap tiles run
# (going tile by tile instead, through every image for each, streamed the whole batch from L3 once per
# tile; laying the whole batch's gradient out wide first cost a quarter of the time of the CIFAR-10
# net's conv1, writing 9 MB that were read back once).  Tasks never share an output, so no sum is
# split between threads, and each output adds its images in order.


@njit(cache=True, fastmath=True)
def _pad_batch(x, xf_all, n0, step, PH, PW, WP):
    """xf_all[n] = padded, flattened x[n] for n = n0, n0 + step, ..."""
    for n in range(n0, x.shape[0], step):
        _pad_image(x[n], xf_all[n], PH, PW, WP)


@njit(cache=True, fastmath=True)
def _wide_rows(gy, n, m, buf, WP):
    """buf[u] = gy[n, m + u] on the wide grid (row i at i*WP), u < 4; rows past gy's channels stay zero,
    and so do the columns j >= OW (the caller zeroes buf once)."""
    O, OH, OW = gy.shape[1], gy.shape[2], gy.shape[3]
    L = buf.shape[1]
    bf, gf = buf.reshape(-1), gy.reshape(-1)
    for u in range(min(4, O - m)):
        for i in range(OH):
            d = np.uint64(u * L + i * WP)
            s = np.uint64(((n * O + m + u) * OH + i) * OW)
            for j in range(OW):
                bf[d + np.uint64(j)] = gf[s + np.uint64(j)]


@njit(cache=True, fastmath=True)
def _gw_tile(xflat, gf, L, offs, out, m, k, first):
    """out[m:m+4, k:k+4] (+)= 16 dot products of 4 gradient rows (gf: the (4, L) buffer, flat) with 4 shifted
    input runs of one image."""
    z = out.dtype.type(0)
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = z
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = z
    x0, x1, x2, x3 = np.uint64(offs[k]), np.uint64(offs[k + 1]), np.uint64(offs[k + 2]), np.uint64(offs[k + 3])
    uL = np.uint64(L)
    for s in range(L):
        u = np.uint64(s)
        a0, a1, a2, a3 = gf[u], gf[uL + u], gf[U2 * uL + u], gf[U3 * uL + u]
        v0, v1, v2, v3 = xflat[x0 + u], xflat[x1 + u], xflat[x2 + u], xflat[x3 + u]
        c00 += a0 * v0
        c01 += a0 * v1
        c02 += a0 * v2
        c03 += a0 * v3
        c10 += a1 * v0
        c11 += a1 * v1
        c12 += a1 * v2
        c13 += a1 * v3
        c20 += a2 * v0
        c21 += a2 * v1
        c22 += a2 * v2
        c23 += a2 * v3
        c30 += a3 * v0
        c31 += a3 * v1
        c32 += a3 * v2
        c33 += a3 * v3
    if first:
        out[m, k], out[m, k + 1], out[m, k + 2], out[m, k + 3] = c00, c01, c02, c03
        out[m + 1, k], out[m + 1, k + 1], out[m + 1, k + 2], out[m + 1, k + 3] = c10, c11, c12, c13
        out[m + 2, k], out[m + 2, k + 1], out[m + 2, k + 2], out[m + 2, k + 3] = c20, c21, c22, c23
        out[m + 3, k], out[m + 3, k + 1], out[m + 3, k + 2], out[m + 3, k + 3] = c30, c31, c32, c33
    else:
        out[m, k] += c00
        out[m, k + 1] += c01
        out[m, k + 2] += c02
        out[m, k + 3] += c03
        out[m + 1, k] += c10
        out[m + 1, k + 1] += c11
        out[m + 1, k + 2] += c12
        out[m + 1, k + 3] += c13
        out[m + 2, k] += c20
        out[m + 2, k + 1] += c21
        out[m + 2, k + 2] += c22
        out[m + 2, k + 3] += c23
        out[m + 3, k] += c30
        out[m + 3, k + 1] += c31
        out[m + 3, k + 2] += c32
        out[m + 3, k + 3] += c33


@njit(cache=True, fastmath=True)
def _gw_task(xf_all, gy, offs, out, t, k_groups, k_tiles, L, WP):
    """Task t: output rows 4*(t // k_groups) ... + 3 and its share (t % k_groups of k_groups) of the
    k_tiles tap tiles, image by image, the 4 gradient rows laid on the wide grid (L floats each).

    The caller pads O and R up to multiples of 4 (zero gradient rows; extra taps that read tap 0's
    run), so every tile is whole, and drops the padded rows and columns afterwards.
    """
    m = (t // k_groups) * 4
    g = t % k_groups
    kt0, kt1 = g * k_tiles // k_groups, (g + 1) * k_tiles // k_groups
    C, LX = xf_all.shape[1], xf_all.shape[2]
    buf = np.zeros((4, L), dtype=out.dtype)
    gf = buf.reshape(-1)
    for n in range(xf_all.shape[0]):
        xflat = xf_all[n].reshape(C * LX)
        _wide_rows(gy, n, m, buf, WP)
        for kt in range(kt0, kt1):
            _gw_tile(xflat, gf, L, offs, out, m, kt * 4, n == 0)


@njit(cache=True)
def _tap_offsets(R, R_real, KH, KW, LX, WP):
    """offs[k] = c*LX + p*WP + q for the R_real real taps; padded taps k >= R_real read tap 0's run."""
    offs = np.zeros(R, dtype=np.int64)
    for k in range(R_real):
        offs[k] = (k // (KH * KW)) * LX + ((k // KW) % KH) * WP + k % KW
    return offs


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_direct_grad_weight(x, gy, out, xf_all, KH, KW, PH, PW, T, L):
    """out = dL/dW2 of a stride-1 convolution, eq. (K4), with O and C*KH*KW padded up to multiples of 4.

    Twin: reference.conv2d_grad_weight.

    First, in parallel over images, every image is padded (xf_all (N, C, LX)); then, in parallel over
    tasks of 4 output channels and a share of the taps (about 2 per thread), ``_gw_task``, whose dot
    products run over L >= OH*WP positions of the wide grid (whole vectors; the extra ones are zeros).
    """
    WP = x.shape[3] + 2 * PW
    for t in prange(T):
        _pad_batch(x, xf_all, np.int64(t), T, PH, PW, WP)
    O, R = out.shape
    offs = _tap_offsets(R, x.shape[1] * KH * KW, KH, KW, xf_all.shape[2], WP)
    k_tiles = R // 4
    k_groups = min(k_tiles, (2 * T + O // 4 - 1) // (O // 4))  # at least 2 tasks per thread where possible
    for t in prange((O // 4) * k_groups):
        _gw_task(xf_all, gy, offs, out, np.int64(t), k_groups, k_tiles, L, WP)


@njit(cache=True, fastmath=True)
def conv2d_direct_grad_weight_serial(x, gy, out, xf_all, KH, KW, PH, PW, T, L):
    """``conv2d_direct_grad_weight`` on the calling thread alone (same tiles, same sums)."""
    WP = x.shape[3] + 2 * PW
    _pad_batch(x, xf_all, ZERO, ONE, PH, PW, WP)
    R = out.shape[1]
    offs = _tap_offsets(R, x.shape[1] * KH * KW, KH, KW, xf_all.shape[2], WP)
    k_tiles = R // 4
    for t in range(out.shape[0] // 4):
        _gw_task(xf_all, gy, offs, out, t, ONE, k_tiles, L, WP)
