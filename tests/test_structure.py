"""The shape of the house (DESIGN.md): one forward and one backward per layer, whatever the device; the
device chosen in one place, ``manualbp/kernels/__init__.py``; the same operations under the same names in
``reference``, ``cpu`` and ``cuda``; no source file over 500 lines."""
import ast
import inspect
from pathlib import Path

import pytest

from manualbp import kernels
from manualbp.kernels import reference

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "manualbp"
NOT_OPERATIONS = {"like", "empty_like"}  # helpers of the dispatcher itself, not arithmetic


def _dispatcher_module(module):
    """kernels/__init__.py and the files of dispatchers it imports (losses.py, ...), not the implementations."""
    if module == "manualbp.kernels":
        return True
    parts = module.split(".")
    return (len(parts) == 3 and parts[:2] == ["manualbp", "kernels"] and not parts[2].startswith("reference")
            and parts[2] not in ("cpu", "cuda"))


def operations():
    """Every operation the layers may call: the public functions of kernels/__init__.py and of the dispatcher
    files it imports (losses.py, ...)."""
    names = []
    for name, obj in vars(kernels).items():
        if (inspect.isfunction(obj) and _dispatcher_module(obj.__module__)
                and not name.startswith("_") and name not in NOT_OPERATIONS):
            names.append(name)
    return sorted(names)


def test_no_source_file_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, long


def _identifiers(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            yield from (alias.name for alias in node.names)
            if isinstance(node, ast.ImportFrom) and node.module:
                yield node.module


@pytest.mark.parametrize("folder", ["nn", "optim"])
def test_layers_and_optimizers_never_ask_where_they_run(folder):
    """No numba import, no CUDA method and no device test in manualbp/nn or manualbp/optim: a layer calls
    kernels.<op> and the dispatcher decides.  (Module.to/.cuda() move parameters: that is their job.)"""
    allowed = {"cuda", "require_cuda"}  # Module.cuda() and the check in Module.to("cuda")
    found = []
    for path in sorted((PACKAGE / folder).glob("*.py")):
        for ident in _identifiers(ast.parse(path.read_text(encoding="utf-8"))):
            low = ident.lower()
            if ("numba" in low or "cuda" in low or "copy_to_host" in low) and ident not in allowed:
                found.append(f"{path.name}: {ident}")
            if ident == "cuda" and path.name != "module.py":
                found.append(f"{path.name}: {ident}")
    assert not found, found


def test_every_operation_has_a_numpy_twin_and_a_numba_version_with_the_same_signature():
    from manualbp.kernels import cpu

    ops = operations()
    assert len(ops) >= 40, ops
    for name in ops:
        ref = getattr(reference, name)
        ours = getattr(cpu, name)
        ref_params = list(inspect.signature(ref).parameters)
        assert list(inspect.signature(ours).parameters)[:len(ref_params)] == ref_params, name
        assert list(inspect.signature(getattr(kernels, name)).parameters) == ref_params, name


def test_every_operation_has_a_cuda_version_with_the_same_signature():
    pytest.importorskip("numba.cuda")
    from manualbp.kernels import cuda as gpu

    missing, different = [], []
    for name in operations():
        if not hasattr(gpu, name):
            missing.append(name)
            continue
        ref_params = list(inspect.signature(getattr(reference, name)).parameters)
        params = list(inspect.signature(getattr(gpu, name)).parameters)
        if params[:len(ref_params)] != ref_params:
            different.append(f"{name}: {params} vs {ref_params}")
    assert not missing and not different, (missing, different)


def test_mixed_devices_are_refused_in_the_dispatcher():
    import numpy as np

    class FakeDeviceArray:  # what manualbp.device.is_cuda_array recognises
        shape, dtype = (2, 2), np.dtype(np.float32)

        def copy_to_host(self):
            return np.zeros(self.shape, self.dtype)

    with pytest.raises(TypeError, match=r"kernels\.matmul: .*manualbp\.to_device"):
        kernels.matmul(np.ones((2, 2), np.float32), FakeDeviceArray())
