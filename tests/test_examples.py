"""Every example runs, in its own interpreter, and prints what it promises.

The reading-order examples (examples/0*.py, examples/1*.py) run in full: each takes a second or two. The
training examples (examples/2*.py) run only when their author gave them a size flag for a quick run
(``--tiny``, ``--smoke`` or ``--quick``); otherwise they are skipped here and exercised by their own tests.
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))
QUICK_FLAGS = ("--tiny", "--smoke", "--quick")

# For each reading-order example: patterns its output must contain (regular expressions, one per line).
EXPECTED = {
    "01_tutorial_losses.py": [
        r"L1Loss\(reduction='sum'\)\s+manualbp 2\.0000",
        r"MSELoss\(\)\s+manualbp 1\.3333 .*= 1\.3333",
        r"CrossEntropyLoss\(\[0\.1, 0\.2, 0\.3\], target 1\)\s+manualbp 1\.1019 .*= 1\.1019",
        r"softmax\(\[2\.0, 1\.0, 0\.1\]\) = \[0\.659, 0\.242, 0\.099\]",
        r"CrossEntropyLoss\(\[2\.0, 1\.0, 0\.1\], target 0\)\s+manualbp 0\.4170 .*= 0\.4170",
        r"dL/dlogits = softmax - onehot = \['-0\.3410', '0\.2424', '0\.0986'\]",
    ],
    "02_two_two_two_network.py": [
        r"E_total\s+0\.298371109\s+0\.298371109",
        r"dE/dw5\s+0\.082167041\s+0\.082167041",
        r"dE/dw1\s+0\.000438568\s+0\.000438568",
        r"w5 after one step\s+0\.358916480\s+0\.358916480",
        r"w1 after one step\s+0\.149780716\s+0\.149780716",
        r"weights from before the step",
    ],
    "03_grad_lifecycle.py": [
        r"1\. just built\s+model\[0\]\.weight\.grad\[0\] = None",
        r"2\. after one backward\s+model\[0\]\.weight\.grad\[0\] = \[",
        r"3\. after a second backward .*= \[",
        r"exactly twice as large",
        r"4\. after optimizer\.zero_grad\(\)\s+model\[0\]\.weight\.grad\[0\] = None",
        r"5\. backward again: a fresh gradient\s+model\[0\]\.weight\.grad\[0\] = \[",
        r"7\. zero_grad\(set_to_none=False\)\s+model\[0\]\.weight\.grad\[0\] = \[0\. 0\. 0\.\]",
    ],
    "04_mlp_xor_or_spirals.py": [
        r"XOR final accuracy 100%; predictions \[0, 1, 1, 0\] for targets \[0, 1, 1, 0\]",
        r"spirals final accuracy (9[5-9]|100)%",
    ],
    "05_your_own_layer.py": [
        r"SiLU gradcheck: True",
        r"WrongSiLU gradcheck: False",
        r"final MSE 0\.0[0-4]\d\d; always predicting 0 would score 2\.02",
    ],
}

# Training examples whose quick run is checked further: patterns its output must contain, and whether it draws a
# figure (to the path given by --out; without matplotlib it says it skipped the figure).
QUICK_EXPECTED = {
    "22_batchnorm_vs_plain.py": ([
        r"plain\s+final test accuracy \d+\.\d\d%",
        r"BatchNorm final test accuracy \d+\.\d\d%",
        r"plain\s+first conv: max \|dL/dbias\| \d\.\de-0[1-3]",
        r"BatchNorm first conv: max \|dL/dbias\| \d\.\de-(0[5-9]|[1-9]\d)",   # no gradient before BatchNorm
    ], True),
    "23_sgd_momentum_adam.py": ([
        r"SGD\(lr=0\.1\)\s+final loss \d\.\d\de-\d\d, accuracy \d+%",
        r"SGD\(lr=0\.1, momentum=0\.9\)\s+final loss",
        r"Adam\(lr=0\.01\)\s+final loss \d\.\d\de-\d\d, accuracy 100%",
        r"Adam\(lr=0\.01\)\s+min 1\.0e-02\s+median 1\.0e-02\s+max 1\.0e-02",   # Adam's first step is lr
    ], True),
    "24_resnet20.py": ([
        r"Total params: 269,722",
        r"Train Epoch: 1 \[0/128 \(0%\)\]\tLoss: \d",
        r"Epoch 1: .*, lr 0\.1,",
        r"Epoch 2: .*, lr 0\.01,",                  # MultiStepLR's milestone after the first epoch
        r"Test accuracy after 2 epochs: \d+/64",
    ], False),
}
QUICK_EXPECTED["25_vanishing_gradients.py"] = ([
    r"sigmoid\s+ratio at init \d\.\de-(0[5-9]|[1-9]\d)",     # the first layer's gradient << the last one's
    r"relu \+ kaiming\s+ratio at init (\d\.\de-01|\d\.\de\+00)",
    r"sigmoid \+ BN\s+ratio at init (\d\.\de-01|\d\.\de\+00)",
], True)


def run(path, *args, timeout=300):
    # One Numba thread: these scripts make thousands of tiny kernel calls, and on a busy machine parallel
    # threads waiting for each other cost more than the work (5x slower seen on 2 shared cores).  The
    # kernels give the same results for any thread count (DESIGN.md), so nothing printed changes.
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "MPLBACKEND": "Agg",
           "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(path), *args], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_the_promised_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert set(EXPECTED) <= names, sorted(set(EXPECTED) - names)


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.name[0] in "01"], ids=lambda p: p.name)
def test_reading_order_example(path):
    result = run(path)
    assert result.returncode == 0, f"{path.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert result.stdout.strip(), f"{path.name} printed nothing"
    for pattern in EXPECTED.get(path.name, []):
        assert re.search(pattern, result.stdout), f"{path.name}: no line matches {pattern!r}:\n{result.stdout}"


def _quick_flag(path):
    source = path.read_text(encoding="utf-8")
    for flag in QUICK_FLAGS:
        if re.search(rf"""["']{re.escape(flag)}["']""", source):
            return flag
    return None


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.name[0] not in "01"], ids=lambda p: p.name)
def test_training_example_quick_run(path, tmp_path):
    flag = _quick_flag(path)
    if flag is None:
        pytest.skip(f"{path.name} has no {'/'.join(QUICK_FLAGS)} flag for a quick run")
    patterns, figure = QUICK_EXPECTED.get(path.name, ([], False))
    out = tmp_path / "figure.png"
    result = run(path, flag, *(["--out", str(out)] if figure else []), timeout=600)
    assert result.returncode == 0, f"{path.name} {flag} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    for pattern in patterns:
        assert re.search(pattern, result.stdout), f"{path.name}: no line matches {pattern!r}:\n{result.stdout}"
    if figure and importlib.util.find_spec("matplotlib") is not None:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} wrote no PNG to --out"
        assert [p.name for p in tmp_path.iterdir()] == ["figure.png"], "a temporary file was left beside the figure"
        assert f"figure: {out}" in result.stdout
        umask = os.umask(0)
        os.umask(umask)
        assert out.stat().st_mode & 0o777 == 0o666 & ~umask, "the figure kept the temporary file's private mode"


@pytest.mark.parametrize("name", [n for n, (_, figure) in QUICK_EXPECTED.items() if figure])
def test_figure_is_skipped_with_a_message_without_matplotlib(name, tmp_path, monkeypatch):
    # A package named matplotlib that fails to import, ahead of the real one on the path
    (tmp_path / "matplotlib").mkdir()
    (tmp_path / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    path = ROOT / "examples" / name
    out = tmp_path / "out" / "figure.png"
    result = run(path, _quick_flag(path), "--out", str(out))
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "figure skipped: matplotlib is not installed" in result.stdout, result.stdout
    assert not out.exists()
