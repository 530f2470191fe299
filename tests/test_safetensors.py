"""Weights both ways between manualbp and torch through .safetensors files (LeNet-5 against the same
torch.nn.Sequential): what one writes, the other loads, and both then compute the same outputs."""
import os

import numpy as np
import pytest
import torch

import manualbp

st_torch = pytest.importorskip("safetensors.torch")


def torch_lenet5():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 5), torch.nn.MaxPool2d(2, 2), torch.nn.Conv2d(6, 16, 5), torch.nn.MaxPool2d(2, 2),
        torch.nn.Flatten(), torch.nn.Linear(400, 120), torch.nn.Linear(120, 84), torch.nn.Linear(84, 10))


def outputs(ours, theirs):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        return ours(x), theirs(torch.from_numpy(x)).numpy()


def test_manualbp_writes_torch_reads(tmp_path, assert_close):
    manualbp.manual_seed(1)
    ours, theirs = manualbp.models.lenet5(), torch_lenet5()
    path = tmp_path / "lenet5.safetensors"
    assert manualbp.save_safetensors(ours, path) == path
    result = theirs.load_state_dict(st_torch.load_file(path))
    assert not result.missing_keys and not result.unexpected_keys
    for name, value in ours.state_dict().items():
        np.testing.assert_array_equal(theirs.state_dict()[name].numpy(), value)
    mine, torch_out = outputs(ours, theirs)
    assert_close(mine, torch_out, 1e-5, "LeNet-5 after torch loaded our weights")


def test_torch_writes_manualbp_reads(tmp_path, assert_close):
    torch.manual_seed(2)
    ours, theirs = manualbp.models.lenet5(), torch_lenet5()
    path = tmp_path / "torch.safetensors"
    st_torch.save_file(theirs.state_dict(), str(path))
    state = manualbp.load_safetensors(path)
    assert set(state) == set(ours.state_dict()) and all(isinstance(v, np.ndarray) for v in state.values())
    ours.load_state_dict(state)
    mine, torch_out = outputs(ours, theirs)
    assert_close(mine, torch_out, 1e-5, "LeNet-5 after loading torch's weights")
    other = manualbp.models.lenet5()
    assert manualbp.load_safetensors(path, other).keys() == state.keys()  # loads into a model given
    np.testing.assert_array_equal(other.state_dict()["0.weight"], theirs[0].weight.detach().numpy())


def test_round_trip_of_a_state_dict_keeps_dtypes_and_metadata(tmp_path):
    from safetensors import safe_open

    state = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "b": torch.ones(2, requires_grad=True),
             "n": np.array(3, dtype=np.int64)}
    path = tmp_path / "sub" / "state.safetensors"  # the folder is created
    manualbp.save_safetensors(state, path, metadata={"epoch": 3})
    back = manualbp.load_safetensors(path)
    assert back["a"].dtype == np.float64 and back["b"].dtype == np.float32 and back["n"].shape == ()
    np.testing.assert_array_equal(back["a"], state["a"])
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"format": "pt", "epoch": "3"}
    assert [name for name in os.listdir(path.parent) if name.endswith(".tmp")] == []


def test_writing_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    manualbp.save_safetensors({"w": np.ones(3, np.float32)}, path)
    good = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        manualbp.save_safetensors({"w": np.zeros(3, np.float32)}, path)
    assert path.read_bytes() == good  # the previous file, untouched
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []


def test_bad_files_and_bad_state(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        manualbp.load_safetensors(tmp_path / "missing.safetensors")
    path = tmp_path / "w.safetensors"
    manualbp.save_safetensors(manualbp.models.lenet5(), path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        manualbp.load_safetensors(cut)
    model = manualbp.nn.Sequential(manualbp.nn.Linear(3, 2))
    before = model.state_dict()
    with pytest.raises(ValueError, match="missing keys"):
        manualbp.load_safetensors(path, model)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], before["0.weight"])
    with pytest.raises(TypeError, match="a Module or a mapping"):
        manualbp.save_safetensors([np.ones(2)], tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="numeric arrays"):
        manualbp.save_safetensors({"s": np.array(["a"])}, tmp_path / "x.safetensors")
