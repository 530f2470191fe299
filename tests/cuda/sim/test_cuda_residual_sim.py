"""A residual block's operations, and a block with an option-A shortcut, on the (simulated) GPU against the CPU (rtol 1e-4)."""
import numpy as np
import pytest

import manualbp
from manualbp import kernels
from manualbp.device import is_cuda_array, to_device, to_numpy
from manualbp.kernels import cuda as gpu
from manualbp.kernels import reference
from manualbp.resnet import BasicBlock

TOL = {"rtol": 1e-4, "atol": 1e-5}


def test_residual_operations_match_their_numpy_twins():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    for pad in (0, 2):
        y = gpu.shortcut_a_forward(to_device(x), pad)
        np.testing.assert_array_equal(to_numpy(y), reference.shortcut_a_forward(x, pad))
        g = rng.standard_normal(y.shape).astype(np.float32)
        gx = gpu.shortcut_a_backward(to_device(g), x.shape, pad)
        np.testing.assert_array_equal(to_numpy(gx), reference.shortcut_a_backward(g, x.shape, pad))
    b = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(kernels.add(to_device(x), to_device(b))), x + b)


def test_a_residual_block_with_option_a_on_the_gpu_gives_the_cpus_output_and_gradients():
    manualbp.manual_seed(3)
    cpu_block = BasicBlock(2, 4, 2)
    gpu_block = BasicBlock(2, 4, 2)
    gpu_block.load_state_dict(cpu_block.state_dict())
    gpu_block.to("cuda")
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4)).astype(np.float32)
    y_cpu, y_gpu = cpu_block(x), gpu_block(to_device(x))
    assert is_cuda_array(y_gpu)
    np.testing.assert_allclose(to_numpy(y_gpu), y_cpu, **TOL)
    g = np.random.default_rng(2).standard_normal(y_cpu.shape).astype(np.float32)
    np.testing.assert_allclose(to_numpy(gpu_block.backward(to_device(g))), cpu_block.backward(g), **TOL)
    for (name, p_gpu), (_, p_cpu) in zip(gpu_block.named_parameters(), cpu_block.named_parameters()):
        np.testing.assert_allclose(to_numpy(p_gpu.grad), p_cpu.grad, err_msg=name, **TOL)


def test_batchnorm_relu_in_one_call_matches_the_cpu():
    rng = np.random.default_rng(5)
    x, r, g = (rng.standard_normal((2, 3, 8)).astype(np.float32) for _ in range(3))
    w, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    for res in (None, r):
        stats = [np.zeros(3, np.float32), np.ones(3, np.float32), np.array(0, np.int64)]
        dstats = [to_device(s) for s in stats]
        want = kernels.batch_norm_relu_forward(x, res, w, b, *stats, True, 0.1, 1e-5)
        got = kernels.batch_norm_relu_forward(to_device(x), None if res is None else to_device(res), to_device(w),
                                              to_device(b), *dstats, True, 0.1, 1e-5)
        assert is_cuda_array(got[0])
        for o, e in zip(got, want):
            np.testing.assert_allclose(to_numpy(o), e, **TOL)
        np.testing.assert_allclose(to_numpy(dstats[1]), stats[1], **TOL)
        back = kernels.batch_norm_relu_backward(g, want[0], x, w, want[1], want[2], True, res is not None)
        dback = kernels.batch_norm_relu_backward(to_device(g), got[0], to_device(x), to_device(w), got[1], got[2],
                                                 True, res is not None)
        for o, e in zip(dback, back):
            if e is None:
                assert o is None
            else:
                np.testing.assert_allclose(to_numpy(o), e, **TOL)


@pytest.mark.parametrize("training,momentum,affine", [(True, 0.1, True), (True, None, False), (False, 0.1, True)])
def test_batchnorm_relu_is_two_launches_each_way_and_the_separate_kernels_to_the_bit(training, momentum, affine):
    """BatchNorm + shortcut + ReLU fused into BatchNorm's own two launches, forward and backward, equal to
    batch_norm_forward, add and relu_forward (and relu_backward, batch_norm_backward) one after the other."""
    from manualbp.cuda import counting
    from manualbp.kernels import cuda as gpu

    rng = np.random.default_rng(8)
    x, r, g = (rng.standard_normal((3, 4, 5)).astype(np.float32) for _ in range(3))
    x[0, 0, :2] = 0.0  # rows where y is exactly 0 after ReLU
    w, b = (rng.standard_normal(4).astype(np.float32) for _ in range(2))
    dw, db = (to_device(w), to_device(b)) if affine else (None, None)

    def stats():
        return [to_device(np.full(4, 0.5, np.float32)), to_device(np.full(4, 2.0, np.float32)),
                to_device(np.array([3], np.int64))]

    for res in (None, r):
        dres = None if res is None else to_device(res)
        fused_stats, plain_stats = stats(), stats()
        with counting() as fwd:
            y, mean, invstd = gpu.batch_norm_relu_forward(to_device(x), dres, dw, db, *fused_stats, training,
                                                          momentum, 1e-5)
        z, mean0, invstd0 = gpu.batch_norm_forward(to_device(x), dw, db, *plain_stats, training, momentum, 1e-5)
        if res is not None:
            z = gpu.add(z, dres)
        y0 = gpu.relu_forward(z)
        assert fwd.total_launches == 2, fwd.launches
        for a, a0 in zip((y, mean, invstd, *fused_stats), (y0, mean0, invstd0, *plain_stats)):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(a0))
        assert to_numpy(fused_stats[2])[0] == (4 if training else 3)
        with counting() as bwd:
            gx, dgamma, dbeta, gz = gpu.batch_norm_relu_backward(to_device(g), y, to_device(x), dw, mean, invstd,
                                                                 training, res is not None)
        g0 = gpu.relu_backward(to_device(g), y0)
        gx0, dgamma0, dbeta0 = gpu.batch_norm_backward(g0, to_device(x), dw, mean0, invstd0, training)
        assert bwd.total_launches == 2, bwd.launches
        for a, a0 in zip((gx, dgamma, dbeta), (gx0, dgamma0, dbeta0)):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(a0))
        if res is None:
            assert gz is None
        else:
            np.testing.assert_array_equal(to_numpy(gz), to_numpy(g0))
