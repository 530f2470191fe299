"""LayerNorm against torch in float64: forward, dL/dx, dL/dgamma, dL/dbeta over one or several trailing
dimensions (hypothesis shapes), elementwise_affine=False, bias=False, train and eval alike; state_dict, repr and
torch's error for a shape that does not end the input's."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manualbp import nn

torch = pytest.importorskip("torch")
RTOL = 1e-10


def pair(shape, **kw):
    theirs = torch.nn.LayerNorm(shape, **kw).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    ours = nn.LayerNorm(shape, dtype=np.float64, **kw)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def check(ours, theirs, x_shape, seed, assert_close, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(x_shape, dtype=torch.float64, generator=gen) * scale + 1.0).requires_grad_(True)
    y = theirs(x)
    g = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    y.backward(g)
    assert_close(ours(x.detach().numpy()), y, RTOL, "y")
    assert_close(ours.backward(g.numpy()), x.grad, RTOL, "dL/dx")
    if theirs.weight is not None:
        assert_close(ours.weight.grad, theirs.weight.grad, RTOL, "dL/dgamma")
    if theirs.bias is not None:
        assert_close(ours.bias.grad, theirs.bias.grad, RTOL, "dL/dbeta")


@settings(max_examples=40, deadline=None)
@given(lead=st.sampled_from([(), (1,), (3,), (2, 3)]), norm=st.sampled_from([(1,), (5,), (2, 3), (3, 1, 4)]),
       options=st.sampled_from([{}, {"elementwise_affine": False}, {"bias": False}, {"eps": 1e-2}]),
       seed=st.integers(0, 2**16))
def test_matches_torch(lead, norm, options, seed, assert_close):
    ours, theirs = pair(norm, **options)
    check(ours, theirs, lead + norm, seed, assert_close)


def test_int_shape_eval_mode_and_float32(assert_close):
    ours, theirs = pair(6)
    ours.eval()
    theirs.eval()
    from manualbp import enable_grad
    with enable_grad():  # eval mode computes the same thing; its backward is the same
        check(ours, theirs, (4, 6), 0, assert_close)
    t32 = torch.nn.LayerNorm(6)
    m32 = nn.LayerNorm(6)
    x = torch.randn(3, 6) * 5 + 10
    assert m32(x.numpy()).dtype == np.float32
    assert_close(m32(x.numpy()), t32(x), 1e-5)


def test_state_dict_repr_and_errors_are_torchs():
    for kw in ({}, {"elementwise_affine": False}, {"bias": False}):
        assert repr(nn.LayerNorm((3, 4), **kw)) == repr(torch.nn.LayerNorm((3, 4), **kw))
        assert list(nn.LayerNorm((3, 4), **kw).state_dict()) == list(torch.nn.LayerNorm((3, 4), **kw).state_dict())
    assert nn.LayerNorm((3, 4)).weight.shape == (3, 4)
    with pytest.raises(ValueError, match=r"expected input with shape \[\*, 3, 4\], but got input of size\[2, 3, 5\]"):
        nn.LayerNorm((3, 4))(np.ones((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="expected input with shape"):
        nn.LayerNorm((2, 3, 4))(np.ones((3, 4), np.float32))


def test_an_empty_batch_gives_an_empty_output_as_torch():
    layer = nn.LayerNorm(5)
    y = layer(np.zeros((0, 5), np.float32))
    assert y.shape == tuple(torch.nn.LayerNorm(5)(torch.zeros(0, 5)).shape)
    assert layer.backward(np.zeros((0, 5), np.float32)).shape == (0, 5)
    np.testing.assert_array_equal(layer.weight.grad, np.zeros(5, np.float32))
