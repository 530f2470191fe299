"""Conv2d's and MaxPool2d's options on the (simulated) GPU: dilation, groups, the padding modes, 'same',
unbatched inputs and empty batches for the convolution; dilation, ceil_mode and return_indices for
max-pooling.  The kernels against their NumPy twins (float64), the layers against the same layers on the
CPU.  Tiny shapes: the simulator runs every GPU thread in Python.  Collected only under
NUMBA_ENABLE_CUDASIM=1 (see conftest.py).
"""
import numpy as np
import pytest
from numba import cuda

import manualbp
from manualbp import nn
from manualbp.device import is_cuda_array, to_device, to_numpy
from manualbp.kernels import cuda as gpu
from manualbp.kernels import reference
from manualbp.kernels.cuda import gemm as cuda_gemm

RNG = np.random.default_rng(20240612)
F32 = {"rtol": 2e-5, "atol": 2e-5}
TOL = {"rtol": 1e-4, "atol": 1e-5}


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def f64(a):
    return np.asarray(a, dtype=np.float64)


# --- the kernels ------------------------------------------------------------------------------------------

# (x shape, weight shape (O, C/G, KH, KW), stride, padding, dilation, groups)
CONV_CASES = [
    ((2, 2, 6, 5), (3, 2, 3, 2), (1, 1), (1, 1), (2, 2), 1),   # dilated
    ((1, 4, 5, 6), (4, 2, 3, 3), (2, 1), (1, 0), (1, 2), 2),   # grouped and dilated, strided
    ((2, 3, 4, 4), (3, 1, 2, 2), (1, 1), (0, 1), (1, 1), 3),   # depthwise
    ((0, 2, 4, 4), (2, 1, 3, 3), (1, 1), (1, 1), (2, 1), 2),   # an empty batch
]


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups", CONV_CASES)
def test_conv2d_kernels_with_dilation_and_groups(x_shape, w_shape, stride, padding, dilation, groups):
    x, w, b = randn(*x_shape), randn(*w_shape), randn(w_shape[0])
    args = (stride, padding, dilation, groups)
    y_ref = reference.conv2d_forward(f64(x), f64(w), f64(b), *args)
    y = gpu.conv2d_forward(dev(x), dev(w), dev(b), *args).copy_to_host()
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, **F32)
    gy = randn(*y_ref.shape)
    dx = gpu.conv2d_grad_input(dev(gy), dev(w), x.shape, *args).copy_to_host()
    np.testing.assert_allclose(dx, reference.conv2d_grad_input(f64(gy), f64(w), x.shape, *args), **F32)
    dw, db = gpu.conv2d_grad_params(dev(gy), dev(x), w.shape, stride, padding, True, dilation, groups)
    dw_ref, db_ref = reference.conv2d_grad_params(f64(gy), f64(x), w.shape, stride, padding, True, dilation, groups)
    np.testing.assert_allclose(dw.copy_to_host(), dw_ref, **F32)
    np.testing.assert_allclose(db.copy_to_host(), db_ref, **F32)


def test_grouped_grad_weight_in_k_slices_accumulates(monkeypatch):
    """Each group's batch sum cut into K slices (added in order) and added into an existing gradient."""
    monkeypatch.setattr(cuda_gemm, "MIN_K_PER_SPLIT", 16)
    x, gy, dw0 = randn(2, 4, 5, 6), randn(2, 2, 5, 6), randn(2, 2, 3, 3)
    assert cuda_gemm.choose_split(1, 18, 60, gpu.SMALL)[1] > 1
    out = dev(dw0)
    gpu.conv2d_grad_weight(dev(gy), dev(x), dw0.shape, 1, (2, 1), (2, 1), 2, out=out, accumulate=True)
    expected = dw0 + reference.conv2d_grad_weight(f64(gy), f64(x), dw0.shape, (1, 1), (2, 1), (2, 1), 2)
    np.testing.assert_allclose(out.copy_to_host(), expected, **F32)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_pad2d_gather_and_its_backward(mode):
    x = randn(2, 2, 3, 4)
    pads = (3, 1, 2, 0) if mode != "reflect" else (3, 1, 2, 1)
    y = gpu.pad2d(dev(x), pads, mode).copy_to_host()
    np.testing.assert_array_equal(y, reference.pad2d(x, pads, mode))
    g = randn(*y.shape)
    dx = gpu.pad2d_backward(dev(g), x.shape, pads, mode).copy_to_host()
    np.testing.assert_allclose(dx, reference.pad2d_backward(f64(g), x.shape, pads, mode), **F32)


@pytest.mark.parametrize("k,s,p,d,ceil_mode", [((2, 2), (2, 2), (0, 0), (1, 1), True),
                                               ((3, 2), (2, 1), (1, 1), (2, 2), False),
                                               ((2, 3), (3, 2), (1, 1), (1, 2), True)])
def test_maxpool2d_kernels_with_dilation_and_ceil_mode(k, s, p, d, ceil_mode):
    x = RNG.integers(-3, 4, size=(2, 2, 5, 7)).astype(np.float32)  # small integers: many ties
    x[1, 0, 2, 3] = np.nan
    y, idx = gpu.maxpool2d_forward(dev(x), k, s, p, d, ceil_mode)
    y_ref, idx_ref = reference.maxpool2d_forward(x, k, s, p, d, ceil_mode)
    np.testing.assert_array_equal(y.copy_to_host(), y_ref)
    np.testing.assert_array_equal(idx.copy_to_host(), idx_ref)
    gy = randn(*y_ref.shape)
    dx = gpu.maxpool2d_backward(dev(gy), idx, x.shape, k, s, p, d, ceil_mode).copy_to_host()
    np.testing.assert_allclose(dx, reference.maxpool2d_backward(f64(gy), idx_ref, x.shape), **F32)


# --- the layers, on the GPU and on the CPU ---------------------------------------------------------------

LAYERS = {
    "conv-dilation-groups": (lambda: nn.Conv2d(4, 2, 3, 1, 1, 2, 2), (2, 4, 5, 5)),
    "conv-same-reflect": (lambda: nn.Conv2d(2, 2, (2, 3), padding="same", padding_mode="reflect"), (1, 2, 4, 5)),
    "conv-circular-unbatched": (lambda: nn.Conv2d(2, 3, 3, 2, 1, padding_mode="circular", bias=False), (2, 5, 4)),
    "conv-replicate-depthwise": (lambda: nn.Conv2d(3, 3, 2, padding=(1, 2), groups=3, padding_mode="replicate"),
                                 (1, 3, 3, 3)),
    "conv-empty-batch": (lambda: nn.Conv2d(2, 2, 3, padding="same", dilation=2), (0, 2, 4, 4)),
    "maxpool-dilation-ceil": (lambda: nn.MaxPool2d(2, 2, 1, 2, ceil_mode=True), (1, 2, 6, 5)),
    "maxpool-indices-unbatched": (lambda: nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=True), (2, 6, 6)),
    "maxpool-empty-batch": (lambda: nn.MaxPool2d(2, dilation=(1, 2)), (0, 1, 4, 6)),
}


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_layer_options_match_the_cpu(case):
    build, shape = LAYERS[case]
    rng = np.random.default_rng(sorted(LAYERS).index(case))
    manualbp.manual_seed(1)
    cpu_layer, gpu_layer = build(), build()
    gpu_layer.load_state_dict(cpu_layer.state_dict())
    gpu_layer.to("cuda")
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    y_cpu, y_gpu = cpu_layer(x), gpu_layer(to_device(x))
    if isinstance(y_cpu, tuple):  # return_indices: (y, indices), int64 on both devices
        (y_cpu, i_cpu), (y_gpu, i_gpu) = y_cpu, y_gpu
        assert i_cpu.dtype == np.int64 and is_cuda_array(i_gpu)
        np.testing.assert_array_equal(to_numpy(i_gpu), i_cpu)
    assert is_cuda_array(y_gpu) and tuple(y_gpu.shape) == y_cpu.shape
    np.testing.assert_allclose(to_numpy(y_gpu), y_cpu, err_msg=f"{case}: output", **TOL)
    g = rng.uniform(-1, 1, y_cpu.shape).astype(np.float32)
    gx_cpu, gx_gpu = cpu_layer.backward(g), gpu_layer.backward(to_device(g))
    assert is_cuda_array(gx_gpu) and tuple(gx_gpu.shape) == x.shape
    np.testing.assert_allclose(to_numpy(gx_gpu), gx_cpu, err_msg=f"{case}: grad_input", **TOL)
    for (name, p_gpu), (_, p_cpu) in zip(gpu_layer.named_parameters(), cpu_layer.named_parameters()):
        np.testing.assert_allclose(to_numpy(p_gpu.grad), p_cpu.grad, err_msg=f"{case}: {name}.grad", **TOL)
