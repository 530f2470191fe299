"""Whole training steps of LeNet-5 and the CIFAR-10 net on a real GPU, against torch on CUDA, same weights.

Marked ``gpu``: skipped unless numba and torch both see a CUDA device (see conftest.py).  The model is
moved with ``.to("cuda")``, so every layer, the loss and SGD run the CUDA kernels; torch runs cuDNN
and cuBLAS with TF32 off.  Two steps with momentum, so the momentum buffers are exercised too.
"""
import numpy as np
import pytest

import manualbp
from manualbp import Network, models, nn, optim
from manualbp.device import is_cuda_array, to_device, to_numpy

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def torch():
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def torch_twin(torch, model):
    """The same Sequential in torch on the GPU, loaded with our weights (the keys match)."""
    tnn, layers = torch.nn, []
    for layer in model:
        if isinstance(layer, nn.Conv2d):
            layers.append(tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                     layer.padding))
        elif isinstance(layer, nn.Linear):
            layers.append(tnn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, nn.MaxPool2d):
            layers.append(tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
        elif isinstance(layer, nn.Flatten):
            layers.append(tnn.Flatten())
        else:
            layers.append(getattr(tnn, type(layer).__name__)())
    twin = tnn.Sequential(*layers)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin.cuda()


def close(ours, theirs, what, rtol=2e-3, atol=2e-4):
    theirs = theirs.detach().cpu().numpy()
    scale = max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(to_numpy(ours), theirs, rtol=rtol, atol=atol * scale, err_msg=what)


@pytest.mark.parametrize("build", [models.lenet5, lambda: models.lenet5(activation="relu"), models.cifar10net],
                         ids=["lenet5", "lenet5-relu", "cifar10net"])
def test_training_steps_match_torch_cuda(torch, build):
    manualbp.manual_seed(0)
    model = build()
    twin = torch_twin(torch, model)
    model.to("cuda")
    rng = np.random.default_rng(1)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    t_opt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(2):
        x = rng.random((32, 3, 32, 32), dtype=np.float32)
        y = rng.integers(0, 10, 32)
        opt.zero_grad()
        loss = loss_fn(model(to_device(x)), to_device(y))
        model.backward(loss_fn.backward())
        t_opt.zero_grad()
        t_loss = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x).cuda()), torch.from_numpy(y).cuda())
        t_loss.backward()
        close(loss, t_loss.reshape(1), f"loss at step {step}")
        for (name, p), tp in zip(model.named_parameters(), twin.parameters()):
            assert is_cuda_array(p.grad), name
            close(p.grad, tp.grad, f"grad of {name} at step {step}")
        opt.step()
        t_opt.step()
        for (name, p), tp in zip(model.named_parameters(), twin.parameters()):
            close(p.data, tp, f"{name} after step {step}")


def test_network_fit_on_the_gpu_tracks_the_cpu():
    rng = np.random.default_rng(2)
    x = rng.random((96, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, 96)
    runs = []
    for device in ("cpu", "cuda"):
        manualbp.manual_seed(4)
        net = Network(models.lenet5(activation="relu"), device=device)
        history = net.fit((x, y), epochs=1, batch_size=32, seed=0, verbose=False,
                          optimizer=optim.SGD(net.parameters(), lr=0.01, momentum=0.9))
        runs.append((history, net.evaluate((x, y)), net.predict(x[:8]), net))
    (h_cpu, e_cpu, p_cpu, cpu), (h_gpu, e_gpu, p_gpu, gpu) = runs
    assert gpu.device == "cuda"
    np.testing.assert_allclose(h_gpu.steps, h_cpu.steps, rtol=1e-3)
    np.testing.assert_allclose(e_gpu["loss"], e_cpu["loss"], rtol=1e-3)
    np.testing.assert_allclose(p_gpu, p_cpu, rtol=1e-3, atol=1e-3)
    for name, value in gpu.state_dict().items():
        np.testing.assert_allclose(value, cpu.state_dict()[name], rtol=1e-3, atol=1e-4, err_msg=name)
