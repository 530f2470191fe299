"""The kernels on the CPU, compiled by Numba: the public wrappers, and max-pooling.

Derivations: derivations/03-linear.md (matmul), derivations/04-conv2d.md (convolution),
derivations/05-maxpool.md (max-pooling).  Equation labels (L*), (K*), (P*) are listed at the top of
``reference.py``, whose functions are the readable twins of the ones here: same names, same
signatures, same results (``tests/test_kernels.py`` and ``tests/test_packed.py`` hold them equal).
The fast path of matrix products and of stride-1 convolutions with at least 128 taps is the 8 x 32
outer-product register tile of ``cpu_packed.py`` (8 output positions x 32 output channels per tile
from 32 output channels up, else 8 output channels x 32 outputs, as in LeNet-5's conv2); short
products use the dot-product and row-sum kernels of ``cpu_gemm.py``; stride-1 convolutions with
fewer taps (the first layers, 75 taps) ``cpu_direct.py`` (shifted rows of the padded image, no
unrolled copy), and any other stride ``cpu_conv.py`` (im2col).

Each public function is a thin Python wrapper: it makes the arrays C-contiguous, allocates the output
and passes plain ints, so each kernel compiles exactly one specialisation per dtype (float32 and
float64) and caches it on disk.  The kernels themselves never check anything: the layers validated
shapes and dtypes before calling here, and a Numba kernel indexing out of bounds corrupts memory
rather than raising.

Parallelism: ``prange`` only over loops where each iteration writes its own outputs (matmul blocks,
conv images, grad-weight tiles, pooling (n, c) planes).  No float is ever summed across threads, so
results are bit-identical whatever NUMBA_NUM_THREADS is.  Every parallel kernel has a serial twin that
runs the same tasks in order; the wrappers pick it for small problems (below ``PARALLEL_MIN_MACS``
multiply-adds or ``PARALLEL_MIN_ELEMENTS`` elements, ``POOL_PARALLEL_MIN_ELEMENTS`` for pooling; from
the shapes only), where waking the thread pool costs more than the work (a training step at batch
1).  The convolutions' large scratch arrays are ``workspace``s, allocated once per shape and reused from step to step.

Speed habits:
- inner loops run over contiguous memory with an index starting at 0 (a row or slice is taken first),
  so Numba can drop its negative-index check and LLVM can vectorize;
- products keep a block of outputs in registers for the whole sum: outer products of packed panels
  (``cpu_packed.py``), or dot products of contiguous rows for short products (``cpu_gemm.py``);
- accumulators start as ``x.dtype.type(0)``, so a float32 kernel stays float32 (a bare ``0.0`` would
  promote the sum to float64).

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
SH/SW stride, PH/PW padding.
"""
import functools
import threading

import numba
import numpy as np
from numba import njit, prange

from . import cpu_conv, cpu_direct, cpu_packed, cpu_train
from .cpu_gemm import (
    PARALLEL_MIN_ELEMENTS,
    PARALLEL_MIN_MACS,
    matmul_nn,
    matmul_nn_serial,
    matmul_nt,
    matmul_nt_serial,
    transpose,
)

# Labels (K7), (K8) (the im2col view of a convolution) are explained in cpu_conv.py.

# Max-pooling must see NaNs (torch lets a NaN win the max), so its kernels keep every fast-math flag
# except 'nnan' and 'ninf' (which would let LLVM assume that neither NaN nor infinity ever occurs).
_POOL_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Pooling reads each input once and does almost no arithmetic, so its (n, c) planes are worth sharing
# among the threads from a smaller size than the products: measured with the thread pool awake (as it
# is after a convolution), two threads already halve the time at 16 x 6 x 28 x 28 inputs.
POOL_PARALLEL_MIN_ELEMENTS = 1 << 14

# --- matrix product ----------------------------------------------------------------------------------


# Products whose inner size K is at most NN_MAX_K, or with at most NN_MAX_M rows (a small batch), use
# the "NN" form (rows of b added into rows of the output), which needs no packing; x . W^T with at most
# NT_MAX_M rows (a Linear layer's forward up to batch 64) the "NT" form (dot products of rows, no
# copies); the others the 8 x 32 register tiles of cpu_packed.py, whose packing pays off only on
# larger products.
NN_MAX_K = 64
NN_MAX_M = 64
NT_MAX_M = 64


def matmul(a, b, transpose_a=False, transpose_b=False):
    """op(a) @ op(b) -> (M, N), eqs. (L1)-(L3).  Twin of reference.matmul; see its docstring for shapes.

    Three layouts, chosen from the shapes only (so the rounding never depends on the thread count):
    - K <= NN_MAX_K or M <= NN_MAX_M, and b not transposed (a Linear layer's backward):
      ``cpu_gemm.matmul_nn`` reads b as it is, (K, N) rows, and only op(a) may need a transposed copy;
    - a . b^T with at most NT_MAX_M rows (a Linear layer's forward): ``cpu_gemm.matmul_nt``, dot products
      of rows of a and rows of b, nothing copied;
    - otherwise ``cpu_packed.matmul_packed`` copies op(a) and op(b) into panels (reading either layout)
      and runs its 8 x 32 register tiles.
    Each runs serially below PARALLEL_MIN_MACS multiply-adds, else on all threads.
    """
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b, dtype=a.dtype)
    M, K = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    N = b.shape[0] if transpose_b else b.shape[1]
    out = np.empty((M, N), dtype=a.dtype)
    big = M * K * N >= PARALLEL_MIN_MACS
    if (K <= NN_MAX_K or M <= NN_MAX_M) and not transpose_b:
        A = transpose(a) if transpose_a else a  # (M, K)
        (matmul_nn if big else matmul_nn_serial)(A, b, out)
        return out
    if M <= NT_MAX_M and transpose_b and not transpose_a:  # x . W^T: rows of both, read in place
        (matmul_nt if big else matmul_nt_serial)(a, b, out)
        return out
    T = numba.get_num_threads() if big else 1
    b_shape, a_shape = cpu_packed.matmul_panel_shapes(M, N, K, T)
    Bp, Ap = workspace("matmul-b-panels", b_shape, a.dtype), workspace("matmul-a-panels", a_shape, a.dtype)
    if big:
        cpu_packed.matmul_packed(a, transpose_a, b, transpose_b, out, Bp, Ap)
    else:
        cpu_packed.matmul_packed_serial(a, transpose_a, b, transpose_b, out, Bp, Ap)
    return out


# --- convolution -------------------------------------------------------------------------------------


def _ints(pair):
    return int(pair[0]), int(pair[1])


# Workspaces: the unrolled images (col, dcol) of the convolutions are large (R x P floats per worker)
# and needed at every step with the same shapes, so they are allocated once and kept here, keyed by
# shape, dtype and calling thread (two Python threads never share one).  At most a few per layer shape.
_workspaces = {}


def workspace(name, shape, dtype):
    """A cached, uninitialised array of this shape and dtype for the calling thread (``name``: its use)."""
    key = (name, tuple(shape), np.dtype(dtype).str, threading.get_ident())
    ws = _workspaces.get(key)
    if ws is None:
        if len(_workspaces) >= 64:  # many different shapes: forget the old ones
            _workspaces.clear()
        ws = _workspaces[key] = np.empty(shape, dtype=dtype)
    return ws


def _workers(n_items, macs):
    """How many workers a kernel over ``n_items`` images gets: 1 (serial) for small work, else the threads."""
    if macs < PARALLEL_MIN_MACS or n_items < 2:
        return 1
    return max(1, min(numba.get_num_threads(), n_items))


def _use_direct(stride):
    """Stride 1 goes through cpu_direct.py.  (Measured: even where it computes 1.5x the useful outputs,
    small images with wide padding, it beats im2col, whose copying costs as much as the products.)"""
    return tuple(stride) == (1, 1)


def _use_packed(stride, O, R):
    """Stride 1 with at least 32 output channels, nearly all of whole 32-channel panels (a panel is the
    width of the 8 x 32 tile, padded with zero channels), and at least PACKED_MIN_TAPS taps: then the
    tiles of cpu_packed.py beat the direct kernels (measured on the CIFAR-10 and LeNet-5 layers)."""
    return tuple(stride) == (1, 1) and O >= 32 and _up(O, 32) * 4 <= O * 5 and R >= PACKED_MIN_TAPS


PACKED_MIN_TAPS = 128


def _use_rows(stride, R):
    """Stride 1 with at least PACKED_MIN_TAPS taps, where ``_use_packed`` said no (fewer than 32 output
    channels): the turned-around tiles of ``cpu_packed.conv2d_rows`` beat the direct kernels there
    (measured on LeNet-5's conv2 and its grad-input; with 75 taps, LeNet-5's and the CIFAR-10 net's
    first layers, the direct kernels stay ahead)."""
    return tuple(stride) == (1, 1) and R >= PACKED_MIN_TAPS


def _up(n, multiple):
    return (n + multiple - 1) // multiple * multiple


def _up4(n):
    return _up(n, 4)


def _direct(x, w2, b, y, KH, KW, PH, PW, has_bias):
    """y = stride-1 convolution of x with w2 (O, C*KH*KW), through ``cpu_direct`` (no im2col)."""
    N, C, H, W = x.shape
    O = _up4(w2.shape[0])
    if O != w2.shape[0]:  # zero rows up to a multiple of 4: every output channel in a 4 x 4 register block
        w2 = np.concatenate([w2, np.zeros((O - w2.shape[0], w2.shape[1]), dtype=w2.dtype)])
    OH, OW = y.shape[2], y.shape[3]
    HP, WP = H + 2 * PH, W + 2 * PW
    T = _workers(N, N * O * w2.shape[1] * OH * OW)
    L = _up(OH * WP, 16)  # whole 16-float vectors: no scalar leftovers in the inner loops
    xf = workspace("padded", (T, C, HP * WP + KW - 1 + L - OH * WP), x.dtype)  # one padded image per worker
    yw = workspace("wide", (T, O, L), x.dtype)  # one wide output per worker
    kernel = cpu_direct.conv2d_direct if T > 1 else cpu_direct.conv2d_direct_serial
    kernel(x, w2, b, y, xf, yw, KH, KW, PH, PW, has_bias)


def _packed(x, w2, b, y, KH, KW, PH, PW):
    """y = stride-1 convolution of x with w2 (O, C*KH*KW) plus b (O,), through ``cpu_packed``."""
    N, C, H, W = x.shape
    O, R = w2.shape
    OH, OW = y.shape[2], y.shape[3]
    HP, WP = H + 2 * PH, W + 2 * PW
    perm, offs = _row_first_taps(C, KH, KW, HP, WP)
    wt = cpu_packed.pack_panels(w2, cpu_packed.NR, perm)
    T = _workers(N, N * O * R * OH * OW)
    xf = workspace("padded-flat", (T, C * HP * WP + WP + cpu_packed.MR), x.dtype)  # + slack past the image
    kernel = cpu_packed.conv2d_packed if T > 1 else cpu_packed.conv2d_packed_serial
    kernel(x, wt, b, y, PH, PW, offs, xf)


@functools.lru_cache(maxsize=64)
def _tap_offsets(C, KH, KW, HP, WP):
    """offs[r] = c*HP*WP + p*WP + q: where tap r = (c, p, q) reads in a padded, flattened image.  Cached
    per shape; the kernels only read it."""
    r = np.arange(C * KH * KW)
    return (r // (KH * KW)) * (HP * WP) + ((r // KW) % KH) * WP + r % KW


@functools.lru_cache(maxsize=64)
def _row_first_taps(C, KH, KW, HP, WP):
    """(perm, offs): the taps in the order k = (p, c, q), kernel row first, as ``conv2d_packed`` and
    ``conv2d_rows`` want them (kernel rows that read only zero padding are a contiguous run of k):
    perm[k] = r = (c, p, q), the column of w2 = w.reshape(O, -1) that tap k is, and offs[k] where it reads
    in the padded, flattened image.  Cached per shape; the kernels only read them."""
    p, c, q = np.meshgrid(np.arange(KH), np.arange(C), np.arange(KW), indexing="ij")
    perm = (c * (KH * KW) + p * KW + q).ravel()
    return perm, _tap_offsets(C, KH, KW, HP, WP)[perm]


def _rows(x, w2, b, y, KH, KW, PH, PW):
    """y = stride-1 convolution of x with w2 (O, C*KH*KW) plus b (O,), through ``cpu_packed.conv2d_rows``
    (8 output channels x 32 outputs of the wide grid per tile)."""
    N, C, H, W = x.shape
    O, R = w2.shape
    OH = y.shape[2]
    HP, WP = H + 2 * PH, W + 2 * PW
    perm, offs = _row_first_taps(C, KH, KW, HP, WP)
    wr = cpu_packed.pack_panels(w2, cpu_packed.MR, perm)
    bias8 = b if O % cpu_packed.MR == 0 else np.concatenate([b, np.zeros(wr.shape[0] * cpu_packed.MR - O, b.dtype)])
    T = _workers(N, N * O * R * OH * WP)
    xf = workspace("padded-flat", (T, C * HP * WP + KW + cpu_packed.NR), x.dtype)  # + slack past the image
    yw = workspace("wide-rows", (T, bias8.shape[0], _up(OH * WP, cpu_packed.NR)), x.dtype)
    kernel = cpu_packed.conv2d_rows if T > 1 else cpu_packed.conv2d_rows_serial
    kernel(x, wr, bias8, y, PH, PW, offs, xf, yw)


def conv2d_forward(x, w, b, stride, padding):
    """(N, C, H, W) -> (N, O, OH, OW), eq. (K1).  Twin of reference.conv2d_forward; see its docstring."""
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    SH, SW = _ints(stride)
    PH, PW = _ints(padding)
    OH = (H + 2 * PH - KH) // SH + 1  # (K2)
    OW = (W + 2 * PW - KW) // SW + 1
    w2 = np.ascontiguousarray(w, dtype=x.dtype).reshape(O, C * KH * KW)  # W2[o] = w[o].ravel()
    y = np.empty((N, O, OH, OW), dtype=x.dtype)
    has_bias = b is not None
    # Always pass an array for b: one specialisation per dtype, with or without bias.
    bias = np.ascontiguousarray(b, dtype=x.dtype) if has_bias else np.zeros(O, dtype=x.dtype)
    if _use_packed((SH, SW), O, C * KH * KW):  # 8 x 32 tiles reading the padded image in place
        _packed(x, w2, bias, y, KH, KW, PH, PW)
        return y
    if _use_rows((SH, SW), C * KH * KW):  # 8 channels x 32 wide outputs per tile, image read in place
        _rows(x, w2, bias, y, KH, KW, PH, PW)
        return y
    if _use_direct((SH, SW)):  # shifted rows of the padded image instead of im2col (cpu_direct.py)
        _direct(x, w2, bias, y, KH, KW, PH, PW, has_bias)
        return y
    T = _workers(N, N * O * w2.shape[1] * OH * OW)
    ws = workspace("col", (T, w2.shape[1], OH * OW), x.dtype)  # one unrolled image (R, P) per worker
    kernel = cpu_conv.conv2d_forward if T > 1 else cpu_conv.conv2d_forward_serial
    kernel(x, w2, bias, y.reshape(N, O, OH * OW), ws, KH, KW, SH, SW, PH, PW, OH, OW, has_bias)
    return y


def conv2d_grad_input(grad_y, w, x_shape, stride, padding):
    """dL/dx, (N, C, H, W), eqs. (K8), (K5).  Twin of reference.conv2d_grad_input; see its docstring."""
    gy = np.ascontiguousarray(grad_y)
    N, O, OH, OW = gy.shape
    _, C, KH, KW = w.shape
    SH, SW = _ints(stride)
    PH, PW = _ints(padding)
    gx = np.empty(tuple(int(s) for s in x_shape), dtype=gy.dtype)
    if _use_direct((SH, SW)) and PH < KH and PW < KW:
        # For stride 1, dL/dx is the convolution of dL/dy, padded by (KH-1-PH, KW-1-PW), with the kernel
        # flipped and its channel axes swapped: wf[c, o, u, v] = w[o, c, KH-1-u, KW-1-v] (cpu_direct.py).
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
    T = _workers(N, N * O * w2t.shape[0] * OH * OW)
    ws = workspace("col", (T, w2t.shape[0], OH * OW), gy.dtype)  # one unrolled gradient (R, P) per worker
    kernel = cpu_conv.conv2d_grad_input if T > 1 else cpu_conv.conv2d_grad_input_serial
    kernel(gy.reshape(N, O, OH * OW), w2t, gx, ws, KH, KW, SH, SW, PH, PW, OH, OW)
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


def conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias):
    """(dL/dw, dL/db or None), eqs. (K4), (K3).  Twin of reference.conv2d_grad_params."""
    gw = conv2d_grad_weight(grad_y, x, w_shape, stride, padding)
    if not with_bias:
        return gw, None
    gy = np.ascontiguousarray(grad_y)
    if gy.size < PARALLEL_MIN_ELEMENTS:  # small (a step at batch 1): not worth waking the thread pool
        return gw, gy.sum(axis=(0, 2, 3))
    N, O = gy.shape[0], gy.shape[1]
    gb = np.empty(O, dtype=gy.dtype)
    _bias_sums(gy.reshape(N, O, gy.shape[2] * gy.shape[3]), gb)
    return gw, gb


def conv2d_grad_weight(grad_y, x, w_shape, stride, padding):
    """dL/dw, (O, C, KH, KW), eqs. (K4), (K8).  Twin of reference.conv2d_grad_weight; see its docstring."""
    gy = np.ascontiguousarray(grad_y)
    x = np.ascontiguousarray(x, dtype=gy.dtype)
    N, O, OH, OW = gy.shape
    _, C, KH, KW = (int(s) for s in w_shape)
    SH, SW = _ints(stride)
    PH, PW = _ints(padding)
    gw = np.empty((O, C * KH * KW), dtype=gy.dtype)
    parallel = N * O * C * KH * KW * OH * OW >= PARALLEL_MIN_MACS
    H, W = x.shape[2], x.shape[3]
    if _use_packed((SH, SW), O, C * KH * KW):  # 8 x 32 tiles on channels-last images (cpu_packed.py)
        HP, WP = H + 2 * PH, W + 2 * PW
        SP, OP = _up(KW * C, cpu_packed.MR), _up(O, cpu_packed.NR)
        xh = workspace("channels-last", (N, HP * WP * C + cpu_packed.MR), gy.dtype)
        gb = workspace("grad-panels", (OP // cpu_packed.NR, N * OH * OW * cpu_packed.NR), gy.dtype)
        dWt = np.empty((KH, SP, OP), dtype=gy.dtype)
        visits = _grad_weight_lists(C, H, W, KH, KW, PH, PW, xh.shape[1], SP)  # positions off the padding
        if parallel:
            cpu_packed.conv2d_packed_grad_weight(x, gy, dWt, xh, gb, PH, PW, numba.get_num_threads(), *visits)
        else:
            cpu_packed.conv2d_packed_grad_weight_serial(x, gy, dWt, xh, gb, PH, PW, *visits)
        # dWt[p, q*C + c, o] = dL/dw[o, c, p, q]
        return np.ascontiguousarray(dWt[:, :KW * C, :O].reshape(KH, KW, C, O).transpose(3, 2, 0, 1))
    if _use_rows((SH, SW), C * KH * KW):  # the tile turned around: 8 channels x 32 taps (cpu_packed.py)
        HP, WP = H + 2 * PH, W + 2 * PW
        O8, SP = _up(O, cpu_packed.MR), _up(KW * C, cpu_packed.NR)
        xh = workspace("channels-last-rows", (N, HP * WP * C + cpu_packed.NR), gy.dtype)
        g8 = workspace("grad-rows", (O8 // cpu_packed.MR, N * OH * OW * cpu_packed.MR), gy.dtype)
        dWr = np.empty((KH, O8, SP), dtype=gy.dtype)
        visits = _grad_weight_row_lists(C, H, W, KH, KW, PH, PW, xh.shape[1])
        if parallel:
            cpu_packed.conv2d_rows_grad_weight(x, gy, dWr, xh, g8, PH, PW, numba.get_num_threads(), *visits)
        else:
            cpu_packed.conv2d_rows_grad_weight_serial(x, gy, dWr, xh, g8, PH, PW, *visits)
        # dWr[p, o, q*C + c] = dL/dw[o, c, p, q]
        return np.ascontiguousarray(dWr[:, :O, :KW * C].reshape(KH, O, KW, C).transpose(1, 3, 0, 2))
    if _use_direct((SH, SW)):  # shifted runs of the padded images instead of im2col (cpu_direct.py)
        HP, WP = H + 2 * PH, W + 2 * PW
        O4, R4 = _up4(O), _up4(C * KH * KW)  # whole 4 x 4 tiles: zero rows, repeated taps, dropped after
        L = _up(OH * WP, 16)  # whole 16-float vectors, as in _direct
        xf = workspace("padded-batch", (N, C, HP * WP + KW - 1 + L - OH * WP), gy.dtype)
        gw4 = np.empty((O4, R4), dtype=gy.dtype)
        T = max(1, min(numba.get_num_threads(), N)) if parallel else 1
        kernel = cpu_direct.conv2d_direct_grad_weight if parallel else cpu_direct.conv2d_direct_grad_weight_serial
        kernel(x, gy, gw4, xf, KH, KW, PH, PW, T, L)
        return np.ascontiguousarray(gw4[:O, :C * KH * KW]).reshape(O, C, KH, KW)
    kernel = cpu_conv.conv2d_grad_weight if parallel else cpu_conv.conv2d_grad_weight_serial
    kernel(x, gy.reshape(N, O, OH * OW), gw, KH, KW, SH, SW, PH, PW, OH, OW)
    return gw.reshape(O, C, KH, KW)


@functools.lru_cache(maxsize=32)
def _grad_weight_lists(C, H, W, KH, KW, PH, PW, L, SP):
    """(lists, ka, kb, counts): the output positions that each block of 8 rows of ``conv2d_packed_grad_weight``
    visits, those whose inputs for its tap (p, q) are real pixels, not the zero padding (see cpu_packed.py).

    For a group of ``group`` = GW_KC // P images (at least 1), list g holds, in order of (u, i, j),
    ka[g, k] = u*L + (i*WP + j)*C and kb[g, k] = (u*P + i*OW + j)*32 for image u of the group and output
    position (i, j); counts[g] positions per image, so the first m images of a group are its first
    m*counts[g] entries.  List p*KW + q keeps rows PH <= i + p < H + PH and columns PW <= j + q < W + PW;
    list KH*KW + p keeps those rows and every column, for blocks whose 8 rows s = q*C + c straddle two
    values of q (or lie in the scratch rows s >= KW*C).  lists[b] is block b's list.  Cached per shape
    (not per batch size); the kernels only read them."""
    MR, NR = cpu_packed.MR, cpu_packed.NR
    OH, OW = H + 2 * PH - KH + 1, W + 2 * PW - KW + 1
    P, WP = OH * OW, W + 2 * PW
    group = max(1, cpu_packed.GW_KC // P)
    u, i, j = np.meshgrid(np.arange(group), np.arange(OH), np.arange(OW), indexing="ij")
    a_all, b_all = u * L + (i * WP + j) * C, (u * P + i * OW + j) * NR
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
    _, ka, kb, counts = _grad_weight_lists(C, H, W, KH, KW, PH, PW, L, cpu_packed.MR)
    rows = slice(KH * KW, KH * KW + KH)
    return (np.ascontiguousarray(ka[rows]), kb[rows] // cpu_packed.NR * cpu_packed.MR,
            np.ascontiguousarray(counts[rows]))


# --- max-pooling -------------------------------------------------------------------------------------


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _pool_plane(xp, yp, ip, KH, KW, SH, SW, PH, PW):
    """One (n, c) plane: yp = window maxima of xp (P1), ip = flat h*W+w of the first maximum (P3).

    Each window is clipped to the image (the -inf padding can never win), scanned p then q, and a tap
    replaces the best only if strictly greater or NaN (torch's rule), so the first of equal maxima
    keeps its index.  The best starts as the window's first real element, which is what torch reports
    for a window of -inf values.
    """
    H, W = xp.shape
    OH, OW = yp.shape
    for i in range(OH):
        h0 = i * SH - PH
        h1 = min(h0 + KH, H)
        h0 = max(h0, 0)
        for j in range(OW):
            w0 = j * SW - PW
            w1 = min(w0 + KW, W)
            w0 = max(w0, 0)
            best = xp[h0, w0]
            best_at = h0 * W + w0
            for h in range(h0, h1):
                for ww in range(w0, w1):
                    v = xp[h, ww]
                    if v > best or np.isnan(v):
                        best = v
                        best_at = h * W + ww
            yp[i, j] = best
            ip[i, j] = best_at


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _pool_plane_2x2(xp, yp, ip):
    """``_pool_plane`` for the common 2 x 2 window, stride 2, no padding: no clipping, and each window's
    four taps compared in the same order (row by row) with the same rule, written without branches so
    that the loop over j can run on vectors."""
    W = xp.shape[1]
    OH, OW = yp.shape
    for i in range(OH):
        r0 = xp[2 * i]
        r1 = xp[2 * i + 1]
        yrow = yp[i]
        irow = ip[i]
        base = 2 * i * W
        for j in range(OW):
            best = r0[2 * j]
            at = base + 2 * j
            v = r0[2 * j + 1]
            take = (v > best) | np.isnan(v)  # a NaN wins; | rather than `or`: no branch
            best = v if take else best
            at = base + 2 * j + 1 if take else at
            v = r1[2 * j]
            take = (v > best) | np.isnan(v)
            best = v if take else best
            at = base + W + 2 * j if take else at
            v = r1[2 * j + 1]
            take = (v > best) | np.isnan(v)
            best = v if take else best
            at = base + W + 2 * j + 1 if take else at
            yrow[j] = best
            irow[j] = at


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _pool_any(xp, yp, ip, KH, KW, SH, SW, PH, PW):
    if KH == 2 and KW == 2 and SH == 2 and SW == 2 and PH == 0 and PW == 0:
        _pool_plane_2x2(xp, yp, ip)
    else:
        _pool_plane(xp, yp, ip, KH, KW, SH, SW, PH, PW)


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _maxpool2d_forward(x, y, idx, KH, KW, SH, SW, PH, PW):
    """y = window maxima (P1), idx = first argmax (P3).  Twin: reference.maxpool2d_forward.

    Threads take (n, c) planes (prange), each written by ``_pool_plane`` (or its 2 x 2 fast path).
    """
    C = x.shape[1]
    for t in prange(x.shape[0] * C):
        n = t // C
        c = t % C
        _pool_any(x[n, c], y[n, c], idx[n, c], KH, KW, SH, SW, PH, PW)


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _maxpool2d_forward_serial(x, y, idx, KH, KW, SH, SW, PH, PW):
    """``_maxpool2d_forward`` on the calling thread alone (small inputs)."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            _pool_any(x[n, c], y[n, c], idx[n, c], KH, KW, SH, SW, PH, PW)


def pool_index_dtype(H, W):
    """The dtype of the argmax positions of an H x W plane: int32 whenever they fit (every plane
    there is, in practice), else int64.

    A position h*W + w counts within one plane, so it never needs 64 bits below 2**31 pixels a plane.
    With int32 positions the 2 x 2 kernel's loop over j runs on vectors (compares and selects on 32-bit
    lanes, beside the 32-bit floats); with int64 ones LLVM leaves it scalar.  Measured at the CIFAR-10
    net's first pooling (64 x 32 x 32 x 32 floats, 2 threads): 1.48 ms -> 0.33 ms.
    """
    return np.int32 if H * W <= np.iinfo(np.int32).max else np.int64


def maxpool2d_forward(x, kernel_size, stride, padding):
    """(y, indices), both (N, C, OH, OW).  Twin of reference.maxpool2d_forward; see its docstring.

    The indices are the reference's values, as ``pool_index_dtype(H, W)`` (int32 for any real plane).
    """
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    KH, KW = int(kernel_size[0]), int(kernel_size[1])
    SH, SW = int(stride[0]), int(stride[1])
    PH, PW = int(padding[0]), int(padding[1])
    OH = (H + 2 * PH - KH) // SH + 1  # (P2)
    OW = (W + 2 * PW - KW) // SW + 1
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    idx = np.empty((N, C, OH, OW), dtype=pool_index_dtype(H, W))
    kernel = _maxpool2d_forward if x.size >= POOL_PARALLEL_MIN_ELEMENTS else _maxpool2d_forward_serial
    kernel(x, y, idx, KH, KW, SH, SW, PH, PW)
    return y, idx


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _unpool_plane(src, at, dst):
    """One (n, c) plane: dst = 0, then dst[at[k]] += src[k] in output order, eq. (P4)."""
    for k in range(dst.shape[0]):
        dst[k] = 0
    for k in range(src.shape[0]):
        dst[at[k]] += src[k]


@njit(cache=True, fastmath=_POOL_FASTMATH, parallel=True)
def _maxpool2d_backward(g2, i2, x2):
    """gx[n, c].flat[idx[n,c,i,j]] += gy[n,c,i,j], eq. (P4).  Twin: reference.maxpool2d_backward.

    Arrays come as (N*C, plane) rows.  Threads take (n, c) planes (prange): all indices of a plane
    point into that plane, so each thread scatters only into its own memory, in output order (the
    same order as np.add.at in the twin).
    """
    for t in prange(g2.shape[0]):
        _unpool_plane(g2[t], i2[t], x2[t])


@njit(cache=True, fastmath=_POOL_FASTMATH)
def _maxpool2d_backward_serial(g2, i2, x2):
    """``_maxpool2d_backward`` on the calling thread alone (small inputs)."""
    for t in range(g2.shape[0]):
        _unpool_plane(g2[t], i2[t], x2[t])


def maxpool2d_backward(grad_y, indices, x_shape):
    """dL/dx, (N, C, H, W).  Twin of reference.maxpool2d_backward; see its docstring for shapes."""
    gy = np.ascontiguousarray(grad_y)
    idx = np.ascontiguousarray(indices)  # int32 from maxpool2d_forward (int64 also taken)
    if idx.dtype not in (np.int32, np.int64):
        idx = idx.astype(np.int64)
    gx = np.empty(tuple(int(s) for s in x_shape), dtype=gy.dtype)
    N, C = gy.shape[0], gy.shape[1]
    kernel = _maxpool2d_backward if gx.size >= POOL_PARALLEL_MIN_ELEMENTS else _maxpool2d_backward_serial
    P, HW = gy.shape[2] * gy.shape[3], gx.shape[2] * gx.shape[3]
    kernel(gy.reshape(N * C, P), idx.reshape(N * C, P), gx.reshape(N * C, HW))
    return gx


# --- the loss and the optimizer step (cpu_train.py) ---------------------------------------------------


def cross_entropy_index(z, t, ignore_index):
    """(total, count, bad, grad).  Twin of reference.cross_entropy_index; see its docstring."""
    z = np.ascontiguousarray(z)
    t = np.ascontiguousarray(t, dtype=np.int64)
    grad = np.empty_like(z)
    total, count, bad = cpu_train.cross_entropy_index(z, t, int(ignore_index), grad)
    return total, count, bad, grad


_NO_BUFFER = {}  # a 0-length stand-in for the buffer when there is no momentum, one per dtype


def sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One SGD step, in place.  Twin of reference.sgd_update; see its docstring.

    p (and buf) must be C-contiguous: they are updated through flat views.  Every array is passed
    flat and every scalar in p's dtype, so the kernel compiles once per dtype whatever the shapes.
    """
    t = p.dtype.type
    flat = p.reshape(-1)  # a view: writing it writes p
    gf = np.ascontiguousarray(g, dtype=p.dtype).reshape(-1)
    if buf is None:
        bf = _NO_BUFFER.get(p.dtype.str)
        if bf is None:
            bf = _NO_BUFFER[p.dtype.str] = np.empty(0, dtype=p.dtype)
    else:
        bf = buf.reshape(-1)
    cpu_train.sgd_update(flat, gf, bf, t(lr), t(momentum), t(1 - dampening), t(weight_decay),
                         bool(nesterov), buf is not None, bool(first))
