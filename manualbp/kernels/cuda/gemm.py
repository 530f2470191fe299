"""The tiled matrix product on the GPU: one kernel shape for matmul and for the three convolutions.

Derivation: derivations/11-gpu-tiled-matmul.md (a Linear layer's product and bias, (L1): derivations/03-linear.md)

    C[m, n] = sum_k A[m, k] * B[k, n]          M x N outputs, K terms each

Every thread block computes one BM x BN tile of C.  It walks along K in steps of BK: all its threads
copy a BM x BK tile of A and a BK x BN tile of B from global memory into shared memory (each element
read from global memory once per block instead of once per output: (G2)-(G4)), wait, and then each
thread multiplies the tiles into its own TM x TN register tile of C (G5), reading TM + TN shared values
for TM * TN multiply-adds.  Outside the matrix the tiles are filled with zeros, which add nothing (G6).

How an element A[m, k] or B[k, n] is fetched is the only thing that differs between a plain matmul, a
transposed one, and a convolution seen as a matrix product (implicit GEMM, (G8)): ``make_gemm_kernel``
takes the two fetch functions and two output-offset functions as arguments and returns the kernel.  The same
holds for the tile sizes, which are compile-time constants of each kernel.

Split-K (G7): when C has too few tiles to fill the GPU but K is long (a convolution's weight gradient
sums over the whole batch), grid dimension z cuts K into S fixed slices; block z writes its partial
tile to slice z of a scratch array and ``sum_splits_kernel`` adds the S slices in order 0..S-1.  S
depends on the shapes only, so the result is the same on every run and every GPU, with no atomics.

Legend: M, N, K the product's sizes; BM, BN, BK the block tile; TM, TN the register tile per thread;
TX = BN / TN and TY = BM / TM threads per block along n and m; S the number of K slices.
"""
import numpy as np
from numba import cuda, float32

from .buffers import empty
from .launch import THREADS, blocks, device_f32, empty_f32, flat, output


class TileConfig:
    """Tile sizes of one GEMM kernel (compile-time constants of the kernels made with it)."""

    def __init__(self, name, bm, bn, bk, tm, tn):
        self.name, self.bm, self.bn, self.bk, self.tm, self.tn = name, bm, bn, bk, tm, tn
        self.tx, self.ty = bn // tn, bm // tm  # threads per block along n and along m
        threads = self.tx * self.ty
        if bm % tm or bn % tn or (bm * bk) % threads or (bk * bn) % threads:
            raise ValueError(f"TileConfig {name}: the tiles must split evenly among the {threads} threads")

    def __repr__(self):
        return f"TileConfig({self.name}: {self.bm}x{self.bn}x{self.bk}, {self.tm}x{self.tn} per thread)"


# 256 threads each.  SMALL wastes less where M or N is small (a convolution has 6..64 output
# channels); LARGE does 64 multiply-adds per 16 shared-memory reads instead of 16 per 8 (G5).
SMALL = TileConfig("small", 64, 64, 16, 4, 4)
LARGE = TileConfig("large", 128, 128, 8, 8, 8)

# Split-K policy (G7); it depends on the shapes only, never on the GPU it runs on.
TARGET_BLOCKS = 256  # aim for about this many blocks in flight
MIN_K_PER_SPLIT = 256  # every slice sums at least this many k (a multiple of BK is taken)


def make_gemm_kernel(load_a, a_k_fastest, load_b, b_k_fastest, row_offset, col_offset, cfg, with_bias=False,
                     bias_per_column=False):
    """The tiled GEMM kernel over the given element fetches, as a plain Python function.

    load_a(a, geom, m, k) -> A[m, k] and load_b(b, geom, k, n) -> B[k, n] are device functions called
    only for 0 <= m < M, 0 <= n < N and k inside this block's K slice.  The result C[m, n] of K slice
    z (plus bias[m] if ``with_bias`` and ``bias`` has elements -- bias[n] if ``bias_per_column``, a
    Linear layer's bias, added where the product is written instead of by a second kernel; plus what
    is there if ``accumulate``)
    goes to c[row_offset(geom, M, N, z, m) + col_offset(geom, M, N, n)] of the flat output ``c``.
    ``a_k_fastest``/``b_k_fastest`` say whether k is the index that runs along contiguous memory,
    so that neighbouring threads read neighbouring addresses (coalesced loads).  ``cfg`` gives the
    tile sizes.  Launch with blockDim (TX, TY) and grid (ceil(N/BN), ceil(M/BM), S); ``k_split`` is
    the length of one K slice, a multiple of BK (K itself when S = 1).
    """
    BM, BN, BK, TM, TN, TX, TY = cfg.bm, cfg.bn, cfg.bk, cfg.tm, cfg.tn, cfg.tx, cfg.ty
    NT = TX * TY  # threads per block
    A_LOADS = BM * BK // NT  # elements of the A tile each thread copies
    B_LOADS = BK * BN // NT
    # One spare column, so that threads writing down a column of the tile hit different memory banks.
    BM_PAD = BM + 1
    BN_PAD = BN + 1

    def gemm(a, b, c, bias, geom, M, N, K, k_split, accumulate):
        As = cuda.shared.array((BK, BM_PAD), float32)  # As[kk, mm] = A[m0 + mm, k0 + kk]
        Bs = cuda.shared.array((BK, BN_PAD), float32)  # Bs[kk, nn] = B[k0 + kk, n0 + nn]
        acc = cuda.local.array((TM, TN), float32)  # this thread's register tile of C (G5)
        a_reg = cuda.local.array(TM, float32)
        b_reg = cuda.local.array(TN, float32)

        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        m0 = cuda.blockIdx.y * BM  # this block's tile of C starts at row m0, column n0
        n0 = cuda.blockIdx.x * BN
        z = cuda.blockIdx.z  # which K slice (G7)
        # Thread (tx, ty) owns rows m0 + ty + i*TY and columns n0 + tx + j*TX: a warp then reads
        # consecutive shared-memory words (no bank conflicts) and writes consecutive columns of C.
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = float32(0.0)

        k_begin = z * k_split
        k_end = min(K, k_begin + k_split)
        # The number of trips depends on K, k_split and z only: the same for every thread of the
        # block, so every thread reaches every syncthreads below.  No thread returns early.
        for k0 in range(k_begin, k_end, BK):
            for load in range(A_LOADS):
                e = tid + load * NT
                if a_k_fastest:
                    mm = e // BK
                    kk = e % BK
                else:
                    kk = e // BM
                    mm = e % BM
                m = m0 + mm
                k = k0 + kk
                v = float32(0.0)  # zero outside the matrix: adds nothing to the sum (G6)
                if m < M and k < k_end:
                    v = load_a(a, geom, m, k)
                As[kk, mm] = v
            for load in range(B_LOADS):
                e = tid + load * NT
                if b_k_fastest:
                    nn = e // BK
                    kk = e % BK
                else:
                    kk = e // BN
                    nn = e % BN
                n = n0 + nn
                k = k0 + kk
                v = float32(0.0)
                if n < N and k < k_end:
                    v = load_b(b, geom, k, n)
                Bs[kk, nn] = v
            # Protects the tiles just written: no thread reads As/Bs until every thread has
            # finished copying its share of them.
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    a_reg[i] = As[kk, ty + i * TY]
                for j in range(TN):
                    b_reg[j] = Bs[kk, tx + j * TX]
                for i in range(TM):  # TM * TN multiply-adds from TM + TN shared reads (G5)
                    for j in range(TN):
                        acc[i, j] += a_reg[i] * b_reg[j]
            # Protects the tiles being read: no thread overwrites As/Bs with the next K tile while
            # another thread is still multiplying this one.
            cuda.syncthreads()

        # Write the register tile: C[m, n] goes to c[row_offset(m) + col_offset(n)] of the flat output.
        # Column by column, so that a costly col_offset (a convolution's) is worked out TN times.
        for j in range(TN):
            n = n0 + tx + j * TX
            col_at = col_offset(geom, M, N, n)
            bias_n = float32(0.0)  # Linear: one bias per output feature, a column of C, read once
            if bias_per_column and n < N:
                bias_n = bias[n]
            for i in range(TM):
                m = m0 + ty + i * TY
                if m < M and n < N:
                    v = acc[i, j]
                    if bias_per_column:
                        v += bias_n
                    elif with_bias and bias.shape[0] > 0:
                        v += bias[m]  # a bias per row of C (conv: per channel)
                    at = row_offset(geom, M, N, z, m) + col_at
                    if accumulate:
                        v += c[at]
                    c[at] = v

    gemm.__name__ = gemm.__qualname__ = f"gemm_{cfg.name}_{load_a.__name__}_{load_b.__name__}_{col_offset.__name__}"
    return gemm


def launch_gemm(kernel, cfg, a, b, c, bias, geom, M, N, K, k_split, splits, accumulate):
    """Launch a kernel made by ``make_gemm_kernel`` over an M x N output in ``splits`` K slices."""
    grid = ((N + cfg.bn - 1) // cfg.bn, (M + cfg.bm - 1) // cfg.bm, splits)
    kernel[grid, (cfg.tx, cfg.ty)](a, b, c, bias, geom, M, N, K, k_split, accumulate)


def choose_split(M, N, K, cfg):
    """(k_split, S): how to cut K into S slices of k_split (a multiple of BK) for about TARGET_BLOCKS.

    A function of the shapes and two constants only, so the order of the additions, and thus every
    bit of the result, is the same on every run and every GPU (G7).
    """
    tiles = ((M + cfg.bm - 1) // cfg.bm) * ((N + cfg.bn - 1) // cfg.bn)
    by_blocks = (TARGET_BLOCKS + tiles - 1) // tiles
    by_length = max(1, K // max(MIN_K_PER_SPLIT, cfg.bk))
    splits = max(1, min(by_blocks, by_length))
    k_split = (K + splits - 1) // splits
    k_split = max(cfg.bk, (k_split + cfg.bk - 1) // cfg.bk * cfg.bk)  # whole K tiles per slice
    return k_split, (K + k_split - 1) // k_split


# --- fetching matrix elements and storing results --------------------------------------------------------

@cuda.jit(device=True, inline=True)
def load_rows(a, geom, m, k):
    """A[m, k] of a row-major (M, K) array."""
    return a[m, k]


@cuda.jit(device=True, inline=True)
def load_cols(a, geom, m, k):
    """A[m, k] of an array stored transposed, (K, M): op(a) = a^T."""
    return a[k, m]


@cuda.jit(device=True, inline=True)
def slice_row(geom, M, N, z, m):
    """Where row m of K slice z starts in a flat (S, M, N) array."""
    return (z * M + m) * N


@cuda.jit(device=True, inline=True)
def matrix_col(geom, M, N, n):
    """Column n of a row-major matrix."""
    return n


def _sum_splits(partial, out, accumulate):
    """out[i] (+)= sum_s partial[s, i], s in order 0..S-1: the fixed-order sum of the K slices (G7)."""
    i = cuda.grid(1)
    size = out.shape[0]
    if i < size:
        total = float32(0.0)
        if accumulate:
            total = out[i]
        for s in range(partial.shape[0]):
            total += partial[s, i]
        out[i] = total


sum_splits_kernel = cuda.jit(_sum_splits)

NO_GEOMETRY = (0,) * 15  # the plain matmul fetches ignore geom; the convolutions pass 15 sizes

# op(a) is a or a^T, op(b) is b or b^T: four kernels per tile size, compiled on first use.
# A[m, k] is a[m, k] (k runs along memory) or, transposed, a[k, m] (m runs along memory);
# B[k, n] is b[k, n] (n runs along memory) or, transposed, b[n, k] (k runs along memory).
_FETCH_A = {False: (load_rows, True), True: (load_cols, False)}
_FETCH_B = {False: (load_rows, False), True: (load_cols, True)}
MATMUL_KERNELS = {}
for _cfg in (SMALL, LARGE):
    for _ta in (False, True):
        for _tb in (False, True):
            MATMUL_KERNELS[(_cfg.name, _ta, _tb)] = cuda.jit(
                make_gemm_kernel(*_FETCH_A[_ta], *_FETCH_B[_tb], slice_row, matrix_col, _cfg))


# y = x W^T + b of a Linear layer (L1): the NT product with the bias added to each column as C is written.
def _linear_kernel(cfg):
    f = make_gemm_kernel(*_FETCH_A[False], *_FETCH_B[True], slice_row, matrix_col, cfg, with_bias=True,
                         bias_per_column=True)
    f.__name__ = f.__qualname__ = f"gemm_{cfg.name}_linear"
    return cuda.jit(f)


LINEAR_KERNELS = {_cfg.name: _linear_kernel(_cfg) for _cfg in (SMALL, LARGE)}


def pick_config(M, N):
    """LARGE tiles for big products, SMALL otherwise (a 128 x 128 tile of a 32-row C is mostly empty)."""
    return LARGE if M >= 512 and N >= 512 else SMALL


def matmul(a, b, transpose_a=False, transpose_b=False, out=None, accumulate=False):
    """op(a) @ op(b) on the GPU, op = transpose when asked: (M, K) @ (K, N) -> (M, N), float32.

    NumPy twin: ``manualbp.kernels.reference.matmul``.  Takes and returns numba device arrays.
    ``out`` (M, N) receives the product, or the product is added to it when ``accumulate``
    (how a layer adds a weight gradient into ``Parameter.grad``).
    """
    who = "cuda matmul"
    device_f32(a, who, "a", ndim=2)
    device_f32(b, who, "b", ndim=2)
    M, K = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    K2, N = (b.shape[1], b.shape[0]) if transpose_b else b.shape
    if K != K2:
        raise ValueError(f"{who}: op(a) is {M}x{K} but op(b) is {K2}x{N}; the inner sizes differ")
    c = output(out, (M, N), who)
    if M == 0 or N == 0:
        return c
    if K == 0:  # an empty sum: zeros (or out unchanged when accumulating), as a sum of no slices
        sum_slices(empty((0, M * N), dtype=np.float32), flat(c), accumulate)
        return c
    cfg = pick_config(M, N)
    kernel = MATMUL_KERNELS[(cfg.name, bool(transpose_a), bool(transpose_b))]
    k_split, splits = choose_split(M, N, K, cfg)
    if splits == 1:
        launch_gemm(kernel, cfg, a, b, flat(c), empty_f32(), NO_GEOMETRY, M, N, K, K, 1, bool(accumulate))
    else:
        partial = empty((splits, M, N), dtype=np.float32)
        launch_gemm(kernel, cfg, a, b, flat(partial), empty_f32(), NO_GEOMETRY, M, N, K, k_split, splits, False)
        sum_slices(partial.reshape(splits, M * N), flat(c), accumulate)
    return c


def linear(x, w, b):
    """x @ w^T + b in one launch: x (N, in), w (out, in), b (out,) -> (N, out), float32.

    The bias is added to each element as the product's register tile is written (the same float32 sum
    as adding it afterwards), so a Linear layer's forward is one kernel.  Where K is long enough to be
    cut into slices (split-K), the slices' sum comes first: then the product and the bias add are two
    launches, as before.  NumPy twin: ``reference.linear_forward``.
    """
    who = "cuda linear_forward"
    device_f32(x, who, "x", ndim=2)
    device_f32(w, who, "w", ndim=2)
    M, K = x.shape
    N, K2 = w.shape
    if K != K2:
        raise ValueError(f"{who}: x is {M}x{K} but w is {N}x{K2}; expected w of shape (out, {K})")
    device_f32(b, who, "bias", shape=(N,))
    if M == 0 or N == 0 or K == 0:
        return None  # the caller takes matmul + bias_add, which handle empty sizes
    cfg = pick_config(M, N)
    if choose_split(M, N, K, cfg)[1] > 1:
        return None  # split-K: the slices are summed first, then the bias added
    y = output(None, (M, N), who)
    launch_gemm(LINEAR_KERNELS[cfg.name], cfg, x, w, flat(y), b, NO_GEOMETRY, M, N, K, K, 1, False)
    return y


def sum_slices(partial, out_flat, accumulate):
    """Add the (S, L) partial results into the (L,) output in slice order (G7)."""
    size = out_flat.shape[0]
    sum_splits_kernel[blocks(size), THREADS](partial, out_flat, bool(accumulate))
