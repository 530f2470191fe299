"""The CUDA-simulator tests: collected only when NUMBA_ENABLE_CUDASIM=1 was set before numba was imported.

The normal ``python -m pytest`` run imports numba for real (the CPU kernels need it), so it cannot
switch the simulator on; ``tests/cuda/test_cuda_runner.py`` starts a second pytest process on this
folder with the variable set.  Run them by hand with:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -p no:cacheprovider tests/cuda/sim
"""
import os

import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

collect_ignore_glob = [] if SIMULATOR else ["test_*.py"]

if SIMULATOR:
    from numba.core.config import ENABLE_CUDASIM

    assert ENABLE_CUDASIM, "numba was imported before NUMBA_ENABLE_CUDASIM=1 took effect"


class LaunchRecorder:
    """Wraps every kernel of manualbp.kernels.cuda and records the numba types it is launched with."""

    def __init__(self):
        self.types = {}  # kernel name -> set of argument-type tuples

    def wrap(self, name, kernel):
        recorder = self

        class Recorded:
            py_func = kernel.py_func

            def __getitem__(self, config):
                launch = kernel[config]

                def run(*args):
                    recorder.types.setdefault(name, set()).add(tuple(_numba_type(a) for a in args))
                    return launch(*args)

                return run

        return Recorded()


def _numba_type(value):
    import numba

    if hasattr(value, "_numba_type_"):
        t = value._numba_type_
        if value.size == 0 and t.layout == "A":
            t = t.copy(layout="C")  # a real device array types every empty array as C-contiguous
        return t
    return numba.typeof(value)


@pytest.fixture(scope="session")
def launches():
    """Record, for the whole session, the argument types of every kernel launch (for the PTX signatures)."""
    from manualbp.kernels import cuda as gpu

    recorder = LaunchRecorder()
    name_of = {id(k): name for name, k in gpu.kernels().items()}  # before anything is wrapped
    saved = []
    for module in gpu.FAMILIES:
        for attr, obj in list(vars(module).items()):
            if id(obj) in name_of:
                saved.append((module, attr, obj))
                setattr(module, attr, recorder.wrap(name_of[id(obj)], obj))
    tables = (gpu.gemm.MATMUL_KERNELS, gpu.gemm.LINEAR_KERNELS)  # kernels kept in dicts, not module attributes
    tables_saved = [dict(table) for table in tables]
    for table, kept in zip(tables, tables_saved):
        for key, k in kept.items():
            table[key] = recorder.wrap(name_of[id(k)], k)
    yield recorder
    for module, name, obj in saved:
        setattr(module, name, obj)
    for table, kept in zip(tables, tables_saved):
        table.update(kept)


_deselected = []


def pytest_deselected(items):
    _deselected.extend(items)


@pytest.fixture
def whole_suite(request):
    """True when every simulator test was selected (no -k/-m deselection, no single test picked)."""
    picked = any("::" in str(arg) for arg in request.config.args)
    return not _deselected and not picked


@pytest.fixture(autouse=True)
def _record(launches):
    """Every simulator test runs with the recorder in place."""
    yield
