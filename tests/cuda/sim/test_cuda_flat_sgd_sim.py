"""SGD on the GPU updates a whole parameter group in one launch over flat buffers (manualbp/kernels/flat.py).

The same training steps run twice from the same weights, once with the flat buffers and once with one launch
per parameter; every weight, gradient and momentum buffer must agree to the bit, since both run the same
kernel on the same numbers.  Then the ways a flat layout gets broken (new data, a loaded optimizer state, a
frozen parameter, gradients accumulated over two backward passes, a trip to the CPU) must still give the
per-parameter results.
"""
import numpy as np
import pytest

import manualbp
from manualbp import nn, optim
from manualbp.cuda import counting
from manualbp.device import to_device, to_numpy
from manualbp.kernels import flat
from manualbp.resnet import BasicBlock


def small():  # a convolution with a bias and a Linear layer
    manualbp.manual_seed(4)
    return nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4, 3))


def mlp():  # the cheapest to simulate: two Linear layers
    manualbp.manual_seed(6)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 3))


def layernorm():  # LayerNorm writes its gradients into the flat buffer too
    manualbp.manual_seed(7)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.LayerNorm(4), nn.Linear(4, 3))


def residual():  # BatchNorm with and without the shortcut, through relu_after
    manualbp.manual_seed(5)
    return nn.Sequential(BasicBlock(2, 2), nn.Flatten(), nn.Linear(2 * 4, 3))


RNG = np.random.default_rng(2)
BATCHES = [(RNG.standard_normal((2, 2, 2, 2)).astype(np.float32), RNG.integers(0, 3, 2)) for _ in range(4)]


def run(monkeypatch, packs, build=small, steps=3, **sgd):
    monkeypatch.setattr(flat, "MAX_PACKS", packs)
    model = build().to("cuda")
    opt = optim.SGD(model.parameters(), **({"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3} | sgd))
    loss_fn = nn.CrossEntropyLoss()
    launches = []
    for x, y in BATCHES[:steps]:
        opt.zero_grad()
        loss_fn(model(to_device(x)), to_device(y))
        model.backward(loss_fn.backward())
        with counting() as c:
            opt.step()
        launches.append(c.launches.get("_sgd_update", 0))
    return model, opt, launches


def state_of(model, opt):
    out = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        out[name] = to_numpy(p.data)
        out[name + ".grad"] = to_numpy(p.grad)
        buf = opt.state.get(id(p), {}).get("momentum_buffer")
        if buf is not None:
            out[name + ".momentum"] = to_numpy(buf)
    for name, b in model.named_buffers():
        out[name] = to_numpy(b)
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("build,steps,sgd", [(small, 2, {}), (small, 2, {"momentum": 0.0}), (layernorm, 2, {}),
                                             (residual, 2, {"nesterov": True, "weight_decay": 0.0})])
def test_one_launch_per_group_gives_the_per_parameter_update_to_the_bit(monkeypatch, build, steps, sgd):
    model, opt, launches = run(monkeypatch, flat.MAX_PACKS, build, steps, **sgd)
    n_params = len(list(model.parameters()))
    assert launches == [n_params] + [1] * (steps - 1)  # the first step makes the buffers, then all is flat
    for p in model.parameters():  # the layers wrote their gradients straight into the flat buffer
        assert p.grad is p._slot[1] and p.data is p._slot[0]
    reference, ref_opt, ref_launches = run(monkeypatch, 0, build, steps, **sgd)
    assert ref_launches == [n_params] * steps
    assert_same(state_of(model, opt), state_of(reference, ref_opt))


def test_whatever_breaks_the_layout_the_results_stay_the_per_parameter_ones(monkeypatch):
    def steps(packs):
        monkeypatch.setattr(flat, "MAX_PACKS", packs)
        model = mlp().to("cuda")
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.8, weight_decay=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        params = list(model.parameters())

        def step(x, y, zero=True, twice=False):
            if zero:
                opt.zero_grad(set_to_none=False) if twice else opt.zero_grad()
            for _ in range(2 if twice else 1):
                loss_fn(model(to_device(x)), to_device(y))
                model.backward(loss_fn.backward())
            opt.step()

        step(*BATCHES[0])
        step(*BATCHES[1], twice=True)  # flat: zeros kept in place, then two backward passes add up
        params[0].data = to_device(to_numpy(params[0].data) * 0.5)  # new values in a new array
        step(*BATCHES[2])
        opt.load_state_dict(opt.state_dict())  # new momentum buffers
        params[-1].requires_grad = False  # frozen: skipped, and no flat layout while it is
        step(*BATCHES[3])
        params[-1].requires_grad = True
        model.to("cpu").to("cuda")  # everything moved and back
        step(*BATCHES[0])
        step(*BATCHES[1])
        return state_of(model, opt), launches

    launches = []
    real_step = optim.SGD.step

    def counted_step(self):
        with counting() as c:
            real_step(self)
        launches.append(c.launches.get("_sgd_update", 0))

    monkeypatch.setattr(optim.SGD, "step", counted_step)

    flat_state, flat_launches = steps(flat.MAX_PACKS)
    # one launch per parameter at the first step, after the new data, with new momentum buffers and a frozen
    # parameter (3: it is skipped), and after the move; one launch for all at the second step (its gradients
    # summed in place) and at the last (laid out again after the move)
    assert flat_launches == [4, 1, 4, 3, 4, 1]
    launches.clear()
    reference_state, reference_launches = steps(0)
    assert reference_launches == [4, 4, 4, 3, 4, 4]
    assert_same(flat_state, reference_state)


def test_the_cpu_never_lays_anything_out():
    model = small()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for x, y in BATCHES[:3]:
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
    assert opt._flat == {} and all(p.grad_buffer() is None for p in model.parameters())
