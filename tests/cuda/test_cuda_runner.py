"""Runs the CUDA-simulator tests (tests/cuda/sim) in a second pytest process, and asserts they pass.

The simulator is switched on by NUMBA_ENABLE_CUDASIM=1, which numba reads once, when it is first
imported; this process has imported numba for real already (the CPU kernels), so the simulator
tests get a fresh interpreter with the variable set.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIM_TESTS = Path(__file__).resolve().parent / "sim"


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                    reason="this process runs under the simulator already and collects tests/cuda/sim itself")
def test_simulator_suite_passes():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SIM_TESTS)],
        check=False, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=900)
    summary = result.stdout.strip().splitlines()[-1:] or [""]
    assert result.returncode == 0, (f"the simulator tests failed ({summary[0]}):\n"
                                    f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
    assert " passed" in summary[0] and "failed" not in summary[0], result.stdout[-3000:]
