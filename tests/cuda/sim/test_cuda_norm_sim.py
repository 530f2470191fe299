"""BatchNorm, LayerNorm and Dropout kernels on the (simulated) GPU against their NumPy twins, and the layers on
the GPU against the CPU: the running statistics (and num_batches_tracked, counted on the device) after two
steps, eval mode, the cumulative average; dropout's mask is the CPU's for the same key, whatever the launch
shape.  Tiny shapes: the simulator runs every thread in Python.  Collected only under NUMBA_ENABLE_CUDASIM=1."""
import numpy as np
import pytest
from numba import cuda

import manualbp
from manualbp import nn
from manualbp.device import to_device, to_numpy
from manualbp.kernels import cuda as gpu
from manualbp.kernels import reference

RNG = np.random.default_rng(7)
TOL = {"rtol": 1e-4, "atol": 1e-5}


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def close(got, want, what=""):
    np.testing.assert_allclose(to_numpy(got), want, err_msg=what, equal_nan=True, **TOL)


@pytest.mark.parametrize("momentum,affine", [(0.1, True), (None, False)])
def test_batch_norm_ops_match_the_reference(momentum, affine):
    x = (RNG.standard_normal((3, 2, 5)) * 2 + 1).astype(np.float32)
    g = RNG.standard_normal(x.shape).astype(np.float32)
    w = RNG.standard_normal(2).astype(np.float32) if affine else None
    b = RNG.standard_normal(2).astype(np.float32) if affine else None
    rm, rv, nbt = np.array([0.5, -1.0], np.float32), np.array([1.5, 0.5], np.float32), np.array(2, np.int64)
    d_rm, d_rv, d_nbt = dev(rm), dev(rv), cuda.to_device(nbt)
    for training in (True, False):
        want = reference.batch_norm_forward(x, w, b, rm, rv, nbt, training, momentum, 1e-5)
        got = gpu.batch_norm_forward(dev(x), None if w is None else dev(w), None if b is None else dev(b), d_rm, d_rv,
                                     d_nbt, training, momentum, 1e-5)
        for o, r, name in zip(got, want, ("y", "mean", "invstd")):
            close(o, r, f"{name} training={training}")
        close(d_rm, rm, "running_mean")
        close(d_rv, rv, "running_var")
        assert int(d_nbt.copy_to_host()) == int(nbt) == 3
        want_b = reference.batch_norm_backward(g, x, w, want[1], want[2], training)
        got_b = gpu.batch_norm_backward(dev(g), dev(x), None if w is None else dev(w), got[1], got[2], training)
        for o, r, name in zip(got_b, want_b, ("dx", "dgamma", "dbeta")):
            close(o, r, f"{name} training={training}")


@pytest.mark.parametrize("affine", [True])
def test_layer_norm_ops_match_the_reference(affine):
    x = (RNG.standard_normal((3, 6)) * 2 + 1).astype(np.float32)
    g = RNG.standard_normal(x.shape).astype(np.float32)
    w = RNG.standard_normal(6).astype(np.float32) if affine else None
    b = RNG.standard_normal(6).astype(np.float32) if affine else None
    want = reference.layer_norm_forward(x, w, b, 1e-5)
    got = gpu.layer_norm_forward(dev(x), None if w is None else dev(w), None if b is None else dev(b), 1e-5)
    for o, r in zip(got, want):
        close(o, r)
    want_b = reference.layer_norm_backward(g, x, w, want[1], want[2])
    got_b = gpu.layer_norm_backward(dev(g), dev(x), None if w is None else dev(w), got[1], got[2])
    for o, r in zip(got_b, want_b):
        close(o, r)


@pytest.mark.parametrize("p,inner", [(0.5, 1), (0.25, 4), (1.0, 1), (0.0, 2)])
def test_dropout_ops_give_the_cpu_mask(p, inner):
    x = RNG.standard_normal((3, 4, 2, 2)).astype(np.float32)
    x.reshape(-1)[:2] = np.nan, np.inf  # a product with the mask, as torch: a dropped inf is NaN
    g = RNG.standard_normal(x.shape).astype(np.float32)
    g.reshape(-1)[2] = np.nan
    key = 0xDEADBEEF12345
    y_ref, mask_ref = reference.dropout_forward(x, p, key, inner, False)
    y, mask = gpu.dropout_forward(dev(x), p, key, inner, False)
    np.testing.assert_array_equal(mask.copy_to_host(), mask_ref)
    close(y, y_ref)
    close(gpu.dropout_backward(dev(g), mask, p, inner), reference.dropout_backward(g, mask_ref, p, inner))
    d = dev(x)
    same, _ = gpu.dropout_forward(d, p, key, inner, True)  # in place: into x's memory
    assert same is d
    close(d, y_ref)


def test_batchnorm_layer_on_the_gpu_matches_the_cpu():
    for make, shape in ((lambda: nn.BatchNorm1d(3, momentum=None), (4, 3)),):
        cpu_layer, gpu_layer = make(), make().to("cuda")
        for step in range(2):
            x = RNG.standard_normal(shape).astype(np.float32)
            g = RNG.standard_normal(shape).astype(np.float32)
            close(gpu_layer(to_device(x)), cpu_layer(x), f"y step {step}")
            close(gpu_layer.backward(to_device(g)), cpu_layer.backward(g), f"dx step {step}")
        close(gpu_layer.weight.grad, cpu_layer.weight.grad, "dgamma")
        for key, value in cpu_layer.state_dict().items():
            close(gpu_layer.state_dict()[key], value, key)
        assert gpu_layer.state_dict()["num_batches_tracked"].dtype == np.int64
        cpu_layer.eval()
        gpu_layer.eval()
        close(gpu_layer(to_device(x)), cpu_layer(x), "eval")
        gpu_layer.load_state_dict(cpu_layer.state_dict())  # buffers stay on the GPU, the count int64 and 0-d
        assert gpu_layer.num_batches_tracked.dtype == np.int64 and gpu_layer.num_batches_tracked.shape == ()
        assert hasattr(gpu_layer.running_var, "copy_to_host")
        back = gpu_layer.to("cpu")
        assert isinstance(back.running_mean, np.ndarray) and int(back.num_batches_tracked) == 2


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_on_an_empty_batch_launches_nothing_and_matches_the_cpu(momentum, monkeypatch):
    """N = 0 on the GPU: an empty output and dL/dx on the device, zero dL/dgamma, dL/dbeta, the batch counted
    on the device and the running statistics untouched, as on the CPU; no batch-norm kernel is called."""
    cpu_layer, gpu_layer = nn.BatchNorm2d(2, momentum=momentum), nn.BatchNorm2d(2, momentum=momentum).to("cuda")
    x = RNG.standard_normal((3, 2, 2, 2)).astype(np.float32)
    cpu_layer(x)
    gpu_layer(to_device(x))
    for name in ("batch_norm_forward", "batch_norm_backward"):
        monkeypatch.setattr(gpu, name, lambda *a, _name=name: pytest.fail(f"{_name} called on an empty batch"))
    empty = np.zeros((0, 2, 2, 2), np.float32)
    y = gpu_layer(to_device(empty))
    assert hasattr(y, "copy_to_host") and tuple(y.shape) == (0, 2, 2, 2)
    gx = gpu_layer.backward(to_device(empty))
    assert hasattr(gx, "copy_to_host") and tuple(gx.shape) == (0, 2, 2, 2)
    cpu_layer(empty)
    cpu_layer.backward(empty)
    for p in ("weight", "bias"):
        grad = getattr(gpu_layer, p).grad
        assert hasattr(grad, "copy_to_host")
        np.testing.assert_array_equal(to_numpy(grad), 0)
        np.testing.assert_array_equal(getattr(cpu_layer, p).grad, 0)
    for key, value in cpu_layer.state_dict().items():
        close(gpu_layer.state_dict()[key], value, key)
    assert int(to_numpy(gpu_layer.num_batches_tracked)) == 2 and hasattr(gpu_layer.num_batches_tracked, "copy_to_host")


def test_layernorm_and_dropout_layers_on_the_gpu_match_the_cpu():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    g = RNG.standard_normal(x.shape).astype(np.float32)
    cpu_ln, gpu_ln = nn.LayerNorm((3, 4)), nn.LayerNorm((3, 4)).to("cuda")
    close(gpu_ln(to_device(x)), cpu_ln(x))
    close(gpu_ln.backward(to_device(g)), cpu_ln.backward(g))
    close(gpu_ln.weight.grad, cpu_ln.weight.grad)
    for make in (lambda: nn.Dropout(0.4), lambda: nn.Dropout2d(0.5)):
        manualbp.manual_seed(3)
        y_cpu = make()(x.reshape(2, 3, 2, 2))
        manualbp.manual_seed(3)
        layer = make()
        y_gpu = to_numpy(layer(to_device(x.reshape(2, 3, 2, 2))))
        kept = y_gpu != 0
        np.testing.assert_allclose(y_gpu[kept], x.reshape(2, 3, 2, 2)[kept] / (1 - layer.p), rtol=1e-6)
        close(y_gpu, y_cpu)  # the same key from the same seed: the same mask on both devices
