"""The GPU wrappers' buffer cache (manualbp/kernels/cuda/buffers.py): an array is handed out again only when
nothing else refers to it, and training with the cache gives the same bits as training without it.
"""
import numpy as np
import pytest

import manualbp
from manualbp import nn, optim
from manualbp.cuda import counting
from manualbp.device import host_copy, remember_host_copy, to_numpy
from manualbp.kernels.cuda import buffers
from manualbp.network import Network
from manualbp.resnet import BasicBlock


@pytest.fixture
def cache(monkeypatch):
    """A fresh cache in place of the process's, for the duration of one test."""
    fresh = buffers.BufferCache()
    monkeypatch.setattr(buffers, "CACHE", fresh)
    return fresh


def test_an_array_comes_back_once_nothing_refers_to_it(cache):
    a = buffers.empty((3, 4))
    first = id(a)
    b = buffers.empty((3, 4))
    assert b is not a  # a is still held
    del a
    c = buffers.empty((3, 4))
    assert id(c) == first and c is not b
    assert (cache.hits, cache.misses, len(cache)) == (1, 2, 2)
    assert buffers.empty((4, 3)) is not c and buffers.empty((3, 4), np.int64).dtype == np.int64  # other keys
    assert cache.cached_bytes() == 3 * 4 * 4 * 2 + 4 * 3 * 4 + 3 * 4 * 8


@pytest.mark.parametrize("view", [lambda a: a.reshape(12), lambda a: a[1:], lambda a: a[0], lambda a: a.ravel()])
def test_a_view_keeps_its_array_from_being_handed_out(cache, view):
    a = buffers.empty((3, 4))
    first = id(a)
    v = view(a)
    del a
    assert id(buffers.empty((3, 4))) != first  # the view still reads that memory
    del v
    assert id(buffers.empty((3, 4))) == first


def test_disabled_cache_allocates_every_time(monkeypatch):
    off = buffers.BufferCache(enabled=False)
    monkeypatch.setattr(buffers, "CACHE", off)
    with counting() as c:
        a = buffers.empty(5)
        del a
        b = buffers.empty(5)
    assert c.allocations == 2 and len(off) == 0 and off.hits == 0 and b.shape == (5,)


def test_release_drops_only_free_arrays(cache):
    a = buffers.empty(6)
    b = buffers.empty(6)
    del b
    cache.release()
    assert len(cache) == 1
    assert buffers.empty(6) is not a
    manualbp.cuda.empty_cache()  # the process's cache (not this one): must not raise
    assert manualbp.cuda.memory_cached() >= 0


def test_a_reused_array_loses_its_remembered_host_copy(cache):
    a = buffers.empty(2)
    a.copy_to_device(np.array([1.0, 2.0], np.float32))
    remember_host_copy(a, np.array([1.0, 2.0], np.float32))
    first = id(a)
    del a
    b = buffers.empty(2)
    assert id(b) == first
    b.copy_to_device(np.array([7.0, 8.0], np.float32))
    np.testing.assert_array_equal(host_copy(b), [7.0, 8.0])  # not the copy remembered for the old values


def small():  # BatchNorm, ReLU and a residual join: outputs saved for backward and inputs used twice
    manualbp.manual_seed(5)
    return nn.Sequential(BasicBlock(2, 2), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 3))


RNG = np.random.default_rng(7)
BATCHES = [(RNG.standard_normal((2, 2, 2, 2)).astype(np.float32), RNG.integers(0, 3, 2)) for _ in range(3)]


def train(enabled, monkeypatch):
    monkeypatch.setattr(buffers, "CACHE", buffers.BufferCache(enabled=enabled))
    net = Network(small(), device="cuda")
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    allocations, losses = [], []
    for x, y in BATCHES:
        with counting() as c:
            loss, _ = net.train_step(x, y, loss_fn, opt)
        allocations.append(c.allocations)
        losses.append(manualbp.device.item(loss))
    state = {k: to_numpy(v) for k, v in net.model.state_dict().items()}
    return state, losses, allocations


def test_training_with_the_cache_gives_the_same_bits(monkeypatch):
    cached, cached_losses, cached_allocations = train(True, monkeypatch)
    plain, plain_losses, plain_allocations = train(False, monkeypatch)
    assert cached_losses == plain_losses
    assert cached.keys() == plain.keys()
    for k in cached:
        np.testing.assert_array_equal(cached[k], plain[k], err_msg=k)
    # the third step asks the driver for nothing; without the cache, every output is a new allocation
    assert cached_allocations[2] == 0 and plain_allocations[2] > 10, (cached_allocations, plain_allocations)
