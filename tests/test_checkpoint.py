"""Checkpoints: what they hold, that writing is atomic, and that bad files are refused without side effects."""
import json
import os
import zipfile

import numpy as np
import pytest

import manualbp
from manualbp import checkpoint, nn, optim
from manualbp.network import Network


def small_net(act=nn.ReLU):
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))


def trained(seed=0, act=nn.ReLU, steps=3):
    """A model and an SGD-with-momentum optimizer that has taken a few steps (so it has buffers)."""
    manualbp.manual_seed(seed)
    model = small_net(act)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x, y = rng.standard_normal((4, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 4)
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
    return model, opt


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def buffers(opt):
    return {str(i): s["momentum_buffer"] for i, s in opt.state_dict()["state"].items()}


def test_round_trip_restores_weights_momentum_and_header(tmp_path):
    model, opt = trained()
    path = tmp_path / "run" / "ck.npz"
    rng_state = np.random.default_rng(4).bit_generator.state
    checkpoint.save(path, model, opt, epoch=2, history={"epochs": [{"epoch": 1}]}, rng_state=rng_state)

    manualbp.manual_seed(99)
    model2 = small_net()
    opt2 = optim.SGD(model2.parameters(), lr=0.5, momentum=0.5)
    header = checkpoint.load(path, model2, opt2)
    assert_same(weights(model2), weights(model))
    assert_same(buffers(opt2), buffers(opt))
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["nesterov"] is True
    assert header["epoch"] == 2 and header["history"] == {"epochs": [{"epoch": 1}]}
    assert header["rng_state"] == json.loads(json.dumps(rng_state))
    assert header["format_version"] == checkpoint.FORMAT_VERSION
    assert header["manualbp_version"] == manualbp.__version__ and header["numpy_version"] == np.__version__
    assert header["architecture"] == repr(model) and len(header["sha256"]) == 64


def test_file_is_plain_arrays_loadable_without_pickle(tmp_path):
    model, opt = trained()
    path = tmp_path / "ck.npz"
    Network(model).save(path, optimizer=opt)
    with np.load(path, allow_pickle=False) as npz:
        names = set(npz.files)
        assert all(npz[n].dtype != object for n in names)
    assert {"__header__", "model/0.weight", "model/4.bias", "optimizer/0/momentum_buffer"} <= names
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_truncated_checkpoint_is_refused_and_nothing_changes(tmp_path):
    good_model, opt = trained(seed=0)
    good = tmp_path / "good.npz"
    checkpoint.save(good, good_model, opt)
    good_bytes = good.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])   # a write cut off half-way

    model, opt2 = trained(seed=1)
    before, before_buf = weights(model), buffers(opt2)
    with pytest.raises(ValueError, match="truncated or corrupted"):
        checkpoint.load(bad, model, opt2)
    assert_same(weights(model), before)
    assert_same(buffers(opt2), before_buf)
    assert good.read_bytes() == good_bytes                 # the previous good checkpoint is untouched
    checkpoint.load(good, model, opt2)                     # ... and still loads
    assert_same(weights(model), weights(good_model))


def test_flipped_bytes_are_caught(tmp_path):
    model, opt = trained()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, model, opt)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("model/0.weight.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 128 + 4   # inside the array data
    raw[start] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="truncated or corrupted|sha256"):
        checkpoint.load(path, small_net())


def test_checksum_mismatch_is_refused(tmp_path):
    model, _ = trained()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, model)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {n: npz[n] for n in npz.files}
    arrays["model/4.bias"] = arrays["model/4.bias"] + 1   # edited, with the old header and checksum
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="sha256"):
        checkpoint.load(path, small_net())


def test_mismatched_architecture_is_refused_and_model_untouched(tmp_path):
    model, opt = trained()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, model, opt)
    other = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    before = weights(other)
    with pytest.raises(ValueError, match=r"does not match this model.*'0.weight' has shape \(2, 1, 3, 3\)"):
        checkpoint.load(path, other)
    assert_same(weights(other), before)

    same_shapes = small_net(nn.Tanh)   # same parameter shapes, different architecture
    before = weights(same_shapes)
    with pytest.raises(ValueError, match="architectures differ"):
        Network(same_shapes).load(path)
    assert_same(weights(same_shapes), before)
    Network(same_shapes).load(path, strict=False)          # the weights do fit, if you insist
    assert_same(weights(same_shapes), weights(model))


def test_optimizer_mismatch_is_refused(tmp_path):
    model, _ = trained()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, model)   # no optimizer state in it
    with pytest.raises(ValueError, match="no optimizer state"):
        checkpoint.load(path, small_net(), optim.SGD(small_net().parameters(), lr=0.1))


def test_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = trained(seed=0)
    path = tmp_path / "last.npz"
    checkpoint.save(path, model, opt, epoch=1)
    before = path.read_bytes()

    def dies_half_way(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", dies_half_way)
    newer, opt2 = trained(seed=1)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, newer, opt2, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.npz"]            # no temp file left behind
    assert checkpoint.load(path, small_net())["epoch"] == 1


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a manualbp checkpoint"):
        checkpoint.load(path, small_net())
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "missing.npz", small_net())


def test_a_temp_file_left_by_a_killed_write_is_removed_by_the_next_save(tmp_path):
    import time

    model = nn.Linear(2, 2)
    stale = tmp_path / ".last.npz.abc123.tmp"
    stale.write_bytes(b"half a zip")
    old = time.time() - 60
    os.utime(stale, (old, old))
    other = tmp_path / ".best.npz.def456.tmp"   # another checkpoint's temp file: not this save's business
    other.write_bytes(b"x")
    os.utime(other, (old, old))
    checkpoint.save(tmp_path / "last.npz", model)
    assert not stale.exists() and other.exists()
    checkpoint.read(tmp_path / "last.npz")
