"""Adam, AdamW, RMSprop and Adagrad against torch.optim, step for step, for every option; their kernels against
the NumPy twins bit for bit; state_dicts that load both ways; parameter groups; skipped parameters."""
import numpy as np
import pytest
import torch

import manualbp
from manualbp import nn, optim
from manualbp.kernels import cpu, reference


def small_conv_net(lib):
    return lib.Sequential(lib.Conv2d(2, 3, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2), lib.Flatten(),
                          lib.Linear(3 * 2 * 2, 4), lib.Tanh(), lib.Linear(4, 3))


CASES = [
    ("Adam", {}), ("Adam", {"weight_decay": 0.1}), ("Adam", {"amsgrad": True, "betas": (0.8, 0.99)}),
    ("Adam", {"betas": (0.3, 0.6), "eps": 1e-3, "weight_decay": 0.05, "amsgrad": True}),  # lerp's other branch
    ("Adam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {}), ("AdamW", {"weight_decay": 0.3, "amsgrad": True}), ("AdamW", {"betas": (0.0, 0.5)}),
    ("RMSprop", {}), ("RMSprop", {"centered": True}), ("RMSprop", {"momentum": 0.9, "weight_decay": 0.01}),
    ("RMSprop", {"alpha": 0.3, "centered": True, "momentum": 0.5, "eps": 1e-4}),
    ("Adagrad", {}), ("Adagrad", {"lr_decay": 0.1, "weight_decay": 0.05}),
    ("Adagrad", {"initial_accumulator_value": 0.5, "eps": 1e-6}),
]


def ids(case):
    return case[0] + "-" + "-".join(f"{k}={v}" for k, v in case[1].items())


def run_both(name, opts, steps=10, lr=0.05, make=None, backend="numba"):
    """The same net trained by torch and by us for ``steps`` steps; returns (ours, theirs, opt_o, opt_t)."""
    torch.manual_seed(0)
    theirs = small_conv_net(torch.nn).double()
    ours = small_conv_net(nn).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    make = make or (lambda lib, model: getattr(lib, name)(model.parameters(), lr=lr, **opts))
    opt_t, opt_o = make(torch.optim, theirs), make(optim, ours)
    loss_t, loss_o = torch.nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    manualbp.set_backend(backend)
    try:
        for _ in range(steps):
            x, y = rng.standard_normal((5, 2, 4, 4)), rng.integers(0, 3, 5)
            opt_t.zero_grad()
            loss_t(theirs(torch.tensor(x)), torch.tensor(y)).backward()
            opt_t.step()
            opt_o.zero_grad()
            loss_o(ours(x), y)
            ours.backward(loss_o.backward())
            opt_o.step()
    finally:
        manualbp.set_backend("numba")
    return ours, theirs, opt_o, opt_t


def assert_same_weights(ours, theirs, rtol=1e-12):
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        np.testing.assert_allclose(a, b.numpy(), rtol=rtol, atol=rtol * 1e-2, err_msg=k)


def assert_same_state(opt_o, opt_t, rtol=1e-12):
    sd_o, sd_t = opt_o.state_dict(), opt_t.state_dict()
    assert sd_o["state"].keys() == sd_t["state"].keys()
    for i, s_t in sd_t["state"].items():
        assert list(sd_o["state"][i]) == list(s_t), i  # torch's keys, in torch's order
        for key, value in s_t.items():
            np.testing.assert_allclose(sd_o["state"][i][key], value.numpy(), rtol=rtol, atol=rtol * 1e-2, err_msg=key)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_twenty_steps_on_the_same_gradients_match_torch(case, backend):
    """The update alone: both optimizers are given the same gradients, 1e-12 relative after 20 steps."""
    name, opts = case
    rng = np.random.default_rng(5)
    values = [rng.standard_normal(shape) for shape in [(3, 4), (5,), (2, 1, 3, 3), (1,)]]
    ours = [nn.Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    opt_o = getattr(optim, name)(ours, lr=0.05, **opts)
    opt_t = getattr(torch.optim, name)(theirs, lr=0.05, **opts)
    manualbp.set_backend(backend)
    try:
        for _ in range(20):
            for p, tp in zip(ours, theirs):
                g = rng.standard_normal(p.shape)
                p.grad, tp.grad = g, torch.tensor(g)
            opt_o.step()
            opt_t.step()
    finally:
        manualbp.set_backend("numba")
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert_same_state(opt_o, opt_t)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_ten_steps_of_a_conv_net_match_torch(case):
    """Training a net: the gradients themselves differ from torch's in the last bits, and an adaptive step
    divides a tiny gradient by a tiny root-mean-square, so the tolerance is SGD's test's (1e-9)."""
    ours, theirs, opt_o, opt_t = run_both(*case)
    assert_same_weights(ours, theirs, rtol=1e-9)
    assert_same_state(opt_o, opt_t, rtol=1e-9)


def test_param_groups_with_their_own_options_match_torch():
    def make(lib, model):
        ps = list(model.parameters())
        return lib.Adam([{"params": ps[:2], "lr": 0.1, "betas": (0.5, 0.9), "amsgrad": True},
                         {"params": ps[2:4], "weight_decay": 0.2},
                         {"params": ps[4:]}], lr=0.01)
    ours, theirs, opt_o, opt_t = run_both("Adam", {}, make=make)
    assert_same_weights(ours, theirs, rtol=1e-9)
    assert_same_state(opt_o, opt_t, rtol=1e-9)
    assert [g["lr"] for g in opt_o.param_groups] == [0.1, 0.01, 0.01]
    assert [g["betas"] for g in opt_o.param_groups] == [(0.5, 0.9), (0.9, 0.999), (0.9, 0.999)]


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop", "Adagrad"])
def test_param_groups_have_torchs_keys(name):
    p, tp = nn.Parameter(np.ones(2)), torch.nn.Parameter(torch.ones(2))
    ours, theirs = getattr(optim, name)([p]), getattr(torch.optim, name)([tp])
    assert set(ours.param_groups[0]) == set(theirs.param_groups[0])
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]


@pytest.mark.parametrize("case", [CASES[3], CASES[6], CASES[11], CASES[13]], ids=ids)
def test_torchs_state_dict_loads_into_ours_and_ours_into_torchs(case):
    """Five steps by torch, its state_dict (tensors) loaded here, five more steps on both sides: the same
    weights as ten steps of torch; and ours, as tensors, loaded into a fresh torch optimizer, the same."""
    name, opts = case
    ours, theirs, opt_o, opt_t = run_both(name, opts, steps=5)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    fresh_o = getattr(optim, name)(ours.parameters(), lr=0.05, **opts)
    fresh_o.load_state_dict(opt_t.state_dict())
    assert_same_state(fresh_o, opt_t, rtol=0)
    fresh_t = getattr(torch.optim, name)(theirs.parameters(), lr=0.05, **opts)
    sd = opt_o.state_dict()
    fresh_t.load_state_dict({"state": {i: {k: torch.as_tensor(v) for k, v in s.items()}
                                       for i, s in sd["state"].items()}, "param_groups": sd["param_groups"]})
    assert_same_state(opt_o, fresh_t, rtol=0)
    assert fresh_t.state_dict()["state"][0]["step"].dtype == torch.float32


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "Adagrad"])
def test_state_dict_round_trip_continues_bit_for_bit(name):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((3, 2)) for _ in range(6)]

    def run(split):
        p = nn.Parameter(np.ones((3, 2)))
        opt = getattr(optim, name)([p], lr=0.05)
        for i, g in enumerate(grads):
            if i == split:
                saved = opt.state_dict()
                opt = getattr(optim, name)([p], lr=0.05)
                opt.load_state_dict(saved)
            p.grad = g.copy()
            opt.step()
        return p.data

    np.testing.assert_array_equal(run(split=3), run(split=-1))


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop", "Adagrad"])
def test_frozen_parameters_and_missing_gradients_are_skipped(name):
    a, b, c = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    c.requires_grad = False
    opt = getattr(optim, name)([a, b, c], lr=0.1)
    a.grad, c.grad = np.ones(2), np.ones(2)
    opt.step()
    assert (a.data < 1).all()
    np.testing.assert_array_equal(b.data, 1)
    np.testing.assert_array_equal(c.data, 1)
    steps = {i: float(s["step"]) for i, s in opt.state_dict()["state"].items()}
    assert steps == ({0: 1.0, 1: 0.0, 2: 0.0} if name == "Adagrad" else {0: 1.0})  # Adagrad's state is made up front


def test_float32_parameters_stay_float32_and_follow_torch():
    ours32 = small_conv_net(nn)
    torch.manual_seed(0)
    theirs32 = small_conv_net(torch.nn)
    ours32.load_state_dict({k: v.numpy() for k, v in theirs32.state_dict().items()})
    opt_o, opt_t = optim.Adam(ours32.parameters(), lr=0.01), torch.optim.Adam(theirs32.parameters(), lr=0.01)
    rng = np.random.default_rng(3)
    for _ in range(5):
        for p, tp in zip(ours32.parameters(), theirs32.parameters()):
            g = rng.standard_normal(p.shape).astype(np.float32)
            p.grad, tp.grad = g, torch.tensor(g)
        opt_o.step()
        opt_t.step()
    for p, tp in zip(ours32.parameters(), theirs32.parameters()):
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_closure_is_called_and_its_loss_returned():
    p = nn.Parameter(np.ones(2))
    p.grad = np.ones(2)
    assert optim.Adam([p]).step(lambda: 3.5) == 3.5


def test_adamw_is_adam_with_decoupled_weight_decay():
    rng = np.random.default_rng(4)
    p, q = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(3))
    a, b = optim.AdamW([p], lr=0.1, weight_decay=0.2), optim.Adam([q], lr=0.1, weight_decay=0.2,
                                                                   decoupled_weight_decay=True)
    assert a.defaults["weight_decay"] == optim.AdamW([nn.Parameter(np.ones(1))]).defaults["weight_decay"] * 20
    for _ in range(3):
        g = rng.standard_normal(3)
        p.grad, q.grad = g.copy(), g.copy()
        a.step()
        b.step()
    np.testing.assert_array_equal(p.data, q.data)


# --- the kernels against their NumPy twins ------------------------------------------------------------------------

def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


KERNEL_CASES = {
    "adam": [{"amsgrad": a, "decoupled": d, "weight_decay": wd, "beta1": b1}
             for a, d, wd, b1 in [(False, False, 0.0, 0.9), (True, False, 0.01, 0.9), (False, True, 0.1, 0.2),
                                  (True, True, 0.05, 0.0)]],
    "rmsprop": [{"centered": c, "momentum": m, "weight_decay": wd, "alpha": al}
                for c, m, wd, al in [(False, 0.0, 0.0, 0.99), (True, 0.0, 0.01, 0.99), (False, 0.9, 0.0, 0.3),
                                     (True, 0.5, 0.1, 0.2)]],
    "adagrad": [{"lr_decay": d, "weight_decay": wd} for d, wd in [(0.0, 0.0), (0.1, 0.05)]],
}


def kernel_step(impl, kind, opts, p, g, bufs, step):
    if kind == "adam":
        impl.adam_update(p, g, bufs[0], bufs[1], bufs[2] if opts["amsgrad"] else None, 0.01, opts["beta1"], 0.99,
                         1e-8, opts["weight_decay"], step, opts["amsgrad"], opts["decoupled"])
    elif kind == "rmsprop":
        impl.rmsprop_update(p, g, bufs[0], bufs[1] if opts["centered"] else None,
                            bufs[2] if opts["momentum"] else None, 0.01, opts["alpha"], 1e-8, opts["weight_decay"],
                            opts["momentum"], opts["centered"])
    else:
        impl.adagrad_update(p, g, bufs[0], 0.01, opts["lr_decay"], opts["weight_decay"], 1e-10, step)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,opts", [(k, o) for k, cases in KERNEL_CASES.items() for o in cases],
                         ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()))
def test_kernels_match_their_numpy_twins_bit_for_bit(kind, opts, dtype):
    rng = np.random.default_rng(7)
    p0 = rand(rng, (3, 4, 5), dtype)
    p_ours, p_ref = p0.copy(), p0.copy()
    b_ours = [np.abs(rand(rng, p0.shape, dtype)) * 0 for _ in range(3)]
    b_ref = [b.copy() for b in b_ours]
    for step in range(1, 4):
        g = rand(rng, p0.shape, dtype)
        g[0, 0, :2] = 0  # a zero gradient on a zero buffer: sqrt(0) + eps
        kernel_step(cpu, kind, opts, p_ours, g, b_ours, step)
        kernel_step(reference, kind, opts, p_ref, g, b_ref, step)
        np.testing.assert_array_equal(p_ours, p_ref)
        for a, b in zip(b_ours, b_ref):
            np.testing.assert_array_equal(a, b)
    assert p_ours.dtype == dtype
    assert not np.array_equal(p_ours, p0)


def test_amsgrad_maximum_keeps_a_nan_as_torch_maximum():
    p, g = np.ones(3), np.array([1.0, np.nan, 2.0])
    bufs = [np.zeros(3), np.zeros(3), np.zeros(3)]
    kernel_step(cpu, "adam", KERNEL_CASES["adam"][1], p, g, bufs, 1)
    assert np.isnan(bufs[2][1]) and not np.isnan(bufs[2][[0, 2]]).any()


def test_host_scalars_are_torchs():
    step_size, bc2_sqrt = reference.adam_scalars(1e-3, 0.9, 0.999, 3.0)
    assert step_size == 1e-3 / (1 - 0.9 ** 3) and bc2_sqrt == (1 - 0.999 ** 3) ** 0.5
    assert reference.adagrad_lr(0.1, 0.5, 3.0) == 0.1 / 2.0


# --- bad hyper-parameters ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs,match", [
    ("Adam", {"lr": -0.1}, "Invalid learning rate: -0.1"),
    ("Adam", {"eps": -1.0}, "Invalid epsilon value: -1.0"),
    ("Adam", {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    ("Adam", {"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
    ("Adam", {"weight_decay": -1e-2}, "Invalid weight_decay value: -0.01"),
    ("Adam", {"lr": float("nan")}, "finite"),
    ("AdamW", {"betas": (0.9, 1.5)}, "index 1"),
    ("RMSprop", {"alpha": -0.5}, "Invalid alpha value: -0.5"),
    ("RMSprop", {"momentum": -0.5}, "Invalid momentum value: -0.5"),
    ("Adagrad", {"lr_decay": -1}, "Invalid lr_decay value: -1"),
    ("Adagrad", {"initial_accumulator_value": -1}, "Invalid initial_accumulator_value value: -1"),
    ("Adam", {"maximize": True}, "maximize=True is not supported"),
    ("AdamW", {"differentiable": True}, "differentiable"),
    ("RMSprop", {"capturable": True}, "capturable"),
    ("Adagrad", {"maximize": True}, "maximize"),
])
def test_bad_hyper_parameters_are_refused_with_torchs_words(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(optim, name)([nn.Parameter(np.ones(1))], **kwargs)
    if "Invalid" in match:
        with pytest.raises(ValueError, match=match.split(":")[0]):
            getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(1))], **kwargs)


@pytest.mark.parametrize("kwargs,error", [({"betas": 0.9}, TypeError), ({"betas": (0.9, "x")}, TypeError),
                                          ({"amsgrad": 1}, TypeError), ({"lr": "0.1"}, TypeError)])
def test_bad_types_are_refused(kwargs, error):
    with pytest.raises(error):
        optim.Adam([nn.Parameter(np.ones(1))], **kwargs)


def test_a_bad_option_in_one_group_is_refused():
    a, b = nn.Parameter(np.ones(1)), nn.Parameter(np.ones(1))
    with pytest.raises(ValueError, match="index 0"):
        optim.Adam([{"params": [a]}, {"params": [b], "betas": (1.2, 0.9)}])
    with pytest.raises(ValueError, match="unknown option"):
        optim.RMSprop([{"params": [a], "betas": (0.9, 0.9)}])


def test_a_checkpoint_round_trip_keeps_betas_a_tuple(tmp_path):
    from manualbp import checkpoint

    model = nn.Linear(2, 2)
    opt = optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    for p in model.parameters():
        p.grad = np.ones(p.shape, np.float32)
    opt.step()
    checkpoint.save(tmp_path / "ck.npz", model, opt)
    fresh = optim.Adam(model.parameters())
    checkpoint.load(tmp_path / "ck.npz", model, fresh)
    assert fresh.param_groups[0]["betas"] == (0.8, 0.9) and fresh.param_groups[0]["lr"] == 0.01
    assert fresh.state_dict()["state"][0]["step"] == 1.0
    np.testing.assert_array_equal(fresh.state_dict()["state"][1]["exp_avg"], opt.state_dict()["state"][1]["exp_avg"])


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_add_param_group_matches_torch(name):
    """A layer unfrozen after two steps joins with its own lr, as torch's add_param_group does."""
    rng = np.random.default_rng(6)
    values = [rng.standard_normal(3), rng.standard_normal(2)]
    ours = [nn.Parameter(v.copy()) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    opt_o = getattr(optim, name)(ours[:1], lr=0.05)
    opt_t = getattr(torch.optim, name)(theirs[:1], lr=0.05)
    for step in range(4):
        if step == 2:
            opt_o.add_param_group({"params": ours[1:], "lr": 0.2})
            opt_t.add_param_group({"params": theirs[1:], "lr": 0.2})
            if name == "Adagrad":   # torch's Adagrad makes its state in __init__ only; ours at the first step
                opt_t.state[theirs[1]] = {"step": torch.tensor(0.0), "sum": torch.zeros(2, dtype=torch.float64)}
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            p.grad, tp.grad = g, torch.tensor(g)
        opt_o.step()
        opt_t.step()
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12)
    assert opt_o.param_groups[1]["lr"] == 0.2
    with pytest.raises(ValueError, match="more than once"):
        opt_o.add_param_group({"params": ours[:1]})
