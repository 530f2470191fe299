"""The 8 x 32 register-tile kernels (manualbp/kernels/cpu/tile.py, gemm_packed.py, conv_packed.py) against NumPy and the reference twins."""
import numpy as np
import pytest

from manualbp.kernels import cpu, reference
from manualbp.kernels.cpu import conv as cpu_conv
from manualbp.kernels.cpu import conv_packed, gemm_packed, machine, tile
from manualbp.kernels.cpu import gemm as cpu_gemm

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# --- the tile itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_is_a_sum_of_outer_products_read_at_any_offsets(dtype, assert_close):
    """C[i, j] = bias[e_at + i] + sum_{k0 <= k < k0 + kc} A[aoffs[k] + a_at + i] * B[boffs[k] + b_at + j],
    then += on a second call; nothing outside the block written."""
    rng = np.random.default_rng(0)
    k0, kc = 4, 37
    A, B = rand(rng, 400, dtype), rand(rng, 1500, dtype)
    aoffs = rng.integers(0, 380, k0 + kc + 3)  # entries before k0 and after k0 + kc must not be read
    boffs = rng.integers(0, 1460, k0 + kc + 3)
    a_at, b_at = 5, 3
    bias, e_at = rand(rng, 11, dtype), 2
    expect = np.zeros((8, 32))
    for k in range(k0, k0 + kc):
        a = A[aoffs[k] + a_at:aoffs[k] + a_at + 8].astype(np.float64)
        b = B[boffs[k] + b_at:boffs[k] + b_at + 32].astype(np.float64)
        expect += np.outer(a, b)
    C = np.full((12, 40), 7.0, dtype=dtype)
    tile.tile8x32(A, aoffs, a_at, B, boffs, b_at, k0, kc, bias, e_at, C, 2, 5, True)
    assert_close(C[2:10, 5:37], expect + bias[e_at:e_at + 8, None], RTOL[dtype])
    untouched = np.ones_like(C, dtype=bool)
    untouched[2:10, 5:37] = False
    assert np.all(C[untouched] == 7.0)  # nothing outside the block is written
    tile.tile8x32(A, aoffs, a_at, B, boffs, b_at, k0, kc, bias, e_at, C, 2, 5, False)  # accumulate, no bias
    assert_close(C[2:10, 5:37], 2 * expect + bias[e_at:e_at + 8, None], RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_half_tile_is_the_first_16_columns_of_the_tile(dtype, assert_close):
    """tile8x16: C[i, j] = sum_{k0 <= k < k0 + kc} A[aoffs[k] + a_at + i] * B[boffs[k] + b_at + j] for j < 16,
    then += on a second call; nothing outside the 8 x 16 block written."""
    rng = np.random.default_rng(1)
    k0, kc = 3, 29
    A, B = rand(rng, 300, dtype), rand(rng, 900, dtype)
    aoffs, boffs = rng.integers(0, 280, k0 + kc + 2), rng.integers(0, 870, k0 + kc + 2)
    expect = np.zeros((8, 16))
    for k in range(k0, k0 + kc):
        expect += np.outer(A[aoffs[k] + 1:aoffs[k] + 9], B[boffs[k] + 4:boffs[k] + 20])
    C = np.full((10, 20), 7.0, dtype=dtype)
    tile.tile8x16(A, aoffs, 1, B, boffs, 4, k0, kc, C, 1, 3, True)
    assert_close(C[1:9, 3:19], expect, RTOL[dtype])
    untouched = np.ones_like(C, dtype=bool)
    untouched[1:9, 3:19] = False
    assert np.all(C[untouched] == 7.0)
    tile.tile8x16(A, aoffs, 1, B, boffs, 4, k0, kc, C, 1, 3, False)
    assert_close(C[1:9, 3:19], 2 * expect, RTOL[dtype])


# --- matrix product ----------------------------------------------------------------------------------


def _panels(m, n, k, threads, dtype, blocking=None):
    """(Bp, Ap, nmax) for matmul_packed: NaN-filled workspaces of the shapes a blocking asks for (this
    machine's by default) and its in-place width."""
    blocking = blocking or machine.matmul_blocking(np.dtype(dtype).itemsize)
    shapes = gemm_packed.matmul_panel_shapes(m, n, k, threads, blocking)
    return (*(np.full(shape, np.nan, dtype) for shape in shapes), np.int64(blocking.in_place_max_n))


SMALL_BLOCKS = machine.Blocking(kc=64, mc=16, in_place_max_n=40)  # several k blocks and row tasks, small sizes


@pytest.mark.parametrize("m,k,n,blocking", [
    (1, 1, 1, None), (7, 3, 31, None), (8, 256, 32, None), (9, 257, 33, None), (45, 600, 70, None),
    (130, 40, 9, None), (9, 20, machine.matmul_blocking(4).in_place_max_n + 36, None),
    (45, 150, 70, SMALL_BLOCKS), (130, 65, 39, SMALL_BLOCKS)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_matmul_matches_reference_in_every_layout(m, k, n, blocking, dtype, assert_close):
    """Edges of the 8 x 32 tile, more than one block of kc along k, and all four transposes; op(B) read in
    place (b not transposed, its last narrow panel packed) and packed (b transposed, or wider than the
    blocking's in-place width); this machine's blocking and a small one (kc = 64, 16 rows per task); the
    parallel driver with 1, 2 or 3 row tasks per thread gives the serial driver's bits."""
    rng = np.random.default_rng(m + 10 * k + 100 * n)
    for ta in (False, True):
        for tb in (False, True):
            a = rand(rng, (k, m) if ta else (m, k), dtype)
            b = rand(rng, (n, k) if tb else (k, n), dtype)
            serial = np.empty((m, n), dtype)
            gemm_packed.matmul_packed_serial(a, ta, b, tb, serial, *_panels(m, n, k, 1, dtype, blocking))
            assert_close(serial, reference.matmul(a, b, ta, tb), RTOL[dtype], f"ta={ta} tb={tb}")
            for threads in (1, 2, 3):
                par = np.empty((m, n), dtype)
                gemm_packed.matmul_packed(a, ta, b, tb, par, *_panels(m, n, k, threads, dtype, blocking))
                assert par.tobytes() == serial.tobytes(), f"ta={ta} tb={tb} T={threads}"


def _fake_sysfs(root, entries):
    """A directory laid out as Linux's /sys/devices/system/cpu/cpu0/cache, with these (level, type, size, ways)."""
    for i, (level, kind, size, ways) in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size), ("ways_of_associativity", ways)):
            (d / name).write_text(f"{value}\n")
    return str(root)


def test_caches_are_read_from_sysfs_and_assumed_when_missing(tmp_path):
    zen5 = _fake_sysfs(tmp_path / "zen5", [(1, "Data", "48K", 12), (1, "Instruction", "32K", 8),
                                           (2, "Unified", "1024K", 16), (3, "Unified", "32768K", 16)])
    c = machine.read_caches(zen5)
    assert (c.l1d, c.l1d_ways, c.l2, c.l2_ways, c.l3) == (48 << 10, 12, 1 << 20, 16, 32 << 20)
    assert machine.read_caches(str(tmp_path / "nowhere")) is machine.ASSUMED
    assert machine.read_caches(_fake_sysfs(tmp_path / "l1", [(1, "Data", "32K", 8)])) is machine.ASSUMED
    assert machine.parse_size("32K") == 32768 and machine.parse_size("1M") == 1 << 20
    assert machine.parse_size("64") == 64


def test_blocking_follows_the_caches():
    """Zen 4 (L1d 32 KiB 8-way, L2 1 MiB): kc 512, 96 rows per task, b in place up to 4 KiB rows (the sizes
    measured best there); Zen 5 (L1d 48 KiB 12-way): a longer kc in the larger L1, fewer rows per task;
    float64 halves kc.  Every choice stays within its bounds for odd caches too."""
    zen4 = machine.Caches(32 << 10, 8, 1 << 20, 8, 32 << 20, "test")
    zen5 = machine.Caches(48 << 10, 12, 1 << 20, 16, 32 << 20, "test")
    assert machine.blocking_for(4, zen4) == (512, 96, 1024)
    assert machine.blocking_for(8, zen4) == (256, 96, 512)
    assert machine.blocking_for(4, zen5) == (768, 64, 1024)
    tiny = machine.Caches(4 << 10, 2, 64 << 10, 4, 0, "test")
    huge = machine.Caches(1 << 20, 16, 64 << 20, 16, 0, "test")
    for c in (tiny, huge):
        kc, mc, nmax = machine.blocking_for(4, c)
        assert 64 <= kc <= 1024 and kc % 64 == 0 and mc >= 8 and mc % 8 == 0 and nmax > 0


@pytest.mark.parametrize("trans", [False, True])
def test_pack_a_lays_out_column_k_of_eight_rows_at_8k(trans):
    """The A panel: dst[k*8 + i] = op(A)[i0 + i, k0 + k], zeros below the last row, for whole blocks of
    8 rows (the interleaving copy) and for the last, partial one."""
    rng = np.random.default_rng(3)
    opa = rng.standard_normal((13, 40)).astype(np.float32)  # op(A): 13 rows, K = 40
    a = np.ascontiguousarray(opa.T) if trans else opa
    for i0, k0, kc in ((0, 0, 40), (0, 7, 21), (8, 5, 30)):
        dst = np.full(kc * 8, np.nan, np.float32)
        gemm_packed._pack_a(a, trans, i0, k0, kc, dst)
        rows = np.zeros((8, kc), np.float32)
        part = opa[i0:i0 + 8, k0:k0 + kc]
        rows[:part.shape[0]] = part
        assert np.array_equal(dst, rows.T.ravel()), (i0, k0, kc)


def test_packed_matmul_with_empty_inner_size_gives_zeros():
    a, b = np.ones((5, 0), np.float32), np.ones((0, 7), np.float32)
    out = np.full((5, 7), np.nan, np.float32)
    gemm_packed.matmul_packed(a, False, b, False, out, *_panels(5, 7, 0, 2, np.float32))
    assert np.all(out == 0)


def test_matmul_wrapper_takes_the_packed_tiles_for_long_products(assert_close):
    """cpu.matmul: K > 64 and more than 64 rows goes through cpu_packed, serially or on all threads."""
    rng = np.random.default_rng(1)
    for m, k, n in [(80, 70, 50), (300, 200, 100)]:  # below and above PARALLEL_MIN_MACS
        a, b = rand(rng, (m, k), np.float32), rand(rng, (n, k), np.float32)
        assert k > cpu_gemm.NN_MAX_K and m > cpu_gemm.NN_MAX_M and m > cpu_gemm.NT_MAX_M
        assert_close(cpu.matmul(a, b, False, True), a @ b.T, RTOL[np.float32])


@pytest.mark.parametrize("m,k,n,ta,tb,route", [
    (1, 400, 120, False, True, "matmul_nt_serial"),    # LeNet-5's first Linear, batch 1: x . W^T
    (64, 400, 120, False, True, "matmul_nt"),          # ... batch 64 (3 M multiply-adds: parallel)
    (64, 120, 400, False, False, "matmul_nn"),         # its grad-input, dL/dy . W
    (120, 64, 400, True, False, "matmul_nn"),          # its grad-weight, dL/dy^T . x (K = the batch)
    (65, 120, 84, False, True, "matmul_packed_serial"),
    (256, 400, 120, False, True, "matmul_packed"),     # batch 256: the weights' panels pay off
    (10, 80, 30, True, True, "matmul_packed_serial"),  # both transposed
])
def test_matmul_wrapper_routes_each_shape_and_each_route_is_right(m, k, n, ta, tb, route, monkeypatch,
                                                                   assert_close):
    taken = []

    def spy(module, name):
        kernel = getattr(module, name)

        def wrapper(*args):
            taken.append(name)
            return kernel(*args)
        monkeypatch.setattr(module, name, wrapper)

    for name in ("matmul_nt", "matmul_nt_serial", "matmul_nn", "matmul_nn_serial"):
        spy(cpu_gemm, name)
    for name in ("matmul_packed", "matmul_packed_serial"):
        spy(gemm_packed, name)
    rng = np.random.default_rng(m + k + n)
    a = rand(rng, (k, m) if ta else (m, k), np.float32)
    b = rand(rng, (n, k) if tb else (k, n), np.float32)
    assert_close(cpu.matmul(a, b, ta, tb), reference.matmul(a, b, ta, tb), RTOL[np.float32])
    assert taken == [route]


# --- convolution -------------------------------------------------------------------------------------

GEOMETRIES = [
    # (n, c, h, w, o, kh, kw, ph, pw)
    (2, 32, 16, 16, 32, 5, 5, 2, 2),   # the CIFAR-10 net's conv2
    (2, 32, 8, 8, 64, 5, 5, 2, 2),     # its conv3 (two panels of 32 output channels)
    (3, 10, 11, 13, 120, 3, 5, 1, 0),  # a partial last panel (120 = 3 x 32 + 24), rows of 9 outputs
    (1, 17, 5, 19, 32, 4, 2, 0, 1),    # even kernel sizes, KW*C = 34 (not whole blocks of 8)
    (5, 8, 20, 20, 32, 5, 5, 2, 2),    # grad-weight sums 2000 positions: GW_KC = 1024, then a partial chunk
    (2, 16, 2, 9, 32, 3, 3, 3, 1),     # padding 3 > kernel 3: output rows 0 and 5 see only zeros (bias)
]


def _arrays(g, dtype, seed):
    n, c, h, w, o, kh, kw, ph, pw = g
    rng = np.random.default_rng(seed)
    x, wt, b = rand(rng, (n, c, h, w), dtype), rand(rng, (o, c, kh, kw), dtype), rand(rng, (o,), dtype)
    gy = rand(rng, (n, o, h + 2 * ph - kh + 1, w + 2 * pw - kw + 1), dtype)
    return x, wt, b, gy, (ph, pw)


@pytest.mark.parametrize("g", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_convolutions_match_reference(g, dtype, assert_close):
    _, c, _, _, o, kh, kw, _, _ = g
    assert cpu_conv._use_packed((1, 1), o, c * kh * kw)  # these shapes do take the packed kernels
    x, wt, b, gy, pad = _arrays(g, dtype, sum(g))
    assert_close(cpu.conv2d_forward(x, wt, b, (1, 1), pad), reference.conv2d_forward(x, wt, b, (1, 1), pad),
                 RTOL[dtype], "forward")
    assert_close(cpu.conv2d_forward(x, wt, None, (1, 1), pad), reference.conv2d_forward(x, wt, None, (1, 1), pad),
                 RTOL[dtype], "forward, no bias")
    assert_close(cpu.conv2d_grad_weight(gy, x, wt.shape, (1, 1), pad),
                 reference.conv2d_grad_weight(gy, x, wt.shape, (1, 1), pad), RTOL[dtype], "grad-weight")
    if cpu_conv._use_packed((1, 1), c, o * kh * kw):
        assert_close(cpu.conv2d_grad_input(gy, wt, x.shape, (1, 1), pad),
                     reference.conv2d_grad_input(gy, wt, x.shape, (1, 1), pad), RTOL[dtype], "grad-input")


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_convolution_drivers_serial_and_parallel_give_identical_bits(dtype):
    x, wt, b, gy, (ph, pw) = _arrays(GEOMETRIES[2], dtype, 9)
    n, c, h, w = x.shape
    o, _, kh, kw = wt.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    perm, offs = cpu_conv._row_first_taps(c, kh, kw, hp, wp)
    packed = tile.pack_panels(wt.reshape(o, -1), 32, perm)
    ys = [np.empty(gy.shape, dtype) for _ in range(2)]
    one, k = np.int64(1), np.int64(kh)
    conv_packed.conv2d_packed(x, packed, b, ys[0], ph, pw, offs, np.empty((2, c * hp * wp + wp + 8), dtype), one, one, k)
    conv_packed.conv2d_packed_serial(x, packed, b, ys[1], ph, pw, offs, np.empty((1, c * hp * wp + wp + 8), dtype),
                                     one, one, k)
    assert ys[0].tobytes() == ys[1].tobytes()
    sp, op = -(-kw * c // 8) * 8, -(-o // 32) * 32
    gws = [np.empty((kh, sp, op), dtype) for _ in range(2)]
    workspaces = (np.empty((n, hp * wp * c + 8), dtype), np.empty((op // 32, n * gy[0, 0].size * 32), dtype))
    visits = cpu_conv._grad_weight_lists(c, h, w, kh, kw, ph, pw, workspaces[0].shape[1], sp)
    conv_packed.conv2d_packed_grad_weight_serial(x, gy, gws[0], *workspaces, ph, pw, *visits)
    for threads in (2, 3):
        conv_packed.conv2d_packed_grad_weight(x, gy, gws[1], *workspaces, ph, pw, threads, *visits)
        assert gws[0][:, :kw * c, :o].tobytes() == gws[1][:, :kw * c, :o].tobytes()


def test_packed_convolutions_skip_the_zero_padding():
    # The CIFAR-10 net's conv3: 8 x 8 inputs padded by 2, 5 x 5 kernel, 32 channels (blocks of 8 rows
    # s = q*C + c never straddle two values of q).
    c, h, w, kh, kw, ph, pw = 32, 8, 8, 5, 5, 2, 2
    hp, wp = h + 2 * ph, w + 2 * pw
    L = c * hp * wp + 8
    lists, ka, kb, counts = cpu_conv._grad_weight_lists(c, h, w, kh, kw, ph, pw, L, kw * c)
    real = [6, 7, 8, 7, 6]  # of the 8 output rows (or columns), those whose tap p (or q) reads a real pixel
    for p in range(kh):
        for q in range(kw):
            assert counts[p * kw + q] == real[p] * real[q]
        assert counts[kh * kw + p] == real[p] * 8  # the whole-row list
    assert list(lists[:kw * c // 8]) == [q for q in range(kw) for _ in range(c // 8)]  # p = 0: one q per block
    group = 1024 // 64
    assert ka.shape == (kh * kw + kh, group * 64)
    # tap (0, 0) of position (i, j) = (2, 2) of the first image: the first pixel of the image
    k = 0
    assert ka[0, k] == (2 * wp + 2) * c and kb[0, k] == (2 * 8 + 2) * 32
    # the forward kernel's taps run kernel row first, so that rows of zeros are a contiguous run of k
    perm, offs = cpu_conv._row_first_taps(c, kh, kw, hp, wp)
    assert list(perm[:kw + 1]) == [0, 1, 2, 3, 4, kh * kw] and offs[kw] == hp * wp


STRIDED_GEOMETRIES = [
    # (n, c, h, w, o, kh, kw, ph, pw, sh, sw)
    (2, 16, 32, 32, 32, 3, 3, 1, 1, 2, 2),   # ResNet-20's first stride-2 layer (16 -> 32 channels)
    (3, 32, 16, 16, 64, 3, 3, 1, 1, 2, 2),   # its second (32 -> 64), two panels of 32
    (2, 16, 9, 11, 56, 3, 3, 1, 0, 2, 2),    # odd sizes: the last column of each row unread, 56 = 32 + 24
    (1, 12, 10, 13, 32, 4, 3, 2, 1, 1, 2),   # unequal strides, a kernel row that reads only padding
    (2, 8, 11, 7, 32, 5, 4, 0, 2, 2, 1),     # stride 2 down, 1 across
]


@pytest.mark.parametrize("g", STRIDED_GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_packed_convolutions_match_reference(g, dtype, assert_close):
    n, c, h, w, o, kh, kw, ph, pw, sh, sw = g
    assert cpu_conv._use_packed((sh, sw), o, c * kh * kw)
    rng = np.random.default_rng(sum(g))
    x, wt, b = rand(rng, (n, c, h, w), dtype), rand(rng, (o, c, kh, kw), dtype), rand(rng, (o,), dtype)
    stride, pad = (sh, sw), (ph, pw)
    y = reference.conv2d_forward(x, wt, b, stride, pad)
    gy = rand(rng, y.shape, dtype)
    assert_close(cpu.conv2d_forward(x, wt, b, stride, pad), y, RTOL[dtype], "forward")
    assert_close(cpu.conv2d_grad_weight(gy, x, wt.shape, stride, pad),
                 reference.conv2d_grad_weight(gy, x, wt.shape, stride, pad), RTOL[dtype], "grad-weight")
    assert_close(cpu.conv2d_grad_input(gy, wt, x.shape, stride, pad),
                 reference.conv2d_grad_input(gy, wt, x.shape, stride, pad), RTOL[dtype], "grad-input")


def test_stride_two_taps_read_the_phase_split_rows():
    # 3 x 3 kernel, stride 2 across, padded rows of WP = 10 columns: even columns first (WE = 5), then odd.
    # Tap (p, c, q) = (1, 1, 2) reads padded column 2j + 2, the even column j + 1: offset c*HP*WR + p*WR + 1.
    perm, offs = cpu_conv._row_first_taps(2, 3, 3, 6, 10, 2)
    k = 1 * 2 * 3 + 1 * 3 + 2  # kernel row first: k = (p, c, q)
    assert perm[k] == 1 * 9 + 1 * 3 + 2
    assert offs[k] == 1 * 6 * 10 + 1 * 10 + 1
    assert offs[k - 1] == 1 * 6 * 10 + 1 * 10 + 5  # q = 1: the odd columns, after the 5 even ones


def test_packed_convolution_is_not_used_where_it_would_waste_work():
    assert not cpu_conv._use_packed((3, 3), 64, 800)   # stride 3: im2col
    assert not cpu_conv._use_packed((1, 1), 16, 150)   # LeNet-5's conv2: half a panel of zeros
    assert not cpu_conv._use_packed((1, 1), 40, 800)   # 40 channels in two panels of 32
    assert not cpu_conv._use_packed((1, 1), 32, 75)    # 75 taps: too short a sum for the tile
    assert cpu_conv._use_packed((1, 1), 64, 800)


# --- convolution with few output channels (tile rows = output channels) -------------------------------

ROW_GEOMETRIES = [
    # (n, c, h, w, o, kh, kw, ph, pw)
    (3, 6, 14, 14, 16, 5, 5, 0, 0),    # LeNet-5's conv2 (two blocks of 8 channels)
    (2, 16, 10, 10, 6, 5, 5, 4, 4),    # its grad-input: 6 channels (a partial block), padding 4
    (2, 9, 7, 12, 13, 4, 4, 1, 2),     # even kernel, unequal padding, 13 = 8 + 5 channels
    (1, 40, 3, 3, 3, 2, 2, 0, 0),      # a wide grid of 4 outputs: one partial block of 32
    (2, 16, 9, 8, 16, 3, 3, 1, 1),     # ResNet-20's first stage: KW*C = 48, its last 16 columns on the half tile
]


@pytest.mark.parametrize("g", ROW_GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_row_convolutions_match_reference(g, dtype, assert_close):
    _, c, _, _, o, kh, kw, _, _ = g
    assert cpu_conv._use_rows((1, 1), c * kh * kw) and not cpu_conv._use_packed((1, 1), o, c * kh * kw)
    x, wt, b, gy, pad = _arrays(g, dtype, sum(g) + 1)
    assert_close(cpu.conv2d_forward(x, wt, b, (1, 1), pad), reference.conv2d_forward(x, wt, b, (1, 1), pad),
                 RTOL[dtype], "forward")
    assert_close(cpu.conv2d_forward(x, wt, None, (1, 1), pad), reference.conv2d_forward(x, wt, None, (1, 1), pad),
                 RTOL[dtype], "forward, no bias")
    assert_close(cpu.conv2d_grad_weight(gy, x, wt.shape, (1, 1), pad),
                 reference.conv2d_grad_weight(gy, x, wt.shape, (1, 1), pad), RTOL[dtype], "grad-weight")
    if cpu_conv._use_rows((1, 1), o * kh * kw) and not cpu_conv._use_packed((1, 1), c, o * kh * kw):
        assert_close(cpu.conv2d_grad_input(gy, wt, x.shape, (1, 1), pad),
                     reference.conv2d_grad_input(gy, wt, x.shape, (1, 1), pad), RTOL[dtype], "grad-input")


def test_channel_row_convolution_serial_and_parallel_give_the_same_bits():
    n, c, h, w, o, kh, kw, ph, pw = 5, 6, 14, 14, 13, 5, 5, 1, 1
    rng = np.random.default_rng(3)
    x, w2 = rand(rng, (n, c, h, w), np.float32), rand(rng, (o, c * kh * kw), np.float32)
    bias8 = np.concatenate([rand(rng, (o,), np.float32), np.zeros(3, np.float32)])
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = hp - kh + 1, wp - kw + 1
    perm, offs = cpu_conv._row_first_taps(c, kh, kw, hp, wp)
    wr = tile.pack_panels(w2, 8, perm)
    ys = []
    for kernel, workers in ((conv_packed.conv2d_rows_serial, 1), (conv_packed.conv2d_rows, 2),
                            (conv_packed.conv2d_rows, 3)):
        y = np.empty((n, o, oh, ow), np.float32)
        kernel(x, wr, bias8, y, ph, pw, offs, np.empty((workers, c * hp * wp + kw + 32), np.float32),
               np.empty((workers, 16, -(-oh * wp // 32) * 32), np.float32))
        ys.append(y)
    assert ys[0].tobytes() == ys[1].tobytes() == ys[2].tobytes()
    assert np.allclose(ys[0], reference.conv2d_forward(x, w2.reshape(o, c, kh, kw), bias8[:o], (1, 1), (ph, pw)),
                       rtol=1e-4, atol=1e-4)


def test_channel_row_grad_weight_serial_and_parallel_give_the_same_bits():
    n, c, h, w, o, kh, kw, ph, pw = 23, 6, 9, 9, 13, 5, 5, 1, 2  # 63 positions: groups of 16 images, then 7
    rng = np.random.default_rng(4)
    x = rand(rng, (n, c, h, w), np.float32)
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = hp - kh + 1, wp - kw + 1
    gy = rand(rng, (n, o, oh, ow), np.float32)
    xh, g8 = np.empty((n, hp * wp * c + 32), np.float32), np.empty((2, n * oh * ow * 8), np.float32)
    visits = cpu_conv._grad_weight_row_lists(c, h, w, kh, kw, ph, pw, xh.shape[1])
    outs = [np.empty((kh, 16, 32), np.float32) for _ in range(3)]
    conv_packed.conv2d_rows_grad_weight_serial(x, gy, outs[0], xh, g8, ph, pw, *visits)
    for out, threads in zip(outs[1:], (2, 3)):
        conv_packed.conv2d_rows_grad_weight(x, gy, out, xh, g8, ph, pw, threads, *visits)
    real = [out[:, :o, :kw * c] for out in outs]
    assert real[0].tobytes() == real[1].tobytes() == real[2].tobytes()
    expect = reference.conv2d_grad_weight(gy, x, (o, c, kh, kw), (1, 1), (ph, pw))
    assert np.allclose(real[0].reshape(kh, o, kw, c).transpose(1, 3, 0, 2), expect, rtol=1e-4, atol=1e-4)


def test_channel_row_convolution_is_not_used_for_short_sums():
    assert not cpu_conv._use_rows((1, 1), 75)      # LeNet-5's and the CIFAR-10 net's first layers: direct
    assert not cpu_conv._use_rows((2, 2), 400)     # stride 2: im2col


@pytest.mark.parametrize("geometry,stride", [
    ((3, 32, 16, 16, 32, 5, 5, 2, 2), (1, 1)),   # packed grad-weight
    ((3, 3, 12, 12, 6, 5, 5, 0, 0), (1, 1)),     # direct grad-weight (LeNet-5's first layer, smaller)
    ((2, 4, 9, 9, 5, 3, 3, 1, 1), (2, 2)),       # im2col (stride 2)
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_params_give_weight_and_bias_gradients(geometry, stride, dtype, assert_close):
    n, c, h, w, o, kh, kw, ph, pw = geometry
    rng = np.random.default_rng(sum(geometry))
    x, wt = rand(rng, (n, c, h, w), dtype), rand(rng, (o, c, kh, kw), dtype)
    oh, ow = (h + 2 * ph - kh) // stride[0] + 1, (w + 2 * pw - kw) // stride[1] + 1
    gy = rand(rng, (n, o, oh, ow), dtype)
    gw, gb = cpu.conv2d_grad_params(gy, x, wt.shape, stride, (ph, pw), True)
    ref_w, ref_b = reference.conv2d_grad_params(gy, x, wt.shape, stride, (ph, pw), True)
    assert_close(gw, ref_w, RTOL[dtype], "grad-weight")
    assert gb.dtype == dtype and gb.shape == (o,)
    assert_close(gb, ref_b, RTOL[dtype], "grad-bias")
    assert cpu.conv2d_grad_params(gy, x, wt.shape, stride, (ph, pw), False)[1] is None



@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_sums_of_a_large_gradient_match_numpy(dtype, assert_close):
    """Above PARALLEL_MIN_ELEMENTS the bias gradient comes from cpu_conv._bias_sums (a channel per thread)."""
    rng = np.random.default_rng(5)
    gy = rand(rng, (9, 7, 64, 66), dtype)
    assert gy.size >= cpu_conv.PARALLEL_MIN_ELEMENTS
    x, wt = rand(rng, (9, 2, 64, 66), dtype), np.zeros((7, 2, 1, 1), dtype)
    _, gb = cpu.conv2d_grad_params(gy, x, wt.shape, (1, 1), (0, 0), True)
    assert_close(gb, gy.astype(np.float64).sum(axis=(0, 2, 3)), RTOL[dtype])
