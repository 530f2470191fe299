"""The packed matrix product: op(a) @ op(b) on the 8 x 32 register tile of ``tile.py``.

Derivation: derivations/03-linear.md ((L1)-(L3)); readable twin: ``reference.matmul``
(``tests/test_kernels.py`` and ``tests/test_packed.py`` hold them equal).  How the product maps onto
the tile (B packed per block of kc rows of k, or read in place when narrow; each task packing its own
rows of A) is described at the top of ``tile.py``.  The block sizes -- kc, the rows of C per task, the
widest b read in place -- come from this machine's caches (``machine.py``); the kernels read kc off the
workspaces' shapes and take the in-place width as an argument, so one compiled kernel serves any blocking.
"""
import numpy as np
from numba import njit, prange

from .tile import MR, NR, U1, U2, U3, U4, U5, U6, U7, ZERO, _tile_into

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
def _b_read_in_place(B, tb, nmax):
    """Whether op(B)'s whole 32-column panels are read where they lie in B instead of packed: B not
    transposed (row k of a panel is then 32 consecutive floats of B's row k) and at most nmax columns wide
    (``machine.Blocking.in_place_max_n``).  A last panel narrower than 32 columns is packed all the same."""
    return not tb and B.shape[1] <= nmax


@njit(cache=True)
def _b_in_place(B, tb, jb, nmax):
    """Whether panel jb of op(B) is read in place (``_b_read_in_place``, and the panel wholly inside B)."""
    return _b_read_in_place(B, tb, nmax) and (jb + 1) * NR <= B.shape[1]


@njit(cache=True, fastmath=True)
def _matmul_rows(A, ta, B, tb, Bp, aoffs, boffs, C, i0, i1, Ap, tmp, zeros8, nmax):
    """Rows i0 ... i1-1 of C = op(A)[rows] . op(B), op(B) packed as Bp[kb, jb] (block kb of kc rows of k,
    panel jb of 32 columns; kc = Bp.shape[2] / 32) or read in place (``_b_in_place``).  For each block of k: pack this task's
    rows of op(A), then for each B panel run the tiles of all the row panels.  C[i, j] sums the k blocks
    in order."""
    K = A.shape[0] if ta else A.shape[1]
    KC = Bp.shape[2] // NR
    nib = (i1 - i0 + MR - 1) // MR
    flat = B.reshape(-1)  # a view (B is C-contiguous)
    Bpf, Apf = Bp.reshape(-1), Ap.reshape(-1)  # flat views, made once: the tile takes offsets, not slices
    rows_of_b = np.arange(KC) * B.shape[1]  # row k of an in-place panel: flat[(k0 + k)*N + j0 ...]
    for kb in range(Bp.shape[0]):
        k0 = kb * KC
        kc = min(KC, K - k0)
        for ib in range(nib):
            _pack_a(A, ta, i0 + ib * MR, k0, kc, Ap[ib])
        for jb in range(Bp.shape[1]):
            if _b_in_place(B, tb, jb, nmax):
                src, offs, at = flat, rows_of_b, k0 * B.shape[1] + jb * NR
            else:
                src, offs, at = Bpf, boffs, (kb * Bp.shape[1] + jb) * Bp.shape[2]
            for ib in range(nib):
                _tile_into(Apf, ib * Ap.shape[1], aoffs, src, offs, at, kc, zeros8, C, i0 + ib * MR, jb * NR, kb == 0,
                           tmp)


def _row_tasks(M, T, mc_max):
    """Rows of C per task: a multiple of 8, at most mc_max, and a number of tasks that is a multiple of
    the T threads where possible (which rows a task gets does not change any sum, only the balance)."""
    panels = (M + MR - 1) // MR
    per_thread = (panels + T - 1) // T
    chunks = (per_thread * MR + mc_max - 1) // mc_max  # tasks per thread
    mc = ((panels + T * chunks - 1) // (T * chunks)) * MR
    return max(mc, MR)


def matmul_panel_shapes(M, N, K, T, blocking):
    """Shapes of the two workspaces of ``matmul_packed`` for T threads (T = 1: ``matmul_packed_serial``) and a
    ``machine.Blocking`` (kc, mc, in_place_max_n): op(B)'s panels (nk, nj, kc*32) and each task's A panels
    (tasks, rows per task / 8, kc*8)."""
    KC = blocking.kc
    nk, nj = max(1, (K + KC - 1) // KC), (N + NR - 1) // NR
    mc = _row_tasks(M, T, blocking.mc) if T > 1 else max(MR, (M + MR - 1) // MR * MR)
    return (nk, nj, KC * NR), ((M + mc - 1) // mc, mc // MR, KC * MR)


@njit(cache=True, fastmath=True, parallel=True)
def matmul_packed(A, ta, B, tb, C, Bp, Ap, nmax):
    """C = op(A) . op(B), (M, K) x (K, N) -> (M, N); op transposes when ta / tb.  Twin: reference.matmul.

    Workspaces, shaped by ``matmul_panel_shapes``: Bp for op(B)'s panels, Ap[t] for task t's A panels
    (allocating them here on every call would cost page faults for a fresh megabyte or more).  Two
    parallel passes: pack all of op(B) into 32-column panels of kc rows (prange over panels; when B is
    read in place, ``_b_read_in_place``, only a last narrow panel is packed, serially), then prange over
    the tasks, blocks of Ap.shape[1] * 8 rows of C, each packing its own rows of op(A) and
    running its tiles over the whole of k.  kc = Bp.shape[2] / 32; nmax: the widest B read in place.
    """
    M = C.shape[0]
    K = A.shape[0] if ta else A.shape[1]
    KC = Bp.shape[2] // NR
    nk, nj = (K + KC - 1) // KC, Bp.shape[1]
    mc = Ap.shape[1] * MR
    zeros8 = np.zeros(MR, dtype=C.dtype)
    aoffs = np.arange(KC) * MR  # column k of a packed A panel starts at 8*k
    boffs = np.arange(KC) * NR  # row k of a packed B panel starts at 32*k
    if K == 0:
        C[:] = 0
    if not _b_read_in_place(B, tb, nmax):
        for t in prange(nk * nj):
            u = np.int64(t)
            kb = u // nj
            _pack_b(B, tb, kb * KC, min(KC, K - kb * KC), u % nj, Bp[kb])
    elif not _b_in_place(B, tb, nj - 1, nmax):  # only the last panel, narrower than 32 columns, is packed
        for kb in range(nk):
            _pack_b(B, tb, kb * KC, min(KC, K - kb * KC), nj - 1, Bp[kb])
    for t in prange(Ap.shape[0]):
        tmp = np.empty((MR, NR), dtype=C.dtype)
        u = np.int64(t)
        _matmul_rows(A, ta, B, tb, Bp, aoffs, boffs, C, u * mc, min(u * mc + mc, M), Ap[t], tmp, zeros8, nmax)


@njit(cache=True, fastmath=True)
def matmul_packed_serial(A, ta, B, tb, C, Bp, Ap, nmax):
    """``matmul_packed`` on the calling thread alone (small products): the same tiles, the same sums.
    Ap holds one task, all the rows of C."""
    M = C.shape[0]
    K = A.shape[0] if ta else A.shape[1]
    KC = Bp.shape[2] // NR
    nk, nj = (K + KC - 1) // KC, Bp.shape[1]
    tmp = np.empty((MR, NR), dtype=C.dtype)
    zeros8 = np.zeros(MR, dtype=C.dtype)
    aoffs = np.arange(KC) * MR
    boffs = np.arange(KC) * NR
    if K == 0:
        C[:] = 0
    for t in range(nk * nj):
        if not _b_in_place(B, tb, t % nj, nmax):
            kb = t // nj
            _pack_b(B, tb, kb * KC, min(KC, K - kb * KC), t % nj, Bp[kb])
    _matmul_rows(A, ta, B, tb, Bp, aoffs, boffs, C, ZERO, M, Ap[0], tmp, zeros8, nmax)
