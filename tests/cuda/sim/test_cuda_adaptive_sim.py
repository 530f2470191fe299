"""Adam/AdamW, RMSprop and Adagrad on the GPU (under numba's simulator): each kernel against its NumPy twin
with the same positional arguments, and each optimizer training the same small model on both devices.
Collected only under NUMBA_ENABLE_CUDASIM=1 (see conftest.py)."""
import numpy as np
import pytest
from numba import cuda

import manualbp
from manualbp import nn, optim
from manualbp.device import to_device
from manualbp.kernels import cuda as gpu
from manualbp.kernels import reference

RNG = np.random.default_rng(11)
TOL = {"rtol": 1e-4, "atol": 1e-6}


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def close(got, want):
    np.testing.assert_allclose(got.copy_to_host(), want, **TOL)


@pytest.mark.parametrize("amsgrad,decoupled,weight_decay,beta1", [(False, False, 0.0, 0.9), (True, False, 0.01, 0.2),
                                                                  (True, True, 0.1, 0.9)])
def test_adam_update_has_the_reference_signature(amsgrad, decoupled, weight_decay, beta1):
    p, bufs = randn(4, 3), [np.zeros((4, 3), np.float32) for _ in range(3)]
    dp, dbufs = dev(p), [dev(b) for b in bufs]
    for step in (1, 2):
        g = randn(4, 3)
        gpu.adam_update(dp, dev(g), dbufs[0], dbufs[1], dbufs[2] if amsgrad else None, 0.01, beta1, 0.99, 1e-8,
                        weight_decay, step, amsgrad, decoupled)
        reference.adam_update(p, g, bufs[0], bufs[1], bufs[2] if amsgrad else None, 0.01, beta1, 0.99, 1e-8,
                              weight_decay, step, amsgrad, decoupled)
        close(dp, p)
        for d, b in zip(dbufs, bufs):
            close(d, b)


@pytest.mark.parametrize("centered,momentum,weight_decay,alpha", [(False, 0.0, 0.0, 0.99), (True, 0.9, 0.01, 0.3)])
def test_rmsprop_update_has_the_reference_signature(centered, momentum, weight_decay, alpha):
    p, bufs = randn(5), [np.zeros(5, np.float32) for _ in range(3)]
    dp, dbufs = dev(p), [dev(b) for b in bufs]
    for _ in range(2):
        g = randn(5)
        gpu.rmsprop_update(dp, dev(g), dbufs[0], dbufs[1] if centered else None, dbufs[2] if momentum else None,
                           0.01, alpha, 1e-8, weight_decay, momentum, centered)
        reference.rmsprop_update(p, g, bufs[0], bufs[1] if centered else None, bufs[2] if momentum else None,
                                 0.01, alpha, 1e-8, weight_decay, momentum, centered)
        close(dp, p)
        for d, b in zip(dbufs, bufs):
            close(d, b)


def test_adagrad_update_has_the_reference_signature():
    p, s = randn(2, 3), np.full((2, 3), 0.1, np.float32)
    dp, ds = dev(p), dev(s)
    for step in (1, 2):
        g = randn(2, 3)
        gpu.adagrad_update(dp, dev(g), ds, 0.1, 0.2, 0.01, 1e-10, step)
        reference.adagrad_update(p, g, s, 0.1, 0.2, 0.01, 1e-10, step)
        close(dp, p)
        close(ds, s)


@pytest.mark.parametrize("name,opts", [("Adam", {"amsgrad": True}), ("AdamW", {}),
                                       ("RMSprop", {"centered": True, "momentum": 0.9}), ("Adagrad", {"lr_decay": 0.1})])
def test_optimizers_on_the_gpu_match_the_cpu_over_two_steps(name, opts):
    """The same gradients given to a layer's parameters on each device (no forward: the simulator is slow)."""
    manualbp.manual_seed(3)
    layers = [nn.Linear(3, 2) for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    layers[1].to("cuda")
    grads = [[randn(*p.shape) for p in layers[0].parameters()] for _ in range(2)]
    opts_by_device = []
    for layer, device in zip(layers, ("cpu", "cuda")):
        opt = getattr(optim, name)(layer.parameters(), lr=0.05, **opts)
        for step_grads in grads:
            for p, g in zip(layer.parameters(), step_grads):
                p.grad = to_device(g, device)
            opt.step()
        opts_by_device.append(opt)
    for p_gpu, p_cpu in zip(layers[1].parameters(), layers[0].parameters()):
        close(p_gpu.data, p_cpu.data)
    sd_cpu, sd_gpu = (o.state_dict() for o in opts_by_device)
    for i, state in sd_cpu["state"].items():
        for key, value in state.items():
            np.testing.assert_allclose(sd_gpu["state"][i][key], value, **TOL)  # state_dict brings buffers home
