"""Network.fit with a torch-style scheduler: stepped once per epoch (ReduceLROnPlateau with the validation loss),
OneCycleLR after every batch; its state and the optimizer's in the checkpoints, so that a resumed run (after an
epoch, or a Ctrl-C part-way through one) ends bit for bit like an uninterrupted one; the built-in cosine is
CosineAnnealingLR's closed form."""
import math
import os
import signal

import numpy as np
import pytest

import manualbp
from manualbp import nn, optim
from manualbp.network import Network, cosine_lr
from manualbp.optim import lr_scheduler


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def toy_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)).astype(np.float32), rng.integers(0, 5, n)


SCHEDULERS = {
    "step": lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    "multistep": lambda opt: lr_scheduler.MultiStepLR(opt, [1, 3]),
    "cosine": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=4),
    "onecycle": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.01, epochs=4, steps_per_epoch=3),
    "plateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5),
}


def run(tmp_path, name, kind, epochs=4, stop_after=None, resume=None, seed=3, make_opt=None):
    manualbp.manual_seed(seed)
    net = Network(small_net())
    opt = (make_opt or (lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3)))(net.parameters())
    sched = SCHEDULERS[kind](opt)

    def crash(network, epoch, logs):
        if epoch == stop_after:
            raise KeyboardInterrupt

    try:
        h = net.fit(toy_data(40), epochs=epochs, batch_size=16, optimizer=opt, val=toy_data(10, seed=1),
                    checkpoint=tmp_path / name, resume=resume, callbacks=[crash], verbose=False, scheduler=sched)
    except KeyboardInterrupt:
        h = None
    return net, opt, sched, h


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
def test_resume_with_adam_and_a_scheduler_ends_like_an_uninterrupted_run(tmp_path, kind):
    full, full_opt, full_sched, full_h = run(tmp_path, "full", kind)
    _, _, _, h = run(tmp_path, "killed", kind, stop_after=2)
    assert h is None
    resumed, opt, sched, resumed_h = run(tmp_path, "killed", kind, resume=tmp_path / "killed" / "last.npz", seed=99)
    for (k, a), b in zip(resumed.state_dict().items(), full.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    for p, q in zip(resumed.parameters(), full.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt.state[id(p)][key], full_opt.state[id(q)][key])
    assert resumed_h["lr"] == full_h["lr"] and resumed_h["val_loss"] == full_h["val_loss"]
    assert sched.get_last_lr() == full_sched.get_last_lr() and sched.last_epoch == full_sched.last_epoch
    assert len(set(full_h["lr"])) > 1   # the schedule did change the rate


def test_epoch_schedulers_are_stepped_once_per_epoch_and_one_cycle_once_per_batch(tmp_path):
    _, opt, sched, h = run(tmp_path, "step", "step")
    assert h["lr"] == [0.01, 0.01, 0.005, 0.005] and sched.last_epoch == 4
    _, opt, sched, h = run(tmp_path, "onecycle", "onecycle")
    assert sched.last_epoch == 12 and opt.param_groups[0]["betas"][0] > 0.94   # beta1 cycled back up
    assert h["lr"] == sorted(h["lr"], reverse=True) and 0.009 < h["lr"][0] <= 0.01   # past the peak at step 2.6


def test_plateau_reads_the_validation_loss(tmp_path):
    seen = []
    manualbp.manual_seed(3)
    net = Network(small_net())
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    sched.step = lambda metric, epoch=None: seen.append(metric)
    h = net.fit(toy_data(40), epochs=2, batch_size=16, optimizer=opt, val=toy_data(10, seed=1), verbose=False,
                scheduler=sched)
    assert seen == h["val_loss"]


class CtrlC(nn.Module):
    """An identity layer that sends this process SIGINT in its n-th forward (as a Ctrl-C would)."""

    def __init__(self, at):
        super().__init__()
        self.calls, self.at = 0, at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return x

    def backward(self, grad_output):
        return grad_output


def test_a_ctrl_c_part_way_through_a_one_cycle_epoch_resumes_bit_for_bit(tmp_path):
    full, _, full_sched, _ = run(tmp_path, "full", "onecycle")
    manualbp.manual_seed(3)
    net = Network(small_net().append(CtrlC(5)))   # the 2nd step of epoch 2 (3 steps per epoch)
    opt = optim.Adam(net.parameters(), lr=0.01, weight_decay=1e-3)
    with pytest.raises(KeyboardInterrupt):
        net.fit(toy_data(40), epochs=4, batch_size=16, optimizer=opt, val=toy_data(10, seed=1), verbose=False,
                checkpoint=tmp_path / "cut", scheduler=SCHEDULERS["onecycle"](opt))
    manualbp.manual_seed(99)
    resumed = Network(small_net().append(CtrlC(0)))
    opt = optim.Adam(resumed.parameters(), lr=0.01, weight_decay=1e-3)
    sched = SCHEDULERS["onecycle"](opt)
    resumed.fit(toy_data(40), epochs=4, batch_size=16, optimizer=opt, val=toy_data(10, seed=1), verbose=False,
                resume=tmp_path / "cut" / "interrupted.npz", scheduler=sched)
    for a, b in zip(resumed.parameters(), full.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    assert sched.last_epoch == full_sched.last_epoch == 12


def test_the_built_in_cosine_is_cosine_annealing_closed_form():
    schedule = cosine_lr(0.05, 10, min_lr=0.001)
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.05)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.001)
    for epoch in range(1, 11):
        assert schedule(epoch) == pytest.approx(sched.get_last_lr()[0], rel=1e-14)
        assert schedule(epoch) == 0.001 + (0.05 - 0.001) * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / 10))
        opt.step()
        sched.step()


def test_bad_schedulers_are_refused(tmp_path):
    net = Network(small_net())
    opt = optim.SGD(net.parameters(), lr=0.05)
    other = optim.SGD(net.parameters(), lr=0.05)
    with pytest.raises(TypeError, match="lr_scheduler"):
        net.fit(toy_data(16), optimizer=opt, scheduler="cosine", verbose=False)
    with pytest.raises(ValueError, match="another optimizer"):
        net.fit(toy_data(16), optimizer=opt, scheduler=lr_scheduler.StepLR(other, 2), verbose=False)
    with pytest.raises(ValueError, match="not both"):
        net.fit(toy_data(16), optimizer=opt, scheduler=lr_scheduler.StepLR(opt, 2), lr_schedule=cosine_lr(0.05, 2),
                verbose=False)


def test_resuming_with_a_scheduler_from_a_run_without_one_is_refused(tmp_path):
    manualbp.manual_seed(0)
    net = Network(small_net())
    opt = optim.SGD(net.parameters(), lr=0.05)
    net.fit(toy_data(16), epochs=1, optimizer=opt, checkpoint=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="without a scheduler"):
        net.fit(toy_data(16), epochs=2, optimizer=opt, resume=tmp_path / "last.npz", verbose=False,
                scheduler=lr_scheduler.StepLR(opt, 1))
