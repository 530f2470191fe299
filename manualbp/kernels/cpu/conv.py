"""Convolution on the CPU: the wrappers that choose a kernel for each pass from the shapes.

Derivation: derivations/04-conv2d.md ((K1)-(K9)); readable twins: ``reference.conv2d_forward``,
``reference.conv2d_grad_input``, ``reference.conv2d_grad_weight``, ``reference.conv2d_grad_params``
(``tests/test_kernels.py`` and ``tests/test_packed.py`` hold them equal).

Which kernel runs, from the shapes only (so the rounding never depends on the thread count):
- groups > 1: each group on its own, as a convolution of its C/G input and O/G output channels (K10),
  its channels sliced out contiguous, through the choice below; the results side by side;
- a dilation other than 1: im2col (``conv_im2col.py``, whose windows take the dilation, (K10));
- stride 1 or 2, at least 32 output channels and 128 taps: the 8 x 32 tiles of ``conv_packed.py``
  (output positions x output channels), reading the padded image in place (for stride 2, its columns
  split into even and odd ones); grad-input of a stride-2 convolution goes to im2col;
- stride 1, 128 taps or more but fewer channels: the same tile turned around (``conv_packed.conv2d_rows``);
- stride 1 otherwise (the 75-tap first layers): shifted rows of the padded image (``conv_direct.py``);
- any other stride: im2col and the dot-product kernels (``conv_im2col.py``).
Grad-input of a stride-1 convolution is a convolution of dL/dy with the flipped kernel (K6), so it goes
through the same choice.  Each kernel has a serial twin run below ``PARALLEL_MIN_MACS`` multiply-adds.

An empty batch (N = 0) gives empty outputs and a zero weight gradient (a sum over no images), as torch.

Padding modes other than zeros are a gather before the convolution: ``conv_pad.py``.

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
SH/SW stride, PH/PW padding, DH/DW dilation, G groups.
"""
import functools

import numba
import numpy as np
from numba import njit, prange

from ..outputs import written
from . import conv_direct, conv_im2col, conv_packed
from .common import _ints, _up, _up4, workers, workspace
from .gemm_dot import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_MACS, transpose
from .tile import MR, NR, pack_panels


def _use_direct(stride):
    """Stride 1 goes through conv_direct.py.  (Measured: even where it computes 1.5x the useful outputs,
    small images with wide padding, it beats im2col, whose copying costs as much as the products.)"""
    return tuple(stride) == (1, 1)


def _use_packed(stride, O, R):
    """At least 32 output channels, nearly all of whole 32-channel panels (a panel is the width of the
    8 x 32 tile, padded with zero channels), and at least PACKED_MIN_TAPS taps: then the tiles of
    conv_packed.py beat the direct kernels (measured on the CIFAR-10 and LeNet-5 layers), and, for
    strides up to 2, im2col (measured on ResNet-20's stride-2 layers, 16 -> 32 and 32 -> 64 channels, at
    batch 64 on one thread: forward 5.3 -> 3.2 ms and 4.7 -> 2.4 ms, grad-weight 7.4 -> 2.8 ms and
    6.1 -> 1.8 ms).  The forward reads a stride-2 image with its
    columns split by phase; grad-weight only visits other positions (``_grad_weight_lists``)."""
    return max(stride) <= 2 and O >= 32 and _up(O, 32) * 4 <= O * 5 and R >= PACKED_MIN_TAPS


PACKED_MIN_TAPS = 128


def _use_rows(stride, R):
    """Stride 1 with at least PACKED_MIN_TAPS taps, where ``_use_packed`` said no (fewer than 32 output
    channels): the turned-around tiles of ``conv_packed.conv2d_rows`` beat the direct kernels there
    (measured on LeNet-5's conv2 and its grad-input; with 75 taps, LeNet-5's and the CIFAR-10 net's
    first layers, the direct kernels stay ahead)."""
    return tuple(stride) == (1, 1) and R >= PACKED_MIN_TAPS





def _direct(x, w2, b, y, KH, KW, PH, PW, has_bias):
    """y = stride-1 convolution of x with w2 (O, C*KH*KW), through ``conv_direct`` (no im2col)."""
    N, C, H, W = x.shape
    O = _up4(w2.shape[0])
    if O != w2.shape[0]:  # zero rows up to a multiple of 4: every output channel in a 4 x 4 register block
        w2 = np.concatenate([w2, np.zeros((O - w2.shape[0], w2.shape[1]), dtype=w2.dtype)])
    OH, OW = y.shape[2], y.shape[3]
    HP, WP = H + 2 * PH, W + 2 * PW
    T = workers(N, N * O * w2.shape[1] * OH * OW)
    L = _up(OH * WP, 16)  # whole 16-float vectors: no scalar leftovers in the inner loops
    xf = workspace("padded", (T, C, HP * WP + KW - 1 + L - OH * WP), x.dtype)  # one padded image per worker
    yw = workspace("wide", (T, O, L), x.dtype)  # one wide output per worker
    kernel = conv_direct.conv2d_direct if T > 1 else conv_direct.conv2d_direct_serial
    kernel(x, w2, b, y, xf, yw, KH, KW, PH, PW, has_bias)


def _packed(x, w2, b, y, KH, KW, PH, PW, SH=1, SW=1):
    """y = convolution of x with w2 (O, C*KH*KW) plus b (O,), strides (SH, SW), through ``conv_packed``."""
    N, C, H, W = x.shape
    O, R = w2.shape
    OH, OW = y.shape[2], y.shape[3]
    HP, WR = H + 2 * PH, _up(W + 2 * PW, SW)  # a padded row, its columns split by phase (SW of them)
    perm, offs = _row_first_taps(C, KH, KW, HP, W + 2 * PW, SW)
    wt = pack_panels(w2, NR, perm)
    T = workers(N, N * O * R * OH * OW)
    xf = workspace("padded-flat", (T, C * HP * WR + WR + MR), x.dtype)  # + slack past the image
    kernel = conv_packed.conv2d_packed if T > 1 else conv_packed.conv2d_packed_serial
    kernel(x, wt, b, y, PH, PW, offs, xf, np.int64(SH), np.int64(SW), np.int64(KH))


@functools.lru_cache(maxsize=64)
def _tap_offsets(C, KH, KW, HP, WP):
    """offs[r] = c*HP*WP + p*WP + q: where tap r = (c, p, q) reads in a padded, flattened image.  Cached
    per shape; the kernels only read it."""
    r = np.arange(C * KH * KW)
    return (r // (KH * KW)) * (HP * WP) + ((r // KW) % KH) * WP + r % KW


@functools.lru_cache(maxsize=64)
def _row_first_taps(C, KH, KW, HP, WP, SW=1):
    """(perm, offs): the taps in the order k = (p, c, q), kernel row first, as ``conv2d_packed`` and
    ``conv2d_rows`` want them (kernel rows that read only zero padding are a contiguous run of k):
    perm[k] = r = (c, p, q), the column of w2 = w.reshape(O, -1) that tap k is, and offs[k] where it reads
    in the padded, flattened image, whose rows of WP columns are split into SW phases of WE = ceil(WP/SW)
    (``conv_packed._pad_flat``): offs[k] = c*HP*WR + p*WR + (q % SW)*WE + q // SW, WR = SW*WE.  Cached per
    shape; the kernels only read them."""
    p, c, q = np.meshgrid(np.arange(KH), np.arange(C), np.arange(KW), indexing="ij")
    perm = (c * (KH * KW) + p * KW + q).ravel()
    if SW == 1:
        return perm, _tap_offsets(C, KH, KW, HP, WP)[perm]
    WE = -(-WP // SW)
    WR = SW * WE
    return perm, (c * (HP * WR) + p * WR + (q % SW) * WE + q // SW).ravel()


def _rows(x, w2, b, y, KH, KW, PH, PW):
    """y = stride-1 convolution of x with w2 (O, C*KH*KW) plus b (O,), through ``conv_packed.conv2d_rows``
    (8 output channels x 32 outputs of the wide grid per tile)."""
    N, C, H, W = x.shape
    O, R = w2.shape
    OH = y.shape[2]
    HP, WP = H + 2 * PH, W + 2 * PW
    perm, offs = _row_first_taps(C, KH, KW, HP, WP)
    wr = pack_panels(w2, MR, perm)
    bias8 = b if O % MR == 0 else np.concatenate([b, np.zeros(wr.shape[0] * MR - O, b.dtype)])
    T = workers(N, N * O * R * OH * WP)
    xf = workspace("padded-flat", (T, C * HP * WP + KW + NR), x.dtype)  # + slack past the image
    yw = workspace("wide-rows", (T, bias8.shape[0], _up(OH * WP, NR)), x.dtype)
    kernel = conv_packed.conv2d_rows if T > 1 else conv_packed.conv2d_rows_serial
    kernel(x, wr, bias8, y, PH, PW, offs, xf, yw)


def _groups(C, O, groups):
    """(slice of the C/G input channels, slice of the O/G output channels) of each group, (K10)."""
    Cg, Og = C // groups, O // groups
    return [(slice(g * Cg, (g + 1) * Cg), slice(g * Og, (g + 1) * Og)) for g in range(groups)]


def conv2d_forward(x, w, b, stride, padding, dilation=(1, 1), groups=1):
    """(N, C, H, W) -> (N, O, OH, OW), eqs. (K1), (K10).  Twin of reference.conv2d_forward; see its docstring."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    SH, SW = _ints(stride)
    PH, PW = _ints(padding)
    DH, DW = _ints(dilation)
    OH = (H + 2 * PH - DH * (KH - 1) - 1) // SH + 1  # (K11); (K2) for dilation 1
    OW = (W + 2 * PW - DW * (KW - 1) - 1) // SW + 1
    if N == 0:
        return np.zeros((0, O, OH, OW), dtype=x.dtype)
    if groups != 1:  # each group is a convolution of its own channels (K10)
        return np.concatenate([
            conv2d_forward(x[:, cs], w[os], None if b is None else b[os], stride, padding, dilation)
            for cs, os in _groups(C, O, groups)], axis=1)
    w2 = np.ascontiguousarray(w, dtype=x.dtype).reshape(O, C * KH * KW)  # W2[o] = w[o].ravel()
    y = np.empty((N, O, OH, OW), dtype=x.dtype)
    has_bias = b is not None
    # Always pass an array for b: one specialisation per dtype, with or without bias.
    bias = np.ascontiguousarray(b, dtype=x.dtype) if has_bias else np.zeros(O, dtype=x.dtype)
    undilated = DH == 1 and DW == 1  # the stride-1 kernels read taps side by side; a dilated one goes to im2col
    if undilated and _use_packed((SH, SW), O, C * KH * KW):  # 8 x 32 tiles reading the padded image in place
        _packed(x, w2, bias, y, KH, KW, PH, PW, SH, SW)
        return y
    if undilated and _use_rows((SH, SW), C * KH * KW):  # 8 channels x 32 wide outputs per tile, read in place
        _rows(x, w2, bias, y, KH, KW, PH, PW)
        return y
    if undilated and _use_direct((SH, SW)):  # shifted rows of the padded image instead of im2col (conv_direct.py)
        _direct(x, w2, bias, y, KH, KW, PH, PW, has_bias)
        return y
    T = workers(N, N * O * w2.shape[1] * OH * OW)
    ws = workspace("col", (T, w2.shape[1], OH * OW), x.dtype)  # one unrolled image (R, P) per worker
    kernel = conv_im2col.conv2d_forward if T > 1 else conv_im2col.conv2d_forward_serial
    kernel(x, w2, bias, y.reshape(N, O, OH * OW), ws, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, has_bias)
    return y


def conv2d_grad_input(grad_y, w, x_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dx, (N, C, H, W), eqs. (K8), (K5), (K13).  Twin of reference.conv2d_grad_input; see its docstring."""
    gy = np.ascontiguousarray(grad_y)
    N, O, OH, OW = gy.shape
    _, C, KH, KW = w.shape
    SH, SW = _ints(stride)
    PH, PW = _ints(padding)
    DH, DW = _ints(dilation)
    if N == 0:
        return np.zeros(tuple(int(s) for s in x_shape), dtype=gy.dtype)
    if groups != 1:  # each group's outputs flow back into its own input channels only (K13)
        shape = (N, C, int(x_shape[2]), int(x_shape[3]))
        return np.concatenate([conv2d_grad_input(gy[:, os], w[os], shape, stride, padding, dilation)
                               for _, os in _groups(C * groups, O, groups)], axis=1)
    gx = np.empty(tuple(int(s) for s in x_shape), dtype=gy.dtype)
    if DH == 1 and DW == 1 and _use_direct((SH, SW)) and PH < KH and PW < KW:
        # For stride 1, dL/dx is the convolution of dL/dy, padded by (KH-1-PH, KW-1-PW), with the kernel
        # flipped and its channel axes swapped: wf[c, o, u, v] = w[o, c, KH-1-u, KW-1-v] (conv_direct.py).
        wf = np.ascontiguousarray(np.asarray(w, dtype=gy.dtype).transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        if _use_packed((SH, SW), C, O * KH * KW):
            _packed(gy, wf.reshape(C, O * KH * KW), np.zeros(C, dtype=gy.dtype), gx, KH, KW, KH - 1 - PH, KW - 1 - PW)
            return gx
        if _use_rows((SH, SW), O * KH * KW):
            _rows(gy, wf.reshape(C, O * KH * KW), np.zeros(C, dtype=gy.dtype), gx, KH, KW, KH - 1 - PH, KW - 1 - PW)
            return gx
        _direct(gy, wf.reshape(C, O * KH * KW), np.zeros(C, dtype=gy.dtype), gx, KH, KW, KH - 1 - PH,
                KW - 1 - PW, False)
        return gx
    w2t = transpose(np.ascontiguousarray(w, dtype=gy.dtype).reshape(O, C * KH * KW))  # W2^T, (R, O)
    T = workers(N, N * O * w2t.shape[0] * OH * OW)
    ws = workspace("col", (T, w2t.shape[0], OH * OW), gy.dtype)  # one unrolled gradient (R, P) per worker
    kernel = conv_im2col.conv2d_grad_input if T > 1 else conv_im2col.conv2d_grad_input_serial
    kernel(gy.reshape(N, O, OH * OW), w2t, gx, ws, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)
    return gx


@njit(cache=True, fastmath=True, parallel=True)
def _bias_sums(g3, out):
    """out[o] = sum over n and positions of g3[n, o, :], eq. (K3): each channel summed by one thread,
    plane by plane in image order, always by this one compiled loop (vectorized), so the bits do not
    depend on the thread count.  (The CIFAR-10 net's conv1 at batch 64: 0.07 ms, NumPy's sum over axes
    (0, 2, 3) 0.35 ms.)"""
    N, O, P = g3.shape
    for o in prange(O):
        total = g3.dtype.type(0)
        for n in range(N):
            plane = g3[n, o]
            part = g3.dtype.type(0)
            for k in range(P):
                part += plane[k]
            total += part
        out[o] = total


def conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias, dilation=(1, 1), groups=1, out=(None, None)):
    """(dL/dw, dL/db or None), eqs. (K4), (K12), (K3).  Twin of reference.conv2d_grad_params (``out`` as there)."""
    if out[0] is not None or out[1] is not None:
        gw, gb = conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias, dilation, groups)
        return written(out[0], gw), (written(out[1], gb) if with_bias else None)
    gw = conv2d_grad_weight(grad_y, x, w_shape, stride, padding, dilation, groups)
    if not with_bias:
        return gw, None
    gy = np.ascontiguousarray(grad_y)
    if gy.size < PARALLEL_MIN_ELEMENTS:  # small (a step at batch 1): not worth waking the thread pool
        return gw, gy.sum(axis=(0, 2, 3))
    N, O = gy.shape[0], gy.shape[1]
    gb = np.empty(O, dtype=gy.dtype)
    _bias_sums(gy.reshape(N, O, gy.shape[2] * gy.shape[3]), gb)
    return gw, gb


def conv2d_grad_weight(grad_y, x, w_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dw, (O, C/G, KH, KW), eqs. (K4), (K8), (K12).  Twin of reference.conv2d_grad_weight; see its docstring."""
    gy = np.ascontiguousarray(grad_y)
    x = np.ascontiguousarray(x, dtype=gy.dtype)
    N, O, OH, OW = gy.shape
    _, C, KH, KW = (int(s) for s in w_shape)
    SH, SW = _ints(stride)
    PH, PW = _ints(padding)
    DH, DW = _ints(dilation)
    if N == 0:
        return np.zeros((O, C, KH, KW), dtype=gy.dtype)  # a sum over no images
    if groups != 1:  # each group's weights see its own channels only (K12)
        shape = (O // groups, C, KH, KW)
        return np.concatenate([conv2d_grad_weight(gy[:, os], x[:, cs], shape, stride, padding, dilation)
                               for cs, os in _groups(x.shape[1], O, groups)], axis=0)
    gw = np.empty((O, C * KH * KW), dtype=gy.dtype)
    parallel = N * O * C * KH * KW * OH * OW >= PARALLEL_MIN_MACS
    H, W = x.shape[2], x.shape[3]
    undilated = DH == 1 and DW == 1
    if undilated and _use_packed((SH, SW), O, C * KH * KW):  # 8 x 32 tiles on channels-last images (conv_packed.py)
        HP, WP = H + 2 * PH, W + 2 * PW
        SP, OP = _up(KW * C, MR), _up(O, NR)
        xh = workspace("channels-last", (N, HP * WP * C + MR), gy.dtype)
        gb = workspace("grad-panels", (OP // NR, N * OH * OW * NR), gy.dtype)
        dWt = np.empty((KH, SP, OP), dtype=gy.dtype)
        visits = _grad_weight_lists(C, H, W, KH, KW, PH, PW, xh.shape[1], SP, SH, SW)  # positions off the padding
        if parallel:
            conv_packed.conv2d_packed_grad_weight(x, gy, dWt, xh, gb, PH, PW, numba.get_num_threads(), *visits)
        else:
            conv_packed.conv2d_packed_grad_weight_serial(x, gy, dWt, xh, gb, PH, PW, *visits)
        # dWt[p, q*C + c, o] = dL/dw[o, c, p, q]
        return np.ascontiguousarray(dWt[:, :KW * C, :O].reshape(KH, KW, C, O).transpose(3, 2, 0, 1))
    if undilated and _use_rows((SH, SW), C * KH * KW):  # the tile turned around: 8 channels x 32 taps
        HP, WP = H + 2 * PH, W + 2 * PW
        O8, SP = _up(O, MR), _up(KW * C, NR)
        xh = workspace("channels-last-rows", (N, HP * WP * C + NR), gy.dtype)
        g8 = workspace("grad-rows", (O8 // MR, N * OH * OW * MR), gy.dtype)
        dWr = np.empty((KH, O8, SP), dtype=gy.dtype)
        visits = _grad_weight_row_lists(C, H, W, KH, KW, PH, PW, xh.shape[1])
        if parallel:
            conv_packed.conv2d_rows_grad_weight(x, gy, dWr, xh, g8, PH, PW, numba.get_num_threads(), *visits)
        else:
            conv_packed.conv2d_rows_grad_weight_serial(x, gy, dWr, xh, g8, PH, PW, *visits)
        # dWr[p, o, q*C + c] = dL/dw[o, c, p, q]
        return np.ascontiguousarray(dWr[:, :O, :KW * C].reshape(KH, O, KW, C).transpose(1, 3, 0, 2))
    if undilated and _use_direct((SH, SW)):  # shifted runs of the padded images instead of im2col
        HP, WP = H + 2 * PH, W + 2 * PW
        O4, R4 = _up4(O), _up4(C * KH * KW)  # whole 4 x 4 tiles: zero rows, repeated taps, dropped after
        L = _up(OH * WP, 16)  # whole 16-float vectors, as in _direct
        xf = workspace("padded-batch", (N, C, HP * WP + KW - 1 + L - OH * WP), gy.dtype)
        gw4 = np.empty((O4, R4), dtype=gy.dtype)
        T = max(1, min(numba.get_num_threads(), N)) if parallel else 1
        kernel = conv_direct.conv2d_direct_grad_weight if parallel else conv_direct.conv2d_direct_grad_weight_serial
        kernel(x, gy, gw4, xf, KH, KW, PH, PW, T, L)
        return np.ascontiguousarray(gw4[:O, :C * KH * KW]).reshape(O, C, KH, KW)
    kernel = conv_im2col.conv2d_grad_weight if parallel else conv_im2col.conv2d_grad_weight_serial
    kernel(x, gy.reshape(N, O, OH * OW), gw, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW)
    return gw.reshape(O, C, KH, KW)


@functools.lru_cache(maxsize=32)
def _grad_weight_lists(C, H, W, KH, KW, PH, PW, L, SP, SH=1, SW=1):
    """(lists, ka, kb, counts): the output positions that each block of 8 rows of ``conv2d_packed_grad_weight``
    visits, those whose inputs for its tap (p, q) are real pixels, not the zero padding (see conv_packed.py).

    For a group of ``group`` = GW_KC // P images (at least 1), list g holds, in order of (u, i, j),
    ka[g, k] = u*L + (i*WP + j)*C and kb[g, k] = (u*P + i*OW + j)*32 for image u of the group and output
    position (i, j); counts[g] positions per image, so the first m images of a group are its first
    m*counts[g] entries.  List p*KW + q keeps rows PH <= i + p < H + PH and columns PW <= j + q < W + PW;
    list KH*KW + p keeps those rows and every column, for blocks whose 8 rows s = q*C + c straddle two
    values of q (or lie in the scratch rows s >= KW*C).  lists[b] is block b's list.  Cached per shape
    (not per batch size); the kernels only read them."""
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    P, WP = OH * OW, W + 2 * PW
    group = max(1, conv_packed.GW_KC // P)
    u, i, j = np.meshgrid(np.arange(group), np.arange(OH), np.arange(OW), indexing="ij")
    i, j = SH * i, SW * j  # where output (i, j) reads tap (0, 0) in the padded image, (K1)
    a_all, b_all = u * L + (i * WP + j) * C, (u * P + i // SH * OW + j // SW) * NR
    G = KH * KW + KH
    ka, kb = np.zeros((G, group * P), np.int64), np.zeros((G, group * P), np.int64)
    counts = np.zeros(G, np.int64)
    for p in range(KH):
        rows = (i + p >= PH) & (i + p < H + PH)
        for q in range(KW + 1):  # q == KW: every column
            keep = rows & (j + q >= PW) & (j + q < W + PW) if q < KW else rows
            g = p * KW + q if q < KW else KH * KW + p
            n = int(keep.sum())
            ka[g, :n], kb[g, :n], counts[g] = a_all[keep], b_all[keep], n // group
    nsb = SP // MR
    b = np.arange(KH * nsb)
    p, s0 = b // nsb, (b % nsb) * MR
    q0, q1 = s0 // C, (s0 + MR - 1) // C
    lists = np.where((q0 == q1) & (q0 < KW), p * KW + q0, KH * KW + p).astype(np.int64)
    return lists, ka, kb, counts


@functools.lru_cache(maxsize=32)
def _grad_weight_row_lists(C, H, W, KH, KW, PH, PW, L):
    """(ka, kb, counts) for ``conv2d_rows_grad_weight``: row p lists the positions of a group of images
    whose tap row p reads a real image row (list KH*KW + p of ``_grad_weight_lists``), with kb in units
    of the 8-channel panels of dL/dy instead of 32."""
    _, ka, kb, counts = _grad_weight_lists(C, H, W, KH, KW, PH, PW, L, MR)
    rows = slice(KH * KW, KH * KW + KH)
    return (np.ascontiguousarray(ka[rows]), kb[rows] // NR * MR,
            np.ascontiguousarray(counts[rows]))

