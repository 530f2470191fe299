"""Network.fit: the same weights as the loop written by hand in torch, progress lines, history, resume."""
import re

import numpy as np
import pytest
import torch

import manualbp
from manualbp import nn, optim
from manualbp.network import History, Network, cosine_lr


def conv_net(lib):
    return lib.Sequential(lib.Conv2d(3, 4, 3, padding=1), lib.MaxPool2d(2), lib.Conv2d(4, 6, 3), lib.MaxPool2d(2),
                          lib.Flatten(), lib.Linear(6, 5))


def toy_data(n=40, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)).astype(dtype), rng.integers(0, 5, n)


def test_one_epoch_of_fit_equals_the_torch_loop_by_hand():
    x, y = toy_data(40)   # batches of 16, 16 and 8
    torch.manual_seed(0)
    theirs = conv_net(torch.nn).double()
    net = Network(conv_net(nn)).double()
    net.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})

    # the tutorials' loop, in torch
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=0.9)
    torch_losses = []
    for i in range(0, 40, 16):
        data, target = torch.tensor(x[i:i + 16]), torch.tensor(y[i:i + 16])
        optimizer.zero_grad()
        output = theirs(data)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()
        torch_losses.append(loss.item())

    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    history = net.fit((x, y), epochs=1, batch_size=16, loss=nn.CrossEntropyLoss(), optimizer=opt, shuffle=False,
                      verbose=False)
    np.testing.assert_allclose(history.steps, torch_losses, rtol=0, atol=1e-12)
    for (k, a), b in zip(net.state_dict().items(), theirs.state_dict().values()):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-8, err_msg=k)
    for p, q in zip(net.parameters(), theirs.parameters()):   # the momentum buffers too
        np.testing.assert_allclose(opt.state[id(p)]["momentum_buffer"], optimizer.state[q]["momentum_buffer"].numpy(),
                                   rtol=0, atol=1e-8)


def test_progress_lines_as_the_tutorials_print_them(capsys):
    manualbp.manual_seed(0)
    net = Network(conv_net(nn))
    x, y = toy_data(40, dtype=np.float32)
    net.fit((x, y), epochs=2, batch_size=16, val=toy_data(10, seed=1, dtype=np.float32), log_interval=1,
            progress=False)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("Train Epoch")]
    assert len(lines) == 6
    assert re.fullmatch(r"Train Epoch: 1 \[0/40 \(0%\)\]\tLoss: \d\.\d{6}", lines[0])
    assert re.fullmatch(r"Train Epoch: 2 \[16/40 \(33%\)\]\tLoss: \d\.\d{6}", lines[4])
    assert re.search(r"^Epoch 2: running loss \d+\.\d{4} \(mean \d\.\d{6}\), train accuracy \d+\.\d\d%", out, re.MULTILINE)
    assert re.search(r"^Validation set: Average loss: \d\.\d{4}, Accuracy: \d+/10 \(\d+\.\d\d%\)$", out, re.MULTILINE)
    # a float32 net is fed float32 data and stays float32
    assert all(p.dtype == np.float32 for p in net.parameters())


def test_history_and_callbacks(capsys):
    manualbp.manual_seed(1)
    net = Network([nn.Flatten(), nn.Linear(3 * 8 * 8, 5)])
    seen = []

    def stop_after_two(network, epoch, logs):
        seen.append((epoch, logs["val_loss"]))
        network.stop_training = epoch == 2

    h = net.fit(toy_data(40, dtype=np.float32), epochs=5, batch_size=16, val=toy_data(12, seed=2, dtype=np.float32),
                callbacks=[stop_after_two], verbose=False)
    assert isinstance(h, History) and len(h) == 2 and [e for e, _ in seen] == [1, 2]
    assert len(h.steps) == 2 * 3 and h["epoch"] == [1, 2]
    row = h.epochs[-1]
    assert row["running_loss"] == pytest.approx(sum(h.steps[3:]))
    assert row["train_loss"] == pytest.approx(row["running_loss"] / 3)
    assert row["images_per_sec"] > 0 and row["seconds"] > 0 and row["lr"] == 0.01
    assert 0 <= row["val_accuracy"] <= 1 and row["val_loss"] == seen[-1][1]
    assert capsys.readouterr().out == ""


def test_evaluate_and_predict():
    manualbp.manual_seed(2)
    net = Network(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    x, y = toy_data(30, dtype=np.float32)
    out = net.predict(x, batch_size=7)
    assert out.shape == (30, 5)
    res = net.evaluate((x, y), batch_size=8)
    assert res["total"] == 30 and res["correct"] == int((out.argmax(1) == y).sum())
    assert res["loss"] == pytest.approx(float(nn.CrossEntropyLoss()(out, y)), rel=1e-5)
    assert net.model.training   # evaluate/predict put the model back in training mode
    with pytest.raises(ValueError, match="30 samples but y has 29"):
        net.evaluate((x, y[:-1]))


def run(tmp_path, name, epochs, interrupt_after=None, resume=None, seed=7):
    """A seeded training run with shuffling and validation; optionally 'killed' after an epoch."""
    manualbp.manual_seed(seed)
    net = Network(conv_net(nn))
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)

    def crash(network, epoch, logs):
        if epoch == interrupt_after:
            raise KeyboardInterrupt

    folder = tmp_path / name
    try:
        h = net.fit(toy_data(40, dtype=np.float32), epochs=epochs, batch_size=16, optimizer=opt,
                    val=toy_data(10, seed=1, dtype=np.float32), checkpoint=folder, resume=resume,
                    callbacks=[crash], lr_schedule=cosine_lr(0.05, epochs), verbose=False)
    except KeyboardInterrupt:
        h = None
    return net, opt, h, folder


def test_resume_after_epoch_2_ends_exactly_like_an_uninterrupted_run(tmp_path):
    full, full_opt, full_h, _ = run(tmp_path, "full", epochs=4)
    _, _, h, folder = run(tmp_path, "killed", epochs=4, interrupt_after=2)
    assert h is None and (folder / "last.npz").exists()
    # a new process: different seed, fresh weights -- all of it must come from the checkpoint
    resumed, resumed_opt, resumed_h, _ = run(tmp_path, "killed", epochs=4, resume=folder / "last.npz", seed=1234)
    for (k, a), b in zip(resumed.state_dict().items(), full.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    for p, q in zip(resumed.parameters(), full.parameters()):
        np.testing.assert_array_equal(resumed_opt.state[id(p)]["momentum_buffer"],
                                      full_opt.state[id(q)]["momentum_buffer"])
    assert resumed_h["epoch"] == [1, 2, 3, 4] and resumed_h.steps == full_h.steps
    assert resumed_h["val_loss"] == full_h["val_loss"]
    assert resumed_h["lr"] == full_h["lr"] and resumed_h["lr"][0] == 0.05 > resumed_h["lr"][1]


def test_best_checkpoint_is_the_lowest_validation_loss(tmp_path):
    _, _, h, folder = run(tmp_path, "best", epochs=3)
    best_epoch = min(h.epochs, key=lambda r: r["val_loss"])["epoch"]
    probe = Network(conv_net(nn))
    assert probe.load(folder / "best.npz")["epoch"] == best_epoch
    assert probe.load(folder / "last.npz")["epoch"] == 3


def test_resume_from_a_bad_checkpoint_is_refused_before_training(tmp_path):
    _, _, _, folder = run(tmp_path, "good", epochs=1)
    (folder / "cut.npz").write_bytes((folder / "last.npz").read_bytes()[:200])
    manualbp.manual_seed(0)
    net = Network(conv_net(nn))
    before = {k: v.copy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="truncated or corrupted"):
        net.fit(toy_data(40, dtype=np.float32), epochs=2, resume=folder / "cut.npz", verbose=False)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_network_construction():
    layers = [nn.Linear(2, 3), nn.ReLU()]
    assert isinstance(Network(layers).model, nn.Sequential)
    assert len(Network(*layers).model) == 2
    model = nn.Linear(2, 2)
    assert Network(model).model is model and Network(Network(model)).model is model
    with pytest.raises(TypeError, match="Network expected"):
        Network("conv")
    with pytest.raises(TypeError, match=r"\(x, y\) pair"):
        Network(model).fit(np.zeros((2, 2)), verbose=False)


def test_regression_with_mse_has_no_accuracy(capsys):
    manualbp.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    y = (x @ np.array([1.0, 2.0, 3.0], np.float32))[:, None]
    net = Network([nn.Linear(3, 1)])
    h = net.fit((x, y), epochs=3, batch_size=10, loss=nn.MSELoss(), val=(x, y), log_interval=0)
    assert h["val_accuracy"] == [None] * 3 and h["val_loss"][-1] < h["val_loss"][0]
    assert "Validation set: Average loss: " in capsys.readouterr().out


def test_cosine_lr_never_climbs_back_after_its_epochs():
    schedule = cosine_lr(0.1, 4)
    assert schedule(1) == 0.1 and schedule(2) > schedule(3) > schedule(4) > 0
    assert schedule(5) == schedule(9) == schedule(4)
    assert schedule.config == {"name": "cosine", "lr": 0.1, "epochs": 4, "min_lr": 0.0}


def test_a_resumed_run_keeps_the_cosine_it_began_with(tmp_path, capsys):
    run(tmp_path, "sched", epochs=3)
    net = Network(conv_net(nn))
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    h = net.fit(toy_data(40, dtype=np.float32), epochs=5, batch_size=16, optimizer=opt, checkpoint=tmp_path / "sched",
                resume=tmp_path / "sched" / "last.npz", lr_schedule=cosine_lr(0.05, 5), log_interval=0, progress=False)
    began = cosine_lr(0.05, 3)
    assert h["lr"] == [began(1), began(2), began(3), began(3), began(3)]
    assert "goes on along the cosine the run began with (lr 0.05 over 3 epochs)" in capsys.readouterr().out
    header = net.load(tmp_path / "sched" / "last.npz")
    assert header["extra"]["lr_schedule"]["epochs"] == 3   # and so it stays, however often it is resumed


def test_fit_says_when_the_first_step_compiles_the_kernels(monkeypatch, capsys):
    from manualbp.training import progress
    monkeypatch.setattr(progress, "kernel_cache_is_empty", lambda: True)
    manualbp.manual_seed(0)
    Network(conv_net(nn)).fit(toy_data(20, dtype=np.float32), epochs=2, batch_size=8, log_interval=1, progress=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "compiling kernels (first run only) ..."
    assert re.fullmatch(r"compiled in \d+\.\ds \(Numba caches the kernels: later runs start at once\)", lines[1])
    assert lines[2].startswith("Train Epoch: 1 [0/20 (0%)]")
    assert sum("compil" in line for line in lines) == 2   # said once, not again in epoch 2


def test_a_slow_first_step_over_a_partly_filled_cache_is_explained(monkeypatch):
    from manualbp.training import progress
    monkeypatch.setattr(progress, "kernel_cache_is_empty", lambda: False)
    said = []
    log = type("Log", (), {"say": lambda self, message: said.append(message)})()
    note = progress.CompileNote(log)
    note.before_step()
    note._start -= 3.0          # the first step took over 3 s ...
    assert note.after_step() is note
    note.before_step()          # ... the second almost nothing
    assert note.after_step() is None
    assert len(said) == 1 and re.fullmatch(r"the first step took \d+\.\ds: Numba compiled the kernels it had not "
                                           r"cached yet", said[0])
