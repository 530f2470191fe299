"""LogSoftmax against torch in float64: forward and grad-input along every dim, extreme scores, and the
LogSoftmax + NLLLoss pair equal to CrossEntropyLoss."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manualbp import nn

torch = pytest.importorskip("torch")


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 2**16), data=st.data())
def test_log_softmax_matches_torch(shape, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    x = 10 * rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    layer = nn.LogSoftmax(dim=dim)
    y = layer(x)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.LogSoftmax(dim=dim)(tx)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_extreme_scores_give_finite_logs():
    y = nn.LogSoftmax(dim=1)(np.array([[1000.0, 0.0, -1000.0]]))
    assert y.tolist() == [[0.0, -1000.0, -2000.0]]


def test_log_softmax_then_nll_equals_cross_entropy():
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    lsm, nll, ce = nn.LogSoftmax(dim=1), nn.NLLLoss(), nn.CrossEntropyLoss()
    np.testing.assert_allclose(nll(lsm(x), t), ce(x, t), rtol=1e-12)
    np.testing.assert_allclose(lsm.backward(nll.backward()), ce.backward(), rtol=1e-10, atol=1e-15)
