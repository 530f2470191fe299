"""Packed panels and an 8 x 32 register tile: the fast matrix product and the stride-1 convolutions.

Derivations: derivations/03-linear.md ((L1)-(L3)), derivations/04-conv2d.md ((K1), (K4), (K6), (K8), (K9));
readable twins: ``reference.matmul``, ``reference.conv2d_forward``, ``reference.conv2d_grad_input`` and
``reference.conv2d_grad_weight`` (``tests/test_kernels.py`` holds them equal).

The register tile.  ``tile8x32`` computes one 8 x 32 block of a product,

    C[i0 + i, j0 + j] = sum_k Ap[k*8 + i] * Bp[k*32 + j]          i < 8, j < 32,

keeping the 256 running sums in registers for the whole k loop: sixteen vectors of 16 floats (``c_i``
holds columns 0-15 of row i, ``d_i`` columns 16-31).  One step of k loads a row of the B panel (two
vectors), broadcasts the eight values of a column of the A panel and does 16 vector multiply-adds: the
outer product of that column and that row.  Each loaded vector feeds 8 multiply-adds, and no sum is
ever reduced across the lanes of a vector (the dot-product tiles of ``gemm_dot.py`` must do that at the
end of every tile).  Each C[i, j] is still summed in plain k order, so the rounding does not depend
on how the work is split.

Why stack arrays.  Numba has no register variables, and a NumPy array lives on the heap, where LLVM
cannot prove it is distinct from the inputs, so it would store every partial sum back to memory at
every step.  ``stack_array`` allocates a small fixed-size array on the stack instead (an LLVM
``alloca``).  The j loops have a constant trip count of 16, so LLVM unrolls them, turns each stack
array into 16 plain values (SROA) and packs those into one vector register (SLP vectorizer): the loop
over k becomes 2 vector loads, 8 broadcasts and 16 fused multiply-adds on registers.  (Measured alone,
on data in cache: about 105 GFLOP/s per thread in float32 here, 95% of the FMA probe.)

Panels.  The tile wants each step of k to read consecutive memory: Ap[k*8 : k*8 + 8] (8 rows of A at
column k) and Bp[k*32 : k*32 + 32] (32 columns of B at row k).  Putting operands in that layout
("packing") is a copy of O(MK + KN) elements against the O(MNK) multiply-adds, and it also fills the
edges with zeros, so the tile never needs a bounds check: a block that runs past the end of C is
computed into a scratch tile (``tmp``) and only its valid part is copied out.

How each operation maps onto the tile:
- matmul (``matmul_packed``): A is op(a), B is op(b); B is packed once per block of kc rows of k
  (kc x 32 per panel: read from cache by every tile of that column), or, when b is not transposed and
  narrow enough (``machine.py``), read where it lies (row k of a panel: 32 consecutive floats of
  b's row k); each task packs its own rows of A.  Tasks are blocks of rows of C; every C[i, j] is
  summed over k in blocks of kc, in order.
- convolution forward and grad-input (``conv2d_packed``): per image, the tile's 8 rows are 8
  neighbouring output positions of one output row and its 32 columns are output channels, k running
  over the taps in the order (p, c, q), kernel row first, so that the kernel rows which read only the
  zero padding for this output row are a run of k left out.  A is read in place from the padded,
  flattened image (tap k of those 8 positions is 8 consecutive floats, at offs[k] + i*WP + j0); B is
  the weights, packed once per call into panels of 32 output channels.  The 8 x 32 block is then
  written out channels first.  Grad-input is the same kernel, run on dL/dy with the flipped kernel (K6).
- the same with fewer than 32 output channels (``conv2d_rows``): the tile turned around, its 8 rows 8
  output channels (A: the weights, packed into panels of 8) and its 32 columns 32 consecutive outputs of
  the wide grid s = i*WP + j (B: read in place, 32 consecutive floats at offs[r] + s0), written to a
  wide output whose columns j >= OW are then dropped.
- convolution grad-weight (``conv2d_packed_grad_weight``): the images are laid out channels-last
  (NHWC), padded, and the product is taken as dL/dw^T = col . G^T with k running over output
  positions: for tap row p, the rows r = (q, c) of col at position (i, j) are the KW*C consecutive
  floats of the padded image at row i + p, columns j ... j + KW - 1, so A is again read in place
  (8 consecutive floats per position).  B is dL/dy transposed, (positions, O), laid out once, k running on
  through the images so that one tile call sums over several small images, visiting only the
  positions whose inputs are real pixels (not the zero padding) for the block's tap.
- the same with fewer than 32 output channels (``conv2d_rows_grad_weight``): turned around, 8 output
  channels (A: dL/dy transposed in panels of 8) x 32 values of s (B: the channels-last image, read in
  place), k still running over output positions.

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
PH/PW padding, HP/WP padded size, P = OH*OW output positions, R = C*KH*KW taps.
"""
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

MR = 8  # rows of the register tile (A panel width)
NR = 32  # columns of the register tile (B panel width): two 16-float vectors
# The matrix product's block sizes (rows of k per block, rows of C per task, the widest b read in place)
# follow this machine's caches: machine.py.

# Every caller passes the tile's int and bool arguments as these (or as computed values), never as the
# constants 0 or True: Numba compiles a separate copy of a function for each literal argument it is
# called with, and each copy of this tile costs a second or more to compile.
# The same holds for a prange index, which is unsigned inside the parallel loop (a helper called with it
# is compiled for int64 while the loop is typed and again for uint64): parallel loops pass np.int64(t).
ZERO = np.int64(0)
ONE = np.int64(1)
YES = np.bool_(True)
# Unsigned offsets inside the tile (see tile8x32): uint64 plus an int64 would be a float64 in Numba.
U1, U2, U3, U4, U5, U6, U7, U16 = (np.uint64(i) for i in (1, 2, 3, 4, 5, 6, 7, 16))


@intrinsic
def stack_array(typingctx, size, dtype):
    """stack_array(16, np.float32): a 1-D array of compile-time length on the stack (an LLVM alloca).

    It lives until the function returns; it must not be returned or stored anywhere.
    """
    if not isinstance(size, types.IntegerLiteral):
        return None
    n = size.literal_value
    item = dtype.dtype
    arrty = types.Array(item, 1, "C")

    def codegen(context, builder, sig, args):
        lty = context.get_data_type(item)
        ptr = cgutils.alloca_once(builder, lty, size=n)
        ary = context.make_array(arrty)(context, builder)
        itemsize = context.get_abi_sizeof(lty)
        context.populate_array(ary, data=ptr, shape=[context.get_constant(types.intp, n)],
                               strides=[context.get_constant(types.intp, itemsize)],
                               itemsize=context.get_constant(types.intp, itemsize), meminfo=None)
        return ary._getvalue()

    return arrty(size, dtype), codegen


@njit(cache=True, fastmath=True)
def tile8x32(A, aoffs, a_at, B, boffs, b_at, k0, kc, bias8, e_at, C, i0, j0, first):
    """C[i0:i0+8, j0:j0+32] = bias8[e_at + i] + sum_k A[aoffs[k] + a_at + i] * B[boffs[k] + b_at + j]  (first),
    else += the sum, k running over k0 ... k0 + kc - 1.

    Column k of the A panel starts at A[aoffs[k] + a_at] and row k of the B panel at B[boffs[k] + b_at]:
    aoffs[k] = 8*k and boffs[k] = 32*k for packed panels; the forward convolution reads its A panel in
    place from the padded image instead (aoffs[k]: where tap k's inputs start).  The whole block must
    lie inside C (callers route edge blocks through a scratch tile).

    Callers pass whole arrays and offsets (a_at, b_at, k0, e_at), never slices such as ``offs[k0:]`` or
    ``panels[jb]``: each slice is a new array object whose reference count Numba raises and drops, two
    atomic operations per slice per call, which cost as much as a short tile's arithmetic.
    """
    dt = C.dtype
    c0 = stack_array(16, dt)
    c1 = stack_array(16, dt)
    c2 = stack_array(16, dt)
    c3 = stack_array(16, dt)
    c4 = stack_array(16, dt)
    c5 = stack_array(16, dt)
    c6 = stack_array(16, dt)
    c7 = stack_array(16, dt)
    d0 = stack_array(16, dt)
    d1 = stack_array(16, dt)
    d2 = stack_array(16, dt)
    d3 = stack_array(16, dt)
    d4 = stack_array(16, dt)
    d5 = stack_array(16, dt)
    d6 = stack_array(16, dt)
    d7 = stack_array(16, dt)
    for j in range(16):
        c0[j] = c1[j] = c2[j] = c3[j] = c4[j] = c5[j] = c6[j] = c7[j] = 0
        d0[j] = d1[j] = d2[j] = d3[j] = d4[j] = d5[j] = d6[j] = d7[j] = 0
    uk = np.uint64(k0)
    for k in range(kc):
        # Unsigned indices: Numba guards every signed index or slice against negative values (Python's
        # wraparound), about 20 integer instructions per step of k here; an unsigned one cannot be
        # negative, so each read is a plain load (measured: 93-101 -> 102-111 GFLOP/s per thread).
        kk = uk + np.uint64(k)
        ak = np.uint64(aoffs[kk] + a_at)  # column k of the 8 rows
        a0, a1, a2, a3 = A[ak], A[ak + U1], A[ak + U2], A[ak + U3]
        a4, a5, a6, a7 = A[ak + U4], A[ak + U5], A[ak + U6], A[ak + U7]
        at = np.uint64(boffs[kk] + b_at)  # row k of the 32 columns
        for j in range(16):  # the outer product a x b: 16 vector multiply-adds
            x = B[at + np.uint64(j)]
            y = B[at + U16 + np.uint64(j)]
            c0[j] += a0 * x
            c1[j] += a1 * x
            c2[j] += a2 * x
            c3[j] += a3 * x
            c4[j] += a4 * x
            c5[j] += a5 * x
            c6[j] += a6 * x
            c7[j] += a7 * x
            d0[j] += a0 * y
            d1[j] += a1 * y
            d2[j] += a2 * y
            d3[j] += a3 * y
            d4[j] += a4 * y
            d5[j] += a5 * y
            d6[j] += a6 * y
            d7[j] += a7 * y
    # C's block written by 2-D unsigned indices, not through row slices: a slice is a new array object
    # whose reference count Numba raises and drops (two atomic operations per slice per call)
    ui, uj = np.uint64(i0), np.uint64(j0)
    if first:
        ue = np.uint64(e_at)
        e0, e1, e2, e3 = bias8[ue], bias8[ue + U1], bias8[ue + U2], bias8[ue + U3]
        e4, e5, e6, e7 = bias8[ue + U4], bias8[ue + U5], bias8[ue + U6], bias8[ue + U7]
        for j in range(16):
            u = uj + np.uint64(j)
            v = u + U16
            C[ui, u] = e0 + c0[j]
            C[ui + U1, u] = e1 + c1[j]
            C[ui + U2, u] = e2 + c2[j]
            C[ui + U3, u] = e3 + c3[j]
            C[ui + U4, u] = e4 + c4[j]
            C[ui + U5, u] = e5 + c5[j]
            C[ui + U6, u] = e6 + c6[j]
            C[ui + U7, u] = e7 + c7[j]
            C[ui, v] = e0 + d0[j]
            C[ui + U1, v] = e1 + d1[j]
            C[ui + U2, v] = e2 + d2[j]
            C[ui + U3, v] = e3 + d3[j]
            C[ui + U4, v] = e4 + d4[j]
            C[ui + U5, v] = e5 + d5[j]
            C[ui + U6, v] = e6 + d6[j]
            C[ui + U7, v] = e7 + d7[j]
    else:
        for j in range(16):
            u = uj + np.uint64(j)
            v = u + U16
            C[ui, u] += c0[j]
            C[ui + U1, u] += c1[j]
            C[ui + U2, u] += c2[j]
            C[ui + U3, u] += c3[j]
            C[ui + U4, u] += c4[j]
            C[ui + U5, u] += c5[j]
            C[ui + U6, u] += c6[j]
            C[ui + U7, u] += c7[j]
            C[ui, v] += d0[j]
            C[ui + U1, v] += d1[j]
            C[ui + U2, v] += d2[j]
            C[ui + U3, v] += d3[j]
            C[ui + U4, v] += d4[j]
            C[ui + U5, v] += d5[j]
            C[ui + U6, v] += d6[j]
            C[ui + U7, v] += d7[j]


@njit(cache=True, fastmath=True)
def tile8x16(A, aoffs, a_at, B, boffs, b_at, k0, kc, C, i0, j0, first):
    """``tile8x32`` cut in half: C[i0:i0+8, j0:j0+16] = sum_k A[aoffs[k] + a_at + i] * B[boffs[k] + b_at + j]
    (first; else += the sum), eight vectors of running sums, for a last block of columns that has only 16
    to compute (``conv2d_rows_grad_weight`` with KW*C = 48: 16 channels, 3 x 3).  Each step of k: one vector
    of B, eight broadcasts of A, eight multiply-adds."""
    dt = C.dtype
    c0 = stack_array(16, dt)
    c1 = stack_array(16, dt)
    c2 = stack_array(16, dt)
    c3 = stack_array(16, dt)
    c4 = stack_array(16, dt)
    c5 = stack_array(16, dt)
    c6 = stack_array(16, dt)
    c7 = stack_array(16, dt)
    for j in range(16):
        c0[j] = c1[j] = c2[j] = c3[j] = c4[j] = c5[j] = c6[j] = c7[j] = 0
    uk = np.uint64(k0)
    for k in range(kc):
        kk = uk + np.uint64(k)
        ak = np.uint64(aoffs[kk] + a_at)
        a0, a1, a2, a3 = A[ak], A[ak + U1], A[ak + U2], A[ak + U3]
        a4, a5, a6, a7 = A[ak + U4], A[ak + U5], A[ak + U6], A[ak + U7]
        at = np.uint64(boffs[kk] + b_at)
        for j in range(16):
            x = B[at + np.uint64(j)]
            c0[j] += a0 * x
            c1[j] += a1 * x
            c2[j] += a2 * x
            c3[j] += a3 * x
            c4[j] += a4 * x
            c5[j] += a5 * x
            c6[j] += a6 * x
            c7[j] += a7 * x
    ui, uj = np.uint64(i0), np.uint64(j0)  # 2-D indices, not row slices (see tile8x32)
    if first:
        for j in range(16):
            u = uj + np.uint64(j)
            C[ui, u] = c0[j]
            C[ui + U1, u] = c1[j]
            C[ui + U2, u] = c2[j]
            C[ui + U3, u] = c3[j]
            C[ui + U4, u] = c4[j]
            C[ui + U5, u] = c5[j]
            C[ui + U6, u] = c6[j]
            C[ui + U7, u] = c7[j]
    else:
        for j in range(16):
            u = uj + np.uint64(j)
            C[ui, u] += c0[j]
            C[ui + U1, u] += c1[j]
            C[ui + U2, u] += c2[j]
            C[ui + U3, u] += c3[j]
            C[ui + U4, u] += c4[j]
            C[ui + U5, u] += c5[j]
            C[ui + U6, u] += c6[j]
            C[ui + U7, u] += c7[j]


@njit(cache=True, fastmath=True)
def _tile_into(Ap, a_at, aoffs, Bp, boffs, b_at, kc, bias8, C, i0, j0, first, tmp):
    """``tile8x32`` for a block that may run past the last row or column of C: such a block is computed
    into the scratch tile tmp (8, 32) and only its part inside C is written.  Column k of the A panel
    starts at Ap[aoffs[k] + a_at], row k of the B panel at Bp[boffs[k] + b_at]."""
    M, N = C.shape
    inside = i0 + MR <= M and j0 + NR <= N
    if inside:
        dst, di, dj, dfirst = C, i0, j0, first
    else:
        dst, di, dj, dfirst = tmp, ZERO, ZERO, YES
    tile8x32(Ap, aoffs, a_at, Bp, boffs, b_at, ZERO, kc, bias8, ZERO, dst, di, dj, dfirst)  # one call: one inlined copy
    if inside:
        return
    for i in range(min(MR, M - i0)):
        if first:
            for j in range(min(NR, N - j0)):
                C[i0 + i, j0 + j] = tmp[i, j]
        else:
            for j in range(min(NR, N - j0)):
                C[i0 + i, j0 + j] += tmp[i, j]


@njit(cache=True)
def pack_panels(w2, width, order):
    """w2 (O, R) in panels of ``width`` output channels, its columns taken in ``order``:
    out[b][k*width + i] = w2[width*b + i, order[k]], zero past O.  Width 32: the B panels of
    ``conv2d_packed``; width 8: the A panels of ``conv2d_rows`` (order: ``conv._row_first_taps``)."""
    O = w2.shape[0]
    K = order.shape[0]
    out = np.zeros(((O + width - 1) // width, K * width), dtype=w2.dtype)
    for o in range(O):
        dst = out[o // width]
        src = w2[o]
        i = o % width
        for k in range(K):
            dst[k * width + i] = src[order[k]]
    return out
