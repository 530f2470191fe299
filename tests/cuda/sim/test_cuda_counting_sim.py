"""What a training step asks of the GPU, counted under the simulator: ``manualbp.cuda.counting``.

Launches, allocations and copies are made by the same Python code under the simulator as on a GPU, so the
counts here are the GPU's.  The step's counts are pinned down exactly: a change that adds a launch, an
allocation or a wait for the GPU to a training step has to change this file too.
"""
import numpy as np
import pytest
from numba import cuda

import manualbp
from manualbp import Network, nn, optim
from manualbp.cuda import counting
from manualbp.device import Uploader, host_copy, item, to_device


def mlp_step():
    manualbp.manual_seed(0)
    net = Network(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), device="cuda")
    x, y = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4), np.array([0, 1])
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    return lambda: net.train_step(x, y, loss_fn, opt)


def test_a_training_step_launches_allocates_and_waits_exactly_this_much(monkeypatch):
    from manualbp.kernels.cuda import buffers
    from manualbp.kernels.cuda.launch import device_constant, empty_f32

    monkeypatch.setattr(buffers, "CACHE", buffers.BufferCache())  # an empty buffer cache, whatever ran before
    device_constant(1.0), empty_f32()  # made once per process (the scalar 1.0 scale reads, "no bias")
    step = mlp_step()
    with counting() as first:
        step()
    with counting() as c:
        loss, _ = step()
        value = item(loss)  # as Network.fit reads it for its log: from the copy train_step made
    assert value == float(loss.copy_to_host()[0])
    assert c.launches == {
        "gemm_small_linear": 2,  # forward: x W^T + b, the bias added as the product is written
        "_relu_forward": 1,
        "_cross_entropy_index": 1,  # softmax, -log p_y and p - onehot(y), one thread per sample
        "_loss_sum": 1,  # the mean over the batch, summed and divided in one launch
        "_scale": 1,  # backward: dL/dz = (p - onehot(y)) / N
        "gemm_small_load_cols_load_rows_matrix_col": 2,  # dL/dW = g^T x
        "_bias_grad": 2,  # dL/db
        "gemm_small_load_rows_load_rows_matrix_col": 1,  # dL/dx of the second Linear (not of the first)
        "_relu_backward": 1,
        "_sgd_update": 1,  # every parameter at once, over the flat buffers (kernels/flat.py)
    }
    assert c.total_launches == 13
    assert first.launches["_sgd_update"] == 4  # the first step: one per parameter, making the momentum buffers
    # The second step allocates nothing: every kernel output is an array of the first step handed out again
    # by the buffer cache (kernels/cuda/buffers.py), and the 4 gradients are written into the flat gradient
    # buffer.  The first step asks for the 13 outputs, the 4 momentum buffers, the Uploader's 2 device buffers
    # (x and y, reused by every later batch) and then the three flat buffers (values, gradients, momentum),
    # copying the 4 parameters' arrays of each into them; two of those requests are served by arrays the
    # same step let go of already (the second Linear's bias gradient, shape (2,), takes the per-sample
    # losses' array once they are summed; its weight's momentum buffer, (2, 3), an activation gradient's)
    assert c.allocations == 0
    assert first.allocations == 13 + 4 + 2 + 3 - 2 and first.copies == 3 * 4 and c.copies == 0
    assert c.bytes == 0 and first.bytes > 0
    # the batch goes up (x and y), and the loss comes back once, for the nan check before backward, which
    # item() reads again; the class indices are checked on the pinned copy they were uploaded from
    assert (c.uploads, c.downloads) == (2, 1)
    assert first.uploads == 2
    assert c.wait_s >= 0 and "launches=13" in repr(c)


def test_counting_counts_each_kind_and_puts_everything_back():
    launch_type = type(cuda.jit(lambda a: None))
    before = (cuda.device_array, cuda.to_device, cuda.synchronize, launch_type.__getitem__)
    with counting() as c:
        a = cuda.to_device(np.ones(5, np.float32))  # an allocation and an upload
        b = cuda.device_array((2, 3), dtype=np.float32)  # an allocation of 24 bytes
        cuda.device_array_like(b)
        a.copy_to_device(np.zeros(5, np.float32))  # an upload into existing memory
        a.copy_to_host()  # a download
        a.copy_to_device(cuda.to_device(np.ones(5, np.float32)))  # an allocation, an upload, a copy on the GPU
        cuda.synchronize()
    assert (c.allocations, c.bytes, c.uploads, c.downloads, c.copies) == (4, 20 + 24 + 24 + 20, 3, 1, 1)
    assert c.launches == {}
    assert (cuda.device_array, cuda.to_device, cuda.synchronize, launch_type.__getitem__) == before
    with counting(), pytest.raises(RuntimeError, match="already counting"):
        counting().__enter__()


def test_an_uploaded_batch_is_checked_on_its_pinned_copy():
    up = Uploader()
    labels = np.array([3, 1, 2], np.int64)
    t = up(labels, "y")
    with counting() as c:
        seen = host_copy(t)
    assert c.downloads == 0 and np.array_equal(seen, labels)
    up(np.array([0, 0, 1]), "y")  # the next batch overwrites both copies alike
    assert np.array_equal(host_copy(t), t.copy_to_host())
    other = to_device(labels)  # not from an Uploader: read back from the GPU
    with counting() as c:
        assert np.array_equal(host_copy(other), labels)
    assert c.downloads == 1
    x = np.ones(2)
    assert host_copy(x) is x
