"""The BatchNorm, LayerNorm and Dropout kernels of kernels/cpu/norm.py against their NumPy twins (float32 and
float64; the serial and the parallel paths), bit-identical whatever the thread count; the dispatcher's
set_backend('numpy') runs the twins."""
import numba
import numpy as np
import pytest

import manualbp
from manualbp import kernels
from manualbp.kernels import reference
from manualbp.kernels.cpu import norm as cpu

RNG = np.random.default_rng(11)
TOL = {np.float32: {"rtol": 2e-5, "atol": 2e-5}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}
BIG = (16, 4, 1024)  # above NORM_PARALLEL_MIN_ELEMENTS: the parallel path


def close(a, b, dtype, what=""):
    """Elementwise, with the absolute part scaled by the largest value (a sum of many terms that nearly cancel
    is judged against the size of the terms, as tests/conftest.py does)."""
    tol = TOL[dtype]
    scale = max(1.0, float(np.max(np.abs(b)))) if np.size(b) else 1.0
    np.testing.assert_allclose(a, b, err_msg=what, rtol=tol["rtol"], atol=tol["atol"] * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 3, 1), (40, 70, 1), (2, 3, 7), BIG], ids=["NC", "NC-blocks", "NCL", "big"])
@pytest.mark.parametrize("momentum,affine", [(0.1, True), (None, False), (0.5, True)])
def test_batch_norm_matches_its_twin(shape, dtype, momentum, affine):
    x = (RNG.standard_normal(shape) * 2 + 3).astype(dtype)
    g = RNG.standard_normal(shape).astype(dtype)
    C = shape[1]
    w = RNG.standard_normal(C).astype(dtype) if affine else None
    b = RNG.standard_normal(C).astype(dtype) if affine else None
    stats = [RNG.standard_normal(C).astype(dtype), RNG.uniform(0.5, 2, C).astype(dtype), np.array(5, np.int64)]
    ours_stats = [s.copy() for s in stats]
    for training in (True, False):
        want = reference.batch_norm_forward(x, w, b, *stats, training, momentum, 1e-5)
        got = cpu.batch_norm_forward(x, w, b, *ours_stats, training, momentum, 1e-5)
        for o, r, name in zip(got, want, ("y", "mean", "invstd")):
            assert o.dtype == dtype, name
            close(o, r, dtype, f"{name}, training={training}")
        for o, r in zip(ours_stats, stats):
            close(o, r, dtype, "running statistics")
        assert ours_stats[2].dtype == np.int64 and int(ours_stats[2]) == int(stats[2])
        want_b = reference.batch_norm_backward(g, x, w, want[1], want[2], training)
        got_b = cpu.batch_norm_backward(g, x, w, got[1], got[2], training)
        for o, r, name in zip(got_b, want_b, ("dx", "dgamma", "dbeta")):
            assert o.dtype == dtype
            close(o, r, dtype, f"{name}, training={training}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 7), (3, 1), (64, 1024)], ids=["small", "one-column", "big"])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_its_twin(shape, dtype, affine):
    x = (RNG.standard_normal(shape) * 2 + 3).astype(dtype)
    g = RNG.standard_normal(shape).astype(dtype)
    w = RNG.standard_normal(shape[1]).astype(dtype) if affine else None
    b = RNG.standard_normal(shape[1]).astype(dtype) if affine else None
    want = reference.layer_norm_forward(x, w, b, 1e-5)
    got = cpu.layer_norm_forward(x, w, b, 1e-5)
    for o, r in zip(got, want):
        assert o.dtype == dtype
        close(o, r, dtype)
    want_b = reference.layer_norm_backward(g, x, w, want[1], want[2])
    got_b = cpu.layer_norm_backward(g, x, w, got[1], got[2])
    for o, r in zip(got_b, want_b):
        close(o, r, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,inner", [((10,), 1), ((3, 5, 4, 4), 16), ((256, 256), 1), ((8, 64, 8, 8), 64)])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_dropout_matches_its_twin_exactly(shape, inner, p, dtype):
    x = RNG.standard_normal(shape).astype(dtype)
    g = RNG.standard_normal(shape).astype(dtype)
    key = int(RNG.integers(0, 2 ** 63))
    y_ref, mask_ref = reference.dropout_forward(x, p, key, inner, False)
    y, mask = cpu.dropout_forward(x, p, key, inner, False)
    np.testing.assert_array_equal(mask, mask_ref)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(cpu.dropout_backward(g, mask, p, inner), reference.dropout_backward(g, mask_ref, p,
                                                                                                       inner))
    x2 = x.copy()
    same, _ = cpu.dropout_forward(x2, p, key, inner, True)
    assert same is x2
    np.testing.assert_array_equal(x2, y_ref)


def test_dropout_bits_are_uniform_and_thresholds_exact():
    bits = reference.dropout_bits(12345, np.arange(200_000))
    u = bits / 2.0 ** 24
    assert 0 <= bits.min() and bits.max() < 2 ** 24
    assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.001
    for p in (0.1, 0.25, 1 / 3, 0.9):  # bits >= ceil(p 2^24) is exactly u >= p
        t = reference.dropout_threshold(p)
        assert (t - 1) / 2.0 ** 24 < p <= t / 2.0 ** 24
    assert reference.dropout_threshold(0.0) == 0 and reference.dropout_threshold(1.0) == 2 ** 24


def test_results_do_not_depend_on_the_thread_count():
    x = RNG.standard_normal(BIG).astype(np.float32)
    g = RNG.standard_normal(BIG).astype(np.float32)
    rows = x.reshape(64, 1024)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, before}):
            numba.set_num_threads(threads)
            y, m, s = cpu.batch_norm_forward(x, None, None, None, None, None, True, 0.1, 1e-5)
            dx = cpu.batch_norm_backward(g, x, None, m, s, True)
            ly, lm, ls = cpu.layer_norm_forward(rows, None, None, 1e-5)
            ldx = cpu.layer_norm_backward(g.reshape(64, 1024), rows, None, lm, ls)
            feats = x.reshape(512, 128, 1)
            fy, fm, fs = cpu.batch_norm_forward(feats, None, None, None, None, None, True, 0.1, 1e-5)
            fdx = cpu.batch_norm_backward(feats, feats, None, fm, fs, True)
            results.append([y, *dx, ly, *ldx, fy, *fdx, cpu.dropout_forward(x, 0.5, 7, 1, False)[0]])
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[0], results[-1]):
        np.testing.assert_array_equal(a, b)


def test_the_numpy_backend_runs_the_twins():
    x = RNG.standard_normal((4, 3, 2))
    manualbp.set_backend("numpy")
    try:
        y, _, _ = kernels.batch_norm_forward(x, None, None, None, None, None, True, 0.1, 1e-5)
    finally:
        manualbp.set_backend("numba")
    np.testing.assert_allclose(y, reference.batch_norm_forward(x, None, None, None, None, None, True, 0.1, 1e-5)[0])


def test_serial_and_parallel_drivers_give_identical_bits():
    x = RNG.standard_normal((3, 5, 7)).astype(np.float32)
    g = RNG.standard_normal(x.shape).astype(np.float32)
    w, b = np.ones(5, np.float32), np.zeros(5, np.float32)
    outs = []
    for fwd, bwd in ((cpu._bn_forward, cpu._bn_backward), (cpu._bn_forward_serial, cpu._bn_backward_serial)):
        y, mean, var, inv = np.empty_like(x), np.empty(5, np.float32), np.empty(5, np.float32), np.empty(5, np.float32)
        fwd(x, y, w, b, mean, var, inv, True, np.float32(1e-5))
        gx, dg, db = np.empty_like(x), np.empty(5, np.float32), np.empty(5, np.float32)
        bwd(g, x, gx, w, mean, inv, dg, db, True)
        outs.append((y, mean, inv, gx, dg, db))
    rows = x.reshape(15, 7)
    for fwd, bwd in ((cpu._ln_forward, cpu._ln_backward), (cpu._ln_forward_serial, cpu._ln_backward_serial)):
        y, mean, inv = np.empty_like(rows), np.empty(15, np.float32), np.empty(15, np.float32)
        fwd(rows, y, np.ones(7, np.float32), np.zeros(7, np.float32), mean, inv, np.float32(1e-5))
        gx = np.empty_like(rows)
        bwd(g.reshape(15, 7), rows, gx, np.ones(7, np.float32), mean, inv)
        outs.append((y, mean, inv, gx))
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(outs[2], outs[3]):
        np.testing.assert_array_equal(a, b)
