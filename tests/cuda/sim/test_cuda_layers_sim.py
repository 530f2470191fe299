"""Every layer, activation and loss, with every option, on the (simulated) GPU against the CPU.

One ``forward`` and one ``backward`` per layer, whatever the device: the same module classes run here on
numba.cuda device arrays, through the CUDA kernels that ``manualbp/kernels/__init__.py`` picks for them.
Each case builds the module twice from the same weights, runs forward and backward on the CPU (float32) and
on the GPU, and compares the output, dL/d(input) and every parameter gradient (rtol 1e-4).  Collected only
under NUMBA_ENABLE_CUDASIM=1 (see conftest.py); the shapes are tiny, since the simulator runs every thread
in Python.
"""
import numpy as np
import pytest

import manualbp
from manualbp import nn, optim
from manualbp.device import is_cuda_array, item, to_device, to_numpy

TOL = {"rtol": 1e-4, "atol": 1e-5}


def rand(rng, shape, low=-1.0, high=1.0):
    return rng.uniform(low, high, shape).astype(np.float32)


def close(gpu_value, cpu_value, what):
    np.testing.assert_allclose(to_numpy(gpu_value), cpu_value, err_msg=what, **TOL)


LAYERS = {
    "linear": (lambda: nn.Linear(5, 3), (4, 5)),
    "linear-3d-no-bias": (lambda: nn.Linear(5, 3, bias=False), (2, 3, 5)),
    "conv-pad": (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 2, 5, 4)),
    "conv-stride-no-bias": (lambda: nn.Conv2d(2, 4, (3, 2), stride=2, bias=False), (2, 2, 7, 6)),
    "maxpool": (lambda: nn.MaxPool2d(2), (2, 3, 4, 6)),
    "maxpool-overlap-pad": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 5, 5)),
    "maxpool-unbatched": (lambda: nn.MaxPool2d(2), (3, 4, 4)),
    "relu": (nn.ReLU, (3, 4)),
    "leaky-relu": (lambda: nn.LeakyReLU(0.2), (2, 3, 4)),
    "sigmoid": (nn.Sigmoid, (3, 5)),
    "tanh": (nn.Tanh, (2, 2, 3)),
    "softmax-dim1": (lambda: nn.Softmax(dim=1), (3, 4)),
    "softmax-dim0": (lambda: nn.Softmax(dim=0), (3, 4)),
    "softmax-last-of-3d": (lambda: nn.Softmax(dim=-1), (2, 3, 4)),
    "softmax-middle-of-4d": (lambda: nn.Softmax(dim=1), (2, 3, 2, 2)),
    "softmax-1d": (lambda: nn.Softmax(dim=0), (5,)),
    "log-softmax": (lambda: nn.LogSoftmax(dim=1), (3, 4)),
    "log-softmax-first-of-3d": (lambda: nn.LogSoftmax(dim=0), (2, 3, 2)),
    "flatten": (nn.Flatten, (2, 3, 2, 2)),
    "flatten-all": (lambda: nn.Flatten(0, -1), (2, 3, 2)),
    "identity": (nn.Identity, (2, 3)),
    # the edges torch users meet: an empty batch, a 0-d value, an unbatched sample
    "linear-empty-batch": (lambda: nn.Linear(5, 3), (0, 5)),
    "linear-unbatched": (lambda: nn.Linear(5, 3), (5,)),
    "relu-empty": (nn.ReLU, (0, 4)),
    "sigmoid-0d": (nn.Sigmoid, ()),
    "softmax-0d": (lambda: nn.Softmax(dim=0), ()),
    "log-softmax-empty": (lambda: nn.LogSoftmax(dim=1), (0, 3)),
    "sequential": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                         nn.Linear(8, 3), nn.Tanh()), (2, 1, 4, 4)),
}


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_layer_forward_and_backward_match_the_cpu(case):
    build, shape = LAYERS[case]
    rng = np.random.default_rng(sorted(LAYERS).index(case))
    manualbp.manual_seed(1)
    cpu_layer = build()
    gpu_layer = build()
    gpu_layer.load_state_dict(cpu_layer.state_dict())
    gpu_layer.to("cuda")
    x = rand(rng, shape)
    y_cpu = cpu_layer(x)
    y_gpu = gpu_layer(to_device(x))
    assert is_cuda_array(y_gpu)
    close(y_gpu, y_cpu, f"{case}: output")
    g = rand(rng, y_cpu.shape)
    gx_cpu = cpu_layer.backward(g)
    gx_gpu = gpu_layer.backward(to_device(g))
    assert is_cuda_array(gx_gpu)
    close(gx_gpu, gx_cpu, f"{case}: grad_input")
    for (name, p_gpu), (_, p_cpu) in zip(gpu_layer.named_parameters(), cpu_layer.named_parameters()):
        assert is_cuda_array(p_gpu.grad), name
        close(p_gpu.grad, p_cpu.grad, f"{case}: {name}.grad")


def _classes(rng, shape, n_classes, ignore=None):
    t = rng.integers(0, n_classes, shape)
    if ignore is not None and t.size > 1:
        t.reshape(-1)[0] = ignore  # one ignored sample
    return t


def _probabilities(rng, shape):
    p = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    return p / p.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)


W3 = np.array([0.5, 2.0, 1.0])

# name -> (loss factory, input shape, target maker (rng, input shape) -> target, input range)
LOSSES = {
    "l1": (lambda r: nn.L1Loss(reduction=r), (3, 4), lambda rng, s: rand(rng, s), None),
    "mse": (lambda r: nn.MSELoss(reduction=r), (2, 3, 2), lambda rng, s: rand(rng, s), None),
    "smooth-l1": (lambda r: nn.SmoothL1Loss(reduction=r, beta=0.5), (3, 4), lambda rng, s: rand(rng, s), None),
    "smooth-l1-beta0": (lambda r: nn.SmoothL1Loss(reduction=r, beta=0.0), (5,), lambda rng, s: rand(rng, s), None),
    "huber": (lambda r: nn.HuberLoss(reduction=r, delta=0.3), (3, 4), lambda rng, s: rand(rng, s), None),
    "bce": (lambda r: nn.BCELoss(reduction=r), (3, 4), lambda rng, s: rand(rng, s, 0, 1), (0.05, 0.95)),
    "bce-weight": (lambda r: nn.BCELoss(weight=np.array([1.0, 2.0, 0.5, 1.5]), reduction=r), (3, 4),
                   lambda rng, s: rand(rng, s, 0, 1), (0.05, 0.95)),
    "bce-logits": (lambda r: nn.BCEWithLogitsLoss(reduction=r), (3, 4), lambda rng, s: rand(rng, s, 0, 1), None),
    "bce-logits-weights": (lambda r: nn.BCEWithLogitsLoss(weight=np.array([[1.0], [0.5], [2.0]]), reduction=r,
                                                          pos_weight=np.array([3.0, 1.0, 0.5, 2.0])),
                           (3, 4), lambda rng, s: rand(rng, s, 0, 1), None),
    "nll": (lambda r: nn.NLLLoss(reduction=r), (4, 3), lambda rng, s: _classes(rng, s[:1], 3), (-3, 0)),
    "nll-weight-ignore": (lambda r: nn.NLLLoss(weight=W3, ignore_index=1, reduction=r), (5, 3),
                          lambda rng, s: _classes(rng, s[:1], 3), (-3, 0)),
    "nll-4d": (lambda r: nn.NLLLoss(weight=W3, ignore_index=-1, reduction=r), (2, 3, 2, 2),
               lambda rng, s: _classes(rng, (s[0],) + s[2:], 3, ignore=-1), (-3, 0)),
    "nll-unbatched": (lambda r: nn.NLLLoss(reduction=r), (3,), lambda rng, s: np.array(2), (-3, 0)),
    "ce": (lambda r: nn.CrossEntropyLoss(reduction=r), (4, 3), lambda rng, s: _classes(rng, s[:1], 3), None),
    "ce-ignore": (lambda r: nn.CrossEntropyLoss(ignore_index=2, reduction=r), (5, 3),
                  lambda rng, s: _classes(rng, s[:1], 3, ignore=2), None),
    "ce-weight-smoothing": (lambda r: nn.CrossEntropyLoss(weight=W3, label_smoothing=0.2, ignore_index=0,
                                                          reduction=r), (5, 3),
                            lambda rng, s: _classes(rng, s[:1], 3, ignore=0), None),
    "ce-4d-weight": (lambda r: nn.CrossEntropyLoss(weight=W3, reduction=r), (2, 3, 2, 3),
                     lambda rng, s: _classes(rng, (s[0],) + s[2:], 3), None),
    "ce-probabilities": (lambda r: nn.CrossEntropyLoss(reduction=r, label_smoothing=0.1), (4, 3),
                         lambda rng, s: _probabilities(rng, s), None),
    "ce-probabilities-4d-weight": (lambda r: nn.CrossEntropyLoss(weight=W3, reduction=r), (2, 3, 2),
                                   lambda rng, s: _probabilities(rng, s), None),
    "ce-unbatched": (lambda r: nn.CrossEntropyLoss(reduction=r), (4,), lambda rng, s: np.array(1), None),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", sorted(LOSSES))
def test_loss_forward_and_backward_match_the_cpu(case, reduction):
    build, shape, target_of, bounds = LOSSES[case]
    rng = np.random.default_rng(7 * sorted(LOSSES).index(case) + len(reduction))
    x = rand(rng, shape, *(bounds or (-2.0, 2.0)))
    t = target_of(rng, shape)
    cpu_loss, gpu_loss = build(reduction), build(reduction)
    value_cpu = cpu_loss(x, t)
    value_gpu = gpu_loss(to_device(x), to_device(t))
    assert is_cuda_array(value_gpu)
    close(np.reshape(to_numpy(value_gpu), np.shape(value_cpu)), value_cpu, f"{case}: loss")
    if reduction == "none":
        g = rand(rng, np.shape(value_cpu))
        gx_cpu, gx_gpu = cpu_loss.backward(g), gpu_loss.backward(to_device(g))
    else:
        gx_cpu, gx_gpu = cpu_loss.backward(2.5), gpu_loss.backward(2.5)
    assert is_cuda_array(gx_gpu)
    assert tuple(gx_gpu.shape) == tuple(x.shape)
    close(gx_gpu, gx_cpu, f"{case}: grad_input")


@pytest.mark.parametrize("opts", [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
                                  {"momentum": 0.5, "dampening": 0.3}, {}])
def test_sgd_on_the_gpu_matches_the_cpu_over_two_steps(opts):
    rng = np.random.default_rng(0)
    manualbp.manual_seed(2)
    models = [nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    models[1].to("cuda")
    batches = [(rand(rng, (5, 3)), rand(rng, (5, 2))) for _ in range(2)]
    for model, device in zip(models, ("cpu", "cuda")):
        opt = optim.SGD(model.parameters(), lr=0.1, **opts)
        loss_fn = nn.SmoothL1Loss()
        for x, y in batches:
            opt.zero_grad()
            loss = loss_fn(model(to_device(x, device)), to_device(y, device))
            model.backward(loss_fn.backward())
            opt.step()
            item(loss)
    for (name, p_gpu), (_, p_cpu) in zip(models[1].named_parameters(), models[0].named_parameters()):
        close(p_gpu.data, p_cpu.data, name)


def test_a_float64_model_on_the_gpu_is_a_clear_error():
    with pytest.raises(TypeError, match="float32"):
        nn.Linear(2, 2).double().to("cuda")
    with pytest.raises(TypeError, match="float32"):
        nn.ReLU()(to_device(np.ones(3), dtype=np.float64))
