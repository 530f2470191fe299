"""The ``manualbp`` command: ``train`` on tiny settings writes its files; ``explain`` is delegated."""
import csv
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_data import cut_off_network, install_fake_cifar10, write_fake_mnist

from manualbp import cli, explain, models, training
from manualbp.network import History, Network

ROOT = Path(__file__).resolve().parents[1]


def test_train_lenet5_on_a_slice_of_digits_writes_history_curve_and_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--epochs", "2", "--limit", "192", "--batch-size", "32", "--out", str(out),
                     "--no-progress", "--log-interval", "2"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "manualbp train: lenet5 on digits (192 training / 192 test samples of 3x32x32)" in text
    assert "            Conv2d-1            [-1, 6, 28, 28]             456" in text   # the summary table
    assert "Total params: 62,006" in text
    assert "Train Epoch: 1 [0/192 (0%)]\tLoss: " in text and "Train Epoch: 2 [64/192 (33%)]\tLoss: " in text
    assert text.count("Validation set: Average loss: ") == 2 and "Best checkpoint: " in text
    for name in ("history.csv", "history.json", "curve.png", "best.npz", "last.npz"):
        assert (out / name).is_file(), name
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[1]["val_accuracy"]) > 0
    hist = json.loads((out / "history.json").read_text())
    assert len(hist["epochs"]) == 2 and len(hist["steps"]) == 2 * 6
    header = Network(models.lenet5()).load(out / "best.npz")
    best = min(hist["epochs"], key=lambda r: r["val_loss"])
    assert header["epoch"] == best["epoch"]


def test_train_mlp_on_flat_digits_and_resume(tmp_path, capsys):
    out = tmp_path / "mlp"
    assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--out", str(out), "--no-progress",
                     "--lr", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "mlp on digits (1437 training / 360 test samples of 64)" in text and "Total params: 4,810" in text
    assert cli.main(["train", "--model", "mlp", "--epochs", "2", "--out", str(out), "--no-progress", "--lr", "0.1",
                     "--resume", str(out / "last.npz")]) == 0
    text = capsys.readouterr().out
    assert "Resumed from" in text and "Train Epoch: 2 [0/1437 (0%)]" in text and "Train Epoch: 1 " not in text
    assert len(json.loads((out / "history.json").read_text())["epochs"]) == 2


def test_the_mlp_learns_the_digits(tmp_path, capsys):
    """``manualbp train --model mlp`` with the defaults: a hidden layer of 64 ReLUs, >= 90% on the digits."""
    out = tmp_path / "mlp"
    assert cli.main(["train", "--model", "mlp", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Linear-1                   [-1, 64]" in text and "ReLU-2" in text
    assert json.loads((out / "history.json").read_text())["epochs"][-1]["val_accuracy"] >= 0.90, text[-1500:]


def torch_cosine_lrs(lr, t_max, epochs):
    """The rate of each epoch under torch's CosineAnnealingLR stepped once per epoch, as fit steps it."""
    import torch
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_resuming_with_more_epochs_goes_on_along_the_same_schedule(tmp_path, capsys):
    """--scheduler cosine (the default) is CosineAnnealingLR(T_max=--epochs), saved in the checkpoint: resumed
    with more epochs it keeps its T_max and climbs back up past it, as torch's (epoch 4 at 0, then up)."""
    out = tmp_path / "run"
    common = ["train", "--model", "mlp", "--out", str(out), "--no-progress", "--log-interval", "0"]
    assert cli.main(common + ["--epochs", "3"]) == 0
    text = capsys.readouterr().out
    assert "Finished 3 epochs in " in text and "in all" not in text and "cosine schedule" in text
    assert cli.main(common + ["--epochs", "5", "--resume", str(out / "last.npz")]) == 0
    text = capsys.readouterr().out
    assert "5 epochs (resuming after epoch 3)" in text
    assert ("goes on along the cosine the run began with (CosineAnnealingLR, T_max 3): past epoch 3 it climbs back "
            "up, as torch's does") in text
    assert re.search(r"^Finished 2 epochs \(4-5\) in \d+\.\ds, 5 in all\. Test accuracy", text, re.MULTILINE), text
    lrs = [row["lr"] for row in json.loads((out / "history.json").read_text())["epochs"]]
    assert lrs == torch_cosine_lrs(0.01, 3, 5)
    assert lrs[0] == 0.01 and lrs[0] > lrs[1] > lrs[2] > lrs[3] == 0.0 < lrs[4]   # climbs back
    from manualbp import checkpoint
    saved = checkpoint.read(out / "last.npz")[0]["extra"]
    assert saved["scheduler"]["type"] == "CosineAnnealingLR" and saved["lr_schedule"] is None
    assert saved["scheduler"]["state"]["T_max"] == 3 and saved["scheduler"]["state"]["last_epoch"] == 5
    assert cli.main(common + ["--epochs", "5", "--resume", str(out / "last.npz")]) == 1
    assert "has finished 5 epochs already, and --epochs counts from the start" in capsys.readouterr().err
    assert cli.main(common + ["--epochs", "6", "--scheduler", "step", "--resume", str(out / "last.npz")]) == 1
    assert ("was trained with CosineAnnealingLR, not --scheduler step; resume it with the --scheduler it began "
            "with") in capsys.readouterr().err
    assert cli.main(common + ["--epochs", "2", "--scheduler", "constant", "--out", str(tmp_path / "c")]) == 0
    assert cli.main(common + ["--epochs", "3", "--out", str(tmp_path / "c"), "--resume",
                              str(tmp_path / "c" / "last.npz")]) == 1
    assert "was trained with a constant learning rate, not --scheduler cosine" in capsys.readouterr().err


@pytest.mark.parametrize("signal_at_step", [5, 6], ids=["mid-epoch", "end-of-epoch"])
def test_a_cosine_run_interrupted_and_resumed_ends_bit_for_bit_like_an_uninterrupted_one(
        tmp_path, capsys, monkeypatch, signal_at_step):
    """A Ctrl-C in epoch 2 of 4 (3 steps an epoch: during step 2, or during its last step, so that it stops
    between epochs), then --resume from interrupted.npz: the same rates, losses and weights, bit for bit."""
    import signal

    from manualbp import checkpoint
    monkeypatch.setattr(cli, "_compile_kernels", lambda *a: None)   # only the run's own steps are counted
    common = ["train", "--model", "mlp", "--epochs", "4", "--limit", "96", "--batch-size", "32", "--no-progress",
              "--log-interval", "0"]
    assert cli.main(common + ["--out", str(tmp_path / "full")]) == 0
    step, calls = Network.train_step, []

    def train_step(self, *args):
        calls.append(1)
        if len(calls) == signal_at_step:
            os.kill(os.getpid(), signal.SIGINT)   # as a Ctrl-C: fit finishes the step, saves, and stops
        return step(self, *args)

    monkeypatch.setattr(Network, "train_step", train_step)
    assert cli.main(common + ["--out", str(tmp_path / "cut")]) == 130
    monkeypatch.setattr(Network, "train_step", step)
    header = checkpoint.read(tmp_path / "cut" / "interrupted.npz")[0]
    assert header["epoch"] == (1 if signal_at_step == 5 else 2)
    assert header["extra"]["scheduler"]["type"] == "CosineAnnealingLR"
    assert cli.main(common + ["--out", str(tmp_path / "cut"), "--resume", str(tmp_path / "cut" / "interrupted.npz")]) == 0
    capsys.readouterr()
    (full_header, full), (cut_header, cut) = (checkpoint.read(tmp_path / d / "last.npz") for d in ("full", "cut"))
    assert sorted(full) == sorted(cut)
    for name in full:   # the weights and SGD's momentum buffers
        np.testing.assert_array_equal(cut[name], full[name], err_msg=name)
    assert cut_header["extra"]["scheduler"] == full_header["extra"]["scheduler"]
    rows = [json.loads((tmp_path / d / "history.json").read_text())["epochs"] for d in ("full", "cut")]
    for key in ("lr", "train_loss", "val_loss"):
        assert [r[key] for r in rows[1]] == [r[key] for r in rows[0]], key
    assert [r["lr"] for r in rows[0]] == torch_cosine_lrs(0.01, 4, 4)


def test_a_checkpoint_of_the_older_cosine_function_still_resumes_along_it(tmp_path, capsys, monkeypatch):
    """Checkpoints written when --scheduler cosine was the function cosine_lr (fit's lr_schedule, its settings in
    the header, no scheduler state) resume along that function, which holds its last rate past its epochs:
    bit for bit as the older command line resumed them."""
    from manualbp import checkpoint
    from manualbp.network import cosine_lr

    real = cli._scheduler

    def older(args, opt, steps_per_epoch, saved=None):   # what --scheduler cosine gave fit before
        return (None, cosine_lr(args.lr, args.epochs)) if args.scheduler == "cosine" else real(args, opt,
                                                                                              steps_per_epoch, saved)

    common = ["train", "--model", "mlp", "--limit", "96", "--no-progress", "--log-interval", "0"]
    monkeypatch.setattr(cli, "_scheduler", older)
    for d in ("old", "new"):
        assert cli.main(common + ["--epochs", "3", "--out", str(tmp_path / d)]) == 0
    header = checkpoint.read(tmp_path / "new" / "last.npz")[0]
    assert header["extra"]["lr_schedule"] == {"name": "cosine", "lr": 0.01, "epochs": 3, "min_lr": 0.0}
    assert "scheduler" not in header["extra"]
    assert cli.main(common + ["--epochs", "5", "--out", str(tmp_path / "old"), "--resume",
                              str(tmp_path / "old" / "last.npz")]) == 0   # the older code resuming it
    monkeypatch.setattr(cli, "_scheduler", real)
    capsys.readouterr()
    assert cli.main(common + ["--epochs", "6", "--scheduler", "step", "--out", str(tmp_path / "new"), "--resume",
                              str(tmp_path / "new" / "last.npz")]) == 1
    assert "was trained with the older cosine schedule, not --scheduler step" in capsys.readouterr().err
    assert cli.main(common + ["--epochs", "5", "--out", str(tmp_path / "new"), "--resume",
                              str(tmp_path / "new" / "last.npz")]) == 0
    assert "goes on along the cosine the run began with (lr 0.01 over 3 epochs)" in capsys.readouterr().out
    began = cosine_lr(0.01, 3)
    rows = [json.loads((tmp_path / d / "history.json").read_text())["epochs"] for d in ("old", "new")]
    assert [r["lr"] for r in rows[1]] == [began(1), began(2), began(3), began(3), began(3)]
    assert [r["val_loss"] for r in rows[1]] == [r["val_loss"] for r in rows[0]]
    (_, old), (new_header, new) = (checkpoint.read(tmp_path / d / "last.npz") for d in ("old", "new"))
    for name in old:
        np.testing.assert_array_equal(new[name], old[name], err_msg=name)
    assert new_header["extra"]["lr_schedule"]["epochs"] == 3 and "scheduler" not in new_header["extra"]


def test_train_on_mnist_and_cifar10_folders_through_torchvision(tmp_path, monkeypatch, capsys):
    write_fake_mnist(tmp_path / "mnist")
    assert cli.main(["train", "--dataset", "mnist", "--data-root", str(tmp_path / "mnist"), "--epochs", "1",
                     "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "lenet5 on mnist (5 training / 3 test samples of 1x32x32)" in text   # 28x28 padded to 32x32
    root = tmp_path / "cifar"
    install_fake_cifar10(root, monkeypatch)
    assert cli.main(["train", "--model", "cifar10net", "--dataset", "cifar10", "--data-root", str(root),
                     "--epochs", "1", "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "cifar10net on cifar10 (20 training / 4 test samples of 3x32x32)" in text and "145,578" in text
    assert (tmp_path / "c" / "best.npz").is_file()


def test_missing_cifar10_without_download_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "none"), "--out",
                     str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "download=False" in err and "--download" in err and str(tmp_path / "none") in err


def test_download_without_a_network_is_one_sentence_and_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cut_off_network(monkeypatch)
    assert cli.main(["train", "--dataset", "cifar10", "--download"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("manualbp train: cifar10: could not download it into 'data' (")
    assert list(tmp_path.iterdir()) == []   # neither ./data nor runs/


def test_download_without_a_network_from_the_command_line(tmp_path):
    """The whole of stderr, and the exit status, of a process that finds no network."""
    code = ("import sys, torchvision.datasets as tvd\n"
            "tvd.MNIST.mirrors = ['http://127.0.0.1:9/']\n"
            "from manualbp.cli import main\n"
            "sys.exit(main(['train', '--dataset', 'mnist', '--download']))\n")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "mnist: could not download it into 'data'" in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_bench_without_torch_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)   # import torch now fails, as where it is not installed
    assert cli.main(["bench", "--quick"]) == 1
    err = capsys.readouterr().err
    assert "PyTorch, which is not installed: pip install torch" in err
    assert "--index-url https://download.pytorch.org/whl/cpu" in err and "Traceback" not in err


def test_a_first_run_says_it_compiles_the_kernels_and_how_long_it_took(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training, "kernel_cache_is_empty", lambda: True)
    assert cli.main(["train", "--epochs", "1", "--limit", "64", "--out", str(tmp_path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    # between "..." and "done", the kernel families Numba compiles (none here: the cache holds them already)
    assert re.search(r"^compiling kernels \(first run only\) \.\.\. (?:[a-z_]+ )*done in \d+\.\ds", text,
                     re.MULTILINE), text
    assert text.index("compiling kernels") < text.index("Layer (type)") < text.index("Train Epoch: 1")


def test_an_empty_numba_cache_is_noticed():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        code = "from manualbp import training; print(training.kernel_cache_is_empty())"
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                                check=False)
    assert result.stdout.strip() == "True", result.stderr


def test_the_curve_has_a_title_and_a_one_epoch_run_shows_markers(tmp_path):
    history = History([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "train_accuracy": 0.5, "val_accuracy": 0.4}],
                      [2.0, 1.5, 1.0])
    fig = cli.curve_figure(history, "lenet5 on digits, SGD(lr=0.01, momentum=0.9, cosine schedule)")
    assert fig._suptitle.get_text() == "lenet5 on digits, SGD(lr=0.01, momentum=0.9, cosine schedule)"
    per_epoch = [line for ax in fig.axes for line in ax.lines if len(line.get_xdata()) == 1]
    assert len(per_epoch) == 4 and all(line.get_marker() not in (None, "None", "") for line in per_epoch)
    assert cli.write_curve(history, tmp_path / "c.png", "title")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_explain_is_delegated(monkeypatch):
    calls = []
    monkeypatch.setattr(explain, "main", lambda argv=None: calls.append(argv) or 0)
    assert cli.main(["explain", "--lr", "0.1"]) == 0
    assert calls == [["--lr", "0.1"]]


def test_bad_options_and_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "resnet"])
    with pytest.raises(SystemExit):
        cli.main(["train", "--epochs", "0"])
    assert cli.main([]) == 2 and "train" in capsys.readouterr().out


def test_python_dash_m_manualbp():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "manualbp", "train", "--help"], cwd=str(ROOT), env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    for option in ("--model", "--dataset", "--epochs", "--batch-size", "--lr", "--momentum", "--seed", "--out",
                   "--download"):
        assert option in result.stdout


@pytest.mark.slow
def test_the_main_job_default_train_reaches_95_percent(tmp_path, capsys):
    """``manualbp train`` with its defaults: LeNet-5 on the offline digits, >= 95% held-out accuracy."""
    out = tmp_path / "default"
    assert cli.main(["train", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    hist = json.loads((out / "history.json").read_text())
    train_loss = [row["train_loss"] for row in hist["epochs"]]
    assert len(train_loss) == cli.DEFAULT_EPOCHS
    assert all(b < a for a, b in itertools.pairwise(train_loss)), train_loss   # falling epoch by epoch
    assert hist["epochs"][-1]["val_accuracy"] >= 0.95, text[-2000:]
    header = Network(models.lenet5()).load(out / "best.npz")
    assert hist["epochs"][header["epoch"] - 1]["val_accuracy"] >= 0.95
    assert "Test accuracy after the last epoch: " in text


def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a GPU is present: --device cuda would train")
    status = cli.main(["train", "--limit", "64", "--epochs", "1", "--device", "cuda", "--out", str(tmp_path)])
    assert status == 1
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("optimizer,scheduler", [("adam", "onecycle"), ("adamw", "step"), ("rmsprop", "plateau"),
                                                 ("adagrad", "exponential"), ("sgd", "multistep"), ("sgd", "cosine")])
def test_train_with_each_optimizer_and_scheduler(tmp_path, capsys, optimizer, scheduler):
    out = tmp_path / "run"
    args = ["train", "--model", "mlp", "--epochs", "2", "--limit", "96", "--out", str(out), "--no-progress",
            "--log-interval", "0", "--optimizer", optimizer, "--scheduler", scheduler, "--weight-decay", "0.001"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    name = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad", "sgd": "SGD"}[optimizer]
    assert f"{name}(lr=0.01" in text and f"weight_decay=0.001, {scheduler} schedule)" in text
    from manualbp import checkpoint
    header = checkpoint.read(out / "last.npz")[0]
    assert header["optimizer"]["type"] == name
    assert header["extra"]["scheduler"]["type"] in {"OneCycleLR", "StepLR", "ReduceLROnPlateau", "ExponentialLR",
                                                    "MultiStepLR", "CosineAnnealingLR"}
    lrs = [row["lr"] for row in json.loads((out / "history.json").read_text())["epochs"]]
    if scheduler in ("onecycle", "exponential", "cosine"):
        assert lrs[0] != lrs[1]
    resumed = cli.main(args[:4] + ["3"] + args[5:] + ["--resume", str(out / "last.npz")])
    if scheduler == "onecycle":   # its cycle was laid out over 2 epochs
        assert resumed == 1 and "OneCycleLR" in capsys.readouterr().err
    else:
        assert resumed == 0
        assert len(json.loads((out / "history.json").read_text())["epochs"]) == 3


def test_schedule_is_the_older_name_of_scheduler(tmp_path, capsys):
    common = ["train", "--model", "mlp", "--epochs", "2", "--limit", "64", "--no-progress", "--log-interval", "0"]
    assert cli.main(common + ["--out", str(tmp_path / "a"), "--schedule", "constant"]) == 0
    assert cli.main(common + ["--out", str(tmp_path / "b"), "--scheduler", "constant"]) == 0
    text = capsys.readouterr().out
    assert text.count("SGD(lr=0.01, momentum=0.9, constant schedule)") == 2
    runs = [json.loads((tmp_path / d / "history.json").read_text())["epochs"] for d in "ab"]
    assert [r["lr"] for r in runs[0]] == [r["lr"] for r in runs[1]] == [0.01, 0.01]
    assert [r["val_loss"] for r in runs[0]] == [r["val_loss"] for r in runs[1]]
    with pytest.raises(SystemExit):
        cli.main(common + ["--schedule", "cosine", "--scheduler", "step"])
    with pytest.raises(SystemExit):
        cli.main(common + ["--optimizer", "adam", "--momentum", "0.9"])
    with pytest.raises(SystemExit):
        cli.main(common + ["--optimizer", "lbfgs"])
    assert cli.main(common + ["--out", str(tmp_path / "c"), "--optimizer", "adam", "--weight-decay", "-1"]) == 1
    assert "Invalid weight_decay value: -1.0" in capsys.readouterr().err


def test_train_writes_gradient_norms_and_their_picture_beside_the_titled_curve(tmp_path, capsys, monkeypatch):
    titles = {}

    def spy(name):
        real = getattr(cli, name)

        def write(history, path, title=None):
            titles[name] = title
            return real(history, path, title)
        return write
    for name in ("write_curve", "write_gradients"):
        monkeypatch.setattr(cli, name, spy(name))
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # one epoch: a point per curve, and no warning about singular axis limits
        assert cli.main(["train", "--model", "mlp", "--epochs", "1", "--limit", "128", "--out", str(out),
                         "--no-progress", "--log-interval", "0", "--optimizer", "adam", "--lr", "0.001"]) == 0
    text = capsys.readouterr().out
    assert f"curve: {out / 'curve.png'}, {out / 'gradients.png'}" in text and str(out / "gradients.csv") in text
    for name in ("curve.png", "gradients.png"):
        head = (out / name).read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", name
        assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == \
            ((1000, 440) if name == "curve.png" else (1200, 460)), name
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    with open(out / "gradients.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["step"], r["param"]) for r in rows] == [
        ("1", "4", "0.weight"), ("1", "4", "0.bias"), ("1", "4", "2.weight"), ("1", "4", "2.bias")]
    hist = json.loads((out / "history.json").read_text())
    assert [r["grad_norm"] for r in hist["gradients"]] == [float(r["grad_norm"]) for r in rows]
    assert all(float(r["update_ratio"]) > 0 for r in rows)
    # both pictures are titled with the model, the data set and the optimizer
    title = "mlp on digits, Adam(lr=0.001, cosine schedule), batch 32"
    assert titles == {"write_curve": title, "write_gradients": title}
    from manualbp import viz
    assert viz.gradients_figure(History.from_dict(hist), title)._suptitle.get_text() == title
