"""The benchmark script runs end to end on tiny sizes (``--quick``) and writes its report atomically.

No timing is asserted: these check that every section runs and that the report has its rows.
"""
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from manualbp import cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run.py"


def test_quick_run_of_every_section_writes_the_report(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", "--out", str(tmp_path)],
                          check=False, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    for heading in ("## Machine and versions", "## Targets", "float32 matrix product", "Convolutions of the CIFAR-10",
                    "Training step", "ResNet-20 training step", "Start-up", "Peak resident memory"):
        assert heading in report, heading
    for row in ("matmul n=16", "conv2 32->32 16x16 grad-weight", "lenet5 training step, batch 1",
                "cifar10net inference, batch 4", "resnet20 training step, batch 2", "empty Numba cache", "filled Numba cache", "peak RSS"):
        assert row in report, row
    assert "FMA probe" in report and "ratio ours/torch" in report
    data = json.loads((tmp_path / "BENCHMARKS.json").read_text(encoding="utf-8"))
    assert all(r["ours"]["median"] > 0 for r in data["rows"])
    # compile time per kernel family: a LeNet-5 step compiles convolutions, products, pooling, loss and SGD
    ct = data["meta"]["compile_times"]
    assert {"conv", "gemm", "pool", "loss", "optim"} <= set(ct["families"])
    assert all(d["seconds"] > 0 and d["compiled"] >= 1 for d in ct["families"].values())
    assert 0 < ct["compile_s"] <= ct["step_s"]
    assert "Compile time per kernel family (empty cache)" in report and "| conv | conv" in report
    # JAX's jitted step, a further column of the training rows where it imports
    steps = [r for r in data["rows"] if r["section"] == "train" and "training step" in r["name"]]
    if importlib.util.find_spec("jax") is not None:
        assert data["meta"]["jax"]["installed"] and all(r["jax"]["median"] > 0 for r in steps)
        assert "ratio ours/jax" in report and "JAX not installed" not in report
    else:
        assert "JAX not installed: no JAX rows" in report and not any("jax" in r for r in steps)
    without = dict(data, meta=dict(data["meta"], jax={"installed": False, "xla_threads": 1}),
                   rows=[{k: v for k, v in r.items() if k not in ("jax", "ratio_jax")} for r in data["rows"]])
    (tmp_path / "nojax.json").write_text(json.dumps(without), encoding="utf-8")
    assert cli.main(["bench", "--from-json", str(tmp_path / "nojax.json"), "--out", str(tmp_path / "nojax"), "-q"]) == 0
    nojax = (tmp_path / "nojax" / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "JAX not installed: no JAX rows" in nojax and "ratio ours/jax" not in nojax
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind
    notes = tmp_path / "notes.md"
    notes.write_text("## Notes\n\nwhat limits each row\n", encoding="utf-8")
    out2 = tmp_path / "again"
    assert cli.main(["bench", "--from-json", str(tmp_path / "BENCHMARKS.json"), "--notes", str(notes),
                     "--out", str(out2)]) == 0
    again = (out2 / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "what limits each row" in again and again.count("|") > 50
    pytest.importorskip("matplotlib")
    assert (tmp_path / "BENCHMARKS.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_selects_sections_and_the_cli_delegates(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--only", "matmul", "--out", str(tmp_path), "-q"]) == 0
    report = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "matmul n=32" in report and "Training step" not in report
    assert "wrote" in capsys.readouterr().out


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--only", "matmul,nosuch", "--out", str(tmp_path)])


def _blas_architecture(env):
    """What threadpoolctl reports for the BLAS of a fresh ``import numpy`` under ``env``."""
    code = ("import numpy, threadpoolctl; "
            "print([d['architecture'] for d in threadpoolctl.threadpool_info() if d['user_api'] == 'blas'])")
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def test_numpy_rows_run_with_openblas_own_kernel_choice(tmp_path, monkeypatch):
    pytest.importorskip("threadpoolctl")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # what a user might have set for another library
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "262144")
    assert cli.main(["bench", "--quick", "--only", "matmul", "--json", "--out", str(tmp_path), "-q"]) == 0
    meta = json.loads((tmp_path / "BENCHMARKS.json").read_text(encoding="utf-8"))["meta"]
    blas = meta["numpy_blas"]
    assert blas["removed"] == ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]
    assert blas["env"] == {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}
    assert blas["blas"] and all(d["internal_api"] and d["architecture"] and d["num_threads"] >= 1
                                for d in blas["blas"])
    own = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    assert str([d["architecture"] for d in blas["blas"]]) == _blas_architecture(own)
    assert meta["torch_cpu_capability"]
    report = (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "torch's CPU capability" in report and f"architecture {blas['blas'][0]['architecture']}" in report
    assert "this process had OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE set" in report
    rows = json.loads((tmp_path / "BENCHMARKS.json").read_text(encoding="utf-8"))["rows"]
    assert all(r["numpy"]["median"] > 0 for r in rows if r["section"] == "matmul")


def _bench_module(name):
    """benchmarks/<name>.py of this checkout (the folder is not part of the installed package)."""
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(f"benchmarks.{name}")
    finally:
        sys.path.remove(str(ROOT))


def test_compile_times_charge_each_module_to_its_family():
    family_of = _bench_module("compile_times").family_of
    assert family_of("manualbp.kernels.cpu.conv_packed") == "conv"
    assert family_of("manualbp.kernels.cpu.tile") == "gemm"
    assert family_of("manualbp.kernels.cpu.loss") == "loss"
    assert family_of("numba.np.arrayobj") == "other: numba.np.arrayobj"


@pytest.mark.parametrize("name", ["lenet5", "cifar10net"])
def test_jax_twin_steps_equal_ours(name):
    """Two JAX steps from our weights and batch give our losses and our updated weights (SGD momentum)."""
    pytest.importorskip("jax")
    import numpy as np

    import manualbp
    from manualbp import models, nn, optim
    from manualbp.network import Network
    JaxTwin = _bench_module("jax_twin").JaxTwin
    manualbp.manual_seed(0)
    model = models.build(name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    twin = JaxTwin(model, x, y)
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    net, loss_fn = Network(model), nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):  # the second step uses the momentum buffers of the first
        jax_loss = twin.step()
        loss, _ = net.train_step(x, y, loss_fn, opt)
        assert jax_loss == pytest.approx(float(loss), rel=1e-4)
        theirs = twin.state_dict()
        for k, v in model.state_dict().items():
            assert theirs[k].dtype == np.float32
            np.testing.assert_allclose(theirs[k], v, rtol=1e-4, atol=1e-6, err_msg=k)
    assert all(not np.array_equal(before[k], theirs[k]) for k in before)  # the weights did move
