"""Every CUDA kernel of manualbp.kernels.cuda, run by numba's CUDA simulator against a NumPy reference.

The simulator runs each GPU thread as a Python thread, so the shapes are tiny, and ragged (not
multiples of the tile sizes) to exercise the zero-filled edges of every tile.  This checks the
semantics (indices, edges, barriers); ``tests/cuda/test_cuda_ptx.py`` checks the real compilation.
Collected only in a process started with NUMBA_ENABLE_CUDASIM=1 (see conftest.py).
"""
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import cuda
from numba.core import sigutils

from manualbp.kernels import cuda as gpu
from manualbp.kernels import reference
from manualbp.kernels.cuda import gemm as cuda_gemm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ptx_signatures import SIGNATURES

RNG = np.random.default_rng(20240611)
F32 = {"rtol": 2e-5, "atol": 2e-5}


def dev(a, dtype=np.float32):
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def host(d):
    return d.copy_to_host()


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# --- the NumPy twins (manualbp/kernels/reference.py), run in float64 -------------------------------------

def f64(a):
    return np.asarray(a, dtype=np.float64)


def ref_out_size(h, k, s, p):
    return (h + 2 * p - k) // s + 1


def ref_conv2d_forward(x, w, b, stride, padding):
    return reference.conv2d_forward(f64(x), f64(w), None if b is None else f64(b), stride, padding)


def ref_conv2d_grad_input(gy, w, x_shape, stride, padding):
    return reference.conv2d_grad_input(f64(gy), f64(w), x_shape, stride, padding)


def ref_conv2d_grad_weight(gy, x, w_shape, stride, padding):
    return reference.conv2d_grad_weight(f64(gy), f64(x), w_shape, stride, padding)


# --- matmul -----------------------------------------------------------------------------------------------

MATMUL_CASES = [(5, 7, 3, ta, tb) for ta in (False, True) for tb in (False, True)]
MATMUL_CASES += [(70, 19, 67, False, False), (70, 19, 67, True, True)]  # 2 x 2 blocks, 2 K tiles


@pytest.mark.parametrize("m,k,n,ta,tb", MATMUL_CASES)
def test_matmul(m, k, n, ta, tb):
    A, B = randn(m, k), randn(k, n)
    a = A.T.copy() if ta else A
    b = B.T.copy() if tb else B
    c = host(gpu.matmul(dev(a), dev(b), transpose_a=ta, transpose_b=tb))
    np.testing.assert_allclose(c, reference.matmul(f64(a), f64(b), ta, tb), **F32)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, True), (False, True), (True, False)])
def test_matmul_large_tiles(ta, tb):
    """The 128 x 128 tile with 8 x 8 per thread, launched directly on a ragged 5 x 9 x 3 product."""
    m, k, n = 5, 9, 3
    A, B = randn(m, k), randn(k, n)
    a = A.T.copy() if ta else A
    b = B.T.copy() if tb else B
    c = cuda.to_device(np.full((m, n), np.nan, np.float32))
    kernel = cuda_gemm.MATMUL_KERNELS[("large", ta, tb)]
    cuda_gemm.launch_gemm(kernel, gpu.LARGE, dev(a), dev(b), c.reshape(m * n), dev(np.zeros(0)),
                          cuda_gemm.NO_GEOMETRY, m, n, k, k, 1, False)
    np.testing.assert_allclose(host(c), reference.matmul(f64(A), f64(B)), **F32)


def test_matmul_accumulates_and_splits_k(monkeypatch):
    """out += a @ b with K cut into slices that are added in a fixed order."""
    monkeypatch.setattr(cuda_gemm, "MIN_K_PER_SPLIT", 16)
    A, B, C0 = randn(5, 50), randn(50, 3), randn(5, 3)
    assert cuda_gemm.choose_split(5, 3, 50, gpu.SMALL) == (32, 2)
    out = dev(C0)
    gpu.matmul(dev(A), dev(B), out=out, accumulate=True)
    np.testing.assert_allclose(host(out), C0 + reference.matmul(f64(A), f64(B)), **F32)
    again = dev(C0)
    gpu.matmul(dev(A), dev(B), out=again, accumulate=True)
    assert np.array_equal(host(out), host(again))  # the same additions in the same order


def test_matmul_empty_inner_size():
    out = host(gpu.matmul(dev(np.zeros((2, 0))), dev(np.zeros((0, 3)))))
    assert out.shape == (2, 3) and not out.any()


def test_matmul_rejects_bad_arguments():
    with pytest.raises(TypeError, match="device array"):
        gpu.matmul(np.zeros((2, 2), np.float32), dev(np.zeros((2, 2))))
    with pytest.raises(TypeError, match="float32"):
        gpu.matmul(dev(np.zeros((2, 2)), np.float64), dev(np.zeros((2, 2))))
    with pytest.raises(ValueError, match="inner sizes"):
        gpu.matmul(dev(np.zeros((2, 3))), dev(np.zeros((2, 3))))


# --- conv2d -----------------------------------------------------------------------------------------------

CONV_CASES = [  # (N, C, H, W), (O, KH, KW), stride, padding
    ((2, 2, 5, 6), (3, 3, 3), (1, 1), (1, 1)),
    ((2, 2, 5, 6), (3, 2, 3), (2, 1), (1, 0)),
    ((1, 3, 6, 5), (2, 3, 2), (2, 2), (0, 1)),
]


@pytest.mark.parametrize("x_shape,w_dims,stride,padding", CONV_CASES)
def test_conv2d_forward(x_shape, w_dims, stride, padding):
    x = randn(*x_shape)
    w = randn(w_dims[0], x_shape[1], *w_dims[1:])
    b = randn(w_dims[0])
    y = host(gpu.conv2d_forward(dev(x), dev(w), dev(b), stride, padding))
    np.testing.assert_allclose(y, ref_conv2d_forward(x, w, b, stride, padding), **F32)


def test_conv2d_forward_without_bias_and_with_int_arguments():
    x, w = randn(2, 2, 5, 6), randn(3, 2, 3, 3)
    y = host(gpu.conv2d_forward(dev(x), dev(w), None, 1, 1))
    np.testing.assert_allclose(y, ref_conv2d_forward(x, w, None, (1, 1), (1, 1)), **F32)


@pytest.mark.parametrize("x_shape,w_dims,stride,padding", CONV_CASES)
def test_conv2d_grad_input(x_shape, w_dims, stride, padding):
    w = randn(w_dims[0], x_shape[1], *w_dims[1:])
    oh = ref_out_size(x_shape[2], w_dims[1], stride[0], padding[0])
    ow = ref_out_size(x_shape[3], w_dims[2], stride[1], padding[1])
    gy = randn(x_shape[0], w_dims[0], oh, ow)
    dx = host(gpu.conv2d_grad_input(dev(gy), dev(w), x_shape, stride, padding))
    np.testing.assert_allclose(dx, ref_conv2d_grad_input(gy, w, x_shape, stride, padding), **F32)


@pytest.mark.parametrize("x_shape,w_dims,stride,padding", CONV_CASES)
def test_conv2d_grad_weight(x_shape, w_dims, stride, padding):
    x = randn(*x_shape)
    w_shape = (w_dims[0], x_shape[1], *w_dims[1:])
    oh = ref_out_size(x_shape[2], w_dims[1], stride[0], padding[0])
    ow = ref_out_size(x_shape[3], w_dims[2], stride[1], padding[1])
    gy = randn(x_shape[0], w_dims[0], oh, ow)
    dw = host(gpu.conv2d_grad_weight(dev(gy), dev(x), w_shape, stride, padding))
    np.testing.assert_allclose(dw, ref_conv2d_grad_weight(gy, x, w_shape, stride, padding), **F32)


def test_conv2d_grad_weight_split_k_accumulates(monkeypatch):
    """The batch sum cut into K slices (added in order) and added into an existing gradient."""
    monkeypatch.setattr(cuda_gemm, "MIN_K_PER_SPLIT", 16)
    x, gy, dw0 = randn(2, 2, 5, 6), randn(2, 3, 5, 6), randn(3, 2, 3, 3)
    assert cuda_gemm.choose_split(3, 18, 60, gpu.SMALL) == (32, 2)
    out = dev(dw0)
    gpu.conv2d_grad_weight(dev(gy), dev(x), dw0.shape, 1, 1, out=out, accumulate=True)
    np.testing.assert_allclose(host(out), dw0 + ref_conv2d_grad_weight(gy, x, dw0.shape, (1, 1), (1, 1)), **F32)


def test_conv2d_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="channels"):
        gpu.conv2d_forward(dev(np.zeros((1, 2, 4, 4))), dev(np.zeros((1, 3, 3, 3))), None, 1, 0)
    with pytest.raises(ValueError, match="grad_y"):
        gpu.conv2d_grad_input(dev(np.zeros((1, 1, 3, 3))), dev(np.zeros((1, 2, 3, 3))), (1, 2, 4, 4), 1, 0)


# --- max-pooling ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k,s,p", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 2), (1, 2), (1, 0))])
def test_maxpool2d_forward_and_backward(k, s, p):
    x = RNG.integers(-3, 4, size=(2, 2, 5, 7)).astype(np.float32)  # small integers: many ties
    y, idx = gpu.maxpool2d_forward(dev(x), k, s, p)
    y_ref, idx_ref = reference.maxpool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(host(y), y_ref)
    np.testing.assert_array_equal(host(idx), idx_ref)
    gy = randn(*y_ref.shape)
    dx = host(gpu.maxpool2d_backward(dev(gy), idx, x.shape, k, s, p))
    np.testing.assert_allclose(dx, reference.maxpool2d_backward(f64(gy), idx_ref, x.shape), **F32)


def test_maxpool2d_matches_torch_on_ties_and_nan():
    torch = pytest.importorskip("torch")
    x = RNG.integers(0, 3, size=(1, 2, 6, 6)).astype(np.float32)
    x[0, 1, 1, 1] = np.nan
    y, idx = gpu.maxpool2d_forward(dev(x), 3, 2, 1)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(host(y), ty.numpy())
    np.testing.assert_array_equal(host(idx), tidx.numpy())


# --- activations ------------------------------------------------------------------------------------------

def test_activations_forward_and_backward():
    x = np.concatenate([randn(37) * 4, np.array([0.0, -0.0, 30.0, -30.0, 100.0, -100.0], np.float32)])
    g = randn(x.size)
    x64 = x.astype(np.float64)
    slope = 0.1
    s = 1 / (1 + np.exp(-x64))
    t = np.tanh(x64)
    cases = [
        (gpu.relu_forward(dev(x)), np.maximum(x64, 0)),
        (gpu.relu_backward(dev(g), dev(x)), np.where(x > 0, g, 0)),
        (gpu.leaky_relu_forward(dev(x), slope), np.where(x > 0, x64, slope * x64)),
        (gpu.leaky_relu_backward(dev(g), dev(x), slope), np.where(x > 0, g, slope * g)),
        (gpu.sigmoid_forward(dev(x)), s),
        (gpu.sigmoid_backward(dev(g), dev(s)), g * s * (1 - s)),
        (gpu.tanh_forward(dev(x)), t),
        (gpu.tanh_backward(dev(g), dev(t)), g * (1 - t * t)),
    ]
    for got, want in cases:
        np.testing.assert_allclose(host(got), want, rtol=1e-5, atol=1e-6)


def test_activations_keep_shape_and_work_in_place():
    x = randn(2, 3, 4)
    d = dev(x)
    assert gpu.relu_forward(d, out=d) is d
    np.testing.assert_array_equal(host(d), np.maximum(x, 0))
    with pytest.raises(ValueError, match="shape"):
        gpu.relu_backward(dev(randn(2, 3)), dev(randn(3, 2)))


# --- bias -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 5)])
def test_bias_add_and_grad(shape):
    y, b = randn(*shape), randn(shape[1])
    d = dev(y)
    gpu.bias_add(d, dev(b))
    extra = (1,) * (len(shape) - 2)
    np.testing.assert_allclose(host(d), y + b.reshape(1, -1, *extra), **F32)
    axes = (0,) + tuple(range(2, len(shape)))
    db = host(gpu.bias_grad(dev(y)))
    np.testing.assert_allclose(db, y.astype(np.float64).sum(axis=axes), **F32)
    out = dev(b)
    gpu.bias_grad(dev(y), out=out, accumulate=True)
    np.testing.assert_allclose(host(out), b + y.astype(np.float64).sum(axis=axes), **F32)


def test_bias_grad_over_more_elements_than_threads():
    g = randn(3, 2, 10, 11)  # 330 elements per channel > 256 threads: each thread adds several
    np.testing.assert_allclose(host(gpu.bias_grad(dev(g))), g.astype(np.float64).sum(axis=(0, 2, 3)), **F32)


# --- SGD --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("momentum,dampening,nesterov,weight_decay", [
    (0.0, 0.0, False, 0.0), (0.9, 0.0, False, 0.0), (0.9, 0.0, True, 0.01), (0.8, 0.3, False, 0.1)])
def test_sgd_update_matches_torch(momentum, dampening, nesterov, weight_decay):
    torch = pytest.importorskip("torch")
    p0 = randn(3, 5)
    grads = [randn(3, 5) for _ in range(3)]
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.SGD([tp], lr=0.1, momentum=momentum, dampening=dampening, nesterov=nesterov,
                          weight_decay=weight_decay)
    p, buf = dev(p0), dev(np.zeros_like(p0))
    for step, g in enumerate(grads):
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        gpu.sgd_update(p, dev(g), buf if momentum else None, 0.1, momentum, dampening, weight_decay, nesterov,
                       step == 0)
        np.testing.assert_allclose(host(p), tp.detach().numpy(), rtol=1e-6, atol=1e-7)


# --- a whole training step, composed from the wrappers ------------------------------------------------------

def test_training_step_matches_torch():
    """conv -> ReLU -> max-pool -> linear -> cross-entropy, backward, SGD: every gradient and update vs torch."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, y = randn(2, 1, 6, 6), np.array([2, 0], np.int64)
    w1, b1, w2, b2 = randn(2, 1, 3, 3), randn(2), randn(3, 8) * 0.5, randn(3)

    # manualbp on the (simulated) GPU
    dx_, dw1, db1, dw2, db2 = dev(x), dev(w1), dev(b1), dev(w2), dev(b2)
    dt = dev(y.reshape(2, 1), np.int64)
    h = gpu.conv2d_forward(dx_, dw1, db1, 1, 1)  # (2, 2, 6, 6)
    a = gpu.relu_forward(h)
    pooled, idx = gpu.maxpool2d_forward(a, 3, 3, 0)  # (2, 2, 2, 2) -> 8 features
    feats = pooled.reshape(2, 8)
    logits = gpu.linear_forward(feats, dw2, db2)
    ell, denom, probs = gpu.cross_entropy(logits.reshape(2, 3, 1), dt, None, -100, 0.0)
    loss = gpu.loss_reduce(ell, "mean", denom)
    s = gpu.loss_upstream(1.0, "mean", denom)
    g_logits = gpu.cross_entropy_backward(s, probs, dt, None, -100, 0.0).reshape(2, 3)
    g_w2 = gpu.matmul(g_logits, feats, transpose_a=True)
    g_b2 = gpu.bias_grad(g_logits)
    g_feats = gpu.matmul(g_logits, dw2)
    g_a = gpu.maxpool2d_backward(g_feats.reshape(2, 2, 2, 2), idx, a.shape, 3, 3, 0)
    g_h = gpu.relu_backward(g_a, h)
    g_w1, g_b1 = gpu.conv2d_grad_params(g_h, dx_, w1.shape, 1, 1, True)
    for param, grad in ((dw1, g_w1), (db1, g_b1), (dw2, g_w2), (db2, g_b2)):
        gpu.sgd_update(param, grad, None, 0.5, 0.0, 0.0, 0.0, False, True)

    # torch on the CPU
    tw1, tb1, tw2, tb2 = (torch.tensor(v, requires_grad=True) for v in (w1, b1, w2, b2))
    th = F.conv2d(torch.from_numpy(x), tw1, tb1, 1, 1)
    tl = F.linear(F.max_pool2d(F.relu(th), 3, 3).reshape(2, 8), tw2, tb2)
    tloss = F.cross_entropy(tl, torch.from_numpy(y))
    tloss.backward()
    np.testing.assert_allclose(host(loss), [tloss.item()], rtol=1e-5)
    for got, t in ((g_w1, tw1), (g_b1, tb1), (g_w2, tw2), (g_b2, tb2)):
        np.testing.assert_allclose(host(got), t.grad.numpy(), rtol=1e-4, atol=1e-6)
    for got, t in ((dw1, tw1), (db1, tb1), (dw2, tw2), (db2, tb2)):
        np.testing.assert_allclose(host(got), (t - 0.5 * t.grad).detach().numpy(), rtol=1e-4, atol=1e-6)


# --- the types each kernel was launched with are those the PTX tests compile ---------------------------------

def test_zz_launch_types_match_the_ptx_signatures(launches, whole_suite):
    """Runs last: every kernel launched in this session used exactly its signature in ptx_signatures.py.

    A Python float passed where a kernel expects float32 would compile a float64 specialisation on
    a real GPU; this catches it without one.
    """
    wrong = {}
    for name, seen in launches.types.items():
        expected = tuple(sigutils.normalize_signature(SIGNATURES[name])[0])
        bad = [t for t in seen if t != expected]
        if bad:
            wrong[name] = (expected, bad)
    assert not wrong, wrong
    if not whole_suite:
        pytest.skip("only some simulator tests ran: not every kernel was launched")
    missing = set(SIGNATURES) - set(launches.types)
    assert not missing, f"kernels never launched by the simulator tests: {sorted(missing)}"
