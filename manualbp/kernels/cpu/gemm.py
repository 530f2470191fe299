"""The matrix product on the CPU: ``matmul``, which picks one of three kernels from the shapes.

Derivation: derivations/03-linear.md ((L1)-(L3)); readable twin: ``reference.matmul``
(``tests/test_kernels.py`` and ``tests/test_packed.py`` hold them equal).  The kernels are in
``gemm_dot.py`` (dot products and row sums, for short products) and ``gemm_packed.py`` (the 8 x 32
register tile of ``tile.py`` on packed panels, for the rest).
"""
import numba
import numpy as np

from ..outputs import written
from . import gemm_packed
from .common import workspace
from .gemm_dot import PARALLEL_MIN_MACS, matmul_nn, matmul_nn_serial, matmul_nt, matmul_nt_serial, transpose
from .machine import matmul_blocking

# Products whose inner size K is at most NN_MAX_K, or with at most NN_MAX_M rows (a small batch), use
# the "NN" form (rows of b added into rows of the output), which needs no packing; x . W^T with at most
# NT_MAX_M rows (a Linear layer's forward up to batch 64) the "NT" form (dot products of rows, no
# copies); the others the 8 x 32 register tiles of gemm_packed.py, whose packing pays off only on
# larger products.
NN_MAX_K = 64
NN_MAX_M = 64
NT_MAX_M = 64


def matmul(a, b, transpose_a=False, transpose_b=False, out=None):
    """op(a) @ op(b) -> (M, N), eqs. (L1)-(L3), written into ``out`` if given.  Twin of reference.matmul."""
    return written(out, _matmul(a, b, transpose_a, transpose_b))


def _matmul(a, b, transpose_a, transpose_b):
    """op(a) @ op(b) -> (M, N); see reference.matmul's docstring for shapes.

    Three layouts, chosen from the shapes only (so the rounding never depends on the thread count):
    - K <= NN_MAX_K or M <= NN_MAX_M, and b not transposed (a Linear layer's backward):
      ``gemm_dot.matmul_nn`` reads b as it is, (K, N) rows, and only op(a) may need a transposed copy;
    - a . b^T with at most NT_MAX_M rows (a Linear layer's forward): ``gemm_dot.matmul_nt``, dot products
      of rows of a and rows of b, nothing copied;
    - otherwise ``gemm_packed.matmul_packed`` copies op(a) and op(b) into panels (reading either layout)
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
    blocking = matmul_blocking(a.dtype.itemsize)  # from this machine's caches (machine.py)
    b_shape, a_shape = gemm_packed.matmul_panel_shapes(M, N, K, T, blocking)
    Bp, Ap = workspace("matmul-b-panels", b_shape, a.dtype), workspace("matmul-a-panels", a_shape, a.dtype)
    nmax = np.int64(blocking.in_place_max_n)
    if big:
        gemm_packed.matmul_packed(a, transpose_a, b, transpose_b, out, Bp, Ap, nmax)
    else:
        gemm_packed.matmul_packed_serial(a, transpose_a, b, transpose_b, out, Bp, Ap, nmax)
    return out

