"""``manualbp explain``: the chain-rule trace of the 2-2-2 network, by hand and by backward(), equal."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from manualbp import explain, nn

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = explain.main(list(argv))
    return code, capsys.readouterr().out


def summary_row(out, name):
    m = re.search(rf"^  {re.escape(name)}\s+(\S+)\s+(\S+)\s+(\w+)$", out, re.MULTILINE)
    assert m, f"no summary row for {name}:\n{out}"
    return m.group(1), m.group(2), m.group(3)


def test_prints_the_tutorial_numbers_by_hand_and_by_backward(capsys):
    code, out = run(capsys)
    assert code == 0
    for name, value in (("E_total", "0.298371109"), ("dE/dw5", "0.082167041"), ("dE/dw1", "0.000438568"),
                        ("w5 new", "0.358916480"), ("w1 new", "0.149780716")):
        assert summary_row(out, name) == (value, value, "equal")
    # the products themselves, each next to backward()'s number
    assert "= 0.741365070 * 0.186815602 * 0.593269992 (out_h1)" in out
    assert "= 0.082167041        backward(): 0.082167041   equal" in out
    assert "= 0.138498562 * 0.40 + (-0.038098237) * 0.50 = 0.055399425 + (-0.019049118) = 0.036350306" in out
    assert "= 0.036350306 * 0.241300709 * 0.05 (i1)" in out
    assert "= 0.000438568        backward(): 0.000438568   equal" in out
    assert "E_total = E_o1 + E_o2 = 0.274811083 + 0.023560026 = 0.298371109" in out
    assert "DIFFERENT" not in out and "MISMATCH" not in out
    # every one of the eight weights is traced and compared
    assert len(re.findall(r"backward\(\): \S+   equal", out)) == 8
    assert len(re.findall(r"SGD\.step\(\): \S+   equal", out)) == 8
    assert "weights from before the step" in out


def test_options_change_the_step_and_the_precision(capsys):
    code, out = run(capsys, "--lr", "0.1", "--digits", "12")
    assert code == 0
    assert summary_row(out, "dE/dw5")[:2] == ("0.082167040564", "0.082167040564")
    hand, mbp, verdict = summary_row(out, "w5 new")
    assert hand == mbp and verdict == "equal"
    assert abs(float(hand) - (0.4 - 0.1 * 0.082167040564)) < 1e-12
    with pytest.raises(SystemExit):
        explain.main(["--lr", "-1"])
    with pytest.raises(SystemExit):
        explain.main(["--digits", "40"])


def test_a_wrong_backward_shows_up_as_different(capsys, monkeypatch):
    # forget the (1 - s) factor of the sigmoid's derivative: the trace must notice
    monkeypatch.setattr(nn.Sigmoid, "backward", lambda self, g: g * self._s)
    code, out = run(capsys)
    assert code == 1
    assert summary_row(out, "dE/dw5")[2] == "DIFFERENT"
    assert summary_row(out, "E_total")[2] == "equal"  # the forward pass is still right
    assert "MISMATCH" in out


def _cli_has_explain():
    cli = ROOT / "manualbp" / "cli.py"
    main = ROOT / "manualbp" / "__main__.py"
    return cli.is_file() and main.is_file() and "explain" in cli.read_text(encoding="utf-8")


@pytest.mark.skipif(not _cli_has_explain(), reason="the manualbp CLI does not offer 'explain' yet")
def test_python_dash_m_manualbp_explain():
    result = subprocess.run([sys.executable, "-m", "manualbp", "explain"], cwd=str(ROOT), capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^  dE/dw1\s+0\.000438568\s+0\.000438568\s+equal$", result.stdout, re.MULTILINE)
