"""Every derivation as a Jupyter notebook (manualbp/notebooks.py makes them from the Markdown pages).

1. The committed ``derivations/NN-topic.ipynb`` is exactly what its page makes today (so the two never drift),
   is valid nbformat 4 with no outputs stored, and its code cells are the page's python blocks, in order.
2. Each notebook runs top to bottom through a real Jupyter kernel (nbclient, ipykernel's ``python3``), in the
   derivations folder, importing this checkout's manualbp with the interpreter running the tests; what its
   cells print holds every number of the page's prose, as tests/test_derivations.py asks of the page.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat import v4
from test_derivations import DERIVATIONS, PAGE_IDS, PAGES, ROOT, split_page, unmatched_numbers

from manualbp import notebooks

CELL_TIMEOUT = 120  # seconds per cell: a cold Numba cache compiles the kernels a page uses


def _kernel_env():
    # One Numba thread and no display, as tests/test_derivations.py runs the same blocks.
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "MPLBACKEND": "Agg", "NUMBA_NUM_THREADS": "1"}


def execute(nb, cwd):
    """Run ``nb`` in place through a fresh ``python3`` kernel started in ``cwd``; return its stdout, joined."""
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=_kernel_env())
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []) if out.get("output_type") == "stream"
                   and out.get("name") == "stdout")


# --- the notebooks are the pages ------------------------------------------------------------------------------

def test_every_page_has_its_notebook_and_every_notebook_a_page():
    notebooks_ = sorted(DERIVATIONS.glob("*.ipynb"))
    assert [p.with_suffix(".ipynb") for p in PAGES] == notebooks_


def test_committed_notebooks_are_what_the_pages_make():
    stale = notebooks.check_notebooks(DERIVATIONS)
    assert not stale, f"run python -m manualbp.notebooks derivations: {[p.name for p in stale]} differ from their pages"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_notebook_holds_the_page(page):
    nb = nbformat.read(page.with_suffix(".ipynb"), as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
    prose, blocks = split_page(page.read_text(encoding="utf-8"))
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code == [b.rstrip("\n") for b in blocks]
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert nb.cells[0].cell_type == "markdown" and f"]({page.name})" in nb.cells[0].source
    # the prose, every line of it, in the Markdown cells and in the page's order
    markdown = "\n".join(c.source for c in nb.cells[1:] if c.cell_type == "markdown")
    lines = [line for line in prose.split("\n") if line.strip()]
    assert [line for line in markdown.split("\n") if line.strip()] == lines
    assert sum(c.source.startswith("## ") for c in nb.cells) == prose.count("\n## ")


def test_generator_sees_a_changed_page_and_writes_only_what_changed(tmp_path, capsys):
    for name in ("05-maxpool.md", "09-sgd-momentum.md"):
        shutil.copy(DERIVATIONS / name, tmp_path / name)
    assert notebooks.main(["--check", str(tmp_path)]) == 1                  # no notebooks yet
    assert notebooks.main([str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert notebooks.check_notebooks(tmp_path) == [] and notebooks.write_notebooks(tmp_path) == []
    page = tmp_path / "05-maxpool.md"
    page.write_text(page.read_text(encoding="utf-8").replace("pool = nn.MaxPool2d(2)", "pool = nn.MaxPool2d(2, 2)"),
                    encoding="utf-8")
    assert notebooks.check_notebooks(tmp_path) == [tmp_path / "05-maxpool.ipynb"]
    assert notebooks.main(["--check", str(tmp_path)]) == 1
    assert notebooks.write_notebooks(tmp_path) == [tmp_path / "05-maxpool.ipynb"]
    assert "pool = nn.MaxPool2d(2, 2)" in (tmp_path / "05-maxpool.ipynb").read_text(encoding="utf-8")
    assert not list(tmp_path.glob(".*.tmp"))


def test_split_cells_keeps_order_and_fenced_text():
    text = ("# T\n\nCode: `x.py`\n\n## A\n\nsome $y$\n\n```text\n## not a heading\n```\n\n```python\nprint(1)\n```\n"
            "\nbetween\n\n## Check it yourself\n\n```python\nprint(2)\n\n```\n")
    assert notebooks.split_cells(text) == [
        ("markdown", "# T\n\nCode: `x.py`"), ("markdown", "## A\n\nsome $y$\n\n```text\n## not a heading\n```"),
        ("code", "print(1)"), ("markdown", "between"), ("markdown", "## Check it yourself"), ("code", "print(2)")]


# --- the notebooks run in a real kernel ------------------------------------------------------------------------

def test_a_failing_cell_fails_the_run(tmp_path):
    nb = v4.new_notebook(cells=[v4.new_code_cell("x = 1"), v4.new_code_cell("raise ValueError('the cell failed')")])
    with pytest.raises(CellExecutionError, match="the cell failed"):
        execute(nb, tmp_path)


PROBE = "import json, os, sys, manualbp\nprint(json.dumps([sys.prefix, sys.executable, manualbp.__file__, os.getcwd()]))"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_notebook_runs_top_to_bottom_in_a_kernel(page):
    nb = nbformat.read(page.with_suffix(".ipynb"), as_version=4)
    nb.cells.append(v4.new_code_cell(PROBE))            # where the kernel ran, checked below (not in the file)
    stdout = execute(nb, DERIVATIONS)
    prefix, executable, module, cwd = json.loads(nb.cells[-1].outputs[0]["text"])
    assert (prefix, executable) == (sys.prefix, sys.executable)         # this interpreter, this environment
    assert Path(module).resolve().is_relative_to(ROOT / "manualbp")
    assert Path(cwd).resolve() == DERIVATIONS.resolve()
    prose, _ = split_page(page.read_text(encoding="utf-8"))
    missing = unmatched_numbers(prose, stdout)
    assert not missing, f"{page.name}: numbers of the text its notebook did not print: {missing}\n{stdout}"
