"""Module buffers as torch's: register_buffer, buffers()/named_buffers(), state_dict order and keys (persistent
ones only), load_state_dict (torch's state_dict too), dtype casts that keep integer buffers, checkpoints and
safetensors files, summary() not counting them."""
import numpy as np
import pytest

import manualbp
from manualbp import nn
from manualbp.checkpoint import load, save

torch = pytest.importorskip("torch")


class Stats(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("running", np.zeros(2, dtype=np.float32))
        self.register_buffer("count", np.array(0, dtype=np.int64))
        self.register_buffer("scratch", np.ones(4, dtype=np.float32), persistent=False)
        self.register_buffer("absent", None)

    def forward(self, x):
        return self.lin(x)


class TorchStats(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("running", torch.zeros(2))
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))
        self.register_buffer("scratch", torch.ones(4), persistent=False)
        self.register_buffer("absent", None)


def test_buffers_are_attributes_listed_like_torchs():
    m, t = Stats(), TorchStats()
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in t.named_buffers()] == ["running", "count", "scratch"]
    assert len(list(m.buffers())) == 3
    assert m.count.dtype == np.int64 and m.count.shape == ()
    assert m.absent is None
    assert [n for n, _ in m.named_parameters()] == ["lin.weight", "lin.bias"]  # a buffer is no parameter
    m.running = np.array([1.0, 2.0], dtype=np.float32)  # assignment replaces the buffer's array
    np.testing.assert_array_equal(m._buffers["running"], [1.0, 2.0])
    assert "running" not in m.__dict__
    del m.scratch
    assert [n for n, _ in m.named_buffers()] == ["running", "count"]
    with pytest.raises(AttributeError, match="scratch"):
        assert m.scratch is None


def test_state_dict_keys_and_order_are_torchs_and_a_torch_state_dict_loads():
    seq, tseq = nn.Sequential(Stats(), nn.ReLU(), Stats()), torch.nn.Sequential(TorchStats(), torch.nn.ReLU(),
                                                                               TorchStats())
    assert list(seq.state_dict()) == list(tseq.state_dict())  # params then persistent buffers, per module
    with torch.no_grad():
        tseq[2].running.copy_(torch.tensor([3.0, 4.0]))
        tseq[2].count.fill_(7)
    result = seq.load_state_dict(tseq.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(seq[2].running, [3.0, 4.0])
    assert seq[2].count == 7 and seq[2].count.dtype == np.int64 and seq[2].count.shape == ()
    sd = seq.state_dict()
    sd["0.running"] = np.zeros(3)
    with pytest.raises(ValueError, match="0.running"):
        seq.load_state_dict(sd)


def test_casts_keep_integer_buffers_and_to_moves_them():
    m = Stats().double()
    assert m.running.dtype == np.float64 and m.scratch.dtype == np.float64 and m.count.dtype == np.int64
    m.to(np.float32)
    assert m.running.dtype == np.float32 and m.count.dtype == np.int64
    m.to("cpu")
    assert m.count.shape == () and isinstance(m.running, np.ndarray)


def test_register_buffer_refuses_what_torch_refuses():
    m = Stats()
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("lin", np.zeros(1))
    with pytest.raises(KeyError, match="contain"):
        m.register_buffer("a.b", np.zeros(1))
    with pytest.raises(TypeError, match="buffer 'x'"):
        m.register_buffer("x", [1.0, 2.0])
    m.register_buffer("running", np.ones(2))  # re-registering a buffer replaces it, as in torch
    np.testing.assert_array_equal(m.running, [1.0, 1.0])


def test_checkpoints_and_safetensors_carry_buffers(tmp_path):
    pytest.importorskip("safetensors")
    import safetensors.torch
    m = Stats()
    m.running = np.array([0.5, 1.5], dtype=np.float32)
    m.count = np.array(3, dtype=np.int64)
    save(tmp_path / "c.npz", m)
    fresh = Stats()
    load(tmp_path / "c.npz", fresh)
    np.testing.assert_array_equal(fresh.running, [0.5, 1.5])
    assert fresh.count == 3 and fresh.count.dtype == np.int64
    manualbp.save_safetensors(m, tmp_path / "w.safetensors")
    t = TorchStats()
    t.load_state_dict(safetensors.torch.load_file(str(tmp_path / "w.safetensors")))
    assert t.count.item() == 3 and t.count.dtype == torch.int64
    np.testing.assert_array_equal(t.running.numpy(), [0.5, 1.5])
    back = Stats()
    manualbp.load_safetensors(tmp_path / "w.safetensors", back)
    assert back.count == 3 and back.count.dtype == np.int64


def test_summary_counts_no_buffer_as_a_parameter():
    info = manualbp.summary(Stats(), (3,), verbose=False)
    assert info["total_params"] == 3 * 2 + 2
