"""Parameter reads like a tensor where a learner pokes at it, freezes with requires_grad=False, and moves
with .to() given a device string, a torch.device or anything with .type."""
import numpy as np
import pytest
import torch

import manualbp
from manualbp import nn, optim
from manualbp.device import normalize, parse_to
from manualbp.nn import Parameter


def test_tensor_like_reading():
    p = Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert p.shape == (2, 3) and p.dtype == np.float32 and p.ndim == 2 and p.dim() == 2
    assert p.numel() == 6 and p.size() == (2, 3) and p.size(1) == 3 and len(p) == 2
    np.testing.assert_array_equal(p[0], [0, 1, 2])
    assert p[1, 2] == 5
    a = np.asarray(p)
    assert a is p.data and p.numpy() is p.data and p.detach() is p.data  # the values themselves, no copy
    assert np.asarray(p, dtype=np.float64).dtype == np.float64
    assert not np.shares_memory(np.array(p, copy=True), p.data)
    assert p.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert Parameter(np.array([2.5])).item() == 2.5
    assert [row.tolist() for row in p] == [[0, 1, 2], [3, 4, 5]]
    assert torch.as_tensor(np.asarray(p)).shape == (2, 3)


def test_arithmetic_returns_numpy_arrays_of_the_values():
    p = Parameter(np.array([1.0, 2.0], np.float32))
    q = Parameter(np.array([3.0, 5.0], np.float32))
    for value, want in ((p * 2, [2, 4]), (2 * p, [2, 4]), (p + p, [2, 4]), (p - q, [-2, -3]), (1 - p, [0, -1]),
                        (p / 2, [0.5, 1]), (4 / p, [4, 2]), (p ** 2, [1, 4]), (-p, [-1, -2]), (abs(-p), [1, 2]),
                        (p @ q, 13), (p + np.ones(2, np.float32), [2, 3]), (p * torch.ones(2), [1, 2])):
        assert isinstance(value, (np.ndarray, np.generic)), type(value)
        np.testing.assert_array_equal(value, want)
    assert (p * 2).dtype == np.float32  # a Python number keeps the parameter's dtype
    data = p.data
    p -= 0.5 * q.numpy()  # in place, as `with torch.no_grad(): p -= lr * p.grad`
    assert isinstance(p, Parameter) and p.data is data
    np.testing.assert_array_equal(p.numpy(), [-0.5, -0.5])
    p *= 2
    p += torch.ones(2)
    p /= 2
    np.testing.assert_array_equal(p.numpy(), [0.0, 0.0])
    p[1] = 7.0
    assert p.data is data and p.numpy()[1] == 7


def test_repr_says_parameter_containing():
    p = Parameter(np.array([1.0, 2.0], np.float32))
    assert repr(p) == "Parameter containing:\narray([1., 2.], dtype=float32)"
    p.requires_grad = False
    assert repr(p).endswith(", requires_grad=False)")
    assert bool(p) and bool(Parameter(np.float32(0.0)))  # a Parameter is always there


def test_requires_grad_is_a_bool():
    p = Parameter(np.ones(2))
    assert p.requires_grad is True and p.requires_grad_(False) is p and p.requires_grad is False
    with pytest.raises(TypeError, match="bool"):
        p.requires_grad = "no"
    assert Parameter(np.ones(2), requires_grad=False).requires_grad is False


def test_parameter_from_a_tensor_copies_it():
    t = torch.ones(3, requires_grad=True)
    p = Parameter(t)
    assert isinstance(p.data, np.ndarray) and p.dtype == np.float32
    t.data += 1
    np.testing.assert_array_equal(p.numpy(), [1, 1, 1])


def test_a_frozen_layer_keeps_its_weights_while_the_others_train():
    manualbp.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    for p in model[0].parameters():
        p.requires_grad = False
    before = model.state_dict()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8)
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        assert model[0].weight.grad is None and model[2].weight.grad is not None  # nothing accumulated
        opt.step()
    after = model.state_dict()
    for name in ("0.weight", "0.bias"):
        np.testing.assert_array_equal(after[name], before[name])
    for name in ("2.weight", "2.bias"):
        assert not np.array_equal(after[name], before[name]), name


def test_sgd_skips_a_parameter_frozen_after_it_got_a_gradient():
    p = Parameter(np.ones(3))
    p.grad = np.ones(3)
    p.requires_grad = False
    optim.SGD([p], lr=0.5).step()
    np.testing.assert_array_equal(p.numpy(), [1, 1, 1])
    p.requires_grad = True
    optim.SGD([p], lr=0.5).step()
    np.testing.assert_array_equal(p.numpy(), [0.5, 0.5, 0.5])


class FakeDevice:
    """Anything with .type (and .index) names a device, as torch.device does."""

    def __init__(self, type, index=None):
        self.type, self.index = type, index


def test_devices_from_strings_torch_devices_and_type_objects():
    for device in ("cpu", "CPU", "cpu:0", torch.device("cpu"), FakeDevice("cpu"), FakeDevice("cpu", 0)):
        assert normalize(device) == "cpu", device
    for device in ("cuda", "cuda:0", "gpu", torch.device("cuda"), torch.device("cuda:0"), FakeDevice("cuda", 0)):
        assert normalize(device) == "cuda", device
    for bad in (torch.device("cuda:1"), FakeDevice("cuda", 2), "cuda:1"):
        with pytest.raises(ValueError, match="current CUDA device only"):
            normalize(bad)
    for bad in (torch.device("meta"), FakeDevice("tpu"), "mps"):
        with pytest.raises(ValueError, match="expected 'cpu' or 'cuda'"):
            normalize(bad)
    with pytest.raises(TypeError, match="device string"):
        normalize(0)


def test_to_takes_devices_and_dtypes_as_torch_does():
    assert parse_to((torch.device("cpu"),), {}, "to") == ("cpu", None)
    assert parse_to(("cpu", torch.float64), {}, "to") == ("cpu", np.float64)
    assert parse_to((np.float32,), {"non_blocking": True}, "to") == (None, np.float32)
    assert parse_to((), {"device": FakeDevice("cpu"), "dtype": np.dtype("float64")}, "to") == ("cpu", np.float64)
    with pytest.raises(TypeError, match="float32 or float64"):
        parse_to((torch.int64,), {}, "to")
    with pytest.raises(TypeError, match="unexpected keyword"):
        parse_to((), {"copy": True}, "to")

    model = nn.Sequential(nn.Linear(3, 2))
    assert model.to(torch.device("cpu")) is model and model.cpu() is model
    assert model.to(FakeDevice("cpu")) is model and model[0].weight.device == "cpu"
    assert model.to(torch.float64) is model and model[0].weight.dtype == np.float64
    model.to("cpu", np.float32)
    assert model[0].weight.dtype == np.float32 and isinstance(model[0].weight.data, np.ndarray)
    p = Parameter(np.ones(2, np.float32))
    assert p.to(torch.device("cpu")) is p and p.to(dtype=torch.float64).dtype == np.float64
    with pytest.raises(ValueError, match="device"):
        model.to(torch.device("cuda:1"))


def test_cuda_is_available_is_false_here():
    if manualbp.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert manualbp.cuda.device_count() == 0
    with pytest.raises(RuntimeError, match="no CUDA GPU found"):
        nn.Linear(2, 2).cuda()
    with pytest.raises(RuntimeError, match="no CUDA GPU found"):
        nn.Linear(2, 2).to(torch.device("cuda"))
