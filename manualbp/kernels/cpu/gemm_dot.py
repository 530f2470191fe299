"""Dot-product matrix kernels (used by ``gemm.py`` for short products and by ``conv_im2col.py``).

Derivation: derivations/03-linear.md ((L1)-(L3): the three products of a Linear layer);
readable twin: ``reference.matmul``.  Long matrix products go to the 8 x 32 outer-product tiles of
``tile.py``; what stays here is what suits short sums and im2col's layouts.

"NT" form,

    Cout[m, n] = sum_k A[m, k] * Bt[n, k]        A (M, K), Bt (N, K), both C-contiguous:

each output is a dot product of two contiguous rows; the k loop reads memory in order, from index 0,
and LLVM vectorizes it (fast-math lets it split each sum into vector lanes).  ``_tile4x4`` computes a
4 x 4 block of outputs in one pass over k, keeping 16 running sums in registers, so every element loaded
from A or Bt is used 4 times (16 multiply-adds per 8 loads); edges use ``_dot4`` or ``_dot``.  The
im2col grad-weight (``conv_im2col.py``) uses it through ``nt_region``, and ``matmul_nt`` a Linear layer's
forward at small batches (no copy of the weights, which is what packed panels would cost).  The price of
this tile: at its end each of the 16 sums must be reduced across the lanes of a vector, which the
outer-product tiles of ``tile.py`` avoid.

"NN" form, Cout[m] = sum_k A[m, k] * B[k] (rows of B added into a row of Cout, four at a time):
``nn_rows`` / ``matmul_nn``, for a short K and long contiguous rows (a Linear layer's backward, a
convolution's W2 . col).

Determinism: which routine computes an element depends only on the shapes, never on which thread runs
it, and no sum is ever split between threads, so results do not depend on NUMBA_NUM_THREADS.
"""
import numpy as np
from numba import njit, prange

from .tile import U1, U2, U3  # unsigned constants (an int plus an unsigned int is a float in Numba)

TILE = 4  # rows/columns of a register tile



@njit(cache=True, fastmath=True)
def _dot(a, b):
    """sum_k a[k] * b[k] for two contiguous rows of equal length."""
    acc = a.dtype.type(0)
    for k in range(a.shape[0]):
        acc += a[k] * b[k]
    return acc


@njit(cache=True, fastmath=True)
def _dot4(a, b0, b1, b2, b3):
    """(a.b0, a.b1, a.b2, a.b3): one row against four, each a loaded once per k (5 loads, 4 multiply-adds)."""
    s0 = s1 = s2 = s3 = a.dtype.type(0)
    for k in range(a.shape[0]):
        x = a[k]
        s0 += x * b0[k]
        s1 += x * b1[k]
        s2 += x * b2[k]
        s3 += x * b3[k]
    return s0, s1, s2, s3


@njit(cache=True, fastmath=True)
def _store(Cout, m, n, value, accumulate):
    if accumulate:
        Cout[m, n] += value
    else:
        Cout[m, n] = value


@njit(cache=True, fastmath=True)
def _tile4x4(A, Bt, Cout, m, n, accumulate):
    """Cout[m:m+4, n:n+4] (+)= A[m:m+4] . Bt[n:n+4]^T with 16 register accumulators."""
    a0 = A[m]
    a1 = A[m + 1]
    a2 = A[m + 2]
    a3 = A[m + 3]
    b0 = Bt[n]
    b1 = Bt[n + 1]
    b2 = Bt[n + 2]
    b3 = Bt[n + 3]
    c00 = c01 = c02 = c03 = A.dtype.type(0)
    c10 = c11 = c12 = c13 = A.dtype.type(0)
    c20 = c21 = c22 = c23 = A.dtype.type(0)
    c30 = c31 = c32 = c33 = A.dtype.type(0)
    for k in range(A.shape[1]):
        x0 = a0[k]
        x1 = a1[k]
        x2 = a2[k]
        x3 = a3[k]
        y0 = b0[k]
        y1 = b1[k]
        y2 = b2[k]
        y3 = b3[k]
        c00 += x0 * y0
        c01 += x0 * y1
        c02 += x0 * y2
        c03 += x0 * y3
        c10 += x1 * y0
        c11 += x1 * y1
        c12 += x1 * y2
        c13 += x1 * y3
        c20 += x2 * y0
        c21 += x2 * y1
        c22 += x2 * y2
        c23 += x2 * y3
        c30 += x3 * y0
        c31 += x3 * y1
        c32 += x3 * y2
        c33 += x3 * y3
    _store(Cout, m, n, c00, accumulate)
    _store(Cout, m, n + 1, c01, accumulate)
    _store(Cout, m, n + 2, c02, accumulate)
    _store(Cout, m, n + 3, c03, accumulate)
    _store(Cout, m + 1, n, c10, accumulate)
    _store(Cout, m + 1, n + 1, c11, accumulate)
    _store(Cout, m + 1, n + 2, c12, accumulate)
    _store(Cout, m + 1, n + 3, c13, accumulate)
    _store(Cout, m + 2, n, c20, accumulate)
    _store(Cout, m + 2, n + 1, c21, accumulate)
    _store(Cout, m + 2, n + 2, c22, accumulate)
    _store(Cout, m + 2, n + 3, c23, accumulate)
    _store(Cout, m + 3, n, c30, accumulate)
    _store(Cout, m + 3, n + 1, c31, accumulate)
    _store(Cout, m + 3, n + 2, c32, accumulate)
    _store(Cout, m + 3, n + 3, c33, accumulate)


@njit(cache=True, fastmath=True)
def nt_region(A, Bt, Cout, m0, m1, n0, n1, accumulate):
    """Cout[m0:m1, n0:n1] (+)= A[m0:m1] . Bt[n0:n1]^T, serially.  Twin: reference.matmul.

    4 x 4 tiles where they fit; leftover columns of a 4-row block as four-row dot products
    (``_dot4`` with the roles of A and Bt swapped); leftover rows one at a time against four columns.
    ``m0`` and ``n0`` should be multiples of 4 so that the tiling, and so every rounding, is the same
    however the caller splits the work.
    """
    m = m0
    while m + TILE <= m1:
        n = n0
        while n + TILE <= n1:
            _tile4x4(A, Bt, Cout, m, n, accumulate)
            n += TILE
        for nn in range(n, n1):
            s0, s1, s2, s3 = _dot4(Bt[nn], A[m], A[m + 1], A[m + 2], A[m + 3])
            _store(Cout, m, nn, s0, accumulate)
            _store(Cout, m + 1, nn, s1, accumulate)
            _store(Cout, m + 2, nn, s2, accumulate)
            _store(Cout, m + 3, nn, s3, accumulate)
        m += TILE
    for mm in range(m, m1):
        a = A[mm]
        n = n0
        while n + TILE <= n1:
            s0, s1, s2, s3 = _dot4(a, Bt[n], Bt[n + 1], Bt[n + 2], Bt[n + 3])
            _store(Cout, mm, n, s0, accumulate)
            _store(Cout, mm, n + 1, s1, accumulate)
            _store(Cout, mm, n + 2, s2, accumulate)
            _store(Cout, mm, n + 3, s3, accumulate)
            n += TILE
        for nn in range(n, n1):
            _store(Cout, mm, nn, _dot(a, Bt[nn]), accumulate)


PANEL = 64  # columns of Cout per parallel task in matmul_nt (a multiple of TILE)


@njit(cache=True, fastmath=True)
def _matmul_task(A, Bt, Cout, t, panels):
    """Task t of ``matmul_nt``: the block of Cout with rows 4*(t // panels) ... +4 and PANEL columns from
    PANEL*(t % panels).  It sums over the whole of k itself, so the block is the same whoever runs it."""
    M = A.shape[0]
    N = Bt.shape[0]
    m0 = (t // panels) * TILE
    n0 = (t % panels) * PANEL
    nt_region(A, Bt, Cout, m0, min(m0 + TILE, M), n0, min(n0 + PANEL, N), False)


@njit(cache=True, fastmath=True, parallel=True)
def matmul_nt(A, Bt, Cout):
    """Cout = A . Bt^T, (M, K) x (N, K) -> (M, N), with nothing copied: a Linear layer's forward,
    x . W^T, at small batches, where packing W into panels would cost more than the product.
    Twin: reference.matmul.

    Parallel over tasks of 4 rows x PANEL columns of Cout (prange): each task writes its own block and
    sums over the whole of k itself.
    """
    panels = (Bt.shape[0] + PANEL - 1) // PANEL
    for t in prange(((A.shape[0] + TILE - 1) // TILE) * panels):
        _matmul_task(A, Bt, Cout, np.int64(t), panels)


@njit(cache=True, fastmath=True)
def matmul_nt_serial(A, Bt, Cout):
    """``matmul_nt`` on the calling thread alone, for small products (same tasks, same bits)."""
    panels = (Bt.shape[0] + PANEL - 1) // PANEL
    for t in range(((A.shape[0] + TILE - 1) // TILE) * panels):
        _matmul_task(A, Bt, Cout, t, panels)


@njit(cache=True)
def _transpose_block(a, out, jb):
    """Rows 32*jb ... 32*jb+31 of out = a.T, read in 32 x 32 blocks (both sides stay in a few cache lines)."""
    R, S = a.shape
    B = 32
    j0 = jb * B
    j1 = min(j0 + B, S)
    for i0 in range(0, R, B):
        i1 = min(i0 + B, R)
        for j in range(j0, j1):
            row = out[j]
            for i in range(i0, i1):
                row[i] = a[i, j]


@njit(cache=True, parallel=True)
def _transpose(a, out):
    """out[j, i] = a[i, j].  Parallel over blocks of 32 rows of ``out`` (prange): each thread writes its own."""
    for jb in prange((a.shape[1] + 31) // 32):
        _transpose_block(a, out, np.int64(jb))


@njit(cache=True)
def _transpose_serial(a, out):
    """``_transpose`` on the calling thread alone, for small arrays."""
    for jb in range((a.shape[1] + 31) // 32):
        _transpose_block(a, out, jb)


# Below this many multiply-adds (or, for copies, elements) a kernel runs on the calling thread: starting
# the thread pool would cost more than it saves.  The choice depends only on the shapes, never on the
# thread count, and both paths run the same tasks, so results are the same either way.
PARALLEL_MIN_MACS = 1 << 21
PARALLEL_MIN_ELEMENTS = 1 << 18


def transpose(a):
    """A C-contiguous copy of the 2-D array ``a.T`` (NumPy's own copy of a transposed view is slow)."""
    a = np.ascontiguousarray(a)
    out = np.empty((a.shape[1], a.shape[0]), dtype=a.dtype)
    (_transpose if a.size >= PARALLEL_MIN_ELEMENTS else _transpose_serial)(a, out)
    return out


@njit(cache=True, fastmath=True)
def _nn_block4(A, B, Cout, m, n0, n1, k0, k1):
    """Rows m ... m+3 of Cout = A . B together: each pass over j adds four rows of B (four k) into four
    rows of Cout, i.e. a 4 x 4 register tile of A's values against 4 + 4 loads and 4 stores per j
    (16 multiply-adds), where one row at a time needs 4 + 1 loads and a store for 4.  Only columns
    n0 <= j < n1 and the terms k0 <= k < k1 (a block of B that stays in cache while many row blocks
    pass over it); the rows are zeroed first when k0 == 0.

    Rows are read and written through 2-D unsigned indices, not row slices: a slice is a new array whose
    reference count Numba raises and drops (two atomic operations), four per step of four k here, and a
    signed index is tested for Python's negative indices."""
    K4 = k0 + (k1 - k0) - (k1 - k0) % 4
    zero = A.dtype.type(0)
    r0 = np.uint64(m)
    r1, r2, r3 = r0 + U1, r0 + U2, r0 + U3
    j0, j1 = np.uint64(n0), np.uint64(n1)
    if k0 == 0:
        for j in range(j0, j1):
            Cout[r0, j] = zero
            Cout[r1, j] = zero
            Cout[r2, j] = zero
            Cout[r3, j] = zero
    for k in range(k0, K4, 4):
        a00, a01, a02, a03 = A[m, k], A[m, k + 1], A[m, k + 2], A[m, k + 3]
        a10, a11, a12, a13 = A[m + 1, k], A[m + 1, k + 1], A[m + 1, k + 2], A[m + 1, k + 3]
        a20, a21, a22, a23 = A[m + 2, k], A[m + 2, k + 1], A[m + 2, k + 2], A[m + 2, k + 3]
        a30, a31, a32, a33 = A[m + 3, k], A[m + 3, k + 1], A[m + 3, k + 2], A[m + 3, k + 3]
        q0 = np.uint64(k)
        q1, q2, q3 = q0 + U1, q0 + U2, q0 + U3
        for j in range(j0, j1):
            x0 = B[q0, j]
            x1 = B[q1, j]
            x2 = B[q2, j]
            x3 = B[q3, j]
            Cout[r0, j] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
            Cout[r1, j] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
            Cout[r2, j] += a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
            Cout[r3, j] += a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
    for k in range(K4, k1):
        a0, a1, a2, a3 = A[m, k], A[m + 1, k], A[m + 2, k], A[m + 3, k]
        q0 = np.uint64(k)
        for j in range(j0, j1):
            x0 = B[q0, j]
            Cout[r0, j] += a0 * x0
            Cout[r1, j] += a1 * x0
            Cout[r2, j] += a2 * x0
            Cout[r3, j] += a3 * x0


@njit(cache=True, fastmath=True)
def _nn_row(A, B, Cout, m, n0, n1, k0, k1):
    """Row m of Cout = A . B alone: a running sum of rows of B, four at a time (the edge of ``_nn_block4``)."""
    K4 = k0 + (k1 - k0) - (k1 - k0) % 4
    r = np.uint64(m)
    j0, j1 = np.uint64(n0), np.uint64(n1)
    if k0 == 0:
        for j in range(j0, j1):
            Cout[r, j] = A.dtype.type(0)
    for k in range(k0, K4, 4):
        a0, a1, a2, a3 = A[m, k], A[m, k + 1], A[m, k + 2], A[m, k + 3]
        q0 = np.uint64(k)
        q1, q2, q3 = q0 + U1, q0 + U2, q0 + U3
        for j in range(j0, j1):
            Cout[r, j] += a0 * B[q0, j] + a1 * B[q1, j] + a2 * B[q2, j] + a3 * B[q3, j]
    for k in range(K4, k1):
        a0 = A[m, k]
        q0 = np.uint64(k)
        for j in range(j0, j1):
            Cout[r, j] += a0 * B[q0, j]


@njit(cache=True, fastmath=True)
def nn_rows(A, B, Cout, m0, m1):
    """Cout[m] = sum_k A[m, k] * B[k] for m0 <= m < m1, serially: "NN" form, A (M, K), B (K, N).

    For a short K and a long contiguous N (a convolution's W2 . col), each output row is built as a
    running sum of rows of B, four at a time: ``c[j] += a0*b0[j] + a1*b1[j] + a2*b2[j] + a3*b3[j]``
    is one contiguous, vectorized pass over j per four k.  Rows go four at a time (``_nn_block4``:
    each row of B loaded once for four output rows), the last m1 - m0 mod 4 alone.  Which routine a
    row gets depends only on m0, m1, and every c[j] is summed in k order, so the rounding is the
    same whichever thread computes the row.
    """
    nn_region(A, B, Cout, m0, m1, 0, B.shape[1])


@njit(cache=True, fastmath=True)
def nn_region(A, B, Cout, m0, m1, n0, n1):
    """Cout[m0:m1, n0:n1] = A[m0:m1] . B[:, n0:n1], serially, rows four at a time (see ``nn_rows``).

    Cache blocking: the k terms go in chunks of NN_KC, and each chunk is applied to all the rows
    before the next, so the block B[k0:k1, n0:n1] (NN_KC x up to NN_PANEL floats) is read from
    cache by every row block.  Every Cout[m, j] is still summed in k order, four terms at a time, by
    the same code whatever the region, so the split changes nothing in the result.
    """
    K = A.shape[1]
    for k0 in range(0, max(K, 1), NN_KC):
        k1 = min(k0 + NN_KC, K)
        m = m0
        while m + 4 <= m1:
            _nn_block4(A, B, Cout, m, n0, n1, k0, k1)
            m += 4
        for mm in range(m, m1):
            _nn_row(A, B, Cout, mm, n0, n1, k0, k1)


NN_ROWS = 64  # rows of Cout per parallel task in matmul_nn (a multiple of 4)
NN_PANEL = 256  # columns of Cout per task
NN_KC = 128  # k terms per cache block in nn_region (a multiple of 4)


@njit(cache=True, fastmath=True)
def _matmul_nn_task(A, B, Cout, t, panels):
    """Task t of ``matmul_nn``: rows NN_ROWS*(t // panels) ..., columns NN_PANEL*(t % panels) ... of Cout."""
    M, N = Cout.shape
    m0 = (t // panels) * NN_ROWS
    n0 = (t % panels) * NN_PANEL
    nn_region(A, B, Cout, m0, min(m0 + NN_ROWS, M), n0, min(n0 + NN_PANEL, N))


@njit(cache=True, fastmath=True, parallel=True)
def matmul_nn(A, B, Cout):
    """Cout = A . B, (M, K) x (K, N) -> (M, N), in the "NN" form of ``nn_rows``.  Twin: reference.matmul.

    No transposed copy of B is needed, and there are no dot products to reduce across vector lanes:
    each pass over a row segment adds four rows of B into four rows of Cout (``_nn_block4``).
    Parallel over tasks of NN_ROWS rows x NN_PANEL columns (prange); every element of Cout is
    summed in k order by one task.
    """
    panels = (B.shape[1] + NN_PANEL - 1) // NN_PANEL
    for t in prange(((A.shape[0] + NN_ROWS - 1) // NN_ROWS) * panels):
        _matmul_nn_task(A, B, Cout, np.int64(t), panels)


@njit(cache=True, fastmath=True)
def matmul_nn_serial(A, B, Cout):
    """``matmul_nn`` on the calling thread alone, for small products (same tasks, same sums)."""
    panels = (B.shape[1] + NN_PANEL - 1) // NN_PANEL
    for t in range(((A.shape[0] + NN_ROWS - 1) // NN_ROWS) * panels):
        _matmul_nn_task(A, B, Cout, t, panels)
