"""The ``manualbp`` command: ``train`` on tiny settings writes its files; ``explain`` is delegated."""
import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_data import install_fake_cifar10, write_fake_mnist

from manualbp import cli, explain, models
from manualbp.network import Network

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
    assert "mlp on digits (1437 training / 360 test samples of 64)" in text and "Total params: 296" in text
    assert cli.main(["train", "--model", "mlp", "--epochs", "2", "--out", str(out), "--no-progress", "--lr", "0.1",
                     "--resume", str(out / "last.npz")]) == 0
    text = capsys.readouterr().out
    assert "Resumed from" in text and "Train Epoch: 2 [0/1437 (0%)]" in text and "Train Epoch: 1 " not in text
    assert len(json.loads((out / "history.json").read_text())["epochs"]) == 2


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
