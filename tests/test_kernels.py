"""Every Numba kernel (kernels/cpu/) against its NumPy twin (kernels/reference.py), and max-pooling
against torch; plus: results do not depend on the number of Numba threads."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from manualbp.kernels import cpu, reference

ROOT = Path(__file__).resolve().parents[1]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
dtypes = st.sampled_from([np.float32, np.float64])


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# --- matmul ------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 9), k=st.integers(1, 9), n=st.integers(1, 9), ta=st.booleans(), tb=st.booleans(),
       dtype=dtypes, seed=st.integers(0, 2**16))
def test_matmul_matches_reference(m, k, n, ta, tb, dtype, seed, assert_close):
    rng = np.random.default_rng(seed)
    a = rand(rng, (k, m) if ta else (m, k), dtype)
    b = rand(rng, (n, k) if tb else (k, n), dtype)
    ours = cpu.matmul(a, b, ta, tb)
    assert ours.dtype == dtype and ours.shape == (m, n) and ours.flags.c_contiguous
    assert_close(ours, reference.matmul(a, b, ta, tb), RTOL[dtype])


@pytest.mark.parametrize("m,k,n", [(4, 1, 4), (8, 33, 64), (13, 70, 131), (67, 5, 66)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_tiles_and_panels(m, k, n, dtype, assert_close):
    """Shapes that fill 8 x 32 tiles exactly, leave edges, and span several 32-column panels."""
    rng = np.random.default_rng(m * n)
    a, b = rand(rng, (m, k), dtype), rand(rng, (k, n), dtype)
    for ta, tb in [(False, False), (True, False), (False, True), (True, True)]:
        aa = np.ascontiguousarray(a.T) if ta else a
        bb = np.ascontiguousarray(b.T) if tb else b
        assert_close(cpu.matmul(aa, bb, ta, tb), a @ b, RTOL[dtype], f"ta={ta} tb={tb}")


# --- convolution -------------------------------------------------------------------------------------


@st.composite
def conv_geometry(draw, options=False):
    """Shapes including batch 1, 1x1 images, stride > kernel, padding >= kernel/2, non-square; with
    ``options``, also dilation, groups and empty batches."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh + 1)), draw(st.integers(0, kw + 1))
    dh, dw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if options else (1, 1)
    groups = draw(st.integers(1, 3)) if options else 1
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 8 + 2 * dh))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 8 + 2 * dw))
    return {"n": draw(st.integers(0 if options else 1, 3)), "c": groups * draw(st.integers(1, 3)),
            "o": groups * draw(st.integers(1, 3 if options else 5)), "h": h, "w": w, "kernel": (kh, kw),
            "stride": (draw(st.integers(1, 5)), draw(st.integers(1, 5))), "padding": (ph, pw),
            "dilation": (dh, dw), "groups": groups}


def conv_arrays(g, dtype, seed):
    rng = np.random.default_rng(seed)
    kh, kw = g["kernel"]
    dh, dw = g.get("dilation", (1, 1))
    groups = g.get("groups", 1)
    x = rand(rng, (g["n"], g["c"], g["h"], g["w"]), dtype)
    w = rand(rng, (g["o"], g["c"] // groups, kh, kw), dtype)
    b = rand(rng, (g["o"],), dtype)
    oh = (g["h"] + 2 * g["padding"][0] - dh * (kh - 1) - 1) // g["stride"][0] + 1
    ow = (g["w"] + 2 * g["padding"][1] - dw * (kw - 1) - 1) // g["stride"][1] + 1
    gy = rand(rng, (g["n"], g["o"], oh, ow), dtype)
    return x, w, b, gy


@settings(max_examples=60, deadline=None)
@given(g=conv_geometry(), dtype=dtypes, bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv2d_kernels_match_reference(g, dtype, bias, seed, assert_close):
    x, w, b, gy = conv_arrays(g, dtype, seed)
    b = b if bias else None
    s, p = g["stride"], g["padding"]
    y = cpu.conv2d_forward(x, w, b, s, p)
    assert y.dtype == dtype and y.shape == gy.shape
    assert_close(y, reference.conv2d_forward(x, w, b, s, p), RTOL[dtype], "forward")
    gx = cpu.conv2d_grad_input(gy, w, x.shape, s, p)
    assert gx.dtype == dtype
    assert_close(gx, reference.conv2d_grad_input(gy, w, x.shape, s, p), RTOL[dtype], "grad_input")
    gw = cpu.conv2d_grad_weight(gy, x, w.shape, s, p)
    assert gw.dtype == dtype
    assert_close(gw, reference.conv2d_grad_weight(gy, x, w.shape, s, p), RTOL[dtype], "grad_weight")


@settings(max_examples=60, deadline=None)
@given(g=conv_geometry(options=True), dtype=dtypes, bias=st.booleans(), seed=st.integers(0, 2**16))
def test_dilated_and_grouped_conv2d_kernels_match_reference_and_torch(g, dtype, bias, seed, assert_close):
    """Dilation (im2col with spaced taps), groups (one convolution per group) and N = 0, all passes."""
    x, w, b, gy = conv_arrays(g, dtype, seed)
    b = b if bias else None
    args = (g["stride"], g["padding"], g["dilation"], g["groups"])
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, None if b is None else torch.tensor(b), *args)
    yt.backward(torch.tensor(gy))
    y = cpu.conv2d_forward(x, w, b, *args)
    assert y.dtype == dtype and y.shape == gy.shape == tuple(yt.shape)
    assert_close(y, reference.conv2d_forward(x, w, b, *args), RTOL[dtype], "forward")
    assert_close(reference.conv2d_forward(x, w, b, *args), yt, RTOL[dtype] * 10, "reference forward vs torch")
    gx = cpu.conv2d_grad_input(gy, w, x.shape, *args)
    assert gx.dtype == dtype and gx.shape == x.shape
    assert_close(gx, reference.conv2d_grad_input(gy, w, x.shape, *args), RTOL[dtype], "grad_input")
    assert_close(gx, xt.grad, RTOL[dtype] * 10, "grad_input vs torch")
    gw, gb = cpu.conv2d_grad_params(gy, x, w.shape, g["stride"], g["padding"], True, g["dilation"], g["groups"])
    assert gw.dtype == dtype and gw.shape == w.shape
    rw, rb = reference.conv2d_grad_params(gy, x, w.shape, g["stride"], g["padding"], True, g["dilation"],
                                          g["groups"])
    assert_close(gw, rw, RTOL[dtype], "grad_weight")
    assert_close(gw, wt.grad, RTOL[dtype] * 10, "grad_weight vs torch")
    assert_close(gb, rb, RTOL[dtype], "grad_bias")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_reference_matches_torch(dtype, assert_close):
    """The specification itself agrees with torch (the layer tests check the rest end to end)."""
    g = {"n": 2, "c": 3, "o": 4, "h": 7, "w": 6, "kernel": (3, 2), "stride": (2, 1), "padding": (1, 2)}
    x, w, b, gy = conv_arrays(g, dtype, 0)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=g["stride"], padding=g["padding"])
    yt.backward(torch.tensor(gy))
    assert_close(reference.conv2d_forward(x, w, b, g["stride"], g["padding"]), yt, RTOL[dtype] * 10)
    assert_close(reference.conv2d_grad_input(gy, w, x.shape, g["stride"], g["padding"]), xt.grad, RTOL[dtype] * 10)
    assert_close(reference.conv2d_grad_weight(gy, x, w.shape, g["stride"], g["padding"]), wt.grad,
                 RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_larger_layers(dtype, assert_close):
    """Several weight-tap groups per thread (grad-weight), full and partial 4x4 tiles, longer sums."""
    for g in ({"n": 5, "c": 5, "o": 7, "h": 12, "w": 11, "kernel": (3, 3), "stride": (1, 1), "padding": (1, 1)},
              {"n": 3, "c": 6, "o": 9, "h": 14, "w": 9, "kernel": (5, 4), "stride": (2, 3), "padding": (2, 0)}):
        x, w, b, gy = conv_arrays(g, dtype, 1)
        s, p = g["stride"], g["padding"]
        assert_close(cpu.conv2d_forward(x, w, b, s, p), reference.conv2d_forward(x, w, b, s, p), RTOL[dtype])
        assert_close(cpu.conv2d_grad_input(gy, w, x.shape, s, p), reference.conv2d_grad_input(gy, w, x.shape, s, p),
                     RTOL[dtype])
        assert_close(cpu.conv2d_grad_weight(gy, x, w.shape, s, p),
                     reference.conv2d_grad_weight(gy, x, w.shape, s, p), RTOL[dtype])


# --- max-pooling -------------------------------------------------------------------------------------


def every_window_reads_the_image(size, k, s, p, d, ceil_mode):
    """False when some window holds only padding (torch then returns -inf at an index outside the image)."""
    out = reference.pool_out_size(size, k, s, p, d, ceil_mode)
    for i in range(out):
        start = i * s - p
        taps = [start + t * d for t in range(k)]
        if not any(0 <= h < size for h in taps):
            return False
    return out >= 1


@st.composite
def pool_geometry(draw, options=False):
    """Windows with padding and stride; with ``options`` also dilation, ceil_mode and empty batches."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    dh, dw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if options else (1, 1)
    g = {"n": draw(st.integers(0 if options else 1, 2)), "c": draw(st.integers(1, 3)),
         "h": draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 8 + 2 * dh)),
         "w": draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 8 + 2 * dw)),
         "kernel": (kh, kw), "stride": (draw(st.integers(1, 5)), draw(st.integers(1, 5))), "padding": (ph, pw),
         "dilation": (dh, dw), "ceil_mode": draw(st.booleans()) if options else False}
    assume(every_window_reads_the_image(g["h"], kh, g["stride"][0], ph, dh, g["ceil_mode"]))
    assume(every_window_reads_the_image(g["w"], kw, g["stride"][1], pw, dw, g["ceil_mode"]))
    return g


def torch_pool(x, g):
    xt = torch.tensor(x, requires_grad=True)
    yt, it = torch.nn.functional.max_pool2d(xt, g["kernel"], g["stride"], g["padding"], g.get("dilation", 1),
                                            g.get("ceil_mode", False), return_indices=True)
    return xt, yt, it


@settings(max_examples=80, deadline=None)
@given(g=st.one_of(pool_geometry(), pool_geometry(options=True)), dtype=dtypes, ties=st.booleans(),
       seed=st.integers(0, 2**16))
def test_maxpool2d_kernels_match_torch_and_reference(g, dtype, ties, seed, assert_close):
    rng = np.random.default_rng(seed)
    shape = (g["n"], g["c"], g["h"], g["w"])
    # Few distinct values make ties in almost every window: the first maximum must win, as in torch.
    x = (rng.integers(-1, 2, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    xt, yt, it = torch_pool(x, g)
    geometry = (g["kernel"], g["stride"], g["padding"], g["dilation"], g["ceil_mode"])
    for impl in (reference, cpu):
        y, idx = impl.maxpool2d_forward(x, *geometry)
        assert y.dtype == dtype and idx.dtype == (np.int64 if impl is reference else np.int32)
        np.testing.assert_array_equal(y, yt.detach().numpy(), err_msg=impl.__name__)
        np.testing.assert_array_equal(idx, it.numpy(), err_msg=impl.__name__)
    gy = rand(rng, y.shape, dtype)
    yt.backward(torch.tensor(gy))
    gx = cpu.maxpool2d_backward(gy, idx, x.shape, *geometry)
    assert gx.dtype == dtype
    assert_close(gx, reference.maxpool2d_backward(gy, idx, x.shape), RTOL[dtype])
    assert_close(gx, xt.grad, RTOL[dtype])
    # torch's own int64 indices route the gradient the same way
    np.testing.assert_array_equal(cpu.maxpool2d_backward(gy, it.numpy(), x.shape), gx)


def test_maxpool2d_index_dtype_is_int32_until_a_plane_outgrows_it():
    assert cpu.pool.pool_index_dtype(32, 32) == np.int32
    assert cpu.pool.pool_index_dtype(46340, 46340) == np.int32  # 2,147,395,600 positions: still fits
    assert cpu.pool.pool_index_dtype(1 << 16, 1 << 15) == np.int64  # 2**31 positions: one too many


@pytest.mark.parametrize("impl", [reference, cpu], ids=["reference", "cpu"])
def test_maxpool2d_nan_and_infinities_like_torch(impl):
    x = np.array([[[[1.0, np.nan, 3.0, np.nan],
                    [-np.inf, -np.inf, 2.0, 2.0],
                    [-np.inf, -np.inf, np.inf, 5.0],
                    [-np.inf, -np.inf, 5.0, np.inf]]]])
    for kernel, stride, padding, dilation, ceil_mode in [
            ((2, 2), (2, 2), (0, 0), (1, 1), False), ((3, 3), (1, 1), (1, 1), (1, 1), False),
            ((2, 3), (1, 2), (1, 1), (1, 1), False), ((2, 2), (1, 1), (1, 1), (2, 2), False),
            ((2, 2), (3, 3), (0, 0), (1, 1), True), ((3, 2), (2, 3), (1, 1), (2, 1), True)]:
        g = {"kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation, "ceil_mode": ceil_mode}
        _, yt, it = torch_pool(x, g)
        y, idx = impl.maxpool2d_forward(x, kernel, stride, padding, dilation, ceil_mode)
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(idx, it.numpy())


# --- thread-count determinism ------------------------------------------------------------------------

_DETERMINISM_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from manualbp.kernels import cpu
    rng = np.random.default_rng(7)
    out = {}
    for dt in (np.float32, np.float64):
        r = lambda *s: rng.standard_normal(s).astype(dt)
        a, b = r(37, 53), r(53, 70)
        out[f"mm_{dt.__name__}"] = cpu.matmul(a, b)
        out[f"mm_t_{dt.__name__}"] = cpu.matmul(b, a, True, True)
        x, w, bias = r(4, 5, 11, 9), r(6, 5, 3, 2), r(6)
        for s, p in [((1, 1), (1, 1)), ((2, 3), (2, 0))]:
            key = f"{dt.__name__}_{s}_{p}"
            y = cpu.conv2d_forward(x, w, bias, s, p)
            gy = r(*y.shape)
            out["conv_y_" + key] = y
            out["conv_gx_" + key] = cpu.conv2d_grad_input(gy, w, x.shape, s, p)
            out["conv_gw_" + key] = cpu.conv2d_grad_weight(gy, x, w.shape, s, p)
            out["conv_gb_" + key] = cpu.conv2d_grad_params(gy, x, w.shape, s, p, True)[1]
            yp, idx = cpu.maxpool2d_forward(x, (3, 2), s, (1, 1))
            out["pool_y_" + key], out["pool_i_" + key] = yp, idx
            out["pool_gx_" + key] = cpu.maxpool2d_backward(r(*yp.shape), idx, x.shape)
            yp, idx = cpu.maxpool2d_forward(x, (2, 2), s, (1, 0), (2, 3), True)
            out["pool_dilated_y_" + key], out["pool_dilated_i_" + key] = yp, idx
            out["pool_dilated_gx_" + key] = cpu.maxpool2d_backward(r(*yp.shape), idx, x.shape)
        xg, wg = r(4, 6, 11, 9), r(4, 3, 3, 2)  # 2 groups, dilation (2, 1)
        for s in ((1, 1), (2, 1)):
            key = f"{dt.__name__}_{s}"
            y = cpu.conv2d_forward(xg, wg, None, s, (1, 1), (2, 1), 2)
            gy = r(*y.shape)
            out["grouped_y_" + key] = y
            out["grouped_gx_" + key] = cpu.conv2d_grad_input(gy, wg, xg.shape, s, (1, 1), (2, 1), 2)
            out["grouped_gw_" + key] = cpu.conv2d_grad_weight(gy, xg, wg.shape, s, (1, 1), (2, 1), 2)
        for mode in ("reflect", "replicate", "circular"):
            xp = cpu.pad2d(xg, (2, 1, 0, 3), mode)
            out["pad_" + mode + dt.__name__] = xp
            out["pad_gx_" + mode + dt.__name__] = cpu.pad2d_backward(r(*xp.shape), xg.shape, (2, 1, 0, 3), mode)
    np.savez(sys.argv[1], **out)
""")


def test_results_do_not_depend_on_thread_count(tmp_path):
    results = []
    for threads in (1, 2):
        path = tmp_path / f"threads{threads}.npz"
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT, str(path)], env=env, check=True, cwd=ROOT,
                       timeout=300)
        results.append(dict(np.load(path)))
    one, two = results
    assert one.keys() == two.keys() and len(one) > 10
    for key in one:
        assert one[key].tobytes() == two[key].tobytes(), f"{key} differs between 1 and 2 threads"


# --- serial and parallel drivers, and the paths taken only by large problems --------------------------


def test_serial_and_parallel_drivers_give_identical_bits():
    """Each parallel kernel has a serial twin for small problems; both run the same tasks."""
    from manualbp.kernels.cpu import conv_direct as cpu_direct
    from manualbp.kernels.cpu import conv_im2col as cpu_conv
    from manualbp.kernels.cpu import gemm_dot as cpu_gemm
    rng = np.random.default_rng(3)
    for dt in (np.float32, np.float64):
        a, b = rand(rng, (37, 70), dt), rand(rng, (70, 45), dt)
        outs = [np.empty((37, 45), dt) for _ in range(2)]
        cpu_gemm.matmul_nn(a, b, outs[0])
        cpu_gemm.matmul_nn_serial(a, b, outs[1])
        assert outs[0].tobytes() == outs[1].tobytes()  # the packed products: tests/test_packed.py
        x, w2, bias = rand(rng, (5, 3, 9, 8), dt), rand(rng, (8, 3 * 9), dt), rand(rng, (8,), dt)
        ys = [np.empty((5, 8, 9, 8), dt) for _ in range(2)]
        cpu_direct.conv2d_direct(x, w2, bias, ys[0], np.empty((2, 3, 13 * 10 + 2), dt), np.empty((2, 8, 9 * 10), dt),
                                 3, 3, 1, 1, True)
        cpu_direct.conv2d_direct_serial(x, w2, bias, ys[1], np.empty((1, 3, 13 * 10 + 2), dt),
                                        np.empty((1, 8, 9 * 10), dt), 3, 3, 1, 1, True)
        assert ys[0].tobytes() == ys[1].tobytes()
        gy = rand(rng, (5, 8, 9, 8), dt)
        gws = [np.empty((8, 28), dt) for _ in range(2)]
        for kernel, T, out in ((cpu_direct.conv2d_direct_grad_weight, 2, gws[0]),
                               (cpu_direct.conv2d_direct_grad_weight_serial, 1, gws[1])):
            kernel(x, gy, out, np.empty((5, 3, 11 * 10 + 2 + 6), dt), 3, 3, 1, 1, T, 96)
        assert gws[0].tobytes() == gws[1].tobytes()
        gy3, xs = gy.reshape(5, 8, 72), rand(rng, (5, 3, 9, 8), dt)
        g1, g2 = np.empty((8, 27), dt), np.empty((8, 27), dt)
        cpu_conv.conv2d_grad_weight(xs, gy3, g1, 3, 3, 1, 1, 1, 1, 1, 1, 9, 8)
        cpu_conv.conv2d_grad_weight_serial(xs, gy3, g2, 3, 3, 1, 1, 1, 1, 1, 1, 9, 8)
        assert g1.tobytes() == g2.tobytes()
        gy3d = rand(rng, (5, 8, 7 * 4), dt)  # dilation (2, 3): a 3 x 3 kernel spanning 5 x 7 pixels
        cpu_conv.conv2d_grad_weight(xs, gy3d, g1, 3, 3, 1, 1, 1, 1, 2, 3, 7, 4)
        cpu_conv.conv2d_grad_weight_serial(xs, gy3d, g2, 3, 3, 1, 1, 1, 1, 2, 3, 7, 4)
        assert g1.tobytes() == g2.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", [
    {"n": 8, "c": 15, "o": 10, "h": 20, "w": 17, "kernel": (5, 5), "stride": (1, 1), "padding": (2, 2)},  # direct
    {"n": 16, "c": 23, "o": 6, "h": 21, "w": 20, "kernel": (5, 3), "stride": (1, 1), "padding": (0, 1)},  # direct
    {"n": 6, "c": 20, "o": 9, "h": 30, "w": 31, "kernel": (4, 4), "stride": (2, 1), "padding": (1, 3)},   # im2col
    {"n": 6, "c": 16, "o": 12, "h": 24, "w": 21, "kernel": (3, 3), "stride": (1, 1), "padding": (2, 2),
     "dilation": (2, 2)},                                                                                  # dilated
    {"n": 8, "c": 32, "o": 32, "h": 16, "w": 16, "kernel": (5, 5), "stride": (1, 1), "padding": (2, 2),
     "groups": 2},                                                                          # groups, packed tiles
    {"n": 8, "c": 24, "o": 24, "h": 18, "w": 17, "kernel": (3, 3), "stride": (2, 1), "padding": (1, 1),
     "dilation": (1, 2), "groups": 24},                                                               # depthwise
])
def test_convolutions_large_enough_to_run_on_all_threads(geometry, dtype, assert_close):
    """Sizes above the serial threshold (cpu/gemm_dot.PARALLEL_MIN_MACS), with stride 1 (the direct kernels
    of cpu/conv_direct.py, O and C*KH*KW not multiples of 4) and without (the im2col kernels of cpu/conv_im2col.py);
    dilated (im2col), and grouped (each group above the threshold itself, but for the depthwise layer)."""
    from manualbp.kernels.cpu.gemm_dot import PARALLEL_MIN_MACS
    g = dict(geometry)
    x, w, b, gy = conv_arrays(g, dtype, 5)
    s, p = g["stride"], g["padding"]
    d, groups = g.get("dilation", (1, 1)), g.get("groups", 1)
    if groups < g["c"]:  # (a depthwise layer's groups stay below the threshold: they check the loop over groups)
        assert gy.size * g["c"] // groups ** 2 * g["kernel"][0] * g["kernel"][1] >= PARALLEL_MIN_MACS
    assert_close(cpu.conv2d_forward(x, w, b, s, p, d, groups), reference.conv2d_forward(x, w, b, s, p, d, groups),
                 RTOL[dtype])
    assert_close(cpu.conv2d_grad_input(gy, w, x.shape, s, p, d, groups),
                 reference.conv2d_grad_input(gy, w, x.shape, s, p, d, groups), RTOL[dtype])
    assert_close(cpu.conv2d_grad_weight(gy, x, w.shape, s, p, d, groups),
                 reference.conv2d_grad_weight(gy, x, w.shape, s, p, d, groups), RTOL[dtype])


def test_linear_shaped_products_take_both_layouts(assert_close):
    """Short inner sizes (a Linear layer's backward) use the NN form; long ones the packed tiles; both large."""
    rng = np.random.default_rng(4)
    for dt in (np.float32, np.float64):
        g, x, w = rand(rng, (256, 120), dt), rand(rng, (256, 400), dt), rand(rng, (120, 400), dt)
        assert_close(cpu.matmul(g, x, transpose_a=True), g.T @ x, RTOL[dt])   # K = 256: packed
        assert_close(cpu.matmul(g[:16], x[:16], transpose_a=True), g[:16].T @ x[:16], RTOL[dt])  # K = 16: NN
        assert_close(cpu.matmul(g, w), g @ w, RTOL[dt])   # K = 120: packed
        a, b = rand(rng, (600, 40), dt), rand(rng, (40, 500), dt)
        assert_close(cpu.matmul(a, b), a @ b, RTOL[dt])   # K = 40, 12M multiply-adds: NN on all threads


# --- the fused cross-entropy and the SGD update (kernels/cpu/loss.py, kernels/cpu/optim.py) ----------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), c=st.integers(1, 12), dtype=dtypes, seed=st.integers(0, 2**16),
       ignore=st.booleans(), scale=st.sampled_from([1.0, 30.0]))
def test_cross_entropy_kernel_matches_reference_and_torch(n, c, dtype, seed, ignore, scale, assert_close):
    rng = np.random.default_rng(seed)
    z = (scale * rng.standard_normal((n, c))).astype(dtype)
    t = rng.integers(0, c, n)
    if ignore:
        t[rng.random(n) < 0.4] = -100
    total, count, bad, grad = cpu.cross_entropy_index(z, t, -100)
    r_total, r_count, r_bad, r_grad = reference.cross_entropy_index(z, t, -100)
    assert (count, bad) == (r_count, r_bad) == (int((t != -100).sum()), -1)
    assert grad.dtype == dtype and grad.shape == (n, c)
    assert_close(grad, r_grad, RTOL[dtype])
    assert_close(np.asarray(total, dtype), np.asarray(r_total, dtype), RTOL[dtype])
    if count:
        zt = torch.from_numpy(z).requires_grad_()
        loss = torch.nn.functional.cross_entropy(zt, torch.from_numpy(t), reduction="sum")
        loss.backward()
        assert_close(np.asarray(total, dtype), loss.detach(), RTOL[dtype])
        assert_close(grad, zt.grad, RTOL[dtype])
    for impl in (cpu, reference):  # mean: the same division as loss_reduce's, bit for bit
        plain = impl.cross_entropy_index(z, t, -100)
        mean = impl.cross_entropy_index(z, t, -100, True)
        expected = reference.loss_reduce(np.array([plain[0]], dtype), "mean", plain[1])
        assert mean[1:3] == plain[1:3] and np.array_equal(mean[3], plain[3])
        assert np.asarray(mean[0]).dtype == dtype
        np.testing.assert_array_equal(np.asarray(mean[0]), np.asarray(expected))


def test_cross_entropy_kernel_reports_targets_out_of_range_and_nan():
    z = np.zeros((3, 4), np.float32)
    for impl in (cpu, reference):
        assert impl.cross_entropy_index(z, np.array([0, 4, 1]), -100)[2] == 1
        assert impl.cross_entropy_index(z, np.array([0, 1, -1]), -100)[2] == 2
        z_nan = z.copy()
        z_nan[1, 2] = np.nan
        total, count, bad, grad = impl.cross_entropy_index(z_nan, np.array([0, 1, 2]), -100)
        assert bad == -1 and count == 3 and np.isnan(total) and np.isnan(grad[1]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum,dampening,weight_decay,nesterov",
                         [(0.0, 0.0, 0.0, False), (0.0, 0.0, 0.01, False), (0.9, 0.0, 0.0, False),
                          (0.9, 0.3, 1e-3, False), (0.8, 0.0, 0.05, True)])
def test_sgd_update_kernel_matches_reference_bit_for_bit(dtype, momentum, dampening, weight_decay, nesterov):
    rng = np.random.default_rng(7)
    p0 = rand(rng, (3, 4, 5), dtype)
    p_ours, p_ref = p0.copy(), p0.copy()
    b_ours = np.empty_like(p0) if momentum else None
    b_ref = np.empty_like(p0) if momentum else None
    for step in range(3):
        g = rand(rng, p0.shape, dtype)
        cpu.sgd_update(p_ours, g, b_ours, 0.1, momentum, dampening, weight_decay, nesterov, step == 0)
        reference.sgd_update(p_ref, g, b_ref, 0.1, momentum, dampening, weight_decay, nesterov, step == 0)
        np.testing.assert_array_equal(p_ours, p_ref)
        if momentum:
            np.testing.assert_array_equal(b_ours, b_ref)
    assert p_ours.dtype == dtype


@pytest.mark.parametrize("shape", [(), (0, 3), (7,), (3, 4), (4, 16, 32, 32)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_kernels_give_the_twins_bits_nan_and_0d_included(shape, dtype):
    rng = np.random.default_rng(len(shape))
    x = np.asarray(rng.standard_normal(shape)).astype(dtype)
    if x.size:
        x.reshape(-1)[:3] = [np.nan, 0.0, -0.0][:x.size]
    g = np.asarray(rng.standard_normal(shape)).astype(dtype)
    for ours, twin in ((cpu.relu_forward(x), reference.relu_forward(x)),
                       (cpu.relu_backward(g, x), reference.relu_backward(g, x))):
        assert ours.shape == twin.shape and ours.dtype == twin.dtype
        np.testing.assert_array_equal(ours, twin)


def test_gradient_operations_write_into_out_when_given():
    """``out`` (a parameter's place in a flat gradient buffer on the GPU) means the same everywhere: the
    result, written into ``out``, which is returned."""
    rng = np.random.default_rng(3)
    g, x = rng.standard_normal((4, 3)), rng.standard_normal((4, 5))
    gy, xi = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 2, 6, 6))
    g3, x3 = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
    w, mean, invstd = rng.standard_normal(3), x3.mean(axis=(0, 2)), 1 / x3.std(axis=(0, 2))
    y3 = np.maximum(x3, 0)
    for impl in (cpu, reference):
        cases = [
            (lambda out, impl=impl: impl.matmul(g, x, True, False, out), impl.matmul(g, x, True, False)),
            (lambda out, impl=impl: impl.bias_grad(gy, out), impl.bias_grad(gy)),
        ]
        for compute, plain in cases:
            out = np.empty_like(plain)
            assert compute(out) is out
            np.testing.assert_array_equal(out, plain)
        plain = impl.conv2d_grad_params(gy, xi, (3, 2, 3, 3), (1, 1), (0, 0), True)
        outs = (np.empty_like(plain[0]), np.empty_like(plain[1]))
        got = impl.conv2d_grad_params(gy, xi, (3, 2, 3, 3), (1, 1), (0, 0), True, (1, 1), 1, outs)
        assert got[0] is outs[0] and got[1] is outs[1]
        for a, b in zip(got, plain):
            np.testing.assert_array_equal(a, b)
        for plain, got_of in ((impl.batch_norm_backward(g3, x3, w, mean, invstd, True),
                               lambda o, impl=impl: impl.batch_norm_backward(g3, x3, w, mean, invstd, True, o)),
                              (impl.batch_norm_relu_backward(g3, y3, x3, w, mean, invstd, True, False),
                               lambda o, impl=impl: impl.batch_norm_relu_backward(g3, y3, x3, w, mean, invstd, True,
                                                                      False, o))):
            outs = (np.empty(3), np.empty(3))
            got = got_of(outs)
            assert got[1] is outs[0] and got[2] is outs[1]
            for a, b in zip(got[:3], plain[:3]):
                np.testing.assert_array_equal(a, b)
        rows = x3.reshape(12, 5)  # LayerNorm over the last 5 of 12 rows
        lmean, linv = rows.mean(axis=1), 1 / rows.std(axis=1)
        plain = impl.layer_norm_backward(g3.reshape(12, 5), rows, w[:1].repeat(5), lmean, linv)
        outs = (np.empty(5), np.empty(5))
        got = impl.layer_norm_backward(g3.reshape(12, 5), rows, w[:1].repeat(5), lmean, linv, outs)
        assert got[1] is outs[0] and got[2] is outs[1]
        for a, b in zip(got, plain):
            np.testing.assert_array_equal(a, b)
