"""manualbp/kernels/cpu/heap.py: glibc's malloc thresholds raised once, and left alone when asked."""
import os
import platform
import subprocess
import sys

import pytest

PROBE = "from manualbp.kernels.cpu import heap; print(heap.keep_freed_memory(), heap.keep_freed_memory())"


def _run(env_extra):
    """(first call, second call) of keep_freed_memory in a fresh interpreter with this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MANUALBP_KEEP_MALLOC"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return tuple(out.stdout.split())


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt")
def test_thresholds_are_set_once_on_glibc():
    assert _run({}) == ("True", "False")  # set on the first call, never again


@pytest.mark.parametrize("env", [{"MANUALBP_KEEP_MALLOC": "1"}, {"MALLOC_ARENA_MAX": "2"}])
def test_malloc_is_left_alone_when_asked(env):
    assert _run(env) == ("False", "False")


def test_the_numba_kernels_set_them_when_first_used():
    probe = ("import numpy as np; from manualbp import kernels; from manualbp.kernels.cpu import heap; "
             "assert not heap._done; kernels.matmul(np.ones((2, 2)), np.ones((2, 2))); print(heap._done)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
