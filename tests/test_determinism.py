"""Determinism: a seeded run gives the same weights bit for bit, whatever the thread count or threading layer.

The CPU kernels parallelise only over loops whose iterations write separate outputs, and no
reduction is split across threads, so the order of every floating-point addition is fixed by the
shapes alone.  These tests hold that promise in separate processes (Numba reads NUMBA_NUM_THREADS
and NUMBA_THREADING_LAYER once, at start-up).
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reliability_child as child


def _weights(net):
    return {k: v.copy() for k, v in net.state_dict().items()}


def _assert_bitwise(a, b, what):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{what}: {k} differs"


def _run_child(out, **env):
    full_env = {**os.environ, **{k: str(v) for k, v in env.items()}}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "reliability_child.py"), str(out)],
                          env=full_env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    threads, layer = env.get("NUMBA_NUM_THREADS"), env.get("NUMBA_THREADING_LAYER")
    report = proc.stdout.split()   # "threads N layer NAME": what Numba really used
    if threads is not None:
        assert report[report.index("threads") + 1] == str(threads)
    if layer is not None:
        assert report[report.index("layer") + 1] == layer
    with np.load(os.path.join(out, "weights.npz"), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_two_seeded_runs_give_identical_weights():
    runs = []
    for _ in range(2):
        net, opt = child.build()
        child.fit(net, opt, child.EPOCHS)
        runs.append(_weights(net))
    _assert_bitwise(runs[0], runs[1], "second run")


def _layers():
    layers = ["workqueue"]
    if importlib.util.find_spec("numba.np.ufunc.omppool") is not None:
        layers.append("omp")
    if importlib.util.find_spec("numba.np.ufunc.tbbpool") is not None and importlib.util.find_spec("tbb"):
        layers.append("tbb")
    return layers


def test_weights_after_two_epochs_do_not_depend_on_threads_or_threading_layer(tmp_path):
    net, opt = child.build()
    child.fit(net, opt, child.EPOCHS)
    expected = _weights(net)     # this process: default thread count and layer
    configs = [{"NUMBA_NUM_THREADS": 1}, {"NUMBA_NUM_THREADS": 2}]
    configs += [{"NUMBA_NUM_THREADS": 2, "NUMBA_THREADING_LAYER": layer} for layer in _layers()]
    for i, env in enumerate(configs):
        got = _run_child(tmp_path / f"run{i}", **env)
        _assert_bitwise(got, expected, f"subprocess with {env}")


@pytest.mark.parametrize("backend", ["numpy"])
def test_the_reference_backend_is_deterministic_too(backend):
    import manualbp
    try:
        manualbp.set_backend(backend)
        runs = []
        for _ in range(2):
            net, opt = child.build()
            child.fit(net, opt, 1)
            runs.append(_weights(net))
    finally:
        manualbp.set_backend("numba")
    _assert_bitwise(runs[0], runs[1], backend)
