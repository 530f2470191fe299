"""manualbp.data: the seeded batch iterator, the offline digits, and the torchvision adapters (no network)."""
import hashlib
import pickle
import struct
import urllib.error

import numpy as np
import pytest
import torch

import manualbp
from manualbp import data

# --- batches ------------------------------------------------------------------------------------


def test_every_sample_once_per_pass_in_a_new_order_each_pass():
    x, y = np.arange(50, dtype=np.float32)[:, None], np.arange(50)
    it = data.batches(x, y, batch_size=16, seed=0)
    assert len(it) == 4 and it.num_samples == 50
    orders = []
    for _ in range(2):
        sizes, seen = [], []
        for xb, yb in it:
            assert np.array_equal(xb[:, 0], yb)   # x and y stay paired
            sizes.append(len(xb))
            seen.extend(yb.tolist())
        assert sizes == [16, 16, 16, 2] and sorted(seen) == list(range(50))
        orders.append(seen)
    assert orders[0] != orders[1] and orders[0] != list(range(50))


def test_no_shuffle_keeps_order_and_drop_last_drops_the_remainder():
    x = np.arange(10)
    assert [b.tolist() for b in data.batches(x, batch_size=4, shuffle=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    it = data.batches(x, batch_size=4, shuffle=False, drop_last=True)
    assert len(it) == 2 and [len(b) for b in it] == [4, 4]


def test_seeded_order_is_reproducible_from_a_seed_or_from_manual_seed():
    x = np.arange(30)

    def first_pass(**kw):
        return np.concatenate(list(data.batches(x, batch_size=7, **kw)))

    assert np.array_equal(first_pass(seed=5), first_pass(seed=5))
    assert not np.array_equal(first_pass(seed=5), first_pass(seed=6))
    manualbp.manual_seed(11)
    a = first_pass()
    manualbp.manual_seed(11)
    assert np.array_equal(a, first_pass())
    gen = np.random.default_rng(2)
    assert np.array_equal(first_pass(rng=gen), first_pass(rng=np.random.default_rng(2)))


@pytest.mark.parametrize("kwargs, match", [({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
                                           ({"y": np.zeros(3)}, "same number of samples"),
                                           ({"seed": 1, "rng": np.random.default_rng()}, "not both")])
def test_bad_arguments_are_refused(kwargs, match):
    kwargs = {"batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.batches(np.zeros((4, 2)), **kwargs)


# --- the offline digits -------------------------------------------------------------------------


def test_digits_fixed_stratified_split():
    (xtr, ytr), (xte, yte) = data.digits(True), data.digits(False)
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert xtr.min() == 0 and xtr.max() == 1 and set(np.unique(yte)) == set(range(10))
    assert np.bincount(yte).min() >= 35   # about 36 of each class
    manualbp.manual_seed(123)              # the split does not depend on manualbp's seed
    assert np.array_equal(data.digits(False)[1], yte)
    from sklearn.datasets import load_digits
    raw = load_digits()
    # every image is used exactly once: train + test is the whole data set (as multisets of rows)
    both = np.concatenate([xtr, xte]).reshape(1797, 64) * 16
    assert np.array_equal(np.sort(both.round().astype(int), axis=0), np.sort(raw.data.astype(int), axis=0))


def test_digits_resized_into_lenet5_input():
    x, _ = data.digits(False, shape=(3, 32, 32))
    assert x.shape == (360, 3, 32, 32) and x.dtype == np.float32
    assert np.array_equal(x[:, 0], x[:, 2])              # grey repeated into three channels
    assert x[:, :, :4].max() == 0 and x[:, :, -4:].max() == 0   # a 24x24 digit, 4-pixel margin
    assert 0 <= x.min() and x.max() <= 1
    assert data.digits(False, shape=(1, 28, 28))[0].shape == (360, 1, 28, 28)


def test_resize_is_torch_bilinear():
    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    ours = data.resize(x, (24, 20))
    theirs = torch.nn.functional.interpolate(torch.tensor(x), size=(24, 20), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)


def test_pad_to_centres_and_to_channels():
    x = np.ones((1, 1, 28, 28), np.float32)
    p = data.pad_to(x, (32, 32))
    assert p.shape == (1, 1, 32, 32) and p.sum() == 28 * 28 and p[0, 0, 2, 2] == 1 and p[0, 0, 1, 1] == 0
    assert data.to_channels(p, 3).shape == (1, 3, 32, 32)
    assert data.to_channels(np.ones((1, 3, 2, 2)), 1).shape == (1, 1, 2, 2)


# --- CIFAR-10 and MNIST through torchvision, from folders the tests write ------------------------


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_fake_cifar10(root, per_batch=4):
    """The cifar-10-batches-py layout torchvision reads: pickled dicts of uint8 rows (R, G, B planes)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    for name in names:
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": labels}, f)
        batches[name] = (rows, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    return folder, batches


def install_fake_cifar10(root, monkeypatch):
    """Write a fake CIFAR-10 under ``root`` and let torchvision accept it; return its batches."""
    import torchvision.datasets as tvd
    folder, batches = write_fake_cifar10(root)
    # torchvision checks each file's md5 against the real data set's; point it at our files' instead
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")]
                                                    for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": _md5(folder / "batches.meta")})
    return batches


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    return tmp_path, install_fake_cifar10(tmp_path, monkeypatch)


def test_cifar10_adapter_reads_a_cifar_format_folder(fake_cifar10):
    root, batches = fake_cifar10
    x, y = data.cifar10(root, train=True, download=False)
    rows = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][1]]
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, rows.reshape(-1, 3, 32, 32).astype(np.float32) / 255)   # NCHW, in [0, 1]
    np.testing.assert_array_equal(y, labels)
    xt, yt = data.cifar10(str(root), train=False)
    assert xt.shape == (4, 3, 32, 32) and yt.tolist() == batches["test_batch"][1]
    # the same pixels as torchvision's own ToTensor() pipeline
    import torchvision
    ds = torchvision.datasets.CIFAR10(root, train=False, transform=torchvision.transforms.ToTensor())
    np.testing.assert_allclose(xt[1], ds[1][0].numpy(), atol=1e-7)


def test_missing_data_without_download_names_the_root_and_the_flag(tmp_path):
    for loader in (data.cifar10, data.mnist):
        with pytest.raises(FileNotFoundError, match=r"root='.*nowhere'.*download=False.*download=True"):
            loader(tmp_path / "nowhere", train=True, download=False)


def write_fake_mnist(root, n=5):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for split, count in (("train", n), ("t10k", n - 2)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, count, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, count) + labels.tobytes())
        out[split] = images, labels
    return out


def test_mnist_adapter_reads_idx_files(tmp_path):
    expected = write_fake_mnist(tmp_path)
    x, y = data.mnist(tmp_path, train=True)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], expected["train"][0].astype(np.float32) / 255)
    np.testing.assert_array_equal(y, expected["train"][1])
    assert data.mnist(tmp_path, train=False)[0].shape == (3, 1, 28, 28)


# --- a download that fails: one sentence, nothing left behind ---------------------------------------------


def cut_off_network(monkeypatch):
    """Point torchvision's CIFAR-10 and MNIST addresses at a closed local port: every download fails at
    once, as it does on a machine without a network."""
    import torchvision.datasets as tvd
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tvd.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:9/"])


@pytest.mark.parametrize("loader", [data.cifar10, data.mnist])
def test_a_failed_download_says_so_in_one_sentence_and_removes_the_folders_it_made(tmp_path, monkeypatch,
                                                                                  capsys, loader):
    cut_off_network(monkeypatch)
    root = tmp_path / "new" / "data"
    with pytest.raises(data.DownloadError, match=r"could not download it into '.*data' \(.*\); check the "
                                                 r"network connection, or ") as info:
        loader(root, train=True, download=True)
    assert isinstance(info.value, FileNotFoundError) and "\n" not in str(info.value)
    assert not (tmp_path / "new").exists()   # both folders were made by the download: both are gone
    assert capsys.readouterr().out == ""     # no "Downloading ..." chatter from torchvision


@pytest.mark.parametrize("loader, made", [(data.cifar10, "cifar-10-python.tar.gz"), (data.mnist, "MNIST")])
def test_a_failed_download_into_a_folder_that_was_there_removes_only_what_it_wrote(tmp_path, monkeypatch,
                                                                                  loader, made):
    import torchvision.datasets.utils as tvu
    root = tmp_path / "data"
    root.mkdir()
    (root / "mine.txt").write_text("keep me")
    written = []

    def half_a_download(url, filename, chunk_size=32768):   # the connection drops part-way
        with open(filename, "wb") as f:
            f.write(b"the first bytes")
        written.append(filename)
        raise urllib.error.URLError("connection reset by peer")

    monkeypatch.setattr(tvu, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tvu, "_urlretrieve", half_a_download)
    with pytest.raises(data.DownloadError, match=r"\(connection reset by peer\)"):
        loader(root, train=True, download=True)
    assert written and any(made in str(w) for w in written)
    assert sorted(p.name for p in root.iterdir()) == ["mine.txt"] and (root / "mine.txt").read_text() == "keep me"
