"""The operations of manualbp.kernels.cuda against their NumPy twins (kernels/reference.py, reference_loss.py).

Each test calls the GPU operation (under numba's CUDA simulator) and the reference operation of the
same name with the same positional arguments, on the same float32 host arrays, and compares the
results: softmax on every axis of 1-D..4-D inputs, add_ / scale, linear, conv grad-params, the SGD
update, and every loss with each option (reduction, weights, pos_weight, ignore_index, label
smoothing, (N, C) and (N, C, d1, d2) shapes, probability targets, a scalar or a per-element upstream
gradient).  Shapes are tiny: the simulator runs every GPU thread as a Python thread, and a one-block
reduction costs most of a second.  Collected only under NUMBA_ENABLE_CUDASIM=1 (see conftest.py).
"""
import numpy as np
import pytest
from numba import cuda

from manualbp.kernels import cuda as gpu
from manualbp.kernels import reference

RNG = np.random.default_rng(314)
TOL = {"rtol": 1e-4, "atol": 1e-6}
IGNORE = -100


def dev(a, dtype=np.float32):
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def host(d):
    return d.copy_to_host()


def randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def close(got, want, **tol):
    got = host(got) if hasattr(got, "copy_to_host") else got
    np.testing.assert_allclose(np.asarray(got, np.float32).reshape(np.shape(want)), want, **(tol or TOL))


def scalar_forms(value, n):
    """The upstream gradient s in each accepted form: a float, a NumPy float32, a (1,) device array."""
    return [value, np.float32(value), dev([value])]


# --- softmax -------------------------------------------------------------------------------------------------

SOFTMAX_CASES = [((5,), 0), ((3, 4), 0), ((3, 4), -1), ((2, 3, 4), 1), ((2, 3, 2, 2), 0), ((2, 3, 2, 2), 1),
                 ((2, 3, 2, 2), -1)]


@pytest.mark.parametrize("shape,axis", SOFTMAX_CASES)
def test_softmax_forward_and_backward(shape, axis):
    x = randn(*shape, scale=3.0)
    x.reshape(-1)[0] = 60.0  # a large logit: the maximum is subtracted first
    g = randn(*shape)
    p = gpu.softmax_forward(dev(x), axis)
    p_ref = reference.softmax_forward(x, axis)
    close(p, p_ref)
    close(gpu.softmax_backward(dev(g), p, axis), reference.softmax_backward(g, p_ref, axis))


def test_softmax_rejects_a_bad_axis():
    with pytest.raises(ValueError, match="axis"):
        gpu.softmax_forward(dev(randn(2, 3)), 2)


# --- add_, scale, empty_like ------------------------------------------------------------------------------------

def test_add_in_place():
    a, b = randn(3, 5), randn(3, 5)
    d = dev(a)
    assert gpu.add_(d, dev(b)) is d
    close(d, reference.add_(a.copy(), b))


@pytest.mark.parametrize("form", ["float", "numpy", "device1", "array"])
def test_scale(form):
    a = randn(2, 3, 4)
    s = {"float": 0.37, "numpy": np.float32(-1.5), "device1": np.array([2.5], np.float32),
         "array": randn(2, 3, 4)}[form]
    s_dev = dev(s) if form in ("device1", "array") else s
    close(gpu.scale(dev(a), s_dev), reference.scale(a, s))


def test_empty_like():
    e = gpu.empty_like(dev(randn(3, 4)))
    assert e.shape == (3, 4) and e.dtype == np.float32 and hasattr(e, "copy_to_host")


# --- linear, convolution's parameter gradients, SGD ------------------------------------------------------------

@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_forward(with_bias):
    x, w, b = randn(5, 7), randn(3, 7), randn(3)
    got = gpu.linear_forward(dev(x), dev(w), dev(b) if with_bias else None)
    close(got, reference.linear_forward(x, w, b if with_bias else None), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", ["small", "large", "split"])
def test_linear_forward_adds_the_bias_in_the_products_launch(config, monkeypatch):
    """One launch, and bit for bit the product followed by bias_add (the bias joins as C is written);
    with split-K the two launches of before."""
    from manualbp import cuda as counting_cuda
    from manualbp.kernels.cuda import gemm

    x, w, b = randn(5, 19), randn(7, 19), randn(7)
    if config == "large":
        monkeypatch.setattr(gemm, "pick_config", lambda M, N: gemm.LARGE)
    if config == "split":
        monkeypatch.setattr(gemm, "choose_split", lambda M, N, K, cfg: (16, 2))
    two_launches = gpu.bias_add(gpu.matmul(dev(x), dev(w), transpose_b=True), dev(b))
    with counting_cuda.counting() as counts:
        got = gpu.linear_forward(dev(x), dev(w), dev(b))
    assert counts.total_launches == (3 if config == "split" else 1), counts.launches
    if config != "split":
        assert list(counts.launches) == [f"gemm_{config}_linear"]
    np.testing.assert_array_equal(host(got), host(two_launches))
    with pytest.raises(ValueError, match=r"expected w of shape \(out, 19\)"):
        gemm.linear(dev(x), dev(randn(7, 18)), dev(b))


@pytest.mark.parametrize("with_bias", [True, False])
def test_conv2d_grad_params(with_bias):
    x, w_shape = randn(2, 2, 5, 4), (3, 2, 3, 3)
    gy = randn(2, 3, 3, 2)  # stride (1, 2), padding (0, 1): OH = 3, OW = 2
    dw, db = gpu.conv2d_grad_params(dev(gy), dev(x), w_shape, (1, 2), (0, 1), with_bias)
    dw_ref, db_ref = reference.conv2d_grad_params(gy, x, w_shape, (1, 2), (0, 1), with_bias)
    close(dw, dw_ref, rtol=1e-4, atol=1e-5)
    if with_bias:
        close(db, db_ref, rtol=1e-4, atol=1e-5)
    else:
        assert db is None and db_ref is None


@pytest.mark.parametrize("momentum,dampening,weight_decay,nesterov", [
    (0.0, 0.0, 0.0, False), (0.9, 0.1, 0.01, False), (0.9, 0.0, 0.05, True)])
def test_sgd_update_has_the_reference_signature(momentum, dampening, weight_decay, nesterov):
    p, buf = randn(4, 3), np.zeros((4, 3), np.float32)
    dp, dbuf = dev(p), gpu.empty_like(dev(p))  # garbage in the buffer: the first step overwrites it
    for step in range(2):
        g = randn(4, 3)
        gpu.sgd_update(dp, dev(g), dbuf if momentum else None, 0.1, momentum, dampening, weight_decay, nesterov,
                       step == 0)
        reference.sgd_update(p, g, buf if momentum else None, 0.1, momentum, dampening, weight_decay, nesterov,
                             step == 0)
        close(dp, p, rtol=1e-6, atol=1e-7)
        if momentum:
            close(dbuf, buf, rtol=1e-6, atol=1e-7)


# --- the reduction and the upstream gradient ----------------------------------------------------------------------

def test_loss_reduce_every_reduction():
    ell = np.abs(randn(3, 5))
    d = dev(ell)
    assert gpu.loss_reduce(d, "none", 15) is d
    total = gpu.loss_reduce(d, "sum", 15)
    assert total.shape == (1,)
    close(total, [reference.loss_reduce(ell, "sum", 15)])
    close(gpu.loss_reduce(d, "mean", 15), [reference.loss_reduce(ell, "mean", 15)])
    close(gpu.loss_reduce(d, "mean", dev([2.5])), [reference.loss_reduce(ell, "mean", np.float32(2.5))])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the simulator computes 0 / 0 in NumPy
def test_loss_reduce_over_more_elements_than_threads_and_nan_for_zero_over_zero():
    ell = np.abs(randn(300))  # more elements than the reducing block has threads
    close(gpu.loss_reduce(dev(ell), "mean", 300), [reference.loss_reduce(ell, "mean", 300)])
    assert np.isnan(host(gpu.loss_reduce(dev(np.zeros(2)), "mean", dev([0.0])))[0])


def test_loss_upstream():
    g = dev(randn(3, 4))
    assert gpu.loss_upstream(g, "none", 12) is g
    assert gpu.loss_upstream(0.5, "sum", 12) == 0.5
    for grad, denom in ((1.0, 12), (dev([0.5]), 7), (np.float32(2.0), dev([3.0]))):
        got = gpu.loss_upstream(grad, "mean", denom)
        assert got.shape == (1,)
        g_host = host(grad)[0] if hasattr(grad, "copy_to_host") else np.float32(grad)
        d_host = host(denom)[0] if hasattr(denom, "copy_to_host") else denom
        close(got, [reference.loss_upstream(g_host, "mean", d_host)])


# --- regression losses ---------------------------------------------------------------------------------------------

REGRESSION = [("l1_loss", ()), ("mse_loss", ()), ("smooth_l1_loss", (0.5,)), ("smooth_l1_loss", (0.0,)),
              ("huber_loss", (0.7,))]


@pytest.mark.parametrize("name,extra", REGRESSION, ids=[f"{n}{e}" for n, e in REGRESSION])
def test_regression_loss(name, extra):
    x, t = randn(3, 5), randn(3, 5)
    t[0, :2] = x[0, :2]  # d = 0: the sign is 0
    t[1, 0] = x[1, 0] - np.float32(0.25)  # inside every quadratic zone
    forward, backward = getattr(gpu, name), getattr(gpu, name + "_backward")
    close(forward(dev(x), dev(t), *extra), getattr(reference, name)(x, t, *extra))
    want_backward = getattr(reference, name + "_backward")
    for s in scalar_forms(0.25, x.size):
        s_ref = np.float32(0.25)
        close(backward(s, dev(x), dev(t), *extra), want_backward(s_ref, x, t, *extra))
    s = randn(3, 5)
    close(backward(dev(s), dev(x), dev(t), *extra), want_backward(s, x, t, *extra))


# --- binary cross-entropy ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("weighted", [False, True])
def test_bce_loss(weighted):
    x = RNG.uniform(0.02, 0.98, size=(4, 3)).astype(np.float32)
    x[0, 0], x[0, 1] = 0.0, 1.0  # log 0 is clamped at -100
    t = RNG.uniform(0, 1, size=(4, 3)).astype(np.float32)
    t[0, 0], t[0, 1] = 1.0, 0.0
    w = RNG.uniform(0.5, 2, size=(4, 3)).astype(np.float32) if weighted else None
    wd = dev(w) if weighted else None
    close(gpu.bce_loss(dev(x), dev(t), wd), reference.bce_loss(x, t, w))
    for s in (0.5, dev([0.5])):
        close(gpu.bce_loss_backward(s, dev(x), dev(t), wd), reference.bce_loss_backward(np.float32(0.5), x, t, w))
    s = randn(4, 3)
    close(gpu.bce_loss_backward(dev(s), dev(x), dev(t), wd), reference.bce_loss_backward(s, x, t, w))


@pytest.mark.parametrize("weighted,pos_weighted", [(False, False), (True, False), (False, True), (True, True)])
def test_bce_with_logits_loss(weighted, pos_weighted):
    z = randn(4, 3, scale=3.0)
    z[0, 0], z[0, 1] = 80.0, -80.0  # e^-|z| only: nothing overflows
    t = RNG.uniform(0, 1, size=(4, 3)).astype(np.float32)
    w = RNG.uniform(0.5, 2, size=(4, 3)).astype(np.float32) if weighted else None
    pw = np.broadcast_to(RNG.uniform(0.5, 3, size=3).astype(np.float32), (4, 3)).copy() if pos_weighted else None
    wd, pwd = (dev(w) if weighted else None), (dev(pw) if pos_weighted else None)
    close(gpu.bce_with_logits_loss(dev(z), dev(t), wd, pwd), reference.bce_with_logits_loss(z, t, w, pw))
    want = reference.bce_with_logits_loss_backward(np.float32(2.0), z, t, w, pw)
    close(gpu.bce_with_logits_loss_backward(dev([2.0]), dev(z), dev(t), wd, pwd), want)
    s = randn(4, 3)
    close(gpu.bce_with_logits_loss_backward(dev(s), dev(z), dev(t), wd, pwd),
          reference.bce_with_logits_loss_backward(s, z, t, w, pw))


# --- class losses: NLL and cross-entropy ----------------------------------------------------------------------------

# (N, C, S) with S = 1 for (N, C) input and S = d1*d2 = 2*2 for (N, C, d1, d2); ignore_index -100, or a
# class (1); weights or none.  Each case costs a one-block reduction (D), most of a second in the simulator,
# so the options are spread over a few cases rather than crossed.
NLL_CASES = [((5, 4, 1), IGNORE, False), ((2, 3, 4), IGNORE, True), ((5, 4, 1), 1, True)]
CE_CASES = [((5, 4, 1), IGNORE, False, 0.0), ((5, 4, 1), 1, True, 0.1), ((2, 3, 4), IGNORE, True, 0.0),
            ((2, 3, 4), 1, False, 0.2)]


def class_targets(N, C, S, ignore_index):
    t = RNG.integers(0, C, size=(N, S)).astype(np.int64)
    t[0, 0] = ignore_index  # one ignored line (a class value when ignore_index is a class)
    return t


def class_weights(weighted, C):
    return RNG.uniform(0.5, 2.0, size=C).astype(np.float32) if weighted else None


def s_cases(N, S):
    """(s for the GPU, s for the reference): a float, a (1,) device array, an (N, S) array."""
    s = randn(N, S)
    return [(0.5, np.float32(0.5)), (dev([0.25]), np.float32(0.25)), (dev(s), s)]


@pytest.mark.parametrize("shape,ignore_index,weighted", NLL_CASES)
def test_nll_loss(shape, ignore_index, weighted):
    N, C, S = shape
    x = randn(N, C, S)
    t, w = class_targets(N, C, S, ignore_index), class_weights(weighted, C)
    wd = dev(w) if weighted else None
    ell, D = gpu.nll_loss(dev(x), dev(t, np.int64), wd, ignore_index)
    ell_ref, D_ref = reference.nll_loss(x, t, w, ignore_index)
    close(ell, ell_ref)
    assert D.shape == (1,)
    close(D, [D_ref])
    for s, s_ref in s_cases(N, S):
        close(gpu.nll_loss_backward(s, shape, dev(t, np.int64), wd, ignore_index, np.float32),
              reference.nll_loss_backward(s_ref, shape, t, w, ignore_index, np.float32))


@pytest.mark.parametrize("shape,ignore_index,weighted,label_smoothing", CE_CASES)
def test_cross_entropy(shape, ignore_index, weighted, label_smoothing):
    N, C, S = shape
    z = randn(N, C, S, scale=3.0)
    z[1, 0, 0] = 70.0  # a large logit
    t, w = class_targets(N, C, S, ignore_index), class_weights(weighted, C)
    wd, td = (dev(w) if weighted else None), dev(t, np.int64)
    ell, D, p = gpu.cross_entropy(dev(z), td, wd, ignore_index, label_smoothing)
    ell_ref, D_ref, p_ref = reference.cross_entropy(z, t, w, ignore_index, label_smoothing)
    close(ell, ell_ref, rtol=1e-4, atol=1e-5)
    close(D, [D_ref])
    close(p, p_ref)
    for s, s_ref in s_cases(N, S):
        close(gpu.cross_entropy_backward(s, p, td, wd, ignore_index, label_smoothing),
              reference.cross_entropy_backward(s_ref, p_ref, t, w, ignore_index, label_smoothing))


def test_cross_entropy_every_line_ignored_gives_a_nan_count():
    z, t = randn(2, 3, 1), np.full((2, 1), IGNORE, np.int64)
    ell, D, _ = gpu.cross_entropy(dev(z), dev(t, np.int64), None, IGNORE, 0.0)
    assert np.isnan(host(D)[0]) and np.isnan(reference.cross_entropy(z, t, None, IGNORE, 0.0)[1])
    close(ell, np.zeros((2, 1), np.float32))
    assert np.isnan(host(gpu.loss_reduce(ell, "mean", D))[0])


@pytest.mark.parametrize("weighted,label_smoothing", [(False, 0.0), (True, 0.15)])
@pytest.mark.parametrize("shape", [(4, 3, 1), (2, 3, 4)])
def test_cross_entropy_probs(shape, weighted, label_smoothing):
    N, C, S = shape
    z = randn(N, C, S, scale=2.0)
    e = RNG.uniform(0, 1, size=shape)
    y = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)  # probabilities over the classes
    w = class_weights(weighted, C)
    wd = dev(w) if weighted else None
    ell, p = gpu.cross_entropy_probs(dev(z), dev(y), wd, label_smoothing)
    ell_ref, p_ref = reference.cross_entropy_probs(z, y, w, label_smoothing)
    close(ell, ell_ref, rtol=1e-4, atol=1e-5)
    close(p, p_ref)
    for s, s_ref in s_cases(N, S):
        close(gpu.cross_entropy_probs_backward(s, p, dev(y), wd, label_smoothing),
              reference.cross_entropy_probs_backward(s_ref, p_ref, y, w, label_smoothing))


@pytest.mark.parametrize("ignore_index", [IGNORE, 2])
def test_cross_entropy_index(ignore_index):
    z = randn(6, 4, scale=3.0)
    z[0, 1] = 90.0
    t = np.array([1, 0, ignore_index, 3, 2, 1], np.int64)
    total, count, bad, grad = gpu.cross_entropy_index(dev(z), dev(t, np.int64), ignore_index)
    total_ref, count_ref, bad_ref, grad_ref = reference.cross_entropy_index(z, t, ignore_index)
    assert total.shape == (1,) and (count, bad) == (count_ref, bad_ref)
    close(total, [total_ref])
    close(grad, grad_ref)
    # mean: divided in the same launch, bit for bit what loss_reduce makes of the sum
    mean, count_m, _, grad_m = gpu.cross_entropy_index(dev(z), dev(t, np.int64), ignore_index, True)
    assert count_m == count and np.array_equal(host(grad_m), host(grad))
    np.testing.assert_array_equal(host(mean), host(gpu.loss_reduce(total, "mean", count)))


def test_cross_entropy_index_reports_a_bad_target():
    z, t = randn(3, 4), np.array([1, 4, -1], np.int64)
    total, count, bad, grad = gpu.cross_entropy_index(dev(z), dev(t, np.int64), IGNORE)
    assert (count, bad) == reference.cross_entropy_index(z, t, IGNORE)[1:3] == (0, 1)
    assert host(total)[0] == 0 and not host(grad).any()


def test_a_mean_loss_end_to_end_stays_on_the_device():
    """reduce -> upstream -> backward for a mean cross-entropy: D travels as a (1,) device array."""
    z, t = randn(4, 3, 1), np.array([[0], [2], [IGNORE], [1]], np.int64)
    td = dev(t, np.int64)
    ell, D, p = gpu.cross_entropy(dev(z), td, None, IGNORE, 0.0)
    ell_ref, D_ref, p_ref = reference.cross_entropy(z, t, None, IGNORE, 0.0)
    close(gpu.loss_reduce(ell, "mean", D), [reference.loss_reduce(ell_ref, "mean", D_ref)])
    s = gpu.loss_upstream(1.0, "mean", D)
    s_ref = reference.loss_upstream(np.float32(1.0), "mean", D_ref)
    close(gpu.cross_entropy_backward(s, p, td, None, IGNORE, 0.0),
          reference.cross_entropy_backward(s_ref, p_ref, t, None, IGNORE, 0.0))
