"""The device plumbing in a normal process (no simulator): errors without a GPU, to_numpy, lazy imports.

The GPU paths themselves run under the simulator (sim/test_cuda_device_sim.py) and, on a machine with
a GPU, against torch (test_device_gpu.py).
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import manualbp
from manualbp import Network, nn
from manualbp.device import is_cuda_array, item, normalize, to_device, to_numpy

ROOT = Path(__file__).resolve().parents[2]


def no_gpu():
    from numba import cuda
    from numba.core.config import ENABLE_CUDASIM

    return not ENABLE_CUDASIM and not cuda.is_available()


needs_no_gpu = pytest.mark.skipif("not no_gpu()", reason="a CUDA GPU (or the simulator) is present")


class FakeDeviceArray:
    """Quacks like a numba.cuda device array (copy_to_host, shape, dtype): enough for the dispatch checks."""

    def __init__(self, a):
        self._a = np.asarray(a)
        self.shape, self.dtype, self.ndim, self.size = self._a.shape, self._a.dtype, self._a.ndim, self._a.size

    def copy_to_host(self):
        return self._a.copy()


def test_import_manualbp_and_a_cpu_training_step_never_import_numba_cuda():
    code = ("import sys, numpy as np, manualbp\n"
            "from manualbp import nn, optim\n"
            "m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)); f = nn.CrossEntropyLoss()\n"
            "o = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)\n"
            "f(m(np.ones((2, 3), np.float32)), np.array([0, 1])); m.backward(f.backward()); o.step()\n"
            "m.state_dict(); o.state_dict(); manualbp.to_numpy(np.ones(2))\n"
            "assert 'numba.cuda' not in sys.modules, 'numba.cuda was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), check=False, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@needs_no_gpu
def test_moving_to_cuda_without_a_gpu_names_what_is_missing():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match=r"no CUDA GPU found by numba\.cuda \(.+\)"):
        model.to("cuda")
    assert isinstance(model[0].weight.data, np.ndarray)  # nothing moved
    with pytest.raises(RuntimeError, match="no CUDA GPU found by numba.cuda"):
        Network(nn.Linear(3, 2), device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU found by numba.cuda"):
        manualbp.to_device(np.ones(3))
    with pytest.raises(RuntimeError, match="no CUDA GPU found by numba.cuda"):
        model.cuda()


def test_unknown_devices_are_value_errors():
    model = nn.Sequential(nn.Linear(3, 2))
    for bad in ("tpu", "cuda:1", "", "mps"):
        with pytest.raises(ValueError, match="device"):
            model.to(bad)
    with pytest.raises(TypeError, match="device string"):
        model.to(0)
    assert normalize("CPU") == "cpu" and normalize("cuda:0") == "cuda" and normalize("gpu") == "cuda"
    assert model.to("cpu") is model and Network(model, device="cpu").device == "cpu"


def test_to_numpy_and_item():
    a = np.arange(3.0)
    assert to_numpy(a) is a
    np.testing.assert_array_equal(to_numpy([1, 2]), [1, 2])
    fake = FakeDeviceArray([[1.0, 2.0]])
    assert is_cuda_array(fake) and not is_cuda_array(a)
    np.testing.assert_array_equal(manualbp.to_numpy(fake), [[1.0, 2.0]])
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(to_numpy(torch.ones(2)), [1.0, 1.0])
    assert item(np.float32(1.5)) == 1.5 and item(FakeDeviceArray([2.5])) == 2.5 and item(3) == 3.0
    with pytest.raises(ValueError, match="single value"):
        item(np.ones(2))
    np.testing.assert_array_equal(to_device(fake, "cpu"), [[1.0, 2.0]])


def test_a_cpu_model_given_a_device_array_says_how_to_move_it():
    with pytest.raises(TypeError, match=r"parameters are on the CPU.*manualbp\.to_numpy.*to\('cuda'\)"):
        nn.Linear(2, 3)(FakeDeviceArray(np.ones((1, 2), np.float32)))
    with pytest.raises(TypeError, match=r"parameters are on the CPU"):
        nn.Conv2d(1, 1, 1)(FakeDeviceArray(np.ones((1, 1, 2, 2), np.float32)))
    layer = nn.Linear(2, 3)
    layer(np.ones((1, 2), np.float32))
    with pytest.raises(TypeError, match=r"Linear\.backward.*grad_output"):
        layer.backward(FakeDeviceArray(np.ones((1, 3), np.float32)))


def test_network_device_property_and_cpu_batches_pass_through():
    net = Network(nn.Linear(2, 2))
    assert net.device == "cpu"
    x = np.ones((2, 2), np.float32)
    assert net._on_device(x)[0] is x


def test_gpu_benchmark_help_and_no_gpu_message():
    script = str(ROOT / "benchmarks" / "gpu.py")
    result = subprocess.run([sys.executable, script, "--help"], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "BENCHMARKS_GPU.md" in result.stdout, result.stderr[-2000:]
    if not no_gpu():
        pytest.skip("a GPU is present: the no-GPU message cannot be checked")
    result = subprocess.run([sys.executable, script, "--quick"], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "no CUDA GPU found by numba.cuda" in result.stderr, result.stderr[-2000:]
