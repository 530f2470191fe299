"""SGD against torch.optim.SGD, step for step, for every combination of its options."""
import itertools

import numpy as np
import pytest
import torch

import manualbp
from manualbp import nn, optim


def small_conv_net(lib):
    return lib.Sequential(lib.Conv2d(2, 3, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2), lib.Flatten(),
                          lib.Linear(3 * 2 * 2, 4), lib.Tanh(), lib.Linear(4, 3))


COMBOS = [{"momentum": m, "dampening": d, "nesterov": n, "weight_decay": wd}
          for m, d, n, wd in itertools.product([0.0, 0.9], [0.0, 0.3], [False, True], [0.0, 0.01])
          if not (n and (m == 0 or d != 0))]


@pytest.mark.parametrize("opts", COMBOS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_ten_steps_match_torch(opts):
    torch.manual_seed(0)
    theirs = small_conv_net(torch.nn).double()
    ours = small_conv_net(nn).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1, **opts)
    opt_o = optim.SGD(ours.parameters(), lr=0.1, **opts)
    loss_t, loss_o = torch.nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = rng.standard_normal((5, 2, 4, 4))
        y = rng.integers(0, 3, 5)
        opt_t.zero_grad()
        loss_t(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        opt_t.step()
        opt_o.zero_grad()
        loss_o(ours(x), y)
        ours.backward(loss_o.backward())
        opt_o.step()
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((3, 2)) for _ in range(6)]

    def run(split):
        manualbp.manual_seed(0)
        p = nn.Parameter(np.ones((3, 2)))
        opt = optim.SGD([p], lr=0.05, momentum=0.9, nesterov=True)
        for i, g in enumerate(grads):
            if i == split:
                saved = opt.state_dict()
                opt = optim.SGD([p], lr=0.05, momentum=0.9, nesterov=True)
                opt.load_state_dict(saved)
            p.grad = g.copy()
            opt.step()
        return p.data

    np.testing.assert_array_equal(run(split=3), run(split=-1))


def test_lr_zero_is_torchs_a_step_that_moves_nothing_but_the_momentum_buffer():
    """torch takes lr=0 (a cosine schedule's last rate, CosineAnnealingLR's eta_min): the weights stay, the
    momentum buffer still takes in the gradient; and a state_dict holding lr 0 loads (a resumed run)."""
    p_t = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    p_o = nn.Parameter(np.ones(3))
    opt_t = torch.optim.SGD([p_t], lr=0.0, momentum=0.9, weight_decay=0.1)
    opt_o = optim.SGD([p_o], lr=0.0, momentum=0.9, weight_decay=0.1)
    for g in ([1.0, -2.0, 0.5], [0.25, 1.0, -1.0]):
        p_t.grad = torch.tensor(g, dtype=torch.float64)
        p_o.grad = np.array(g)
        opt_t.step()
        opt_o.step()
    np.testing.assert_array_equal(p_o.data, np.ones(3))
    np.testing.assert_array_equal(p_o.data, p_t.detach().numpy())
    np.testing.assert_allclose(opt_o.state[id(p_o)]["momentum_buffer"], opt_t.state[p_t]["momentum_buffer"],
                               rtol=1e-15)
    again = optim.SGD([p_o], lr=0.1, momentum=0.9, weight_decay=0.1)
    again.load_state_dict(opt_o.state_dict())
    assert again.param_groups[0]["lr"] == 0.0


def test_tutorial_momentum_form_agrees_at_constant_lr():
    """v = a v + lr g; theta -= v  equals torch's buffer form when lr is constant (and dampening 0)."""
    rng = np.random.default_rng(2)
    p = nn.Parameter(np.zeros(4))
    opt = optim.SGD([p], lr=0.01, momentum=0.9)
    theta, v = np.zeros(4), np.zeros(4)
    for _ in range(20):
        g = rng.standard_normal(4)
        p.grad = g.copy()
        opt.step()
        v = 0.9 * v + 0.01 * g
        theta -= v
    np.testing.assert_allclose(p.data, theta, rtol=1e-12, atol=1e-15)


def test_zero_grad_sets_none_and_params_without_grad_are_skipped():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.SGD([a, b], lr=1.0)
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(a.data, 0)
    np.testing.assert_array_equal(b.data, 1)
    opt.zero_grad()
    assert a.grad is None


def test_param_groups_override_defaults():
    a, b = nn.Parameter(np.ones(1)), nn.Parameter(np.ones(1))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad, b.grad = np.ones(1), np.ones(1)
    opt.step()
    assert a.data[0] == pytest.approx(0.9) and b.data[0] == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs,match", [
    ({"lr": -0.1}, "lr >= 0"),
    ({"lr": -1e-300}, "lr >= 0"),
    ({"lr": 0.1, "momentum": -0.5}, "momentum"),
    ({"lr": 0.1, "momentum": 1.0}, "momentum"),
    ({"lr": 0.1, "nesterov": True}, "Nesterov"),
    ({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, "Nesterov"),
    ({"lr": 0.1, "weight_decay": -1}, "weight_decay"),
    ({"lr": float("nan")}, "lr"),
])
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optim.SGD([nn.Parameter(np.ones(1))], **kwargs)


def test_bad_parameter_lists():
    p = nn.Parameter(np.ones(1))
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Parameter"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="expected Parameters"):
        optim.SGD([np.ones(2)], lr=0.1)
