"""The learning-rate schedulers against torch.optim.lr_scheduler: the same rates (and momenta), bit for bit, for
many steps, with several parameter groups; state_dicts that load both ways; torch's errors."""
import math
import warnings

import numpy as np
import pytest
import torch

from manualbp import nn, optim
from manualbp.optim import lr_scheduler

TL = torch.optim.lr_scheduler


def pair(opt_name="SGD", groups=2, **opt_kwargs):
    """The same optimizer on both sides, with ``groups`` parameter groups of different rates."""
    opt_kwargs = opt_kwargs or ({"lr": 0.1, "momentum": 0.9} if opt_name == "SGD" else {"lr": 0.01})
    ours = [nn.Parameter(np.ones(2)) for _ in range(groups)]
    theirs = [torch.nn.Parameter(torch.ones(2)) for _ in range(groups)]
    lrs = [opt_kwargs["lr"] * (i + 1) for i in range(groups)]
    opt_o = getattr(optim, opt_name)([{"params": [p], "lr": lr} for p, lr in zip(ours, lrs)], **opt_kwargs)
    opt_t = getattr(torch.optim, opt_name)([{"params": [p], "lr": lr} for p, lr in zip(theirs, lrs)], **opt_kwargs)
    return opt_o, opt_t


def step_both(opt_o, opt_t, s_o, s_t, steps, metric=None):
    seen = []
    for i in range(steps):
        opt_t.step()  # torch warns when a scheduler steps before its optimizer ever did
        args = () if metric is None else (metric(i),)
        s_o.step(*args)
        s_t.step(*args)
        assert s_o.get_last_lr() == s_t.get_last_lr(), (i, s_o.get_last_lr(), s_t.get_last_lr())
        assert [g["lr"] for g in opt_o.param_groups] == [g["lr"] for g in opt_t.param_groups]
        assert s_o.last_epoch == s_t.last_epoch
        seen.append(s_o.get_last_lr()[0])
    return seen


SCHEDULES = [
    ("StepLR", {"step_size": 7}), ("StepLR", {"step_size": 3, "gamma": 0.5}),
    ("MultiStepLR", {"milestones": [5, 12, 12, 30]}), ("MultiStepLR", {"milestones": [3], "gamma": 0.3}),
    ("ExponentialLR", {"gamma": 0.95}),
    ("CosineAnnealingLR", {"T_max": 10}), ("CosineAnnealingLR", {"T_max": 7, "eta_min": 0.001}),
    ("LinearLR", {}), ("LinearLR", {"start_factor": 0.1, "total_iters": 20}),
    ("LinearLR", {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 9}),
]


@pytest.mark.parametrize("name,kwargs", SCHEDULES, ids=lambda v: v if isinstance(v, str) else str(v))
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_sixty_epochs_match_torch_bit_for_bit(name, kwargs, opt_name):
    opt_o, opt_t = pair(opt_name)
    s_o, s_t = getattr(lr_scheduler, name)(opt_o, **kwargs), getattr(TL, name)(opt_t, **kwargs)
    assert s_o.get_last_lr() == s_t.get_last_lr() and s_o.base_lrs == s_t.base_lrs
    seen = step_both(opt_o, opt_t, s_o, s_t, 60)
    assert len(set(seen)) > 1


@pytest.mark.parametrize("kwargs", [
    {"max_lr": 0.1, "total_steps": 50}, {"max_lr": [0.1, 0.3], "total_steps": 40, "anneal_strategy": "linear"},
    {"max_lr": 0.2, "epochs": 4, "steps_per_epoch": 11, "three_phase": True},
    {"max_lr": 0.2, "total_steps": 37, "three_phase": True, "anneal_strategy": "linear", "pct_start": 0.4,
     "div_factor": 10.0, "final_div_factor": 100.0},
    {"max_lr": 0.1, "total_steps": 30, "cycle_momentum": False},
    {"max_lr": 0.1, "total_steps": 30, "base_momentum": [0.8, 0.7], "max_momentum": 0.9},
], ids=str)
@pytest.mark.parametrize("opt_name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_one_cycle_matches_torch_with_its_momentum(kwargs, opt_name):
    opt_o, opt_t = pair(opt_name)
    s_o, s_t = lr_scheduler.OneCycleLR(opt_o, **kwargs), TL.OneCycleLR(opt_t, **kwargs)
    total = kwargs.get("total_steps") or kwargs["epochs"] * kwargs["steps_per_epoch"]
    for i in range(total - 1):
        step_both(opt_o, opt_t, s_o, s_t, 1)
        key = "betas" if "betas" in opt_o.defaults else "momentum"
        assert [g[key] for g in opt_o.param_groups] == [g[key] for g in opt_t.param_groups], i
    with pytest.raises(ValueError, match="Tried to step"):
        s_o.step()
        s_o.step()


def test_one_cycle_on_an_optimizer_without_momentum_needs_cycle_momentum_false():
    opt_o, _ = pair("Adagrad")
    with pytest.raises(ValueError, match="momentum or beta1"):
        lr_scheduler.OneCycleLR(opt_o, max_lr=0.1, total_steps=10)
    lr_scheduler.OneCycleLR(opt_o, max_lr=0.1, total_steps=10, cycle_momentum=False)


def noisy_then_flat(i):
    return [5.0, 4.0, 3.9, 3.9999, 3.95, 3.95, 3.95, 3.1, 3.1, 3.1][i % 10] - 0.01 * (i // 10)


@pytest.mark.parametrize("kwargs", [
    {}, {"patience": 2}, {"mode": "max", "patience": 1, "factor": 0.5}, {"threshold": 0.1, "patience": 1},
    {"threshold_mode": "abs", "threshold": 0.05, "patience": 0}, {"mode": "max", "threshold_mode": "abs", "patience": 0},
    {"patience": 1, "cooldown": 3, "min_lr": 0.02}, {"patience": 0, "min_lr": [0.05, 0.001], "factor": 0.3},
    {"patience": 0, "factor": 0.99, "eps": 0.01},
], ids=str)
def test_reduce_on_plateau_matches_torch(kwargs):
    opt_o, opt_t = pair("SGD")
    s_o, s_t = lr_scheduler.ReduceLROnPlateau(opt_o, **kwargs), TL.ReduceLROnPlateau(opt_t, **kwargs)
    seen = step_both(opt_o, opt_t, s_o, s_t, 60, metric=noisy_then_flat)
    assert s_o.num_bad_epochs == s_t.num_bad_epochs and s_o.cooldown_counter == s_t.cooldown_counter
    assert s_o.best == s_t.best
    if kwargs and kwargs.get("factor") != 0.99:  # the default patience of 10 outlasts these plateaus
        assert len(set(seen)) > 1


def plain(state):
    """A state_dict made of plain Python values, as torch's is (Counters stay Counters)."""
    return dict(state)


@pytest.mark.parametrize("make", [
    lambda lib, opt: lib.StepLR(opt, 4, 0.5), lambda lib, opt: lib.MultiStepLR(opt, [3, 6]),
    lambda lib, opt: lib.CosineAnnealingLR(opt, 8, 0.01), lambda lib, opt: lib.LinearLR(opt, 0.2, 1.0, 6),
    lambda lib, opt: lib.ExponentialLR(opt, 0.9),
    lambda lib, opt: lib.OneCycleLR(opt, 0.5, 30, three_phase=True),
    lambda lib, opt: lib.ReduceLROnPlateau(opt, patience=1),
])
def test_state_dicts_load_both_ways_and_the_runs_go_on_alike(make):
    opt_o, opt_t = pair("SGD")
    s_o, s_t = make(lr_scheduler, opt_o), make(TL, opt_t)
    metric = noisy_then_flat if isinstance(s_o, lr_scheduler.ReduceLROnPlateau) else None
    step_both(opt_o, opt_t, s_o, s_t, 9, metric=metric)
    assert sorted(s_o.state_dict()) == sorted(s_t.state_dict())  # torch's keys
    o2, t2 = pair("SGD")
    o2.load_state_dict(opt_o.state_dict())
    t2.load_state_dict(opt_t.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s_o2, s_t2 = make(lr_scheduler, o2), make(TL, t2)
    s_o2.load_state_dict(s_t.state_dict())  # torch's state into ours
    s_t2.load_state_dict(plain(s_o.state_dict()))  # ours into torch's
    step_both(o2, t2, s_o2, s_t2, 12, metric=metric)


def test_cosine_closed_form_and_recursion_agree_and_it_climbs_back():
    opt_o, _ = pair("SGD", groups=1)
    s = lr_scheduler.CosineAnnealingLR(opt_o, T_max=10, eta_min=0.0)
    lrs = [s.get_last_lr()[0]]
    for _ in range(20):
        s.step()
        lrs.append(s.get_last_lr()[0])
    closed = [0.1 * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(21)]
    np.testing.assert_allclose(lrs, closed, rtol=1e-12, atol=1e-17)
    assert lrs[10] == pytest.approx(0.0, abs=1e-17) and lrs[20] == pytest.approx(0.1)


def test_step_with_an_epoch_uses_the_closed_form_with_torchs_warning():
    opt_o, opt_t = pair("SGD")
    s_o, s_t = lr_scheduler.StepLR(opt_o, 3), TL.StepLR(opt_t, 3)
    with pytest.warns(UserWarning, match="epoch parameter"):
        s_o.step(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s_t.step(7)
    assert s_o.get_last_lr() == s_t.get_last_lr()


def test_resuming_with_last_epoch_needs_initial_lr():
    opt_o, _ = pair("SGD")
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt_o, 3, last_epoch=4)


@pytest.mark.parametrize("make,error,match", [
    (lambda opt: lr_scheduler.StepLR("sgd", 3), TypeError, "is not an Optimizer"),
    (lambda opt: lr_scheduler.StepLR(opt, 0), ValueError, "step_size"),
    (lambda opt: lr_scheduler.MultiStepLR(opt, 5), TypeError, "milestones"),
    (lambda opt: lr_scheduler.ExponentialLR(opt, "0.9"), TypeError, "gamma"),
    (lambda opt: lr_scheduler.CosineAnnealingLR(opt, 0), ValueError, "T_max"),
    (lambda opt: lr_scheduler.LinearLR(opt, start_factor=0), ValueError, "Starting multiplicative factor"),
    (lambda opt: lr_scheduler.LinearLR(opt, end_factor=1.5), ValueError, "Ending multiplicative factor"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1), ValueError, "total_steps OR"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, total_steps=0), ValueError, "positive integer total_steps"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, 10, pct_start=1.5), ValueError, "pct_start"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, 0.1, 10, anneal_strategy="exp"), ValueError, "anneal_strategy"),
    (lambda opt: lr_scheduler.OneCycleLR(opt, [0.1], 10), ValueError, "same length"),
    (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, factor=1.0), ValueError, "Factor should be < 1.0"),
    (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, mode="mean"), ValueError, "mode"),
    (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, threshold_mode="pct"), ValueError, "threshold mode"),
    (lambda opt: lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0.1]), ValueError, "min_lrs"),
])
def test_bad_arguments_are_refused(make, error, match):
    opt_o, _ = pair("SGD")
    with pytest.raises(error, match=match):
        make(opt_o)
