"""tests/cuda: the GPU kernels, tested without a GPU (simulator, PTX) and with one (``gpu`` marker).

- ``sim/``: every kernel under numba's CUDA simulator, in its own process (``test_cuda_runner.py``);
- ``test_cuda_ptx.py``: every kernel compiled to PTX for cc 9.0 and 8.0, no float64, no spills;
- ``test_cuda_gpu.py``: marked ``gpu``, real kernels against torch on CUDA; skipped here unless
  both numba and torch see a CUDA device.
"""
import functools
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def gpu_available():
    """(available, reason): a CUDA device that numba (not its simulator) and torch can both use."""
    from numba import cuda
    from numba.core.config import ENABLE_CUDASIM

    if ENABLE_CUDASIM:
        return False, "the CUDA simulator is on"
    if not cuda.is_available():
        return False, "numba.cuda sees no GPU or driver"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    return True, ""


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and HERE in Path(str(item.fspath)).resolve().parents:
            available, reason = gpu_available()
            if not available:
                item.add_marker(pytest.mark.skip(reason=f"needs a CUDA GPU: {reason}"))
