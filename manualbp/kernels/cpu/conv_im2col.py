"""Convolution on the CPU as matrix products (im2col + the register-tiled products of ``gemm_dot.py``).

Derivation: derivations/04-conv2d.md; readable twins: ``reference.conv2d_forward``,
``reference.conv2d_grad_input``, ``reference.conv2d_grad_weight``.  Labels (K1)-(K5) are listed at the
top of ``reference.py``; this file also cites (K7) im2col, y[n] = W2 . col[n] + b, and (K8) the
gradients in that view, dL/dW2 = sum_n G[n] . col[n]^T and dL/dcol[n] = W2^T . G[n] (then "col2im").
The public wrappers live in ``conv.py``.

With P = OH*OW output positions and R = C*KH*KW weights per output channel, unroll each image into

    col[r, s] = xpad[c, i*SH + p*DH, j*SW + q*DW]     r = (c, p, q) = (c*KH + p)*KW + q,   s = i*OW + j   (K7)

(0 where the position lies in the padding; DH, DW the dilation, 1 but for a dilated convolution, (K10))
and view w as W2 (O, R).  Then

    forward      y[n] (O, P)  = W2 . col[n]                  (K7), which is (K1)
    grad-weight  dw (O, R)    = sum_n dL/dy[n] . col[n]^T    (K8), which is (K4)
    grad-input   dcol[n] (R, P) = W2^T . dL/dy[n]             (K8), then col2im: each entry added back
                 into the input position it was copied from  (K5)

All three products run along contiguous rows of length P: the forward pass adds rows of col into rows
of y and grad-input adds rows of dL/dy[n] into rows of dcol (``gemm_dot.nn_rows``); grad-weight takes
dot products of rows of dL/dy[n] with rows of col (``gemm_dot.nt_region``).

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
SH/SW stride, PH/PW padding, DH/DW dilation.
"""
import numpy as np
from numba import njit, prange

from .gemm_dot import TILE, nn_rows, nt_region

# Helpers get ints as these or as computed values, never as the literals 0 and 1, and parallel loops pass
# np.int64(t): Numba compiles a helper once per literal argument and once more for an unsigned prange index.
ZERO = np.int64(0)
ONE = np.int64(1)


# --- unrolling an image (im2col) --------------------------------------------------------------------


@njit(cache=True, inline="always")
def _valid_range(out_size, tap, pad, stride, in_size):
    """The output positions i in [lo, hi) whose input i*stride + tap - pad lies inside [0, in_size).

    Positions outside it would multiply zero padding, so the loops below skip them.
    """
    lo = 0
    if tap < pad:
        lo = (pad - tap + stride - 1) // stride  # smallest i with i*stride + tap - pad >= 0
    hi = 0
    if in_size - 1 + pad - tap >= 0:
        hi = (in_size - 1 + pad - tap) // stride + 1  # one past the largest i with i*stride + tap - pad < in_size
    hi = min(hi, out_size)
    hi = max(hi, lo)
    return lo, hi


@njit(cache=True)
def _im2col(xn, col, r0, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """col[r - r0, i*OW + j] = xpad[c, i*SH+p*DH, j*SW+q*DW] for r = (c*KH + p)*KW + q in [r0, r0 + len(col)).

    One weight tap per row, for one image xn (C, H, W): the row lists every input that tap touches, in
    output order, which is the order of dL/dy[n, o].ravel().  (K7) with all rows is col = rows [0, R).
    """
    _, H, W = xn.shape  # (C, H, W)
    zero = xn.dtype.type(0)
    for rr in range(col.shape[0]):
        r = r0 + rr
        c = r // (KH * KW)
        p = ((r // KW) % KH) * DH  # the tap's offset in the (dilated) window
        q = (r % KW) * DW
        j_lo, j_hi = _valid_range(OW, q, PW, SW, W)  # outputs j whose input column is not padding
        width = j_hi - j_lo
        row = col[rr]
        for i in range(OH):
            h = i * SH + p - PH
            seg = row[i * OW:(i + 1) * OW]
            if h < 0 or h >= H:
                for j in range(OW):
                    seg[j] = zero  # a row of zero padding
                continue
            for j in range(j_lo):
                seg[j] = zero  # left padding
            for j in range(j_hi, OW):
                seg[j] = zero  # right padding
            dst = seg[j_lo:j_hi]
            src = xn[c, h, j_lo * SW + q - PW:]
            if SW == 1:
                for j in range(width):
                    dst[j] = src[j]  # a contiguous copy
            else:
                for j in range(width):
                    dst[j] = src[j * SW]


# --- forward ----------------------------------------------------------------------------------------


@njit(cache=True, fastmath=True)
def _forward_images(x, w2, b, y3, col, n0, step, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, has_bias):
    """y3[n] = W2 . col[n] (+ b) for images n = n0, n0 + step, ... : one worker's share of the batch.

    ``col`` (R, P) is the worker's own unrolled image, reused from one image to the next.
    """
    O = w2.shape[0]
    P = y3.shape[2]
    for n in range(n0, x.shape[0], step):
        _im2col(x[n], col, ZERO, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)
        yn = y3[n]  # (O, P)
        nn_rows(w2, col, yn, ZERO, O)  # W2 . col[n] = sum_{c,p,q} w * xpad, eqs. (K7), (K1)
        if has_bias:
            for o in range(O):
                bo = b[o]
                row = yn[o]
                for s in range(P):
                    row[s] += bo  # + b[o], eq. (K1)


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_forward(x, w2, b, y3, ws, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, has_bias):
    """y3[n] (O, P) = W2 (O, R) . col[n] (R, P) (+ b), eqs. (K7), (K1).  Twin: reference.conv2d_forward.

    Parallel over images: worker t (prange over the T = len(ws) workspaces) takes images t, t + T, ...,
    unrolls each into its own workspace ws[t] (R, P), allocated once by the caller and reused across
    training steps, and writes its own y3[n].  Each output-channel row is a running sum of rows of col,
    four weights at a time (``gemm_dot.nn_rows``): long contiguous passes over the P positions.  An
    image's result does not depend on which worker computed it, so neither does any output.
    """
    T = ws.shape[0]
    for t in prange(T):
        _forward_images(x, w2, b, y3, ws[t], np.int64(t), T, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, has_bias)


@njit(cache=True, fastmath=True)
def conv2d_forward_serial(x, w2, b, y3, ws, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, has_bias):
    """``conv2d_forward`` on the calling thread alone (small batches): all images through ws[0]."""
    _forward_images(x, w2, b, y3, ws[0], ZERO, ONE, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, has_bias)


# --- grad-weight ------------------------------------------------------------------------------------


RG = 2 * TILE  # weight taps (rows of col) per grad-weight task: whole 4 x 4 tiles, whatever the threads


@njit(cache=True, fastmath=True)
def _grad_weight_group(x, gy3, gw2, g, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """Columns r0 = RG*g ... r0+RG of gw2, summed over the whole batch, image after image."""
    N = x.shape[0]
    O, R = gw2.shape
    P = gy3.shape[2]
    r0 = g * RG
    nr = min(RG, R - r0)
    col = np.empty((nr, P), dtype=x.dtype)  # rows r0:r0+nr of image n's col
    acc = np.zeros((O, nr), dtype=x.dtype)  # dL/dW2[:, r0:r0+nr]
    for n in range(N):
        _im2col(x[n], col, r0, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)
        nt_region(gy3[n], col, acc, 0, O, 0, nr, n > 0)  # + G[n] . col[n]^T, eq. (K8)
    for o in range(O):
        for rr in range(nr):
            gw2[o, r0 + rr] = acc[o, rr]


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_grad_weight(x, gy3, gw2, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """gw2 (O, R) = sum_n gy3[n] (O, P) . col[n]^T, eqs. (K8), (K4).  Twin: reference.conv2d_grad_weight.

    Parallel over groups of RG weight taps (prange): each thread owns the columns r0:r0+RG of gw2 and
    sums over the whole batch itself, image after image, so no sum is split between threads.  For each
    image it unrolls only its own RG rows of col (small enough to stay in L1) and adds
    gy3[n] . col_rows^T into its accumulator with the 4 x 4 register tiles of ``gemm_dot.nt_region``
    (dot products of length P along contiguous rows).
    """
    for g in prange((gw2.shape[1] + RG - 1) // RG):
        _grad_weight_group(x, gy3, gw2, np.int64(g), KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)


@njit(cache=True, fastmath=True)
def conv2d_grad_weight_serial(x, gy3, gw2, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """``conv2d_grad_weight`` on the calling thread alone (same groups, same sums)."""
    for g in range((gw2.shape[1] + RG - 1) // RG):
        _grad_weight_group(x, gy3, gw2, g, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)


# --- grad-input ------------------------------------------------------------------------------------


@njit(cache=True)
def _col2im(dcol, gxn, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """gxn[c, i*SH+p*DH-PH, j*SW+q*DW-PW] += dcol[(c*KH + p)*KW + q, i*OW + j], skipping the padding,
    eqs. (K5), (K13).

    The reverse of ``_im2col``: every entry of the unrolled gradient goes back to the input position it
    was copied from; where windows overlap, the contributions add up.  gxn (C, H, W) is zeroed first.
    """
    C, H, W = gxn.shape
    zero = gxn.dtype.type(0)
    for c in range(C):
        for h in range(H):
            for v in range(W):
                gxn[c, h, v] = zero
    uSW = np.uint64(SW)
    for r in range(dcol.shape[0]):
        c = r // (KH * KW)
        p = ((r // KW) % KH) * DH  # the tap's offset in the (dilated) window
        q = (r % KW) * DW
        i_lo, i_hi = _valid_range(OH, p, PH, SH, H)  # outputs whose input row is not padding
        j_lo, j_hi = _valid_range(OW, q, PW, SW, W)  # ... and whose input column is not padding
        width = j_hi - j_lo
        ur, uc = np.uint64(r), np.uint64(c)
        for i in range(i_lo, i_hi):
            # dcol[r, i*OW + j_lo + j] goes to the input it came from, gxn[c, i*SH + p - PH, (j_lo + j)*SW + q - PW]
            # (unsigned indices, no row slices: see conv_packed._pad_flat)
            s = np.uint64(i * OW + j_lo)
            h = np.uint64(i * SH + p - PH)
            w0 = np.uint64(j_lo * SW + q - PW)
            for j in range(width):
                u = np.uint64(j)
                gxn[uc, h, w0 + u * uSW] += dcol[ur, s + u]


@njit(cache=True, fastmath=True)
def _grad_input_images(gy3, w2t, gx, dcol, n0, step, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """gx[n] for images n = n0, n0 + step, ... through the worker's own dcol (R, P)."""
    R = w2t.shape[0]
    for n in range(n0, gy3.shape[0], step):
        nn_rows(w2t, gy3[n], dcol, 0, R)  # dL/dcol[n] = W2^T . G[n], eq. (K8)
        _col2im(dcol, gx[n], KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)  # back to the input positions, eq. (K5)


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_grad_input(gy3, w2t, gx, ws, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """gx[n] = col2im(W2^T (R, O) . gy3[n] (O, P)), eqs. (K8), (K5).  Twin: reference.conv2d_grad_input.

    Parallel over images, like the forward pass: worker t takes images t, t + T, ... and computes each
    image's unrolled gradient dcol (R, P) in its workspace ws[t], then adds it back into its own gx[n].
    Each row of dcol is a running sum of rows of dL/dy[n], four output channels at a time
    (``gemm_dot.nn_rows``): contiguous passes over the P positions.  Any stride, padding and dilation.
    """
    T = ws.shape[0]
    for t in prange(T):
        _grad_input_images(gy3, w2t, gx, ws[t], np.int64(t), T, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)


@njit(cache=True, fastmath=True)
def conv2d_grad_input_serial(gy3, w2t, gx, ws, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW):
    """``conv2d_grad_input`` on the calling thread alone (small batches)."""
    _grad_input_images(gy3, w2t, gx, ws[0], ZERO, ONE, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)
