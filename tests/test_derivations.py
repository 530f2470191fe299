"""The derivations and the code, held to each other.

1. Every ```python block in derivations/*.md runs (all blocks of a page in one fresh interpreter, in order).
2. Every number with 4 or more decimals in a page's prose (everything outside its python blocks) is printed
   by those blocks, to the precision the prose gives: a number in the text is a number the code produces.
3. Links hold both ways: each page opens with ``Code:`` naming files that exist; each module that names a
   derivation names an existing one; every layer, loss and optimizer module names one; every equation label
   cited in code, e.g. ``# (L2)``, is defined (``\\tag{L2}``) in a derivation that file names.
"""
import ast
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DERIVATIONS = ROOT / "derivations"
PAGES = sorted(p for p in DERIVATIONS.glob("[0-9][0-9]-*.md"))
PAGE_IDS = [p.stem for p in PAGES]

PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
TAG = re.compile(r"\\tag\{([A-Z]+\d+)\}")
DERIVATION_REF = re.compile(r"derivations/(\d\d-[\w-]+\.md)")
# A cited label: "(L2)", "(O3-O6)", "(A9, A10)"; letters then digits, inside parentheses.
LABEL_GROUP = re.compile(r"\(([A-Z]{1,2}\d{1,2}(?:\s*(?:-|–|,|and)\s*[A-Z]{0,2}\d{1,2})*)\)")
LABEL = re.compile(r"([A-Z]{0,2})(\d{1,2})")


# --- reading pages ------------------------------------------------------------------------------------

def split_page(text):
    """(prose, [python blocks]): the prose is the page with its python blocks cut out."""
    blocks = PYTHON_BLOCK.findall(text)
    prose = PYTHON_BLOCK.sub("", text)
    return prose, blocks


def defined_labels(text):
    return TAG.findall(text)


def cited_labels(text):
    """Labels cited as (X1), with ranges (O3-O6) expanded; a bare number continues the previous prefix."""
    out = []
    for group in LABEL_GROUP.findall(text):
        parts = re.split(r"\s*(-|–|,|and)\s*", group)
        prev_prefix, prev_num, pending_range = None, None, False
        for part in parts:
            if part in ("-", "–"):
                pending_range = True
                continue
            if part in (",", "and"):
                continue
            m = LABEL.fullmatch(part)
            prefix, num = (m.group(1) or prev_prefix), int(m.group(2))
            if pending_range and prev_prefix == prefix and prev_num is not None and prev_num < num:
                out.extend(f"{prefix}{k}" for k in range(prev_num + 1, num + 1))
            else:
                out.append(f"{prefix}{num}")
            prev_prefix, prev_num, pending_range = prefix, num, False
    return out


# --- numbers in prose vs numbers printed ----------------------------------------------------------------

PROSE_NUMBER = re.compile(r"(-|−)?(?<![\w.])(\d+\.(\d{4,}))(?![\d.])")
OUTPUT_NUMBER = re.compile(r"(?<![\w.])-?\d+\.(\d+)(?:[eE][-+]?\d+)?|(?<![\w.])-?\d+[eE][-+]?\d+")


def prose_numbers(prose):
    """(text, value, decimals, explicitly_negative) for every number with >= 4 decimals in the prose.

    A minus sign counts as the number's own when it touches the digits ("-0.0381") and does not itself
    touch a digit, letter or closing bracket before it ("x-0.0381" is a subtraction, as is "x - 0.0381").
    """
    found = []
    for m in PROSE_NUMBER.finditer(prose):
        sign, digits, decimals = m.group(1), m.group(2), m.group(3)
        negative = False
        if sign:
            before = prose[:m.start()]
            negative = not (before and (before[-1].isalnum() or before[-1] in ")]}"))
        found.append((m.group(0), (-1 if negative else 1) * float(digits), len(decimals), negative))
    return found


def printed_numbers(stdout):
    """(value, decimals) of every number printed; decimals is None for scientific notation."""
    nums = []
    for m in OUTPUT_NUMBER.finditer(stdout):
        text = m.group(0)
        sci = "e" in text.lower()
        nums.append((float(text), None if sci else len(m.group(1) or "")))
    return nums


def unmatched_numbers(prose, stdout):
    """The prose numbers that no printed number agrees with, to the prose's precision.

    A printed number v matches a prose number p with d decimals when v was printed with at least d decimals
    (or in scientific notation) and |v - p| <= half a unit in the d-th decimal.  An explicitly negative p
    needs a negative v; an unsigned p (which may be written after a minus that means subtraction) accepts
    either sign.
    """
    printed = printed_numbers(stdout)
    missing = []
    for text, value, decimals, negative in prose_numbers(prose):
        tol = 0.5 * 10.0 ** (-decimals) * (1 + 1e-9) + 1e-15
        ok = False
        for v, dv in printed:
            if dv is not None and dv < decimals:
                continue
            candidates = (v,) if negative else (v, -v)
            if any(abs(c - value) <= tol for c in candidates):
                ok = True
                break
        if not ok:
            missing.append(text)
    return missing


def run_blocks(blocks, timeout=300):
    code = "\n\n".join(blocks)
    # One Numba thread, for the reason given in tests/test_examples.py: many tiny kernel calls.
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MPLBACKEND": "Agg", "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


# --- the checker checks itself ----------------------------------------------------------------------------

def test_number_check_catches_disagreement():
    prose = "The loss is 0.2984 and its gradient is -0.038098237; 1.3333 is MSE, x - 0.0190 subtracts."
    good = "loss 0.298371109 grad -0.038098237 mse 1.333333 other 0.019049118"
    assert unmatched_numbers(prose, good) == []
    # one digit off, a wrong sign, a number printed too coarsely, a number not printed at all
    assert unmatched_numbers(prose, good.replace("0.298371109", "0.298471109")) == ["0.2984"]
    assert unmatched_numbers(prose, good.replace("-0.038098237", "0.038098237")) == ["-0.038098237"]
    assert unmatched_numbers(prose, good.replace("1.333333", "1.33")) == ["1.3333"]
    assert unmatched_numbers(prose, good.replace("0.019049118", "")) == ["0.0190"]
    # numbers with fewer than 4 decimals, integers and exponents are not held to the output
    assert unmatched_numbers("lr 0.5, 0.659, 10^{-6}, 2 and 1e-6", "") == []


def test_label_parsing():
    assert cited_labels("x W^T, eq. (L1); (O3-O6); (A9, A10); (C2) and (N, C, H, W)") == \
        ["L1", "O3", "O4", "O5", "O6", "A9", "A10", "C2"]
    assert defined_labels(r"$$ y = x \tag{L1} $$ and $$ z \tag{L12} $$") == ["L1", "L12"]
    prose, blocks = split_page("text 0.1234\n```python\nprint(0.1234)\n```\nmore\n```text\nout 0.5678\n```\n")
    assert blocks == ["print(0.1234)\n"] and "0.5678" in prose and "print" not in prose


# --- each page ---------------------------------------------------------------------------------------------

def code_paragraph(text):
    """The paragraph that starts with 'Code:' (before the first section), or ''."""
    head = text.split("\n## ", 1)[0]
    m = re.search(r"^Code:.*?(?=\n\s*\n|\Z)", head, re.DOTALL | re.MULTILINE)
    return m.group(0) if m else ""


def code_files_of(text):
    return re.findall(r"`(manualbp/[\w/]+\.py)`", code_paragraph(text))


def test_there_are_derivations():
    assert len(PAGES) >= 10, [p.name for p in PAGES]


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_runs_and_its_prose_numbers_are_printed(page):
    text = page.read_text(encoding="utf-8")
    prose, blocks = split_page(text)
    assert blocks, f"{page.name} has no ```python block"
    result = run_blocks(blocks)
    assert result.returncode == 0, \
        f"{page.name}: a python block failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    missing = unmatched_numbers(prose, result.stdout)
    assert not missing, (f"{page.name}: numbers in the text that its python blocks do not print "
                         f"(to the same precision): {missing}\n--- stdout ---\n{result.stdout}")


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_opens_with_code_and_ends_with_a_check(page):
    text = page.read_text(encoding="utf-8")
    assert code_paragraph(text), f"{page.name}: no 'Code:' line before the first section"
    files = code_files_of(text)
    assert files, f"{page.name}: the Code: line names no manualbp/... file"
    for f in files:
        assert (ROOT / f).is_file(), f"{page.name} names {f}, which does not exist"
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    assert sections[-1].startswith("Check it yourself"), f"{page.name}: the last section is not 'Check it yourself'"
    assert PYTHON_BLOCK.search("## " + sections[-1]), f"{page.name}: 'Check it yourself' has no python block"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_labels_are_unique_and_share_one_prefix(page):
    labels = defined_labels(page.read_text(encoding="utf-8"))
    assert labels, f"{page.name} defines no \\tag{{...}} labels"
    assert len(labels) == len(set(labels)), f"{page.name}: a label is defined twice: {labels}"
    prefixes = {LABEL.fullmatch(lab).group(1) for lab in labels}
    assert len(prefixes) == 1, f"{page.name}: labels with several prefixes {sorted(prefixes)}"


def all_labels():
    owner = {}
    for page in PAGES:
        for lab in defined_labels(page.read_text(encoding="utf-8")):
            owner[lab] = page.name
    return owner


def test_prefixes_belong_to_one_page_each():
    by_prefix = {}
    for lab, page in all_labels().items():
        by_prefix.setdefault(LABEL.fullmatch(lab).group(1), set()).add(page)
    shared = {p: sorted(pages) for p, pages in by_prefix.items() if len(pages) > 1}
    assert not shared, f"label prefixes used by several pages: {shared}"


def test_labels_cited_in_pages_exist():
    owner = all_labels()
    for page in PAGES:
        prose, _ = split_page(page.read_text(encoding="utf-8"))
        unknown = sorted({lab for lab in cited_labels(prose) if lab not in owner})
        assert not unknown, f"{page.name} cites labels no derivation defines: {unknown}"


def test_links_between_pages_resolve():
    for page in PAGES + [DERIVATIONS / "README.md"]:
        for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"


def test_index_lists_every_page():
    index = (DERIVATIONS / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        assert f"({page.name})" in index, f"derivations/README.md does not link {page.name}"


# --- the code's side of the links ------------------------------------------------------------------------

def planned_pages():
    """Pages that derivations/README.md lists under "Planned" and that do not exist yet.

    Code written ahead of its page (the GPU kernels before the GPU page) may name such a page and cite its
    labels; the checks below hold it to the page as soon as the page exists.
    """
    index = (DERIVATIONS / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Planned.*?(?=^## |\Z)", index, re.DOTALL | re.MULTILINE)
    names = re.findall(r"`(\d\d-[\w-]+\.md)`", section.group(0)) if section else []
    return {n for n in names if not (DERIVATIONS / n).is_file()}


def code_files():
    return sorted(p for p in (ROOT / "manualbp").rglob("*.py") if "__pycache__" not in p.parts)


def comments_and_strings(path):
    """The text of every comment and string literal (docstrings included) in a Python file."""
    parts = []
    with open(path, "rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type in (tokenize.COMMENT, tokenize.STRING):
                parts.append(tok.string)
    return "\n".join(parts)


def test_code_names_existing_derivations():
    planned = planned_pages()
    for path in code_files():
        for name in DERIVATION_REF.findall(path.read_text(encoding="utf-8")):
            assert (DERIVATIONS / name).is_file() or name in planned, \
                f"{path.relative_to(ROOT)} names missing derivations/{name} (not listed as planned in the index)"


def test_labels_cited_in_code_exist_in_the_derivation_that_file_names():
    owner = all_labels()
    planned = planned_pages()
    problems = []
    for path in code_files():
        text = comments_and_strings(path)
        labels = sorted(set(cited_labels(text)))
        if not labels:
            continue
        rel = path.relative_to(ROOT)
        named = set(DERIVATION_REF.findall(path.read_text(encoding="utf-8")))
        if not named:
            problems.append(f"{rel} cites {labels} but names no derivation")
            continue
        for lab in labels:
            if lab not in owner and named & planned:
                continue  # the label of a page still to be written, which this file names
            if owner.get(lab) not in named:
                where = f"defined in {owner[lab]}" if lab in owner else "defined nowhere"
                problems.append(f"{rel} cites ({lab}), {where}; it names {sorted(named)}")
    assert not problems, "\n".join(problems)


def _defined_classes(module):
    for obj in vars(module).values():
        if isinstance(obj, type) and obj.__module__ == module.__name__ and not obj.__name__.startswith("_"):
            yield obj


def test_every_layer_loss_and_optimizer_module_names_a_derivation():
    import manualbp.nn as mnn
    import manualbp.optim as moptim

    missing = []
    checked = 0
    for package, base, method in ((mnn, mnn.Module, "backward"), (moptim, moptim.Optimizer, "step")):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            math_classes = [c for c in _defined_classes(module)
                            if issubclass(c, base) and c is not base and callable(getattr(c, method, None))]
            is_init = info.name == "init"
            if not math_classes and not is_init:
                continue
            checked += 1
            doc = module.__doc__ or ""
            if not DERIVATION_REF.search(doc):
                missing.append(f"{module.__name__} ({', '.join(c.__name__ for c in math_classes) or 'init'})")
    assert checked >= 4
    assert not missing, f"modules whose docstring names no derivations/NN-*.md: {missing}"


def test_kernel_files_and_gradcheck_name_derivations():
    """Every file that computes an equation -- the dispatcher, the NumPy twins, each CPU and CUDA kernel
    family -- names the derivation it follows (only the plumbing files are exempt)."""
    plumbing = {"common.py", "heap.py", "launch.py"}
    files = [ROOT / "manualbp/gradcheck.py"] + sorted((ROOT / "manualbp/kernels").rglob("*.py"))
    files = [p for p in files if p.name not in plumbing]
    assert len(files) >= 20
    for path in files:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        assert DERIVATION_REF.search(doc), f"{path.relative_to(ROOT)}: its docstring names no derivation"


def test_every_code_file_a_page_names_points_back_or_is_a_helper():
    """Pages and code agree: a layer/loss/optimizer file a page explains names that page in return."""
    problems = []
    for page in PAGES:
        for rel in code_files_of(page.read_text(encoding="utf-8")):
            path = ROOT / rel
            if not path.is_file() or path.name == "__init__.py":
                continue
            named = set(DERIVATION_REF.findall(path.read_text(encoding="utf-8")))
            if named and page.name not in named:
                problems.append(f"{page.name} explains {rel}, which names only {sorted(named)}")
    assert not problems, "\n".join(problems)
