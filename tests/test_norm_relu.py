"""BatchNorm + (a residual) + ReLU as one operation (derivations/18-residual.md, (Q7)): the CPU kernels of
kernels/cpu/norm_relu.py against their NumPy twins and, bit for bit, against BatchNorm, add and ReLU run one after
the other; ``BatchNorm2d.relu_after`` / ``backward_relu`` against torch.autograd in float64; the bookkeeping and the
bad calls."""
import numpy as np
import pytest
import torch

import manualbp
from manualbp import kernels, nn
from manualbp.kernels import cpu, reference
from manualbp.kernels.cpu import norm_relu as cpu_nr

RNG = np.random.default_rng(7)
TOL = {np.float32: 2e-5, np.float64: 1e-12}
SHAPES = {"small": (3, 4, 7), "one-position": (6, 5, 1), "big": (16, 4, 1024)}  # big: the parallel path


def _case(shape, dtype, affine=True):
    C = shape[1]
    x = (RNG.standard_normal(shape) * 2 + 0.5).astype(dtype)
    r = RNG.standard_normal(shape).astype(dtype)
    g = RNG.standard_normal(shape).astype(dtype)
    w = RNG.standard_normal(C).astype(dtype) if affine else None
    b = RNG.standard_normal(C).astype(dtype) if affine else None
    stats = [RNG.standard_normal(C).astype(dtype), RNG.uniform(0.5, 2, C).astype(dtype), np.array(3, np.int64)]
    return x, r, g, w, b, stats


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_kernels_match_their_twin_and_the_three_operations_bit_for_bit(shape, dtype, with_residual, affine):
    x, r, g, w, b, stats = _case(shape, dtype, affine)
    res = r if with_residual else None
    for training in (True, False):
        s_ref, s_cpu, s_three = ([s.copy() for s in stats] for _ in range(3))
        want = reference.batch_norm_relu_forward(x, res, w, b, *s_ref, training, 0.1, 1e-5)
        got = cpu.batch_norm_relu_forward(x, res, w, b, *s_cpu, training, 0.1, 1e-5)
        for o, e in zip(got, want):
            np.testing.assert_allclose(o, e, rtol=TOL[dtype], atol=TOL[dtype] * 10)
        for o, e in zip(s_cpu, s_ref):
            np.testing.assert_allclose(o, e, rtol=TOL[dtype])
        # the same bits as the three CPU operations one after the other
        z, mean, invstd = cpu.batch_norm_forward(x, w, b, *s_three, training, 0.1, 1e-5)
        if with_residual:
            z = cpu.add(z, r)
        y3 = cpu.relu_forward(z)
        assert got[0].tobytes() == y3.tobytes() and got[1].tobytes() == mean.tobytes()
        gx, dgamma, dbeta, gz = cpu.batch_norm_relu_backward(g, got[0], x, w, got[1], got[2], training,
                                                             with_residual)
        rgx, rdgamma, rdbeta, rgz = reference.batch_norm_relu_backward(g, want[0], x, w, want[1], want[2], training,
                                                                       with_residual)
        for o, e in ((gx, rgx), (dgamma, rdgamma), (dbeta, rdbeta)):
            np.testing.assert_allclose(o, e, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 100)
        g3 = cpu.relu_backward(g, z)
        gx3, dgamma3, dbeta3 = cpu.batch_norm_backward(g3, x, w, mean, invstd, training)
        assert gx.tobytes() == gx3.tobytes() and dgamma.tobytes() == dgamma3.tobytes()
        assert dbeta.tobytes() == dbeta3.tobytes()
        if with_residual:
            assert gz.tobytes() == g3.tobytes() and rgz is not None
        else:
            assert gz is None and rgz is None


def test_fused_kernels_keep_nan_and_give_the_same_bits_on_any_thread_count():
    import numba
    x, r, g, w, b, stats = _case(SHAPES["big"], np.float32)
    x[1, 2, 5] = np.nan  # channel 2's statistics become NaN; the other channels are untouched
    outs = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        try:
            y, mean, invstd = cpu.batch_norm_relu_forward(x, r, w, b, *[s.copy() for s in stats], True, 0.1, 1e-5)
            back = cpu.batch_norm_relu_backward(g, y, x, w, mean, invstd, True, True)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        outs.append([y, mean, invstd, *back])
    for a, c in zip(*outs):
        assert a.tobytes() == c.tobytes()
    y = outs[0][0]
    assert np.isnan(y[:, 2]).all() and not np.isnan(np.delete(y, 2, axis=1)).any()
    serial = np.empty_like(x)
    cpu_nr._forward_serial(x, r, serial, w, b, *[np.empty(4, np.float32) for _ in range(3)], True, np.float32(1e-5),
                           True)
    np.testing.assert_array_equal(serial, y)


def test_the_numpy_backend_runs_the_twins():
    x, r, _, w, b, stats = _case((2, 3, 4), np.float64)
    manualbp.set_backend("numpy")
    try:
        got = kernels.batch_norm_relu_forward(x, r, w, b, *[s.copy() for s in stats], True, None, 1e-5)
    finally:
        manualbp.set_backend("numba")
    want = reference.batch_norm_relu_forward(x, r, w, b, *[s.copy() for s in stats], True, None, 1e-5)
    for o, e in zip(got, want):
        assert o.tobytes() == e.tobytes()


def _torch_pair(C, momentum, affine, track):
    bn = nn.BatchNorm2d(C, momentum=momentum, affine=affine, track_running_stats=track, dtype=np.float64)
    if affine:
        bn.weight.data[:] = RNG.standard_normal(C)
        bn.bias.data[:] = RNG.standard_normal(C)
    tb = torch.nn.BatchNorm2d(C, momentum=momentum, affine=affine, track_running_stats=track).double()
    tb.load_state_dict({k: torch.tensor(np.array(v)) for k, v in bn.state_dict().items()})
    return bn, tb


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("momentum,affine,track", [(0.1, True, True), (None, False, True), (0.3, True, False)])
def test_relu_after_is_torchs_relu_of_batchnorm_plus_residual(with_residual, momentum, affine, track):
    C = 3
    bn, tb = _torch_pair(C, momentum, affine, track)
    for mode in ("train", "train", "eval"):
        bn.train(mode == "train")
        tb.train(mode == "train")
        x, r, g = (RNG.standard_normal((4, C, 5, 6)) for _ in range(3))
        x[0, 0, 0, :3] = [1e-3, -1e-3, 0]
        xt, rt = torch.tensor(x, requires_grad=True), torch.tensor(r, requires_grad=True)
        yt = torch.relu(tb(xt) + rt) if with_residual else torch.relu(tb(xt))
        yt.backward(torch.tensor(g))
        if affine:
            bn.weight.grad = bn.bias.grad = None
        with manualbp.enable_grad():  # (an eval-mode forward saves nothing for backward unless asked)
            y = bn.relu_after(x, r) if with_residual else bn.relu_after(x)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
        if with_residual:
            gx, gr = bn.backward_relu(g)
            np.testing.assert_allclose(gr, rt.grad.numpy(), rtol=1e-12, atol=1e-12)
        else:
            gx = bn.backward(g)
        np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        if affine:
            np.testing.assert_allclose(bn.weight.grad, tb.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(bn.bias.grad, tb.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
            tb.weight.grad = tb.bias.grad = None
        for k, v in tb.state_dict().items():
            np.testing.assert_allclose(np.array(bn.state_dict()[k]), v.numpy(), rtol=1e-12)


def test_relu_after_is_an_ordinary_call_for_the_saved_state_and_the_hooks():
    bn = nn.BatchNorm2d(2, dtype=np.float64)
    x, r = RNG.standard_normal((3, 2, 4, 4)), RNG.standard_normal((3, 2, 4, 4))
    y = bn.relu_after(x, r)
    with pytest.raises(TypeError, match=r"backward_relu\(grad_output\)"):
        bn.backward(np.ones_like(y))  # the residual's gradient would be lost
    gx, gr = bn.backward_relu(np.ones_like(y))
    assert gx.shape == gr.shape == x.shape
    with pytest.raises(manualbp.nn.saved.SavedStateError, match="called twice"):
        bn.backward_relu(np.ones_like(y))
    bn(x)  # a plain forward: backward_relu has nothing to give for a residual
    with pytest.raises(TypeError, match="was not relu_after"):
        bn.backward_relu(np.ones_like(y))
    assert bn.__dict__["_fused_call"] is None
    with manualbp.no_grad():  # saves nothing, and the next plain backward is the plain one
        bn.relu_after(x, r)
    assert bn.__dict__["_relu_out"] is None
    np.testing.assert_allclose(bn.backward(np.ones_like(y)).shape, x.shape)
    with pytest.raises(ValueError, match=r"expected a residual of the input's shape \(3, 2, 4, 4\), got \(3, 2, 4\)"):
        bn.relu_after(x, r[..., 0])
    assert bn.__dict__["_fused_call"] is None  # cleared after a refused call too


def test_relu_after_on_an_empty_batch_is_torchs():
    bn, _ = _torch_pair(2, 0.1, True, True)
    x = np.zeros((0, 2, 3, 3))
    y = bn.relu_after(x, x)
    assert y.shape == x.shape
    gx, gr = bn.backward_relu(np.zeros_like(x))
    assert gx.shape == gr.shape == x.shape
    np.testing.assert_array_equal(bn.weight.grad, [0, 0])
    assert int(np.array(bn.num_batches_tracked)) == 1
