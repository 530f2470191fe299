"""manualbp.data.DataLoader (torch's signature, NumPy batches) and Network.fit/evaluate over loaders and iterables."""
import os
import re
import signal

import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms

import manualbp
from manualbp import checkpoint, nn, optim
from manualbp.data import ArrayDataset, DataLoader
from manualbp.network import Network


def toy(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)).astype(np.float32), rng.integers(0, 5, n)


def small_net(seed=3):
    manualbp.manual_seed(seed)
    return Network(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 5))


def fake_data(size=10, transform=None):
    return torchvision.datasets.FakeData(size=size, image_size=(3, 8, 8), num_classes=5, transform=transform)


def same_weights(a, b):
    for (k, u), v in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(u, v, err_msg=k)


# --- the loader itself -------------------------------------------------------------------------------------

def test_an_array_pair_len_dataset_and_batches():
    x, y = toy(10)
    loader = DataLoader((x, y), batch_size=4)
    assert len(loader) == 3 and len(loader.dataset) == 10 and loader.batch_size == 4
    assert isinstance(loader.dataset, ArrayDataset)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)   # shuffle defaults to False
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    assert len(DataLoader((x, y), batch_size=4, drop_last=True)) == 2
    assert [len(b[0]) for b in DataLoader((x, y), batch_size=4, drop_last=True)] == [4, 4]


def test_shuffle_draws_from_manual_seed_or_from_a_generator():
    x = np.arange(30, dtype=np.float32)[:, None]
    y = np.arange(30)

    def order(**kw):
        return np.concatenate([yb for _, yb in DataLoader((x, y), batch_size=7, shuffle=True, **kw)])

    manualbp.manual_seed(4)
    first = order()
    manualbp.manual_seed(4)
    assert np.array_equal(first, order()) and not np.array_equal(first, y)
    assert sorted(first.tolist()) == list(range(30))
    loader = DataLoader((x, y), batch_size=7, shuffle=True, generator=np.random.default_rng(1))
    again = DataLoader((x, y), batch_size=7, shuffle=True, generator=np.random.default_rng(1))
    a, b = [np.concatenate([yb for _, yb in ld]) for ld in (loader, again)]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, np.concatenate([yb for _, yb in loader]))   # a new order every pass


def test_torchvision_dataset_gives_the_batches_torch_gives():
    ours = DataLoader(fake_data(transform=transforms.ToTensor()), batch_size=4)
    theirs = torch.utils.data.DataLoader(fake_data(transform=transforms.ToTensor()), batch_size=4)
    assert len(ours) == len(theirs) == 3 and len(ours.dataset) == 10
    for (x, y), (tx, ty) in zip(ours, theirs):
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape[1:] == (3, 8, 8)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x, tx.numpy())
        np.testing.assert_array_equal(y, ty.numpy())


def test_pil_images_become_what_to_tensor_makes():
    pil = DataLoader(fake_data(), batch_size=5)   # no transform: the dataset returns PIL images
    tensors = DataLoader(fake_data(transform=transforms.ToTensor()), batch_size=5)
    for (x, y), (tx, ty) in zip(pil, tensors):
        assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
        np.testing.assert_array_equal(x, tx)
        np.testing.assert_array_equal(y, ty)


def test_a_list_of_pairs_torch_tensors_and_labels():
    samples = [(np.full((2, 2), i, np.float32), i % 3) for i in range(5)]
    x, y = next(iter(DataLoader(samples, batch_size=5)))
    assert x.shape == (5, 2, 2) and x.dtype == np.float32 and y.dtype == np.int64 and y.tolist() == [0, 1, 2, 0, 1]
    tds = torch.utils.data.TensorDataset(torch.arange(12.0).reshape(6, 2), torch.arange(6))
    x, y = next(iter(DataLoader(tds, batch_size=4)))
    assert x.dtype == np.float32 and x.shape == (4, 2) and y.dtype == np.int64 and y.tolist() == [0, 1, 2, 3]
    x, y = next(iter(DataLoader(samples, batch_size=2, collate_fn=lambda s: (np.stack([a for a, _ in s]), [0, 0]))))
    assert x.shape == (2, 2, 2)


@pytest.mark.parametrize("name, value", [("sampler", [0, 1]), ("batch_sampler", [[0, 1]]), ("num_workers", 2),
                                         ("pin_memory", True), ("timeout", 5), ("worker_init_fn", print),
                                         ("prefetch_factor", 2), ("persistent_workers", True), ("in_order", False)])
def test_options_not_implemented_are_refused_by_name(name, value):
    with pytest.raises(ValueError, match=f"DataLoader: {name}=.* is not supported"):
        DataLoader(toy(4), batch_size=2, **{name: value})


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size=None"):
        DataLoader(toy(4), batch_size=None)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(toy(4), batch_size=0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        DataLoader(toy(4), generator=torch.Generator())
    with pytest.raises(TypeError, match="map-style dataset"):
        DataLoader(iter(range(3)))
    with pytest.raises(ValueError, match="different shapes"):
        list(DataLoader([(np.zeros(2), 0), (np.zeros(3), 1)], batch_size=2))


# --- Network.fit / evaluate over loaders ---------------------------------------------------------------------

def test_fit_over_a_dataloader_equals_fit_over_the_arrays():
    x, y = toy(40)
    by_arrays, by_loader = small_net(), small_net()
    manualbp.manual_seed(9)
    h1 = by_arrays.fit((x, y), epochs=2, batch_size=16, verbose=False)
    manualbp.manual_seed(9)
    h2 = by_loader.fit(DataLoader((x, y), batch_size=16, shuffle=True), epochs=2, verbose=False)
    assert h1.steps == h2.steps and h1["train_accuracy"] == h2["train_accuracy"]
    same_weights(by_arrays, by_loader)


def test_fit_over_torchs_dataloader_prints_the_tutorials_line(capsys):
    x, y = toy(40)
    train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                               batch_size=16)
    net, ref = small_net(), small_net()
    h = net.fit(train_loader, epochs=1, log_interval=1, val=DataLoader((x, y), batch_size=7), progress=False)
    ref_h = ref.fit((x, y), epochs=1, batch_size=16, shuffle=False, verbose=False)
    assert h.steps == ref_h.steps
    same_weights(net, ref)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Train Epoch")]
    for batch_idx, ((data, _), line) in enumerate(zip(train_loader, lines)):
        loss = h.steps[batch_idx]
        assert line == (f"Train Epoch: {1} [{batch_idx * len(data)}/{len(train_loader.dataset)} "
                        f"({100. * batch_idx / len(train_loader):.0f}%)]\tLoss: {loss:.6f}")
    assert lines[2].startswith("Train Epoch: 1 [16/40 (67%)]")   # batch_idx * len(data): the last batch has 8
    assert h["val_accuracy"][0] == ref.evaluate((x, y))["accuracy"]


def test_fit_over_a_list_of_batches_and_evaluate_over_loaders():
    x, y = toy(24)
    pairs = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)]
    net, ref = small_net(), small_net()
    h = net.fit(pairs, epochs=2, verbose=False)
    ref.fit((x, y), epochs=2, batch_size=8, shuffle=False, verbose=False)
    same_weights(net, ref)
    assert len(h.steps) == 6
    expected = net.evaluate((x, y))
    for data in (DataLoader((x, y), batch_size=5), pairs,
                 torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                             batch_size=10)):
        got = net.evaluate(data)
        assert got["total"] == 24 and got["correct"] == expected["correct"]
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_fit_refuses_array_options_with_a_loader_and_a_one_shot_iterator():
    x, y = toy(8)
    net = small_net()
    with pytest.raises(ValueError, match="batch_size=32 is for \\(x, y\\) arrays"):
        net.fit(DataLoader((x, y), batch_size=4), batch_size=32, verbose=False)
    with pytest.raises(ValueError, match="seed=1 is for"):
        net.fit(DataLoader((x, y), batch_size=4), seed=1, verbose=False)
    with pytest.raises(ValueError, match="only once"):
        net.fit(((x[i:i + 4], y[i:i + 4]) for i in (0, 4)), epochs=2, verbose=False)
    h = net.fit(((x[i:i + 4], y[i:i + 4]) for i in (0, 4)), epochs=1, verbose=False)
    assert len(h.steps) == 2
    with pytest.raises(TypeError, match="float dtype"):
        net.fit(DataLoader((x.astype(np.uint8), y), batch_size=4), verbose=False)


# --- resuming ---------------------------------------------------------------------------------------------

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


def run(loader_of, tmp_path, at=0, resume=None, epochs=3):
    net = small_net()
    net.model.append(CtrlC(at))
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    manualbp.manual_seed(1234 if resume else 5)   # a resumed run must take its order from the checkpoint
    try:
        net.fit(loader_of(), epochs=epochs, optimizer=opt, checkpoint=tmp_path, resume=resume, verbose=False)
    except KeyboardInterrupt:
        return None
    return net


@pytest.mark.parametrize("own_generator", [False, True])
@pytest.mark.parametrize("at", [2, 4])   # part-way through epoch 1, and on epoch 2's first step
def test_a_dataloader_run_resumes_bit_for_bit(tmp_path, own_generator, at):
    x, y = toy(40)

    def loader():
        return DataLoader((x, y), batch_size=16, shuffle=True,
                          generator=np.random.default_rng(7) if own_generator else None)

    reference = run(loader, tmp_path / "ref")
    assert run(loader, tmp_path / "cut", at=at) is None
    resumed = run(loader, tmp_path / "cut", resume=tmp_path / "cut" / "interrupted.npz")
    same_weights(resumed, reference)


def test_a_generic_iterable_resumes_at_epoch_boundaries(tmp_path, capsys):
    x, y = toy(40)

    def loader():
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                           batch_size=16)

    reference = run(loader, tmp_path / "ref")
    assert run(loader, tmp_path / "cut", at=3) is None   # Ctrl-C in epoch 1's last step: stops at the boundary
    assert "resume at an epoch boundary" not in capsys.readouterr().err
    assert checkpoint.read(tmp_path / "cut" / "interrupted.npz")[0]["epoch"] == 1
    resumed = run(loader, tmp_path / "cut", resume=tmp_path / "cut" / "interrupted.npz")
    same_weights(resumed, reference)   # unshuffled: the same batches, so the same weights
    assert run(loader, tmp_path / "mid", at=2) is None   # Ctrl-C part-way through epoch 1
    err = capsys.readouterr().err
    assert re.search(r"resume at an epoch boundary: epoch 1 will start again from its first batch", err)
    assert checkpoint.read(tmp_path / "mid" / "interrupted.npz")[0]["extra"]["interrupted"] is None


def test_a_part_done_epoch_cannot_go_on_over_a_generic_iterable(tmp_path):
    x, y = toy(40)
    assert run(lambda: DataLoader((x, y), batch_size=16), tmp_path, at=2) is None
    net = small_net()
    net.model.append(CtrlC(0))
    with pytest.raises(ValueError, match="epoch boundary"):
        net.fit([(x[:16], y[:16])], epochs=2, resume=tmp_path / "interrupted.npz", verbose=False)
