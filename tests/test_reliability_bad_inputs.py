"""One test per row of docs/bad-inputs.md: the call raises the documented error type, and the page shows
exactly the message the code raises now (regenerate the page with ``python tests/bad_inputs.py``)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bad_inputs

from manualbp.network import NonFiniteLossError
from manualbp.nn.saved import SavedStateError

EXPECTED_TYPES = {"no such file": FileNotFoundError, "training diverges (lr far too large)": NonFiniteLossError}


def _doc():
    with open(bad_inputs.DOC, encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("case", bad_inputs.CASES, ids=[f"{c[0]}: {c[1]}" for c in bad_inputs.CASES])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_documented_bad_input(case):
    exc = bad_inputs.run(case)
    expected = EXPECTED_TYPES.get(case[1], (TypeError, ValueError))
    assert isinstance(exc, expected), f"{case[3]!r} raised {exc!r}"
    assert type(exc) in (TypeError, ValueError, FileNotFoundError, NonFiniteLossError, SavedStateError)
    assert len(str(exc)) > 20, "a message should say who complains, what it expected and what it got"
    assert bad_inputs.row(case, exc) in _doc().splitlines(), (
        "docs/bad-inputs.md is out of date for this case; run python tests/bad_inputs.py\n"
        f"expected row: {bad_inputs.row(case, exc)}")


def test_the_page_lists_every_case_and_nothing_else():
    rows = [line for line in _doc().splitlines()
            if line.startswith("| ") and not line.startswith("| Invalid input")]
    assert len(rows) == len(bad_inputs.CASES) >= 40
    assert f"{len(bad_inputs.CASES)} cases." in _doc()
