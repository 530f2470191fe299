"""Every CUDA kernel compiled for real, without a GPU: numba.cuda.compile_ptx, then the linker's report.

For each kernel and each target (cc 9.0, an H100; cc 8.0, an A100):

- the PTX has no ``.f64`` instruction or register: all arithmetic stays in float32 (a bare ``0.5``
  literal or a Python float argument would pull in float64, which GPUs run far slower);
- nvJitLink, the CUDA linker, assembles the PTX to machine code with ``-verbose`` and reports
  "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads": nothing spills from registers,
  and the register tiles (``cuda.local.array``) live in registers, not in local memory.  Where
  nvJitLink is not installed, the PTX's ``.local`` declarations stand in for the stack frame.

compile_ptx needs no driver; the signatures come from ``ptx_signatures.py``, and the simulator
tests check that the wrappers launch the kernels with exactly those types.
"""
import re

import pytest
from numba.core.config import ENABLE_CUDASIM
from ptx_signatures import SIGNATURES

pytestmark = pytest.mark.skipif(ENABLE_CUDASIM, reason="compile_ptx is not available under the CUDA simulator")

TARGETS = [(9, 0), (8, 0)]
_ptx_cache = {}


def kernels():
    from manualbp.kernels import cuda as gpu

    return gpu.kernels()


def ptx_of(name, cc):
    if (name, cc) not in _ptx_cache:
        from numba import cuda

        ptx, _ = cuda.compile_ptx(kernels()[name].py_func, SIGNATURES[name], cc=cc)
        _ptx_cache[name, cc] = ptx
    return _ptx_cache[name, cc]


def link_report(ptx, cc):
    """nvJitLink's verbose info log for the PTX assembled for sm_XY, or None without nvJitLink."""
    try:
        from cuda.bindings import nvjitlink
    except ImportError:
        return None
    options = [f"-arch=sm_{cc[0]}{cc[1]}", "-verbose"]
    handle = nvjitlink.create(len(options), options)
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "kernel.ptx")
        nvjitlink.complete(handle)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
    finally:
        nvjitlink.destroy(handle)
    return log.decode(errors="replace")


SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def test_every_kernel_has_a_signature():
    assert set(kernels()) == set(SIGNATURES)


def test_importing_manualbp_does_not_import_the_cuda_kernels():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    code = ("import sys, manualbp; assert 'manualbp.kernels.cuda' not in sys.modules; "
            "import manualbp.kernels.cuda as g; print(len(g.kernels()))")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                            cwd=str(root), env=env)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("cc", TARGETS, ids=lambda cc: f"sm{cc[0]}{cc[1]}")
@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_kernel_compiles_to_float32_ptx_without_spills(name, cc):
    ptx = ptx_of(name, cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
    f64 = [line.strip() for line in ptx.splitlines() if ".f64" in line]
    assert not f64, f"{name}: float64 in the PTX of a float32 kernel: {f64[:5]}"
    report = link_report(ptx, cc)
    if report is None:  # no linker: local memory in the PTX is the best proxy for a stack frame
        assert ".local" not in ptx, f"{name}: the PTX uses local memory"
        return
    found = SPILLS.findall(report)
    assert found, f"{name}: no spill report in the linker's log:\n{report}"
    for stack, stores, loads in found:
        assert (int(stack), int(stores), int(loads)) == (0, 0, 0), (
            f"{name} on sm_{cc[0]}{cc[1]}: {stack} bytes stack frame, {stores} bytes spill stores, "
            f"{loads} bytes spill loads\n{report}")
