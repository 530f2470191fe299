"""AvgPool2d and adaptive (average and max) pooling on the GPU (numba's simulator) against the CPU: each
operation of ``kernels/cuda/pooling_avg.py`` and its twin in ``kernels/cpu/`` on the same float32 arrays,
with every AvgPool2d option (ceil_mode windows past the padding, count_include_pad, divisor_override),
adaptive sizes smaller and larger than the input, ties and NaN; and the layers moved to the GPU.  Tiny
shapes."""
import numpy as np
import pytest
from numba import cuda

from manualbp import nn
from manualbp.kernels import cpu
from manualbp.kernels import cuda as gpu

TOL = {"rtol": 1e-4, "atol": 1e-6}
RNG = np.random.default_rng(11)
X = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
AVG_OPTIONS = [((3, 3), (2, 2), (1, 1), True, True, None), ((3, 2), (1, 2), (1, 0), False, False, None),
               ((2, 2), (2, 2), (0, 0), True, False, 3), ((2, 3), (3, 1), (1, 1), True, True, -5)]


@pytest.mark.parametrize("options", AVG_OPTIONS)
def test_avgpool2d_gpu_matches_cpu(options):
    y = gpu.avgpool2d_forward(cuda.to_device(X), *options).copy_to_host()
    y_cpu = cpu.avgpool2d_forward(X, *options)
    np.testing.assert_allclose(y, y_cpu, **TOL)
    g = RNG.standard_normal(y.shape).astype(np.float32)
    dx = gpu.avgpool2d_backward(cuda.to_device(g), X.shape, *options).copy_to_host()
    np.testing.assert_allclose(dx, cpu.avgpool2d_backward(g, X.shape, *options), **TOL)


@pytest.mark.parametrize("size", [(1, 1), (2, 4), (7, 8)])
def test_adaptive_gpu_matches_cpu(size):
    x = RNG.integers(-2, 3, X.shape).astype(np.float32)  # ties
    x[0, 1, 0, 0] = np.nan
    y = gpu.adaptive_avgpool2d_forward(cuda.to_device(x), size).copy_to_host()
    np.testing.assert_allclose(y, cpu.adaptive_avgpool2d_forward(x, size), equal_nan=True, **TOL)
    g = RNG.standard_normal(y.shape).astype(np.float32)
    dx = gpu.adaptive_avgpool2d_backward(cuda.to_device(g), x.shape).copy_to_host()
    np.testing.assert_allclose(dx, cpu.adaptive_avgpool2d_backward(g, x.shape), **TOL)
    y, idx = gpu.adaptive_maxpool2d_forward(cuda.to_device(x), size)
    y_cpu, idx_cpu = cpu.adaptive_maxpool2d_forward(x, size)
    np.testing.assert_array_equal(y.copy_to_host(), y_cpu)
    np.testing.assert_array_equal(idx.copy_to_host(), idx_cpu)
    dx = gpu.adaptive_maxpool2d_backward(cuda.to_device(g), idx, x.shape).copy_to_host()
    np.testing.assert_allclose(dx, cpu.adaptive_maxpool2d_backward(g, idx_cpu, x.shape), **TOL)


@pytest.mark.parametrize("make", [lambda: nn.AvgPool2d(3, 2, 1, True, False), lambda: nn.AdaptiveAvgPool2d((2, None)),
                                  lambda: nn.AdaptiveMaxPool2d(3)])
def test_layers_on_the_gpu(make):
    x = X[0]  # unbatched
    layer_cpu, layer_gpu = make(), make().to("cuda")
    y = layer_gpu(cuda.to_device(x))
    y_cpu = layer_cpu(x)
    g = np.ones(y_cpu.shape, np.float32)
    np.testing.assert_allclose(y.copy_to_host(), y_cpu, **TOL)
    np.testing.assert_allclose(layer_gpu.backward(cuda.to_device(g)).copy_to_host(), layer_cpu.backward(g), **TOL)
