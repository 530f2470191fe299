"""The first run's progress: each family of kernels named as Numba starts compiling it, nothing for kernels it
loads from its cache (manualbp/training/compile_progress.py)."""
import os
import subprocess
import sys

from manualbp.training.compile_progress import kernel_family

CHILD = """
import numpy as np
from manualbp.kernels import cpu
from manualbp.training.compile_progress import announce_families
said = []
with announce_families(said.append):
    cpu.relu_forward(np.ones(8, np.float32))
    cpu.relu_backward(np.ones(8, np.float32), np.ones(8, np.float32))
    cpu.relu_forward(np.ones(8, np.float64))
cpu.maxpool2d_forward(np.ones((1, 1, 4, 4), np.float32), (2, 2), (2, 2), (0, 0), (1, 1), False)
print("SAID", said)
"""


def _run(cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600,
                         check=True).stdout
    return [line for line in out.splitlines() if line.startswith("SAID")][-1]


def test_each_family_is_named_once_when_compiled_and_not_when_loaded_from_the_cache(tmp_path):
    assert _run(tmp_path) == "SAID ['elementwise']"  # three kernels, one family, named once; pool: after the block
    assert _run(tmp_path) == "SAID []"  # the same process again: every kernel comes from the cache


def test_kernel_family_groups_the_modules_of_kernels_cpu():
    assert kernel_family("manualbp.kernels.cpu.conv_packed") == "conv"
    assert kernel_family("manualbp.kernels.cpu.tile") == "gemm"
    assert kernel_family("manualbp.kernels.cpu.elementwise") == "elementwise"
    assert kernel_family("numba.np.arrayobj") is None and kernel_family(None) is None
