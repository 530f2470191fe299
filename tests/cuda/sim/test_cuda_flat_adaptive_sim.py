"""Adam, AdamW, RMSprop and Adagrad on the GPU update a whole parameter group in one launch over flat buffers
(manualbp/kernels/flat.py), from the second step on.

The same steps run twice from the same weights, once laid out flat and once with one launch per parameter
(``MAX_PACKS = 0``); weights, gradients and every state buffer must agree to the bit, since both run the
same kernel on the same numbers.  A parameter that skips a step (no gradient) leaves the step counts
unequal, which the bias corrections read: the group must then go parameter by parameter.
"""
import numpy as np
import pytest

import manualbp
from manualbp import nn, optim
from manualbp.cuda import counting
from manualbp.device import to_device, to_numpy
from manualbp.kernels import flat

RNG = np.random.default_rng(3)
SHAPES = [(4, 8), (4,), (3, 4), (3,)]  # the parameters of a Linear(8, 4) and a Linear(4, 3)
GRADS = [[RNG.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(3)]

CASES = {
    "adam-amsgrad": (optim.Adam, {"lr": 0.01, "weight_decay": 1e-2, "amsgrad": True}, "_adam_update"),
    "adamw": (optim.AdamW, {"lr": 0.01}, "_adam_update"),
    "rmsprop-centered-momentum": (optim.RMSprop, {"lr": 0.01, "momentum": 0.9, "centered": True}, "_rmsprop_update"),
    "adagrad": (optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1}, "_adagrad_update"),
}


def run(monkeypatch, packs, make, kwargs, kernel, skip_first=False):
    """Three optimizer steps on four GPU parameters, each gradient written the way a layer writes it: into
    ``grad_buffer()`` when there is one (the flat gradient buffer), else a new array.  No forward or backward
    runs: the optimizer is all that is simulated."""
    monkeypatch.setattr(flat, "MAX_PACKS", packs)
    manualbp.manual_seed(6)
    params = list(nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 3)).to("cuda").parameters())
    opt = make(params, **kwargs)
    launches = []
    for i, grads in enumerate(GRADS):
        opt.zero_grad()
        for p, g in zip(params, grads):
            if skip_first and i == 1 and p is params[0]:
                continue  # this parameter sits this step out: its step count falls behind
            buf = p.grad_buffer()
            if buf is None:
                p.accumulate_grad(to_device(g))
            else:
                buf.copy_to_device(g)
                p.accumulate_grad(buf)
        with counting() as c:
            opt.step()
        launches.append(c.launches.get(kernel, 0))
    out = {}
    for i, p in enumerate(params):
        out[f"{i}.data"], out[f"{i}.grad"] = to_numpy(p.data), (None if p.grad is None else to_numpy(p.grad))
        for k, v in opt.state.get(id(p), {}).items():
            out[f"{i}.{k}"] = v if isinstance(v, float) else to_numpy(v)
    return out, launches


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None or isinstance(a[k], float):
            assert a[k] == b[k], k
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_launch_per_group_gives_the_per_parameter_update_to_the_bit(monkeypatch, case):
    make, kwargs, kernel = CASES[case]
    flat_state, flat_launches = run(monkeypatch, flat.MAX_PACKS, make, kwargs, kernel)
    assert flat_launches == [4, 1, 1]  # the first step makes the buffers, then the group is laid out flat
    per_state, per_launches = run(monkeypatch, 0, make, kwargs, kernel)
    assert per_launches == [4, 4, 4]
    assert_same(flat_state, per_state)


def test_unequal_step_counts_go_parameter_by_parameter(monkeypatch):
    make, kwargs, kernel = CASES["adam-amsgrad"]
    flat_state, flat_launches = run(monkeypatch, flat.MAX_PACKS, make, kwargs, kernel, skip_first=True)
    assert flat_launches == [4, 3, 4]  # step 2: one parameter skipped; step 3: its count is one behind
    per_state, _ = run(monkeypatch, 0, make, kwargs, kernel, skip_first=True)
    assert_same(flat_state, per_state)
