"""Torch tensors (and anything with __array__ / __dlpack__) go in wherever NumPy arrays do, and give the
same results: layers' forward and backward, losses' inputs and targets, load_state_dict, Network,
to_device.  What comes back is NumPy.  torch is imported here only: the package never imports it."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import manualbp
from manualbp import Network, nn, optim
from manualbp.device import as_array, host_array

RNG = np.random.default_rng(7)


def variants(a):
    """The same values as torch tensors of four kinds (and the NumPy array itself)."""
    t = torch.from_numpy(np.array(a))
    wide = torch.from_numpy(np.repeat(a, 2, axis=-1))[..., ::2]  # non-contiguous: every other column
    assert not wide.is_contiguous() and np.array_equal(wide.numpy(), a)
    grad = t.clone().requires_grad_(True) if t.is_floating_point() else t  # integers cannot require grad
    return {"numpy": a, "tensor": t, "requires_grad": grad, "non_contiguous": wide}


KINDS = ["numpy", "tensor", "requires_grad", "non_contiguous"]


def run_layer(layer, x, g):
    out = layer(x)
    return np.array(out), np.array(layer.backward(g))


def layer_cases(dtype):
    manualbp.manual_seed(1)
    cases = [
        (nn.Linear(5, 3), (4, 5), (4, 3)),
        (nn.Conv2d(2, 3, 3, padding=1), (2, 2, 5, 6), (2, 3, 5, 6)),
        (nn.MaxPool2d(2), (2, 3, 4, 6), (2, 3, 2, 3)),
        (nn.ReLU(), (3, 4), (3, 4)),
    ]
    return [(layer.to(dtype) if dtype == np.float64 else layer, xs, gs) for layer, xs, gs in cases]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS[1:])
def test_layers_take_tensors_and_give_what_numpy_gives(dtype, kind):
    for layer, x_shape, g_shape in layer_cases(dtype):
        x = RNG.standard_normal(x_shape).astype(dtype)
        g = RNG.standard_normal(g_shape).astype(dtype)
        want_out, want_grad = run_layer(layer, x, g)
        out, grad = run_layer(layer, variants(x)[kind], variants(g)[kind])
        assert isinstance(layer(variants(x)[kind]), np.ndarray)  # what comes back is NumPy
        np.testing.assert_array_equal(out, want_out, err_msg=f"{layer} forward, {kind}")
        np.testing.assert_array_equal(grad, want_grad, err_msg=f"{layer} backward, {kind}")


def test_float64_gradients_match_torch_autograd_with_tensor_inputs(assert_close):
    manualbp.manual_seed(2)
    ours = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3)).double()
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                 torch.nn.Flatten(), torch.nn.Linear(16, 3)).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 1])
    out = theirs(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(ours(x), y.numpy())  # x: a tensor that requires grad, read through .detach()
    grad_x = ours.backward(loss_fn.backward())
    assert_close(loss, torch.nn.functional.cross_entropy(out, y), 1e-12, "loss")
    assert_close(grad_x, x.grad, 1e-10, "dL/dx")
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_close(p.grad, q.grad, 1e-10, name)


def test_tensors_are_read_without_a_copy():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = as_array(t)
    assert isinstance(a, np.ndarray) and np.shares_memory(a, t.numpy())
    g = torch.ones(3, requires_grad=True)
    assert np.shares_memory(as_array(g), g.detach().numpy())
    layer = nn.ReLU()
    layer(t)
    assert np.shares_memory(layer._x, t.numpy())  # float_array kept the tensor's memory
    for plain in (np.ones(2), [1.0], 3.0, None, np.float32(2)):
        assert as_array(plain) is plain  # arrays, and what the caller refuses or accepts itself


def test_array_and_dlpack_protocol_objects_are_accepted():
    x = RNG.standard_normal((2, 5)).astype(np.float32)

    class ArrayOnly:
        def __array__(self, dtype=None, copy=None):
            return x

    class DLPackOnly:
        def __dlpack__(self, **kwargs):
            return x.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return x.__dlpack_device__()

    layer = nn.Linear(5, 2)
    want = layer(x)
    np.testing.assert_array_equal(layer(ArrayOnly()), want)
    np.testing.assert_array_equal(layer(DLPackOnly()), want)


def test_a_cuda_array_without_a_gpu_says_what_is_missing():
    if manualbp.cuda.is_available():
        pytest.skip("this machine has a GPU")

    class OnTheGpu:  # what a torch CUDA tensor offers
        @property
        def __cuda_array_interface__(self):
            return {"shape": (1, 2), "typestr": "<f4", "data": (0, False), "version": 3}

    with pytest.raises(RuntimeError, match="no CUDA GPU found by numba.cuda"):
        nn.Linear(2, 2)(OnTheGpu())


@pytest.mark.parametrize("loss_fn, x, target", [
    (nn.MSELoss(), RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))),
    (nn.L1Loss(reduction="sum"), RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))),
    (nn.BCELoss(), RNG.uniform(0.1, 0.9, (4, 3)), RNG.uniform(0, 1, (4, 3))),
    (nn.BCEWithLogitsLoss(), RNG.standard_normal((4, 3)), RNG.uniform(0, 1, (4, 3))),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS[1:])
def test_losses_take_tensor_inputs_and_float_targets(loss_fn, x, target, dtype, kind):
    x, target = x.astype(dtype), target.astype(dtype)
    want = loss_fn(x, target)
    want_grad = loss_fn.backward()
    got = loss_fn(variants(x)[kind], variants(target)[kind])
    assert isinstance(got, np.generic) and got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loss_fn.backward(), want_grad)


@pytest.mark.parametrize("kind", KINDS[1:])
def test_nll_loss_takes_tensor_inputs(kind):
    x = RNG.standard_normal((5, 4))
    y = np.array([0, 3, 1, 1, 2])
    loss_fn = nn.NLLLoss()
    want, want_grad = loss_fn(x, y), loss_fn.backward()
    np.testing.assert_array_equal(loss_fn(variants(x)[kind], y), want)
    np.testing.assert_array_equal(loss_fn.backward(), want_grad)


@pytest.mark.parametrize("kind", KINDS[1:])
def test_class_losses_take_tensor_inputs_and_targets(kind):
    x = RNG.standard_normal((5, 4))
    y = np.array([0, 3, 1, 1, 2])
    probs = RNG.dirichlet(np.ones(4), 5)
    for loss_fn, target in ((nn.CrossEntropyLoss(), y), (nn.CrossEntropyLoss(label_smoothing=0.1), y),
                            (nn.CrossEntropyLoss(), probs), (nn.NLLLoss(), y)):
        want, want_grad = loss_fn(x, target), loss_fn.backward()
        np.testing.assert_array_equal(loss_fn(variants(x)[kind], variants(target)[kind]), want)
        np.testing.assert_array_equal(loss_fn.backward(), want_grad)


def test_losses_give_numpy_scalars_that_read_like_torch_losses(capsys):
    loss = nn.MSELoss()(np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 2.0, 5.0], np.float32))
    assert isinstance(loss, np.float32)
    assert abs(loss.item() - 4 / 3) < 1e-6 and abs(float(loss) - 4 / 3) < 1e-6
    print(loss)
    assert capsys.readouterr().out.strip().startswith("1.333")


def test_bad_inputs_keep_clear_errors():
    layer = nn.Linear(4, 2)
    with pytest.raises(TypeError, match=r"Linear: expected input to be a numpy array, a torch tensor .*got list"):
        layer([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        layer(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="float32 or float64, got float16"):
        layer(torch.zeros(3, 4, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"Linear: cannot read input \(Tensor\) as an array"):
        layer(torch.zeros(3, 4, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="dtype float32 .*got float64"):
        layer(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"last dimension 4.*\(3, 5\)"):
        layer(torch.zeros(3, 5))
    with pytest.raises(TypeError, match="MSELoss: expected target to be a numpy array, a torch tensor"):
        nn.MSELoss()(np.zeros(3, np.float32), [0.0, 0.0, 0.0])


def lenet_pair():
    manualbp.manual_seed(4)
    ours = manualbp.models.lenet5()
    torch.manual_seed(4)
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 5), torch.nn.MaxPool2d(2, 2), torch.nn.Conv2d(6, 16, 5), torch.nn.MaxPool2d(2, 2),
        torch.nn.Flatten(), torch.nn.Linear(400, 120), torch.nn.Linear(120, 84), torch.nn.Linear(84, 10))
    return ours, theirs


def test_load_state_dict_takes_a_torch_state_dict_as_it_is(assert_close):
    ours, theirs = lenet_pair()
    result = ours.load_state_dict(theirs.state_dict())  # tensors, not .numpy()
    assert result == ([], []) and result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = theirs(x)
    assert_close(ours(x), want, 1e-5, "LeNet-5 forward")
    for name, p in theirs.named_parameters():  # tensors that require grad load too
        assert p.requires_grad
        np.testing.assert_array_equal(ours.state_dict()[name], p.detach().numpy())


def test_load_state_dict_is_strict_as_torch_about_buffers_we_lack():
    ours = nn.Sequential(nn.Linear(3, 4))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    before = ours.state_dict()
    with pytest.raises(ValueError, match=r"unexpected keys \['1.weight', '1.bias', '1.running_mean'"):
        ours.load_state_dict(theirs.state_dict())
    np.testing.assert_array_equal(ours.state_dict()["0.weight"], before["0.weight"])  # nothing loaded
    missing, unexpected = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert missing == [] and "1.num_batches_tracked" in unexpected
    np.testing.assert_array_equal(ours.state_dict()["0.weight"], theirs[0].weight.detach().numpy())
    with pytest.raises(ValueError, match=r"'0.weight' expected shape \(4, 3\), got \(4, 5\)"):
        ours.load_state_dict(torch.nn.Sequential(torch.nn.Linear(5, 4)).state_dict())


def test_network_fit_evaluate_predict_take_tensors():
    manualbp.manual_seed(5)
    x = torch.randn(40, 4)
    y = torch.randint(0, 3, (40,))
    net = Network(nn.Linear(4, 3))
    before = net.state_dict()["weight"].copy()
    history = net.fit((x, y), epochs=1, batch_size=8, verbose=False)
    assert len(history["loss"]) == 1 and not np.array_equal(net.state_dict()["weight"], before)
    result = net.evaluate((x.requires_grad_(True), y))
    assert result["total"] == 40
    out = net.predict(x)
    assert isinstance(out, np.ndarray) and out.shape == (40, 3)
    np.testing.assert_allclose(out, net.predict(x.detach().numpy()), rtol=0, atol=0)


def test_to_device_and_to_numpy_on_the_cpu_take_tensors():
    t = torch.arange(6.0).reshape(2, 3).requires_grad_(True)
    for a in (manualbp.to_device(t, "cpu"), manualbp.to_numpy(t), host_array(t)):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, t.detach().numpy())


def test_a_step_with_tensors_updates_like_a_step_with_arrays():
    manualbp.manual_seed(6)
    a, b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), nn.Sequential(
        nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    b.load_state_dict(a.state_dict())
    x = RNG.standard_normal((6, 3)).astype(np.float32)
    y = RNG.standard_normal((6, 2)).astype(np.float32)
    for model, xb, yb in ((a, x, y), (b, torch.from_numpy(x), torch.from_numpy(y))):
        opt, loss_fn = optim.SGD(model.parameters(), lr=0.1, momentum=0.9), nn.MSELoss()
        for _ in range(2):
            opt.zero_grad()
            loss_fn(model(xb), yb)
            model.backward(loss_fn.backward())
            opt.step()
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_the_package_never_imports_torch():
    code = ("import sys, numpy as np, manualbp\n"
            "from manualbp import nn\n"
            "nn.Linear(2, 2)(np.ones((1, 2), np.float32))\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'numba.cuda' not in sys.modules, 'numba.cuda imported'\n"
            "assert manualbp.cuda.is_available() in (True, False)\n")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
