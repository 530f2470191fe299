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
ever reduced across the lanes of a vector (the dot-product tiles of ``cpu_gemm.py`` must do that at the
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
- matmul (``matmul_packed``): A is op(a), B is op(b); B is packed once per block of KC rows of k
  (KC x 32 per panel: read from cache by every tile of that column), or, when b is not transposed and
  at most B_IN_PLACE_MAX_N columns wide, read where it lies (row k of a panel: 32 consecutive floats of
  b's row k); each task packs its own rows of A.  Tasks are blocks of rows of C; every C[i, j] is
  summed over k in blocks of KC, in order.
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
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

MR = 8  # rows of the register tile (A panel width)
NR = 32  # columns of the register tile (B panel width): two 16-float vectors
KC = 512  # rows of k per packed block of B in matmul: a 512 x 32 float panel is 64 KiB, read from L2 as fast
# as from L1 by the tile (measured), and each tile call then runs 512 steps of k before it loads and stores
# its 8 x 32 block of C (with 256 steps that fixed cost was about 8% of the call)
B_IN_PLACE_MAX_N = 1024  # a non-transposed B at most this wide is read in place, not packed: its 32-column
# panels are then rows of 128 bytes N floats apart, which the tile reads as fast as a packed panel while
# N*4 bytes is short (n = 256: 136-162 -> 174-191 GFLOP/s on 2 threads, the copy and a parallel pass saved);
# at N = 2048 each row of k is a new 4 KiB page and cache sets alias, and it ran at 127 against 175 packed
MC_MAX = 96  # at most this many rows of C per matmul task (their A panels, 96 x 512 floats, stay in L2)

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
def tile8x32(A, aoffs, a_at, B, boffs, b_at, kc, bias8, C, i0, j0, first):
    """C[i0:i0+8, j0:j0+32] = bias8[i] + sum_k A[aoffs[k] + a_at + i] * B[boffs[k] + b_at + j]  (first),
    else += the sum.

    Column k of the A panel starts at A[aoffs[k] + a_at] and row k of the B panel at B[boffs[k] + b_at]:
    aoffs[k] = 8*k and boffs[k] = 32*k for packed panels; the forward convolution reads its A panel in
    place from the padded image instead (aoffs[k]: where tap k's inputs start).  The whole block must
    lie inside C (callers route edge blocks through a scratch tile).
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
    for k in range(kc):
        # Unsigned indices: Numba guards every signed index or slice against negative values (Python's
        # wraparound), about 20 integer instructions per step of k here; an unsigned one cannot be
        # negative, so each read is a plain load (measured: 93-101 -> 102-111 GFLOP/s per thread).
        ak = np.uint64(aoffs[k] + a_at)  # column k of the 8 rows
        a0, a1, a2, a3 = A[ak], A[ak + U1], A[ak + U2], A[ak + U3]
        a4, a5, a6, a7 = A[ak + U4], A[ak + U5], A[ak + U6], A[ak + U7]
        at = np.uint64(boffs[k] + b_at)  # row k of the 32 columns
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
    r0 = C[i0, j0:j0 + 32]
    r1 = C[i0 + 1, j0:j0 + 32]
    r2 = C[i0 + 2, j0:j0 + 32]
    r3 = C[i0 + 3, j0:j0 + 32]
    r4 = C[i0 + 4, j0:j0 + 32]
    r5 = C[i0 + 5, j0:j0 + 32]
    r6 = C[i0 + 6, j0:j0 + 32]
    r7 = C[i0 + 7, j0:j0 + 32]
    if first:
        e0, e1, e2, e3 = bias8[0], bias8[1], bias8[2], bias8[3]
        e4, e5, e6, e7 = bias8[4], bias8[5], bias8[6], bias8[7]
        for j in range(16):
            r0[j] = e0 + c0[j]
            r1[j] = e1 + c1[j]
            r2[j] = e2 + c2[j]
            r3[j] = e3 + c3[j]
            r4[j] = e4 + c4[j]
            r5[j] = e5 + c5[j]
            r6[j] = e6 + c6[j]
            r7[j] = e7 + c7[j]
            r0[16 + j] = e0 + d0[j]
            r1[16 + j] = e1 + d1[j]
            r2[16 + j] = e2 + d2[j]
            r3[16 + j] = e3 + d3[j]
            r4[16 + j] = e4 + d4[j]
            r5[16 + j] = e5 + d5[j]
            r6[16 + j] = e6 + d6[j]
            r7[16 + j] = e7 + d7[j]
    else:
        for j in range(16):
            r0[j] += c0[j]
            r1[j] += c1[j]
            r2[j] += c2[j]
            r3[j] += c3[j]
            r4[j] += c4[j]
            r5[j] += c5[j]
            r6[j] += c6[j]
            r7[j] += c7[j]
            r0[16 + j] += d0[j]
            r1[16 + j] += d1[j]
            r2[16 + j] += d2[j]
            r3[16 + j] += d3[j]
            r4[16 + j] += d4[j]
            r5[16 + j] += d5[j]
            r6[16 + j] += d6[j]
            r7[16 + j] += d7[j]


@njit(cache=True, fastmath=True)
def _tile_into(Ap, aoffs, Bp, boffs, b_at, kc, bias8, C, i0, j0, first, tmp):
    """``tile8x32`` for a block that may run past the last row or column of C: such a block is computed
    into the scratch tile tmp (8, 32) and only its part inside C is written.  Row k of the B panel
    starts at Bp[boffs[k] + b_at]."""
    M, N = C.shape
    inside = i0 + MR <= M and j0 + NR <= N
    if inside:
        dst, di, dj, dfirst = C, i0, j0, first
    else:
        dst, di, dj, dfirst = tmp, ZERO, ZERO, YES
    tile8x32(Ap, aoffs, ZERO, Bp, boffs, b_at, kc, bias8, dst, di, dj, dfirst)  # one call: one inlined copy
    if inside:
        return
    for i in range(min(MR, M - i0)):
        src = tmp[i]
        dst = C[i0 + i, j0:]
        if first:
            for j in range(min(NR, N - j0)):
                dst[j] = src[j]
        else:
            for j in range(min(NR, N - j0)):
                dst[j] += src[j]


# --- matrix product ----------------------------------------------------------------------------------


@njit(cache=True)
def _pack_a(A, trans, i0, k0, kc, dst):
    """dst[k*8 + i] = op(A)[i0 + i, k0 + k] for k < kc, i < 8 (op: transpose if ``trans``); zeros for
    rows past the end of op(A)."""
    M = A.shape[1] if trans else A.shape[0]
    zero = dst.dtype.type(0)
    if trans and i0 + MR <= M:  # op(A)[i, k] = A[k, i]: the 8 values of column k are consecutive in A
        for k in range(kc):
            src = A[k0 + k, i0:i0 + MR]
            d = dst[k * MR:k * MR + MR]
            for i in range(MR):
                d[i] = src[i]
        return
    if not trans and i0 + MR <= M:  # 8 whole rows: interleave them, one float of each per step of k
        r0, r1, r2, r3 = A[i0, k0:k0 + kc], A[i0 + 1, k0:k0 + kc], A[i0 + 2, k0:k0 + kc], A[i0 + 3, k0:k0 + kc]
        r4, r5, r6, r7 = A[i0 + 4, k0:k0 + kc], A[i0 + 5, k0:k0 + kc], A[i0 + 6, k0:k0 + kc], A[i0 + 7, k0:k0 + kc]
        for k in range(kc):  # unsigned indices, as in tile8x32: plain loads and stores, which LLVM vectorizes
            u, d = np.uint64(k), np.uint64(k * MR)
            dst[d], dst[d + U1], dst[d + U2], dst[d + U3] = r0[u], r1[u], r2[u], r3[u]
            dst[d + U4], dst[d + U5], dst[d + U6], dst[d + U7] = r4[u], r5[u], r6[u], r7[u]
        return
    for i in range(MR):
        r = i0 + i
        if r >= M:
            for k in range(kc):
                dst[k * MR + i] = zero
        elif trans:
            for k in range(kc):
                dst[k * MR + i] = A[k0 + k, r]
        else:
            src = A[r, k0:k0 + kc]
            for k in range(kc):
                dst[k * MR + i] = src[k]


@njit(cache=True)
def _pack_b(B, trans, k0, kc, jb, Bp):
    """Panel jb of op(B)'s rows k0 ... k0+kc-1: Bp[jb][k*32 + j] = op(B)[k0 + k, 32*jb + j], zeros for
    columns past the end of op(B)."""
    N = B.shape[0] if trans else B.shape[1]
    j0 = jb * NR
    nr = min(NR, N - j0)
    dst = Bp[jb]
    zero = dst.dtype.type(0)
    if trans:  # op(B)[k, j] = B[j, k]: read rows of B along k, write every 32nd float
        for j in range(nr):
            src = B[j0 + j, k0:k0 + kc]
            for k in range(kc):
                dst[k * NR + j] = src[k]
        for j in range(nr, NR):
            for k in range(kc):
                dst[k * NR + j] = zero
        return
    for k in range(kc):
        src = B[k0 + k, j0:j0 + nr]
        d = dst[k * NR:k * NR + NR]
        for j in range(nr):
            d[j] = src[j]
        for j in range(nr, NR):
            d[j] = zero


@njit(cache=True)
def _b_read_in_place(B, tb):
    """Whether op(B)'s whole 32-column panels are read where they lie in B instead of packed: B not
    transposed (row k of a panel is then 32 consecutive floats of B's row k) and at most
    B_IN_PLACE_MAX_N columns wide.  A last panel narrower than 32 columns is packed all the same."""
    return not tb and B.shape[1] <= B_IN_PLACE_MAX_N


@njit(cache=True)
def _b_in_place(B, tb, jb):
    """Whether panel jb of op(B) is read in place (``_b_read_in_place``, and the panel wholly inside B)."""
    return _b_read_in_place(B, tb) and (jb + 1) * NR <= B.shape[1]


@njit(cache=True, fastmath=True)
def _matmul_rows(A, ta, B, tb, Bp, aoffs, boffs, C, i0, i1, Ap, tmp, zeros8):
    """Rows i0 ... i1-1 of C = op(A)[rows] . op(B), op(B) packed as Bp[kb, jb] (block kb of KC rows of k,
    panel jb of 32 columns) or read in place (``_b_in_place``).  For each block of k: pack this task's
    rows of op(A), then for each B panel run the tiles of all the row panels.  C[i, j] sums the k blocks
    in order."""
    K = A.shape[0] if ta else A.shape[1]
    nib = (i1 - i0 + MR - 1) // MR
    flat = B.reshape(-1)  # a view (B is C-contiguous)
    rows_of_b = np.arange(KC) * B.shape[1]  # row k of an in-place panel: flat[(k0 + k)*N + j0 ...]
    for kb in range(Bp.shape[0]):
        k0 = kb * KC
        kc = min(KC, K - k0)
        for ib in range(nib):
            _pack_a(A, ta, i0 + ib * MR, k0, kc, Ap[ib])
        for jb in range(Bp.shape[1]):
            if _b_in_place(B, tb, jb):
                src, offs, at = flat, rows_of_b, k0 * B.shape[1] + jb * NR
            else:
                src, offs, at = Bp[kb, jb], boffs, ZERO
            for ib in range(nib):
                _tile_into(Ap[ib], aoffs, src, offs, at, kc, zeros8, C, i0 + ib * MR, jb * NR, kb == 0, tmp)


def _row_tasks(M, T):
    """Rows of C per task: a multiple of 8, at most MC_MAX, and a number of tasks that is a multiple of
    the T threads where possible (which rows a task gets does not change any sum, only the balance)."""
    panels = (M + MR - 1) // MR
    per_thread = (panels + T - 1) // T
    chunks = (per_thread * MR + MC_MAX - 1) // MC_MAX  # tasks per thread
    mc = ((panels + T * chunks - 1) // (T * chunks)) * MR
    return max(mc, MR)


def matmul_panel_shapes(M, N, K, T):
    """Shapes of the two workspaces of ``matmul_packed`` for T threads (T = 1: ``matmul_packed_serial``):
    op(B)'s panels (nk, nj, KC*32) and each task's A panels (tasks, rows per task / 8, KC*8)."""
    nk, nj = max(1, (K + KC - 1) // KC), (N + NR - 1) // NR
    mc = _row_tasks(M, T) if T > 1 else max(MR, (M + MR - 1) // MR * MR)
    return (nk, nj, KC * NR), ((M + mc - 1) // mc, mc // MR, KC * MR)


@njit(cache=True, fastmath=True, parallel=True)
def matmul_packed(A, ta, B, tb, C, Bp, Ap):
    """C = op(A) . op(B), (M, K) x (K, N) -> (M, N); op transposes when ta / tb.  Twin: reference.matmul.

    Workspaces, shaped by ``matmul_panel_shapes``: Bp for op(B)'s panels, Ap[t] for task t's A panels
    (allocating them here on every call would cost page faults for a fresh megabyte or more).  Two
    parallel passes: pack all of op(B) into 32-column panels of KC rows (prange over panels; when B is
    read in place, ``_b_read_in_place``, only a last narrow panel is packed, serially), then prange over
    the tasks, blocks of Ap.shape[1] * 8 rows of C, each packing its own rows of op(A) and
    running its tiles over the whole of k.
    """
    M = C.shape[0]
    K = A.shape[0] if ta else A.shape[1]
    nk, nj = (K + KC - 1) // KC, Bp.shape[1]
    mc = Ap.shape[1] * MR
    zeros8 = np.zeros(MR, dtype=C.dtype)
    aoffs = np.arange(KC) * MR  # column k of a packed A panel starts at 8*k
    boffs = np.arange(KC) * NR  # row k of a packed B panel starts at 32*k
    if K == 0:
        C[:] = 0
    if not _b_read_in_place(B, tb):
        for t in prange(nk * nj):
            u = np.int64(t)
            kb = u // nj
            _pack_b(B, tb, kb * KC, min(KC, K - kb * KC), u % nj, Bp[kb])
    elif not _b_in_place(B, tb, nj - 1):  # only the last panel, narrower than 32 columns, is packed
        for kb in range(nk):
            _pack_b(B, tb, kb * KC, min(KC, K - kb * KC), nj - 1, Bp[kb])
    for t in prange(Ap.shape[0]):
        tmp = np.empty((MR, NR), dtype=C.dtype)
        u = np.int64(t)
        _matmul_rows(A, ta, B, tb, Bp, aoffs, boffs, C, u * mc, min(u * mc + mc, M), Ap[t], tmp, zeros8)


@njit(cache=True, fastmath=True)
def matmul_packed_serial(A, ta, B, tb, C, Bp, Ap):
    """``matmul_packed`` on the calling thread alone (small products): the same tiles, the same sums.
    Ap holds one task, all the rows of C."""
    M = C.shape[0]
    K = A.shape[0] if ta else A.shape[1]
    nk, nj = (K + KC - 1) // KC, Bp.shape[1]
    tmp = np.empty((MR, NR), dtype=C.dtype)
    zeros8 = np.zeros(MR, dtype=C.dtype)
    aoffs = np.arange(KC) * MR
    boffs = np.arange(KC) * NR
    if K == 0:
        C[:] = 0
    for t in range(nk * nj):
        if not _b_in_place(B, tb, t % nj):
            kb = t // nj
            _pack_b(B, tb, kb * KC, min(KC, K - kb * KC), t % nj, Bp[kb])
    _matmul_rows(A, ta, B, tb, Bp, aoffs, boffs, C, ZERO, M, Ap[0], tmp, zeros8)


# --- convolution, forward and grad-input (stride 1) --------------------------------------------------


@njit(cache=True)
def pack_panels(w2, width, order):
    """w2 (O, R) in panels of ``width`` output channels, its columns taken in ``order``:
    out[b][k*width + i] = w2[width*b + i, order[k]], zero past O.  Width 32: the B panels of
    ``conv2d_packed``; width 8: the A panels of ``conv2d_rows`` (order: ``cpu._row_first_taps``)."""
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


@njit(cache=True)
def _pad_flat(xn, xf, PH, PW, WP):
    """xf (flat) = xn (C, H, W) padded with PH rows and PW columns of zeros, channel c at c*HP*WP, and
    zeros after the last channel (the slack that the last panels read past the image)."""
    C, H, W = xn.shape
    HP = H + 2 * PH
    zero = xf.dtype.type(0)
    for k in range(xf.shape[0]):
        xf[k] = zero
    for c in range(C):
        for h in range(H):
            dst = xf[c * HP * WP + (h + PH) * WP + PW:]
            src = xn[c, h]
            for w in range(W):
                dst[w] = src[w]


@njit(cache=True, fastmath=True)
def _conv_images(x, wt, bias, y, xf, offs, kofs, tmp, zeros8, n0, step, PH, PW):
    """Images n0, n0 + step, ... of a stride-1 convolution (see ``conv2d_packed``)."""
    N, O, OH, OW = y.shape
    H = x.shape[2]
    WP = x.shape[3] + 2 * PW
    KH = H + 2 * PH - OH + 1  # stride 1
    per_row = offs.shape[0] // KH  # taps in one row p of the kernel: C*KW
    for n in range(n0, N, step):
        _pad_flat(x[n], xf, PH, PW, WP)
        for i in range(OH):
            # Output row i reads padded rows i + p; those with i + p < PH or i + p >= H + PH are all
            # zeros, so only the kernel rows p0 <= p < p1 add anything: the taps k0 <= k < k1.
            k0 = max(0, PH - i) * per_row
            k1 = max(k0, min(KH, H + PH - i) * per_row)
            for j0 in range(0, OW, MR):
                for jb in range(wt.shape[0]):
                    # tmp[u, v] = sum_{k0 <= k < k1} xf[offs[k] + i*WP + j0 + u] * w2[32*jb + v, k]
                    tile8x32(xf, offs[k0:], i * WP + j0, wt[jb], kofs[k0:], ZERO, k1 - k0, zeros8, tmp, ZERO,
                             ZERO, YES)
                    for v in range(min(NR, O - NR * jb)):  # write the 8 x 32 block out, channels first
                        o = NR * jb + v
                        dst = y[n, o, i, j0:]
                        bo = bias[o]
                        for u in range(min(MR, OW - j0)):
                            dst[u] = tmp[u, v] + bo


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_packed(x, wt, bias, y, PH, PW, offs, xf_ws):
    """y (N, O, OH, OW) = stride-1 convolution of x (N, C, H, W) (eq. (K1)); grad-input is this with the
    flipped kernel (K6).  Weights packed by ``pack_panels(w2, 32, order)`` into panels of 32 output channels.

    The tile takes 8 neighbouring output positions of one output row as its rows and 32 output
    channels as its columns, k running over the taps (p, c, q), kernel row first (``cpu._row_first_taps``
    orders the weights' columns and offs so).  Pad the image and flatten it, xf[c*HP*WP + h*WP + w];
    output (i, j) is then s = i*WP + j, and tap (p, c, q) reads xf[offs[k] + s], offs[k] = c*HP*WP +
    p*WP + q (moving p rows down and q columns right is adding p*WP + q).  So the A panel (the 8 inputs
    that tap k sees) is xf[offs[k] + s0 ... + 7], read in place: nothing is copied but the weights (once
    per call).  Output row i skips the kernel rows p that read only padding rows, one run of k at each
    end.  A row of fewer than 8 outputs left computes a few columns past the image (the slack after it)
    that are not written out.

    Parallel over images: worker t of T = len(xf_ws) takes images t, t + T, ... with its own padded
    image xf_ws[t], and writes only its own images.
    """
    T = xf_ws.shape[0]
    kofs = np.arange(offs.shape[0]) * NR  # row r of a weight panel starts at 32*r
    for t in prange(T):
        tmp = np.empty((MR, NR), dtype=y.dtype)
        _conv_images(x, wt, bias, y, xf_ws[t], offs, kofs, tmp, np.zeros(MR, dtype=y.dtype), np.int64(t), T, PH, PW)


@njit(cache=True, fastmath=True)
def conv2d_packed_serial(x, wt, bias, y, PH, PW, offs, xf_ws):
    """``conv2d_packed`` on the calling thread alone (small batches)."""
    kofs = np.arange(offs.shape[0]) * NR
    tmp = np.empty((MR, NR), dtype=y.dtype)
    _conv_images(x, wt, bias, y, xf_ws[0], offs, kofs, tmp, np.zeros(MR, dtype=y.dtype), ZERO, ONE, PH, PW)


# --- convolution with few output channels (stride 1): channels as the tile's rows ----------------------
#
# For fewer than 32 output channels, or short sums, the tile is turned around: its 8 rows are 8
# output channels and its 32 columns 32 consecutive outputs of the "wide" grid s = i*WP + j (OH rows
# of WP columns; the columns j >= OW straddle two image rows and are thrown away, as in cpu_direct.py).
# Tap r of those 32 outputs reads xf[offs[r] + s0 ... + 31], 32 consecutive floats of the padded,
# flattened image: the B panel is read in place, and the A panel is the weights, packed once per call
# into blocks of 8 output channels.


@njit(cache=True, fastmath=True)
def _conv_rows_images(x, wr, bias8, y, xf, yw, offs, aoffs, n0, step, PH, PW):
    """Images n0, n0 + step, ... of a stride-1 convolution (see ``conv2d_rows``)."""
    N, O, OH, OW = y.shape
    H = x.shape[2]
    WP = x.shape[3] + 2 * PW
    KH = H + 2 * PH - OH + 1  # stride 1
    per_row = offs.shape[0] // KH  # taps in one row p of the kernel: C*KW
    L = OH * WP  # outputs on the wide grid
    for n in range(n0, N, step):
        _pad_flat(x[n], xf, PH, PW, WP)
        for s0 in range(0, L, NR):
            # These 32 outputs lie on output rows i0 ... i1; kernel row p adds something to one of
            # them only if some i + p is a row of the image, PH <= i + p < H + PH: taps k0 <= k < k1.
            i0, i1 = s0 // WP, min(OH - 1, (s0 + NR - 1) // WP)
            k0 = max(0, PH - i1) * per_row
            k1 = max(k0, min(KH, H + PH - i0) * per_row)
            for ib in range(wr.shape[0]):
                # yw[8*ib + i, s0 + j] = bias[8*ib + i] + sum_k w2[8*ib + i, k] * xf[offs[k] + s0 + j]
                tile8x32(wr[ib], aoffs[k0:], ZERO, xf, offs[k0:], s0, k1 - k0, bias8[ib * MR:], yw, ib * MR, s0,
                         YES)
        for o in range(O):  # keep the columns j < OW of each wide row
            for i in range(OH):
                src = yw[o, i * WP:]
                dst = y[n, o, i]
                for j in range(OW):
                    dst[j] = src[j]


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_rows(x, wr, bias8, y, PH, PW, offs, xf_ws, yw_ws):
    """y (N, O, OH, OW) = stride-1 convolution of x (N, C, H, W) (eq. (K1)), for few output channels;
    grad-input is this with the flipped kernel (K6).  Weights packed by ``pack_panels(w2, 8, order)``; bias8 is
    the bias padded with zeros to whole blocks of 8.

    The tile's rows are 8 output channels, its columns 32 outputs of the wide grid, k running over
    the taps (p, c, q), kernel row first (``cpu._row_first_taps``), with offs[k] = c*HP*WP + p*WP + q;
    each block of 32 outputs leaves out the kernel rows that read only padding rows for all of them.  Workspaces per worker t: xf_ws[t], the
    padded image with at least KW + 32 floats of slack after it, and yw_ws[t], the wide output
    (8 * blocks, OH*WP rounded up to 32).

    Parallel over images: worker t of T = len(xf_ws) takes images t, t + T, ... and writes only its own
    images.
    """
    T = xf_ws.shape[0]
    aoffs = np.arange(offs.shape[0]) * MR  # column r of a weight panel starts at 8*r
    for t in prange(T):
        _conv_rows_images(x, wr, bias8, y, xf_ws[t], yw_ws[t], offs, aoffs, np.int64(t), T, PH, PW)


@njit(cache=True, fastmath=True)
def conv2d_rows_serial(x, wr, bias8, y, PH, PW, offs, xf_ws, yw_ws):
    """``conv2d_rows`` on the calling thread alone (small batches)."""
    aoffs = np.arange(offs.shape[0]) * MR
    _conv_rows_images(x, wr, bias8, y, xf_ws[0], yw_ws[0], offs, aoffs, ZERO, ONE, PH, PW)


# --- convolution, grad-weight (stride 1) -------------------------------------------------------------
#
# dL/dw[o, c, p, q] = sum_n sum_{i,j} dL/dy[n,o,i,j] * xpad[n, c, i+p, j+q]                   (K4)
#
# Lay each padded image out channels-last, xh[n, (h*WP + w)*C + c].  For a fixed tap row p and
# output position (i, j), the KW*C values xpad[n, c, i+p, j+q] for q < KW, c < C are then the KW*C
# consecutive floats of xh[n] from ((i+p)*WP + j)*C, in the order s = q*C + c.  So, with
# dWt[p, s, o] = dL/dw[o, c, p, q]:
#
#     dWt[p, s, o] = sum_n sum_{(i,j)} xh[n, ((i+p)*WP + j)*C + s] * dL/dy[n, o, i, j],
#
# a product with k = (n, i, j) running over every output position of every image, A = the runs of xh
# (8 values of s per position: 8 consecutive floats, read in place) and B = dL/dy transposed,
# (positions, O), laid out once for all the tasks so that k runs on through the images:
# gb[ob, k*32 + j] = dL/dy[n, 32*ob + j, i, j'] for k = n*P + i*OW + j'.
#
# Skipping the padding.  Where i + p or j + q falls in the zero border, xh holds zeros and the
# product adds nothing, so each block of 8 rows of dWt sums only over the positions that read real
# pixels for its (p, q): output rows i with PH <= i + p < H + PH and columns j with PW <= j + q < W + PW
# (28% of the products of the CIFAR-10 net's conv3, 8 x 8 outputs padded by 2, are such zeros).  The
# tile takes its k-th column and row from lists of offsets (aoffs, boffs), so the positions to visit
# are listed once per (p, q) for a group of images (``cpu._grad_weight_lists``), image-relative: the
# group starting at image n0 adds n0 to both.  A block whose 8 rows s = q*C + c straddle two values of
# q uses the list of its row p alone (every column).  One tile call covers a group of about GW_KC
# positions, several small images at a time.  dWt is cut into blocks of 8 rows (a tap row p and 8
# values of s) and each of the T tasks takes an equal run of blocks: it owns those rows of dWt, reads
# each group's part of B once for all of them, sums over k in order and shares no sum with another task.

GW_KC = 1024  # output positions (across images) per group: a group's 1024 x 32 part of a B panel is
# 128 KiB, read from L2; longer calls spread the tile's fixed cost (about 5% faster than 256 here)


@njit(cache=True)
def _channels_last(x, gy, xh, gb, n, PH, PW):
    """xh[n] = x[n] padded and channels-last, flat ((h*WP + w)*C + c), zeros after the image;
    gb[ob, (n*P + pos)*width + j] = gy[n, width*ob + j, pos] (zeros past O), width = 32 for the panels of
    ``conv2d_packed_grad_weight`` and 8 for those of ``conv2d_rows_grad_weight``."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    WP = W + 2 * PW
    O = gy.shape[1]
    P = gy.shape[2] * gy.shape[3]
    zero = xh.dtype.type(0)
    dst = xh[n]
    for k in range(dst.shape[0]):
        dst[k] = zero
    for c in range(C):
        for h in range(H):
            src = x[n, c, h]
            at = ((h + PH) * WP + PW) * C + c
            for w in range(W):
                dst[at + w * C] = src[w]
    width = gb.shape[1] // (x.shape[0] * P)
    gyn = gy[n].reshape(O, P)
    for ob in range(gb.shape[0]):
        panel = gb[ob, n * P * width:(n + 1) * P * width]
        for j in range(width):
            o = ob * width + j
            if o < O:
                src = gyn[o]
                for pos in range(P):
                    panel[pos * width + j] = src[pos]
            else:
                for pos in range(P):
                    panel[pos * width + j] = zero


@njit(cache=True, fastmath=True)
def _grad_weight_task(xf, gb, dWt, b0, b1, nsb, row_at, L, P, lists, ka, kb, counts, zeros8):
    """Blocks b0 ... b1 - 1 of dWt, block b being rows s = 8*(b % nsb) ... + 7 of tap row p = b // nsb,
    each summed over its positions in order, one group of images at a time.

    Block b visits the positions of list g = lists[b]: for a group of images starting at n0, the k-th
    is at xf[n0*L + ka[g, k] + p*row_at + 8*sb ...] in the images (ka[g, k] = u*L + (i*WP + j)*C for
    image n0 + u, position (i, j); row_at = WP*C, one padded row further down) and at
    gb[ob, n0*P*32 + kb[g, k] ...] in B (kb[g, k] = (u*P + i*OW + j)*32); counts[g] positions per
    image.  A group's part of B is read from memory once and then used by every block of the task,
    from cache."""
    N = gb.shape[1] // (P * NR)
    group = ka.shape[1] // P  # images per group
    for n0 in range(0, N, group):
        m = min(group, N - n0)
        for ob in range(gb.shape[0]):
            for b in range(b0, b1):
                p = b // nsb
                sb = b % nsb
                g = lists[b]
                tile8x32(xf, ka[g], n0 * L + p * row_at + sb * MR, gb[ob], kb[g], n0 * P * NR, m * counts[g],
                         zeros8, dWt[p], sb * MR, ob * NR, n0 == 0)


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_packed_grad_weight(x, gy, dWt, xh, gb, PH, PW, T, lists, ka, kb, counts):
    """dWt (KH, SP, OP): dWt[p, q*C + c, o] = dL/dw[o, c, p, q] for a stride-1 convolution (eq. (K4));
    SP = KW*C rounded up to 8 and OP = O rounded up to 32 (the extra rows and columns are scratch).

    xh (N, L) and gb (OP/32, N*P*32) are workspaces; (lists, ka, kb, counts) list the positions that
    each block of 8 rows visits (``cpu._grad_weight_lists``).  Two parallel passes: lay out every image
    (prange over images), then prange over T tasks, each an equal run of the KH * SP/8 blocks of 8 rows
    of dWt (T: the thread count).  No sum is split between tasks, so the result does not depend on T.
    """
    N, C, W = x.shape[0], x.shape[1], x.shape[3]
    WP = W + 2 * PW
    KH, SP = dWt.shape[0], dWt.shape[1]
    for n in prange(N):
        _channels_last(x, gy, xh, gb, np.int64(n), PH, PW)
    zeros8 = np.zeros(MR, dtype=dWt.dtype)
    xf = xh.reshape(xh.size)
    nsb = SP // MR
    blocks = KH * nsb
    tasks = min(T, blocks)
    P = gy.shape[2] * gy.shape[3]
    for t in prange(tasks):
        u = np.int64(t)
        _grad_weight_task(xf, gb, dWt, u * blocks // tasks, (u + 1) * blocks // tasks, nsb, WP * C, xh.shape[1],
                          P, lists, ka, kb, counts, zeros8)


@njit(cache=True, fastmath=True)
def conv2d_packed_grad_weight_serial(x, gy, dWt, xh, gb, PH, PW, lists, ka, kb, counts):
    """``conv2d_packed_grad_weight`` on the calling thread alone (small batches): the same sums."""
    N, C, W = x.shape[0], x.shape[1], x.shape[3]
    WP = W + 2 * PW
    KH, SP = dWt.shape[0], dWt.shape[1]
    for n in range(N):
        _channels_last(x, gy, xh, gb, n, PH, PW)
    zeros8 = np.zeros(MR, dtype=dWt.dtype)
    xf = xh.reshape(xh.size)
    nsb = SP // MR
    _grad_weight_task(xf, gb, dWt, ZERO, KH * nsb, nsb, WP * C, xh.shape[1], gy.shape[2] * gy.shape[3], lists, ka,
                      kb, counts, zeros8)


# --- convolution grad-weight with few output channels (stride 1): the tile turned around -------------
#
# With fewer than 32 output channels, panels of 32 channels would be mostly zeros, so the tile is
# turned around as in conv2d_rows: its 8 rows are 8 output channels, its 32 columns 32 values of
# s = q*C + c of one tap row p, and k runs over the output positions again,
#
#     dWr[p, o, s] = sum_n sum_{(i,j)} dL/dy[n, o, i, j] * xh[n, ((i+p)*WP + j)*C + s],
#
# A = dL/dy transposed in panels of 8 channels, g8[ob, k*8 + i] (8 consecutive floats per position),
# and B = the channels-last images read in place (32 consecutive floats per position; where KW*C is
# not a whole number of 32, the last columns read past the tap row and land in scratch columns of dWr).
# Each block (p, ob, sj) of dWr visits the positions of tap row p that read real pixels (list KH*KW + p
# of ``cpu._grad_weight_lists``), one group of images at a time.  For LeNet-5's conv2 (6 -> 16
# channels, KW*C = 30) this wastes 2 of 32 columns, where 32-channel panels would waste half.


@njit(cache=True, fastmath=True)
def _grad_weight_rows_task(xf, g8, dWr, b0, b1, row_at, L, P, ka, kb, counts, zeros8):
    """Blocks b0 ... b1 - 1 of dWr (KH, O8, SP), block b = (p, ob, sj) in that order: rows 8*ob ... + 7
    and columns 32*sj ... + 31 of dWr[p], summed over the positions of tap row p in order.

    ka[p, k] = u*L + (i*WP + j)*C (where image u of a group has position (i, j) in xf) and
    kb[p, k] = (u*P + i*OW + j)*8 (where that position's 8 channels start in a panel of g8); counts[p]
    positions per image."""
    N = g8.shape[1] // (P * MR)
    group = ka.shape[1] // P
    nob, nsj = dWr.shape[1] // MR, dWr.shape[2] // NR
    for n0 in range(0, N, group):
        m = min(group, N - n0)
        for b in range(b0, b1):
            p = b // (nob * nsj)
            ob = (b // nsj) % nob
            sj = b % nsj
            tile8x32(g8[ob], kb[p], n0 * P * MR, xf, ka[p], n0 * L + p * row_at + sj * NR, m * counts[p], zeros8,
                     dWr[p], ob * MR, sj * NR, n0 == 0)


@njit(cache=True, fastmath=True, parallel=True)
def conv2d_rows_grad_weight(x, gy, dWr, xh, g8, PH, PW, T, ka, kb, counts):
    """dWr (KH, O8, SP): dWr[p, o, q*C + c] = dL/dw[o, c, p, q] for a stride-1 convolution (eq. (K4));
    O8 = O rounded up to 8 and SP = KW*C rounded up to 32 (the extra rows and columns are scratch).

    xh (N, L) (L: at least HP*WP*C + 32) and g8 (O8/8, N*P*8) are workspaces; ka, kb, counts list the
    positions of each tap row that read real pixels (``cpu._grad_weight_row_lists``).  Two parallel
    passes, as ``conv2d_packed_grad_weight``: lay out every image, then T tasks, each an equal run of
    the blocks of dWr; no sum is split between tasks, so the result does not depend on T.
    """
    N, C, W = x.shape[0], x.shape[1], x.shape[3]
    WP = W + 2 * PW
    for n in prange(N):
        _channels_last(x, gy, xh, g8, np.int64(n), PH, PW)
    zeros8 = np.zeros(MR, dtype=dWr.dtype)
    xf = xh.reshape(xh.size)
    blocks = dWr.shape[0] * (dWr.shape[1] // MR) * (dWr.shape[2] // NR)
    tasks = min(T, blocks)
    P = gy.shape[2] * gy.shape[3]
    for t in prange(tasks):
        u = np.int64(t)
        _grad_weight_rows_task(xf, g8, dWr, u * blocks // tasks, (u + 1) * blocks // tasks, WP * C, xh.shape[1], P,
                               ka, kb, counts, zeros8)


@njit(cache=True, fastmath=True)
def conv2d_rows_grad_weight_serial(x, gy, dWr, xh, g8, PH, PW, ka, kb, counts):
    """``conv2d_rows_grad_weight`` on the calling thread alone (small batches): the same sums."""
    N, C, W = x.shape[0], x.shape[1], x.shape[3]
    WP = W + 2 * PW
    for n in range(N):
        _channels_last(x, gy, xh, g8, n, PH, PW)
    zeros8 = np.zeros(MR, dtype=dWr.dtype)
    xf = xh.reshape(xh.size)
    blocks = dWr.shape[0] * (dWr.shape[1] // MR) * (dWr.shape[2] // NR)
    _grad_weight_rows_task(xf, g8, dWr, ZERO, blocks, WP * C, xh.shape[1], gy.shape[2] * gy.shape[3], ka, kb, counts,
                           zeros8)
