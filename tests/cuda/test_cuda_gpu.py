"""The CUDA kernels on a real GPU, against torch on the same GPU (cuBLAS with TF32 off, cuDNN).

Marked ``gpu``: skipped unless numba and torch both see a CUDA device (see conftest.py).  Shapes are
the real ones (the CIFAR-10 net's convolutions, products big enough for the 128 x 128 tiles and
for split-K), which the simulator is too slow to run.
"""
import numpy as np
import pytest

from manualbp.kernels import cuda as gpu

pytestmark = pytest.mark.gpu

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def torch():
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def dev(a, dtype=np.float32):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(got, want, rtol=1e-4, atol=1e-4):
    want = want.detach().cpu().numpy() if hasattr(want, "detach") else want
    np.testing.assert_allclose(got.copy_to_host(), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("m,k,n", [(1024, 1024, 1024), (130, 4000, 70), (64, 400, 120), (777, 333, 555)])
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
def test_matmul_matches_cublas(torch, m, k, n, ta, tb):
    A, B = randn(m, k), randn(k, n)
    c = gpu.matmul(dev(A.T.copy() if ta else A), dev(B.T.copy() if tb else B), ta, tb)
    want = torch.from_numpy(A).cuda() @ torch.from_numpy(B).cuda()
    close(c, want, rtol=1e-4, atol=1e-3 * np.sqrt(k))


# The CIFAR-10 net's convolutions (batch 64) and a strided, unevenly padded one.
CONVS = [((64, 3, 32, 32), (32, 5, 5), 1, 2), ((64, 32, 16, 16), (32, 5, 5), 1, 2),
         ((64, 32, 8, 8), (64, 5, 5), 1, 2), ((8, 5, 17, 13), (7, 3, 2), (2, 1), (1, 0))]


@pytest.mark.parametrize("x_shape,w_dims,stride,padding", CONVS)
def test_conv2d_matches_cudnn(torch, x_shape, w_dims, stride, padding):
    F = torch.nn.functional
    x, w, b = randn(*x_shape), randn(w_dims[0], x_shape[1], *w_dims[1:]) * 0.1, randn(w_dims[0])
    tx, tw, tb = (torch.tensor(v, device="cuda", requires_grad=True) for v in (x, w, b))
    ty = F.conv2d(tx, tw, tb, stride, padding)
    gy = randn(*ty.shape)
    ty.backward(torch.from_numpy(gy).cuda())
    dx_, dw_, dgy = dev(x), dev(w), dev(gy)
    close(gpu.conv2d_forward(dx_, dw_, dev(b), stride, padding), ty)
    close(gpu.conv2d_grad_input(dgy, dw_, x.shape, stride, padding), tx.grad)
    dw1 = gpu.conv2d_grad_weight(dgy, dx_, w.shape, stride, padding)
    close(dw1, tw.grad, rtol=1e-3, atol=1e-2)
    close(gpu.bias_grad(dgy), tb.grad, rtol=1e-3, atol=1e-2)
    dw2 = gpu.conv2d_grad_weight(dgy, dx_, w.shape, stride, padding)
    assert np.array_equal(dw1.copy_to_host(), dw2.copy_to_host()), "the weight gradient is not deterministic"


def test_maxpool_matches_torch(torch):
    F = torch.nn.functional
    x = RNG.integers(-4, 5, size=(16, 8, 15, 15)).astype(np.float32)
    tx = torch.tensor(x, device="cuda", requires_grad=True)
    ty, tidx = F.max_pool2d(tx, 3, 2, 1, return_indices=True)
    gy = randn(*ty.shape)
    ty.backward(torch.from_numpy(gy).cuda())
    y, idx = gpu.maxpool2d_forward(dev(x), 3, 2, 1)
    close(y, ty, rtol=0, atol=0)
    np.testing.assert_array_equal(idx.copy_to_host(), tidx.cpu().numpy())
    close(gpu.maxpool2d_backward(dev(gy), idx, x.shape, 3, 2, 1), tx.grad, rtol=1e-6, atol=1e-6)


def test_losses_and_activations_match_torch(torch):
    F = torch.nn.functional
    z, y = randn(256, 10) * 3, RNG.integers(0, 10, size=256).astype(np.int64)
    tz = torch.tensor(z, device="cuda", requires_grad=True)
    tloss = F.cross_entropy(tz, torch.from_numpy(y).cuda())
    tloss.backward()
    t2 = dev(y.reshape(-1, 1), np.int64)
    ell, denom, probs = gpu.cross_entropy(dev(z).reshape(z.shape[0], z.shape[1], 1), t2, None, -100, 0.0)
    close(gpu.loss_reduce(ell, "mean", denom), tloss.reshape(1), rtol=1e-5)
    s = gpu.loss_upstream(1.0, "mean", denom)
    close(gpu.cross_entropy_backward(s, probs, t2, None, -100, 0.0).reshape(z.shape), tz.grad, rtol=1e-5, atol=1e-7)
    x, t = randn(64, 33), randn(64, 33)
    close(gpu.loss_reduce(gpu.mse_loss(dev(x), dev(t)), "mean", x.size),
          F.mse_loss(torch.from_numpy(x), torch.from_numpy(t)).reshape(1), 1e-5)
    tx = torch.from_numpy(x).cuda()
    close(gpu.relu_forward(dev(x)), F.relu(tx), 0, 0)
    close(gpu.leaky_relu_forward(dev(x), 0.2), F.leaky_relu(tx, 0.2), 1e-6, 1e-7)
    close(gpu.sigmoid_forward(dev(x)), torch.sigmoid(tx), 1e-5, 1e-6)
    close(gpu.tanh_forward(dev(x)), torch.tanh(tx), 1e-5, 1e-6)


def test_training_steps_match_torch(torch):
    """Three SGD steps (momentum, Nesterov, weight decay) of conv-ReLU-pool-linear-CE, batch 64, vs torch CUDA."""
    F = torch.nn.functional
    x, y = randn(64, 3, 16, 16), RNG.integers(0, 10, size=64).astype(np.int64)
    w1, b1, w2, b2 = randn(8, 3, 3, 3) * 0.2, randn(8) * 0.1, randn(10, 8 * 8 * 8) * 0.05, randn(10) * 0.1
    hyper = {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}

    params = [dev(v) for v in (w1, b1, w2, b2)]
    bufs = [dev(np.zeros_like(v)) for v in (w1, b1, w2, b2)]
    dx_, dy = dev(x), dev(y, np.int64)
    tparams = [torch.tensor(v, device="cuda", requires_grad=True) for v in (w1, b1, w2, b2)]
    opt = torch.optim.SGD(tparams, **hyper)
    tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    for step in range(3):
        dw1, db1, dw2, db2 = params
        h = gpu.conv2d_forward(dx_, dw1, db1, 1, 1)
        a = gpu.relu_forward(h)
        pooled, idx = gpu.maxpool2d_forward(a, 2, 2, 0)
        feats = pooled.reshape(64, 512)
        logits = gpu.matmul(feats, dw2, transpose_b=True)
        gpu.bias_add(logits, db2)
        total, count, _, g_fused = gpu.cross_entropy_index(logits, dy, -100)
        loss = gpu.loss_reduce(total, "mean", count)
        g_logits = gpu.scale(g_fused, gpu.loss_upstream(1.0, "mean", count))
        grads = [None, None, gpu.matmul(g_logits, feats, transpose_a=True), gpu.bias_grad(g_logits)]
        g_a = gpu.maxpool2d_backward(gpu.matmul(g_logits, dw2).reshape(pooled.shape), idx, a.shape, 2, 2, 0)
        g_h = gpu.relu_backward(g_a, h)
        grads[0] = gpu.conv2d_grad_weight(g_h, dx_, w1.shape, 1, 1)
        grads[1] = gpu.bias_grad(g_h)
        for p, g, buf in zip(params, grads, bufs):
            gpu.sgd_update(p, g, buf, hyper["lr"], hyper["momentum"], 0.0, hyper["weight_decay"], hyper["nesterov"],
                           step == 0)

        opt.zero_grad()
        tw1, tb1, tw2, tb2 = tparams
        tl = F.linear(F.max_pool2d(F.relu(F.conv2d(tx, tw1, tb1, 1, 1)), 2).reshape(64, 512), tw2, tb2)
        tloss = F.cross_entropy(tl, ty)
        tloss.backward()
        opt.step()
        close(loss, tloss.reshape(1), rtol=1e-4)
        for g, t in zip(grads, tparams):
            close(g, t.grad, rtol=1e-3, atol=1e-4)
        for p, t in zip(params, tparams):
            close(p, t, rtol=1e-3, atol=1e-4)


def test_benchmark_matmul_runs(torch):
    result = gpu.benchmark_matmul(512, repeats=2)
    assert result["ours_gflops"] > 0 and result["torch_gflops"] > 0 and result["device"]
    assert result["max_abs_diff"] < 1e-2


def test_the_buffer_cache_sees_views_of_real_device_memory(monkeypatch):
    """On a GPU an array's memory is numba's pointer object: a reshape shares it, a slice raises its count of
    views (``refct``); either keeps the array from being handed out again (kernels/cuda/buffers.py)."""
    from manualbp.kernels.cuda import buffers

    monkeypatch.setattr(buffers, "CACHE", buffers.BufferCache())
    for view in (lambda a: a.reshape(12), lambda a: a[1:], lambda a: a[0]):
        a = buffers.empty((3, 4))
        first = id(a)
        v = view(a)
        del a
        assert id(buffers.empty((3, 4))) != first
        del v
        assert id(buffers.empty((3, 4))) == first
