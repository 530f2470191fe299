"""Whole training steps with the model moved to "cuda", run by numba's CUDA simulator, against the CPU path.

Every layer, loss and the optimizer run the CUDA kernels when their arrays are device arrays: the layers call
the operations of manualbp/kernels/__init__.py, which pick the kernels from the arrays.  Here the same tiny models train one or two steps on both devices
from the same weights, and the loss, every gradient and every updated weight must agree in float32.
Collected only under NUMBA_ENABLE_CUDASIM=1 (see conftest.py).  The file name sorts before
test_cuda_sim.py, so the launch-type check there also covers the launches made here.
"""
import numpy as np
import pytest
from numba import cuda

import manualbp
from manualbp import Network, nn, optim
from manualbp.device import Uploader, is_cuda_array, to_device, to_numpy

RNG = np.random.default_rng(11)
TOL = {"rtol": 1e-4, "atol": 1e-5}


def twins(build):
    """The same model twice (same weights): one stays on the CPU, one goes to the (simulated) GPU."""
    manualbp.manual_seed(3)
    cpu_model = build()
    gpu_model = build()
    gpu_model.load_state_dict(cpu_model.state_dict())
    return cpu_model, gpu_model.to("cuda")


def train_steps(model, loss_fn, opt, batches, on_gpu):
    """Run the five lines of a step per batch; return the losses and, after the last backward, the grads."""
    losses, grads = [], {}
    for x, y in batches:
        if on_gpu:
            x, y = to_device(x), to_device(y)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        grads = {name: to_numpy(p.grad) for name, p in model.named_parameters()}
        opt.step()
        losses.append(manualbp.device.item(loss))
    return losses, grads


def compare(build, loss_fn_factory, batches, steps_opt):
    cpu_model, gpu_model = twins(build)
    results = []
    for model, on_gpu in ((cpu_model, False), (gpu_model, True)):
        opt = optim.SGD(model.parameters(), **steps_opt)
        results.append(train_steps(model, loss_fn_factory(), opt, batches, on_gpu))
    (cpu_losses, cpu_grads), (gpu_losses, gpu_grads) = results
    np.testing.assert_allclose(gpu_losses, cpu_losses, **TOL)
    for name in cpu_grads:
        np.testing.assert_allclose(gpu_grads[name], cpu_grads[name], err_msg=name, **TOL)
    for (name, p), (_, q) in zip(gpu_model.named_parameters(), cpu_model.named_parameters()):
        assert is_cuda_array(p.data) and is_cuda_array(p.grad), name
        np.testing.assert_allclose(to_numpy(p.data), q.data, err_msg=name, **TOL)
    return cpu_model, gpu_model


def test_mlp_step_with_momentum_matches_the_cpu():
    batches = [(RNG.standard_normal((4, 5)).astype(np.float32), RNG.integers(0, 3, 4))]
    _, gpu_model = compare(lambda: nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)),
                           nn.CrossEntropyLoss, batches, {"lr": 0.1, "momentum": 0.9})
    assert manualbp.device.module_device(gpu_model) == "cuda"


def test_conv_pool_flatten_linear_step_matches_the_cpu():
    batches = [(RNG.standard_normal((2, 1, 6, 6)).astype(np.float32), np.array([2, 0]))]
    compare(lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(18, 3)),
            lambda: nn.CrossEntropyLoss(reduction="sum"), batches,
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01})


def test_sigmoid_tanh_leaky_relu_and_mse_match_the_cpu():
    batches = [(RNG.standard_normal((3, 4)).astype(np.float32), RNG.standard_normal((3, 2)).astype(np.float32))]
    compare(lambda: nn.Sequential(nn.Linear(4, 2), nn.Sigmoid(), nn.Tanh(), nn.LeakyReLU(0.1)),
            nn.MSELoss, batches, {"lr": 0.2, "momentum": 0.5, "dampening": 0.1})


def test_network_fit_evaluate_predict_on_the_gpu_match_the_cpu():
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    y = RNG.integers(0, 3, 6)
    nets = []
    for device in ("cpu", "cuda"):
        manualbp.manual_seed(5)
        net = Network(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), device=device)
        history = net.fit((x, y), epochs=1, batch_size=4, seed=0, verbose=False,
                          optimizer=optim.SGD(net.parameters(), lr=0.1, momentum=0.9))
        nets.append((net, history, net.evaluate((x, y), batch_size=6), net.predict(x, batch_size=6)))
    (cpu, h_cpu, e_cpu, p_cpu), (gpu, h_gpu, e_gpu, p_gpu) = nets
    assert gpu.device == "cuda" and cpu.device == "cpu"
    np.testing.assert_allclose(h_gpu.steps, h_cpu.steps, **TOL)
    assert h_gpu["train_accuracy"] == h_cpu["train_accuracy"]
    np.testing.assert_allclose(e_gpu["loss"], e_cpu["loss"], **TOL)
    assert e_gpu["correct"] == e_cpu["correct"]
    assert isinstance(p_gpu, np.ndarray)
    np.testing.assert_allclose(p_gpu, p_cpu, **TOL)
    for name, value in gpu.state_dict().items():  # NumPy copies, wherever the model is
        assert isinstance(value, np.ndarray)
        np.testing.assert_allclose(value, cpu.state_dict()[name], **TOL)


def test_moving_back_and_forth_keeps_values_and_optimizer_state():
    model = nn.Sequential(nn.Linear(3, 2))
    before = model.state_dict()
    model.to("cuda")
    assert model[0].weight.device == "cuda"
    model.load_state_dict(before)  # loading into a model on the GPU keeps it there
    assert is_cuda_array(model[0].weight.data)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = to_device(np.ones((2, 3), np.float32)), to_device(np.array([0, 1]))
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    opt.step()
    opt.zero_grad(set_to_none=False)
    assert is_cuda_array(model[0].weight.grad) and not to_numpy(model[0].weight.grad).any()
    state = opt.state_dict()["state"]
    assert all(isinstance(b, np.ndarray) for s in state.values() for b in s.values())
    gpu_weights = to_numpy(model[0].weight.data)
    model.to("cpu")
    assert isinstance(model[0].weight.data, np.ndarray) and isinstance(model[0].weight.grad, np.ndarray)
    np.testing.assert_array_equal(model[0].weight.data, gpu_weights)
    opt.step()  # the momentum buffers follow the parameters back to the CPU
    assert isinstance(opt.state[id(model[0].weight)]["momentum_buffer"], np.ndarray)
    model.to("cuda")
    table = manualbp.summary(model, (3,), verbose=False)  # the dummy batch goes where the model is
    assert table["total_params"] == 8 and table["rows"][0]["output_shape"] == [-1, 2]


def test_mixing_devices_is_a_clear_type_error():
    model = nn.Sequential(nn.Linear(3, 2)).to("cuda")
    with pytest.raises(TypeError, match="manualbp.to_device"):
        model(np.ones((1, 3), np.float32))
    with pytest.raises(TypeError, match=r"manualbp.to_numpy|model.to\('cuda'\)"):
        nn.Linear(3, 2)(to_device(np.ones((1, 3))))
    x = to_device(np.ones((2, 3)))
    out = model(x)
    with pytest.raises(TypeError, match="grad_output"):
        model.backward(np.ones((2, 2), np.float32))
    with pytest.raises(TypeError, match="target"):
        nn.CrossEntropyLoss()(out, np.array([0, 1]))
    with pytest.raises(TypeError, match="float32"):
        nn.Linear(2, 2).double().to("cuda")
    with pytest.raises(TypeError, match="float32"):
        model.double()
    model.float()  # already float32: nothing to do on the GPU


def test_uploader_reuses_its_pinned_and_device_buffers():
    up = Uploader()
    a = up(np.arange(6, dtype=np.float64).reshape(2, 3))
    assert a.dtype == np.float32 and a.shape == (2, 3)
    np.testing.assert_array_equal(a.copy_to_host(), np.arange(6).reshape(2, 3))
    host, dev = up._host["x"], up._device["x"]
    b = up(np.ones((1, 3)))
    assert up._host["x"] is host and up._device["x"] is dev  # a smaller batch reuses the buffers
    np.testing.assert_array_equal(b.copy_to_host(), np.ones((1, 3)))
    labels = up(np.array([1, 2], dtype=np.int32), "y")
    assert labels.dtype == np.int64
    assert isinstance(cuda.pinned_array(1, dtype=np.float32), np.ndarray)


@pytest.mark.parametrize("label", [2, -1])
def test_a_class_index_out_of_range_raises_before_the_kernel(label):
    logits = to_device(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=f"target value {label} is out of range for C=2"):
        nn.CrossEntropyLoss()(logits, to_device(np.array([0, label])))
    # ignore_index is not a class: it is allowed anywhere
    loss = nn.CrossEntropyLoss(ignore_index=-1)(logits, to_device(np.array([0, -1])))
    np.testing.assert_allclose(to_numpy(loss), [np.log(2)], rtol=1e-6)
