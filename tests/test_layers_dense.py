"""Linear, Flatten, Identity and the activations against torch.autograd."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manualbp
from manualbp import nn

TOL = {np.float64: 1e-9, np.float32: 1e-4}


def close(ours, theirs, dtype):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    np.testing.assert_allclose(ours, theirs, rtol=TOL[dtype], atol=TOL[dtype] * 1e-2)


def run_both(ours, theirs, x, dtype, seed=0):
    """Forward both modules, backward a random upstream gradient, return (ours_y, ours_gx), (torch_y, torch_gx)."""
    rng = np.random.default_rng(seed)
    y = ours(x)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = ours.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(g))
    return (y, gx), (yt, xt.grad)


@pytest.fixture(params=["numba", "numpy"])
def backend(request):
    old = manualbp.get_backend()
    manualbp.set_backend(request.param)
    yield request.param
    manualbp.set_backend(old)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), fin=st.integers(1, 9), fout=st.integers(1, 9), bias=st.booleans(),
       extra=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]))
def test_linear_matches_torch(n, fin, fout, bias, extra, dtype):
    for name in ("numba", "numpy"):
        manualbp.set_backend(name)
        layer = nn.Linear(fin, fout, bias=bias)
        ref = torch.nn.Linear(fin, fout, bias=bias).to(torch.float64 if dtype == np.float64 else torch.float32)
        layer = layer.double() if dtype == np.float64 else layer
        layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
        shape = (n, 2, fin) if extra else (n, fin)
        x = np.random.default_rng(n).standard_normal(shape).astype(dtype)
        (y, gx), (yt, gxt) = run_both(layer, ref, x, dtype)
        close(y, yt, dtype)
        close(gx, gxt, dtype)
        close(layer.weight.grad, ref.weight.grad, dtype)
        if bias:
            close(layer.bias.grad, ref.bias.grad, dtype)
    manualbp.set_backend("numba")


ACTIVATIONS = [
    (lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    (lambda: nn.LeakyReLU(), lambda: torch.nn.LeakyReLU()),
    (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
    (lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
    (lambda: nn.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1)),
    (lambda: nn.Softmax(dim=-1), lambda: torch.nn.Softmax(dim=-1)),
    (lambda: nn.Softmax(dim=0), lambda: torch.nn.Softmax(dim=0)),
    (lambda: nn.Flatten(), lambda: torch.nn.Flatten()),
    (lambda: nn.Flatten(0, 2), lambda: torch.nn.Flatten(0, 2)),
    (lambda: nn.Identity(), lambda: torch.nn.Identity()),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make", ACTIVATIONS, ids=lambda m: repr(m[0]()) if isinstance(m, tuple) else str(m))
def test_activation_matches_torch(make, dtype):
    ours, theirs = make[0](), make[1]()
    x = (np.random.default_rng(1).standard_normal((3, 4, 2, 5)) * 3).astype(dtype)
    x[0, 0, 0, :2] = 0.0  # the kink of ReLU/LeakyReLU: torch takes the left derivative there
    (y, gx), (yt, gxt) = run_both(ours, theirs, x, dtype)
    close(y, yt, dtype)
    close(gx, gxt, dtype)


def test_sigmoid_is_stable_for_large_inputs():
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    y = nn.Sigmoid()(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, torch.sigmoid(torch.tensor(x)).numpy(), rtol=1e-12)


def test_repr_matches_torch():
    ours = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.LeakyReLU(0.1), nn.Sigmoid(),
                         nn.Tanh(), nn.Softmax(dim=1), nn.Flatten(), nn.Identity())
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.ReLU(), torch.nn.LeakyReLU(0.1),
                                 torch.nn.Sigmoid(), torch.nn.Tanh(), torch.nn.Softmax(dim=1),
                                 torch.nn.Flatten(), torch.nn.Identity())
    assert repr(ours) == repr(theirs)


def test_dense_bad_inputs_name_the_layer():
    layer = nn.Linear(4, 2)
    with pytest.raises(ValueError, match=r"Linear\(4, 2\).*last dimension 4.*\(3, 5\)"):
        layer(np.zeros((3, 5), np.float32))
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        layer(np.zeros((3, 4), np.int64))
    with pytest.raises(TypeError, match="dtype float32.*got float64"):
        layer(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="numpy array"):
        layer([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(ValueError, match="backward\\(\\) called before forward"):
        nn.Linear(4, 2).backward(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="backward\\(\\) called before forward"):
        nn.ReLU().backward(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="in_features > 0"):
        nn.Linear(0, 2)
    with pytest.raises(TypeError, match="in_features to be an int"):
        nn.Linear(2.5, 2)
    layer(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="grad_output of shape \\(3, 2\\)"):
        layer.backward(np.zeros((3, 3), np.float32))
