"""Module bookkeeping: registration, names, state_dict, modes, dtypes, zero_grad."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import manualbp
from manualbp import nn


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4, bias=False)
        self.act = nn.Sigmoid()
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))

    def backward(self, g):
        return self.fc1.backward(self.act.backward(self.fc2.backward(g)))


def test_named_parameters_use_torch_keys_and_shapes():
    ours = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2, bias=False)))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
                                 torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False)))
    assert [(k, tuple(p.shape)) for k, p in ours.named_parameters()] == \
        [(k, tuple(p.shape)) for k, p in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_custom_module_registers_children_and_parameters():
    m = TwoLayer()
    assert [k for k, _ in m.named_parameters()] == ["fc1.weight", "fc2.weight", "fc2.bias"]
    assert len(list(m.parameters())) == 3
    assert [k for k, _ in m.named_children()] == ["fc1", "act", "fc2"]


def test_load_state_dict_from_torch_and_strictness():
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    ours = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert ours[0].weight.dtype == np.float32

    before = ours.state_dict()
    bad = {k: v.numpy() for k, v in theirs.state_dict().items()}
    bad["2.weight"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"'2.weight' expected shape \(2, 4\), got \(3, 4\)"):
        ours.load_state_dict(bad)
    for k, v in ours.state_dict().items():  # nothing half-loaded
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match=r"missing keys \['2.bias'\]"):
        ours.load_state_dict({k: v for k, v in before.items() if k != "2.bias"})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        ours.load_state_dict({**before, "extra": np.zeros(1)})
    ours.load_state_dict({k: v for k, v in before.items() if k != "2.bias"}, strict=False)


def test_state_dict_is_a_copy():
    m = nn.Linear(2, 2)
    sd = m.state_dict()
    sd["weight"][...] = 99
    assert not np.any(m.weight.data == 99)


def test_train_eval_float_double():
    m = TwoLayer()
    assert m.training and m.fc1.training
    m.eval()
    assert not m.training and not m.fc2.training
    m.train()
    assert m.act.training
    m.double()
    assert all(p.dtype == np.float64 for p in m.parameters())
    m.float()
    assert all(p.dtype == np.float32 for p in m.parameters())


def test_grad_lifecycle_like_torch():
    m = TwoLayer()
    x = np.ones((2, 3), np.float32)
    assert all(p.grad is None for p in m.parameters())
    m(x)
    m.backward(np.ones((2, 2), np.float32))
    first = m.fc2.weight.grad.copy()
    m(x)
    m.backward(np.ones((2, 2), np.float32))
    np.testing.assert_allclose(m.fc2.weight.grad, 2 * first, rtol=1e-6)  # accumulated
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_sequential_indexing_and_iteration():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)]
    s = nn.Sequential(*layers)
    assert len(s) == 3 and s[0] is layers[0] and s[-1] is layers[2]
    assert list(s) == layers
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and len(sub) == 2 and sub[0] is layers[1]
    named = nn.Sequential(OrderedDict(first=nn.Linear(2, 2), act=nn.ReLU()))
    assert [k for k, _ in named.named_parameters()] == ["first.weight", "first.bias"]
    with pytest.raises(TypeError, match="Sequential expected Module"):
        nn.Sequential(nn.ReLU(), "relu")


def test_module_without_init_gets_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match="Module.__init__"):
        Broken()


def test_default_init_follows_torch_bounds():
    manualbp.manual_seed(0)
    layer = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    w, b = layer.weight.data, layer.bias.data
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # U(-a, a) has standard deviation a / sqrt(3)
    assert abs(w.std() - bound / np.sqrt(3)) < 0.02 * bound


def test_manual_seed_makes_init_reproducible():
    manualbp.manual_seed(123)
    a = nn.Linear(5, 5).weight.data.copy()
    manualbp.manual_seed(123)
    b = nn.Linear(5, 5).weight.data.copy()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError):
        manualbp.manual_seed(1.5)


def test_set_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="numba"):
        manualbp.set_backend("torch")


@pytest.mark.parametrize("first", ["conv", "linear", "relu-then-conv", "custom-then-linear", "nested"])
def test_backward_without_input_grad_keeps_every_parameter_gradient(first):
    """Sequential.backward(g, input_grad=False) returns None, skips the first parametrised layer's
    dL/dx, and leaves every parameter's .grad exactly as the full backward does (what train_step uses)."""
    def build():
        manualbp.manual_seed(3)
        head = {"conv": [nn.Conv2d(2, 3, 3)],
                "linear": [nn.Flatten(), nn.Linear(2 * 5 * 5, 27)],
                "relu-then-conv": [nn.ReLU(), nn.Conv2d(2, 3, 3)],
                "custom-then-linear": [nn.Flatten(), nn.Linear(50, 3 * 9), nn.ReLU()],
                "nested": [nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU())]}[first]
        return nn.Sequential(*head, nn.Flatten(), nn.Linear(27, 4), nn.Tanh(), nn.Linear(4, 2))

    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float64)
    full, part = build().double(), build().double()
    g = np.ones((2, 2))
    full(x)
    gx = full.backward(g)
    assert gx.shape == x.shape
    part(x)
    assert part.backward(g, input_grad=False) is None
    for (name, a), (_, b) in zip(full.named_parameters(), part.named_parameters()):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)


def test_layer_backward_without_input_grad_returns_none():
    conv, lin = nn.Conv2d(1, 2, 3), nn.Linear(3, 2)
    conv(np.ones((1, 1, 4, 4), np.float32))
    lin(np.ones((2, 3), np.float32))
    assert conv.backward(np.ones((1, 2, 2, 2), np.float32), input_grad=False) is None
    assert lin.backward(np.ones((2, 2), np.float32), input_grad=False) is None
    assert conv.weight.grad is not None and lin.weight.grad is not None and lin.bias.grad is not None
