"""A model on the (simulated) GPU takes what a torch CUDA tensor offers -- ``__cuda_array_interface__`` --
without a copy; devices named the torch way move it; Parameters on the GPU read like tensors.

Collected only under NUMBA_ENABLE_CUDASIM=1 (see conftest.py).
"""
import numpy as np
import pytest
import torch
from numba import cuda

import manualbp
from manualbp import nn, optim
from manualbp.device import as_array, is_cuda_array, to_device, to_numpy

RNG = np.random.default_rng(5)
TOL = {"rtol": 1e-5, "atol": 1e-6}


class CudaArrayLike:
    """Only ``__cuda_array_interface__``, as a CUDA tensor of another library offers it.  The simulator's
    device array keeps its "device" memory in a NumPy array, whose interface stands in for the CUDA one."""

    def __init__(self, device_array):
        self._dev = device_array

    @property
    def __cuda_array_interface__(self):
        try:
            return self._dev.__cuda_array_interface__  # a real numba.cuda device array
        except AttributeError:  # the simulator's
            return dict(self._dev._ary.__array_interface__, version=3)


class FakeDevice:
    def __init__(self, type, index=None):
        self.type, self.index = type, index


def test_cuda_is_available_under_the_simulator():
    assert manualbp.cuda.is_available() and manualbp.cuda.device_count() >= 1
    manualbp.cuda.synchronize()


def test_a_cuda_array_interface_is_read_without_a_copy():
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = cuda.to_device(host)
    a = as_array(CudaArrayLike(dev))
    assert is_cuda_array(a) and tuple(a.shape) == (2, 3) and a.dtype == np.float32
    dev.copy_to_device(host + 10)  # written through the original: seen through the converted one
    np.testing.assert_array_equal(a.copy_to_host(), host + 10)
    assert to_device(CudaArrayLike(dev)).shape == (2, 3)
    np.testing.assert_array_equal(to_numpy(CudaArrayLike(dev)), host + 10)


def test_a_gpu_model_takes_cuda_array_interface_inputs_and_targets():
    manualbp.manual_seed(0)
    cpu_model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    gpu_model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.to(torch.device("cuda"))
    assert gpu_model[0].weight.device == "cuda"
    x = RNG.standard_normal((2, 2, 4, 4)).astype(np.float32)
    y = RNG.standard_normal((2, 2)).astype(np.float32)
    results = []
    for model, xb, yb in ((cpu_model, x, y),
                          (gpu_model, CudaArrayLike(cuda.to_device(x)), CudaArrayLike(cuda.to_device(y)))):
        loss_fn = nn.MSELoss()
        out = model(xb)
        loss = loss_fn(out, yb)
        model.backward(loss_fn.backward())
        results.append((to_numpy(out), float(to_numpy(loss).reshape(-1)[0]), to_numpy(model[0].weight.grad)))
    (cpu_out, cpu_loss, cpu_grad), (gpu_out, gpu_loss, gpu_grad) = results
    np.testing.assert_allclose(gpu_out, cpu_out, **TOL)
    np.testing.assert_allclose(gpu_loss, cpu_loss, **TOL)
    np.testing.assert_allclose(gpu_grad, cpu_grad, **TOL)


def test_mixed_devices_still_name_how_to_move_the_batch():
    gpu_layer = nn.Linear(3, 2).to(FakeDevice("cuda", 0))
    with pytest.raises(TypeError, match="parameters are on the GPU but input is a NumPy array"):
        gpu_layer(torch.ones(4, 3))
    with pytest.raises(TypeError, match="parameters are on the CPU but input is a numba.cuda device array"):
        nn.Linear(3, 2)(CudaArrayLike(cuda.to_device(np.ones((4, 3), np.float32))))
    with pytest.raises(TypeError, match="float32 on the GPU"):
        gpu_layer(CudaArrayLike(cuda.to_device(np.ones((4, 3)))))


def test_devices_named_the_torch_way_move_the_model():
    model = nn.Sequential(nn.Linear(3, 2))
    for device, where in ((torch.device("cuda:0"), "cuda"), ("cpu", "cpu"), (FakeDevice("cuda"), "cuda"),
                          (torch.device("cpu"), "cpu")):
        assert model.to(device) is model and model[0].weight.device == where
    assert model.cuda(0)[0].weight.device == "cuda" and model.cpu()[0].weight.device == "cpu"
    model.cuda()
    with pytest.raises(TypeError, match="float32 only"):
        model.to(torch.float64)
    model.to("cpu", torch.float64)
    assert model[0].weight.dtype == np.float64 and model[0].weight.device == "cpu"


def test_a_torch_state_dict_loads_into_a_gpu_model():
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 3))
    ours = nn.Sequential(nn.Linear(4, 3)).to("cuda")
    ours.load_state_dict(theirs.state_dict())
    assert ours[0].weight.device == "cuda"
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(to_numpy(ours(to_device(x))), want, **TOL)


def test_parameters_on_the_gpu_read_like_tensors(tmp_path):
    layer = nn.Linear(3, 2).to("cuda")
    p = layer.weight
    host = p.numpy()
    assert isinstance(host, np.ndarray) and p.shape == (2, 3) and p.numel() == 6 and len(p) == 2
    np.testing.assert_array_equal(np.asarray(p), host)
    np.testing.assert_array_equal(p[1], host[1])
    np.testing.assert_array_equal(p * 2, host * 2)
    assert "device='cuda'" in repr(p) and repr(p).startswith("Parameter containing:\narray(")
    with pytest.raises(ValueError, match="needs a copy"):
        p.__array__(copy=False)
    data = p.data
    p -= 1.0  # in place, into the same device array
    assert p.data is data
    np.testing.assert_allclose(p.numpy(), host - 1, **TOL)
    p[0] = 0.0
    np.testing.assert_array_equal(p.numpy()[0], [0, 0, 0])
    assert p.data is data
    manualbp.save_safetensors(layer, tmp_path / "w.safetensors")  # from the GPU: copied to the host
    np.testing.assert_array_equal(manualbp.load_safetensors(tmp_path / "w.safetensors")["weight"], p.numpy())


def test_a_frozen_layer_on_the_gpu_keeps_its_weights():
    manualbp.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to("cuda")
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad = False
    before = model.state_dict()
    opt, loss_fn = optim.SGD(model.parameters(), lr=0.1, momentum=0.9), nn.CrossEntropyLoss()
    x, y = to_device(RNG.standard_normal((5, 3))), to_device(np.array([0, 1, 1, 0, 1]))
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
    after = model.state_dict()
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])
    np.testing.assert_array_equal(after["0.bias"], before["0.bias"])
    assert not np.array_equal(after["2.weight"], before["2.weight"])
