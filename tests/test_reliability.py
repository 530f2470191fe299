"""Reliability of a training run: a diverging loss stops fit with a clear message and keeps the last good
checkpoint; Ctrl-C saves a checkpoint that resumes bit for bit; checkpoints refuse tampered headers and
never unpickle; odd but valid array layouts (non-contiguous, read-only) give the same numbers."""
import os
import pickle
import signal
import stat
import sys

import numpy as np
import pytest

import manualbp
from manualbp import Network, checkpoint, nn, optim
from manualbp.network import NonFiniteLossError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reliability_child as child


def _weights(net):
    return {k: v.copy() for k, v in net.state_dict().items()}


def _assert_bitwise(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


# --- a loss that becomes nan or inf -----------------------------------------------------------------------

def _diverging_run(tmp_path, epochs=6):
    manualbp.manual_seed(0)
    net = Network(nn.Linear(2, 3))
    x = np.arange(40, dtype=np.float32).reshape(20, 2) / 40
    y = np.zeros((20, 3), np.float32)

    def schedule(epoch):   # fine for two epochs, then far too large
        return 0.1 if epoch <= 2 else 1e30

    opt = optim.SGD(net.parameters(), lr=0.1)
    return net, lambda: net.fit((x, y), epochs=epochs, batch_size=5, loss=nn.MSELoss(), optimizer=opt,
                                checkpoint=tmp_path, lr_schedule=schedule, verbose=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_fit_naming_epoch_step_and_lr_and_keeps_the_last_good_checkpoint(tmp_path):
    _, run = _diverging_run(tmp_path)
    with pytest.raises(NonFiniteLossError) as info:
        run()
    message = str(info.value)
    assert "training diverged" in message and "at epoch 3, step" in message
    assert "smaller learning rate (lr is 1e+30; try 1e+29)" in message
    assert "after epoch 2" in message and "last.npz" in message
    header = checkpoint.load(tmp_path / "last.npz", nn.Linear(2, 3), strict=False)
    assert header["epoch"] == 2                             # the last good epoch, intact and loadable
    restored = Network(nn.Linear(2, 3))
    restored.load(tmp_path / "last.npz", strict=False)
    assert all(np.isfinite(v).all() for v in restored.state_dict().values())


def test_the_step_that_gives_a_nan_loss_does_not_touch_the_weights():
    manualbp.manual_seed(0)
    net = Network(nn.Linear(2, 1))
    before = _weights(net)
    opt = optim.SGD(net.parameters(), lr=0.1)
    x = np.ones((4, 2), np.float32)
    net.model.weight.data[0, 0] = np.inf                     # the forward gives inf, the loss inf or nan
    with pytest.raises(NonFiniteLossError, match="the loss is"):
        net.train_step(x, np.zeros((4, 1), np.float32), nn.MSELoss(), opt)
    assert net.model.weight.grad is None                    # no backward, no step
    assert np.array_equal(net.model.bias.data, before["bias"])


# --- Ctrl-C -----------------------------------------------------------------------------------------------

class _CtrlC(nn.Module):
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


def _with_ctrl_c(at):
    net, opt = child.build()
    net.model.append(_CtrlC(at))
    return net, opt


@pytest.mark.parametrize("at", [2, 3, 6, 7])   # mid-epoch (3 steps per epoch) and on an epoch's last step
def test_ctrl_c_saves_a_checkpoint_that_resumes_bit_for_bit(tmp_path, capsys, at):
    reference, opt = _with_ctrl_c(at=0)
    child.fit(reference, opt, 3)
    net, opt = _with_ctrl_c(at)
    with pytest.raises(KeyboardInterrupt):
        child.fit(net, opt, 3, out=tmp_path)
    err = capsys.readouterr().err
    assert "Interrupted" in err and "interrupted.npz" in err and "resume=" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # the handler is put back
    resumed, opt = _with_ctrl_c(at=0)
    child.fit(resumed, opt, 3, out=tmp_path, resume=tmp_path / "interrupted.npz")
    _assert_bitwise(_weights(resumed), _weights(reference))


def test_ctrl_c_without_a_checkpoint_folder_writes_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net, opt = _with_ctrl_c(at=2)
    with pytest.raises(KeyboardInterrupt):
        child.fit(net, opt, 2)
    assert checkpoint.read(tmp_path / "interrupted.npz")[0]["extra"]["interrupted"]["step"] == 2   # the step under way completes


# --- checkpoint files -------------------------------------------------------------------------------------

def test_checkpoint_gets_the_usual_file_mode(tmp_path):
    checkpoint.save(tmp_path / "ck.npz", nn.Linear(2, 2))   # not mkstemp's owner-only 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ck.npz").st_mode) == 0o666 & ~checkpoint._UMASK


def test_an_edited_header_is_refused(tmp_path):
    import json
    path = tmp_path / "ck.npz"
    checkpoint.save(path, nn.Linear(2, 2), epoch=3)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["__header__"].tobytes())
    header["epoch"] = 30
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="header does not match"):
        checkpoint.read(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_loading_never_unpickles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = np.empty(1, dtype=object)
    payload[0] = _Exploit()
    np.savez("evil.npz", __header__=payload)                 # an object array: pickled inside the npz
    with open("evil.pkl.npz", "wb") as f:
        pickle.dump(_Exploit(), f)                             # a bare pickle with an .npz name
    for name in ("evil.npz", "evil.pkl.npz"):
        with pytest.raises(ValueError, match="never loads|not an .npz"):
            checkpoint.load(name, nn.Linear(2, 2))
    assert not os.path.exists("pwned")


def test_a_failed_load_changes_neither_model_nor_file(tmp_path):
    net, opt = child.build()
    path = tmp_path / "last.npz"
    net.save(path, opt, epoch=1)
    good = path.read_bytes()
    other = Network(nn.Linear(3, 2))
    before = _weights(other)
    with pytest.raises(ValueError, match="does not match this model"):
        other.load(path)
    _assert_bitwise(_weights(other), before)
    assert path.read_bytes() == good


# --- odd but valid arrays ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["non-contiguous", "read-only", "fortran"])
def test_unusual_array_layouts_give_the_same_numbers(layout):
    net, _ = child.build()
    x = child.dataset()[0][:8]
    expected = net(x)
    if layout == "non-contiguous":
        wide = np.zeros(x.shape[:3] + (x.shape[3] * 2,), np.float32)
        wide[..., ::2] = x
        odd = wide[..., ::2]
    elif layout == "read-only":
        odd = x.copy()
        odd.setflags(write=False)
    else:
        odd = np.asfortranarray(x)
    assert np.array_equal(net(odd), expected)
    net.backward(np.ones_like(expected))                       # and backward still works after it


def test_ctrl_c_in_manualbp_train_saves_and_exits_with_status_130(tmp_path):
    import select
    import subprocess
    import time
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "manualbp", "train", "--epochs", "500", "--limit", "64",
                             "--batch-size", "16", "--log-interval", "1", "--no-progress", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:   # wait until training is under way
            if select.select([proc.stdout], [], [], 1.0)[0] and "Train Epoch: 2" in proc.stdout.readline():
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted.npz" in err
    header, _ = checkpoint.read(out / "interrupted.npz")
    assert header["epoch"] >= 1


def test_resuming_a_part_done_epoch_with_another_batch_size_is_refused(tmp_path):
    net, opt = _with_ctrl_c(at=2)
    with pytest.raises(KeyboardInterrupt):
        child.fit(net, opt, 2, out=tmp_path)
    net, opt = _with_ctrl_c(at=0)
    with pytest.raises(ValueError, match="same data and batch_size"):
        net.fit(child.dataset(), epochs=2, batch_size=16, optimizer=opt, resume=tmp_path / "interrupted.npz",
                verbose=False)
