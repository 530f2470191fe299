"""Helpers shared by the test files (pytest fixtures, so no test imports this module by name).

    def test_something(assert_close):
        assert_close(ours, torch_tensor, rtol=1e-9)
"""
import signal

import numpy as np
import pytest
import torch

# A test run started in the background by a non-interactive shell inherits SIGINT ignored, and Python keeps it
# so; the Ctrl-C tests send their own process SIGINT and expect what a terminal's Ctrl-C does, so they get
# Python's usual handler back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _assert_close(ours, theirs, rtol, what=""):
    """Elementwise |ours - theirs| <= rtol * (|theirs| + max(1, max|theirs|)).

    The absolute part scales with the largest value, so an element that is a near-zero sum of large
    terms (common in a convolution) is judged against the size of the terms, not against its own size.
    """
    ours, theirs = _to_numpy(ours), _to_numpy(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != {theirs.shape}"
    scale = max(1.0, float(np.max(np.abs(theirs)))) if theirs.size else 1.0
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale, err_msg=what)


@pytest.fixture(scope="session")
def assert_close():
    """The comparison function: ``assert_close(ours, theirs, rtol, what="")`` (theirs may be a tensor)."""
    return _assert_close


@pytest.fixture(scope="session")
def to_numpy():
    """Tensor or array -> NumPy array."""
    return _to_numpy
