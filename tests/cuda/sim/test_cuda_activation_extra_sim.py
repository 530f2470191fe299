"""GELU (both forms), SiLU, ELU and Softplus on the GPU (numba's simulator) against the CPU: each operation of
``kernels/cuda/activation_extra.py`` and its twin in ``kernels/cpu/`` on the same float32 arrays (NaN,
infinities and large values included), and the layers moved to the GPU.  Tiny shapes."""
import numpy as np
import pytest
from numba import cuda

from manualbp import nn
from manualbp.kernels import cpu
from manualbp.kernels import cuda as gpu

TOL = {"rtol": 1e-4, "atol": 1e-6}
X = np.array([[-30.0, -5.0, -1.0, -0.1, 0.0, 0.3, 2.0, 25.0],
              [np.nan, np.inf, -np.inf, -1e-3, 1e-3, 4.0, -2.5, 19.0]], np.float32)
G = np.linspace(-1.5, 2.0, X.size, dtype=np.float32).reshape(X.shape)
OPS = [("gelu", ("none",)), ("gelu", ("tanh",)), ("silu", ()), ("elu", (1.0,)), ("elu", (0.5,)),
       ("softplus", (1.0, 20.0)), ("softplus", (2.0, 3.0))]


@pytest.mark.parametrize("name,args", OPS, ids=[f"{n}{a}" for n, a in OPS])
def test_gpu_matches_cpu(name, args):
    fwd, bwd = f"{name}_forward", f"{name}_backward"
    y = getattr(gpu, fwd)(cuda.to_device(X), *args).copy_to_host()
    np.testing.assert_allclose(y, getattr(cpu, fwd)(X, *args), equal_nan=True, **TOL)
    dx = getattr(gpu, bwd)(cuda.to_device(G), cuda.to_device(X), *args).copy_to_host()
    np.testing.assert_allclose(dx, getattr(cpu, bwd)(G, X, *args), equal_nan=True, **TOL)


@pytest.mark.parametrize("make", [lambda: nn.GELU(), lambda: nn.GELU("tanh"), lambda: nn.SiLU(),
                                  lambda: nn.ELU(0.7), lambda: nn.Softplus(1.5, 4.0)])
def test_layers_on_the_gpu(make):
    x = X[:, 3:7].copy()
    layer_cpu, layer_gpu = make(), make().to("cuda")
    y = layer_gpu(cuda.to_device(x))
    dx = layer_gpu.backward(cuda.to_device(G[:, :4].copy()))
    np.testing.assert_allclose(y.copy_to_host(), layer_cpu(x), **TOL)
    np.testing.assert_allclose(dx.copy_to_host(), layer_cpu.backward(G[:, :4].copy()), **TOL)
    e = layer_gpu(cuda.to_device(np.zeros((0, 3), np.float32)))  # an empty batch
    assert e.shape == (0, 3)
