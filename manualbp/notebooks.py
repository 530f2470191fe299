"""Each derivation page as a Jupyter notebook: the Markdown page stays the source, the notebook is made from it.

    python -m manualbp.notebooks [FOLDER]          write FOLDER/NN-topic.ipynb beside every FOLDER/NN-topic.md
    python -m manualbp.notebooks --check [FOLDER]  exit 1 (and name them) if a notebook differs from its page

FOLDER defaults to ``derivations``. A page becomes: one note cell saying where the notebook comes from, then the
page's prose as Markdown cells (one per ``## `` section, equations and tables as written; Jupyter renders
``$...$`` with MathJax), and each ```python block as a code cell, in the order of the page. Those are exactly
the blocks the test suite runs, so running the notebook top to bottom is running the page's check. No outputs
are stored and the cell ids are made from the page's name, so writing twice gives the same file.

Needs ``nbformat`` (``pip install -e ".[notebooks]"``); nothing else in manualbp imports this module.
"""
import argparse
import re
import sys
from pathlib import Path

from .checkpoint import atomic_write

__all__ = ["check_notebooks", "page_to_notebook", "split_cells", "write_notebooks"]

# The same pattern as tests/test_derivations.py: the blocks it runs are the blocks that become code cells.
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
PAGE_GLOB = "[0-9][0-9]-*.md"
NOTE = ("> This notebook is made from [{page}]({page}), which is its source: edit the page, then run "
        "`python -m manualbp.notebooks`. Run the cells from the top; each code cell is a block of the page's "
        "\"Check it yourself\".")


def _sections(prose):
    """Split Markdown prose before each ``## `` heading (not inside a fenced block); drop empty pieces."""
    pieces, current, fenced = [], [], False
    for line in prose.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("## ") and not fenced and current:
            pieces.append("\n".join(current))
            current = []
        current.append(line)
    pieces.append("\n".join(current))
    return [p.strip("\n") for p in pieces if p.strip()]


def split_cells(text):
    """[("markdown" | "code", source), ...] for a page's text, in the page's order."""
    cells, start = [], 0
    for m in PYTHON_BLOCK.finditer(text):
        cells += [("markdown", s) for s in _sections(text[start:m.start()])]
        cells.append(("code", m.group(1).rstrip("\n")))
        start = m.end()
    cells += [("markdown", s) for s in _sections(text[start:])]
    return cells


def page_to_notebook(page):
    """The notebook (an ``nbformat.NotebookNode``, format 4) made from the Markdown page at ``page``."""
    import nbformat
    from nbformat import v4

    page = Path(page)
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", page.stem)
    cells = [v4.new_markdown_cell(NOTE.format(page=page.name), id=f"{stem}-note")]
    for i, (kind, source) in enumerate(split_cells(page.read_text(encoding="utf-8"))):
        make = v4.new_code_cell if kind == "code" else v4.new_markdown_cell
        cells.append(make(source, id=f"{stem}-{i}"))
    nb = v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(nb)
    return nb


def _render(page):
    import nbformat

    return nbformat.writes(page_to_notebook(page)) + "\n"


def _pages(folder):
    pages = sorted(Path(folder).glob(PAGE_GLOB))
    if not pages:
        raise FileNotFoundError(f"no derivation pages ({PAGE_GLOB}) in {folder}")
    return pages


def write_notebooks(folder="derivations"):
    """Write (atomically) the notebook of every page in ``folder`` whose text changed; return the paths written."""
    written = []
    for page in _pages(folder):
        target = page.with_suffix(".ipynb")
        text = _render(page)
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        data = text.encode("utf-8")
        atomic_write(target, lambda f, data=data: f.write(data))
        written.append(target)
    return written


def check_notebooks(folder="derivations"):
    """The notebooks in ``folder`` that are missing or differ from what their page makes."""
    return [page.with_suffix(".ipynb") for page in _pages(folder)
            if not page.with_suffix(".ipynb").is_file()
            or page.with_suffix(".ipynb").read_text(encoding="utf-8") != _render(page)]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m manualbp.notebooks",
                                     description="Make a Jupyter notebook beside each derivation page.")
    parser.add_argument("folder", nargs="?", default="derivations", help="the folder of NN-topic.md pages")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a notebook is stale")
    args = parser.parse_args(argv)
    try:
        import nbformat  # noqa: F401
    except ImportError:
        print("manualbp.notebooks needs nbformat: pip install -e \".[notebooks]\"", file=sys.stderr)
        return 2
    if args.check:
        stale = check_notebooks(args.folder)
        for path in stale:
            print(f"{path} differs from its page: run python -m manualbp.notebooks {args.folder}")
        return 1 if stale else 0
    for path in write_notebooks(args.folder):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
