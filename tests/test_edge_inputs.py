"""Element-wise layers, Flatten and Linear on the inputs torch users meet at the edges: 0-d tensors, empty
batches, unbatched samples and NaN, against torch.autograd in float64 (values and gradients, NaN where
torch has NaN)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manualbp import nn

torch = pytest.importorskip("torch")

SHAPES = [(), (0,), (5,), (0, 3), (2, 3), (2, 0, 4), (2, 3, 4)]

LAYERS = {
    "ReLU": (lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    "Sigmoid": (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
    "Tanh": (lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
    "Softmax(-1)": (lambda: nn.Softmax(dim=-1), lambda: torch.nn.Softmax(dim=-1)),
    "Softmax(0)": (lambda: nn.Softmax(dim=0), lambda: torch.nn.Softmax(dim=0)),
    "LogSoftmax(-1)": (lambda: nn.LogSoftmax(dim=-1), lambda: torch.nn.LogSoftmax(dim=-1)),
}


def _torch_pass(layer, x, g):
    xt = torch.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), xt.grad.numpy()


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(LAYERS)), shape=st.sampled_from(SHAPES), nan=st.booleans(),
       seed=st.integers(0, 2**16))
def test_elementwise_layers_match_torch_on_edge_inputs(name, shape, nan, seed):
    ours_cls, theirs_cls = LAYERS[name]
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(shape) * 3)
    if nan and x.size:
        x.reshape(-1)[rng.integers(x.size)] = np.nan
    g = np.asarray(rng.standard_normal(shape))
    layer = ours_cls()
    y = layer(x)
    gx = layer.backward(g)
    ty, tgx = _torch_pass(theirs_cls(), x, g)
    assert y.shape == ty.shape and gx.shape == tgx.shape
    np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-14, equal_nan=True)
    np.testing.assert_allclose(gx, tgx, rtol=1e-10, atol=1e-13, equal_nan=True)


@pytest.mark.parametrize("shape", [(0, 4), (4,), (3, 4), (2, 3, 4)])
def test_linear_on_empty_unbatched_and_extra_dims_as_torch(shape):
    layer = nn.Linear(4, 2).double()
    ref = torch.nn.Linear(4, 2).double()
    ref.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in layer.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    y = layer(x)
    g = rng.standard_normal(y.shape)
    gx = layer.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.bias.grad, ref.bias.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", [(), (0, 2, 3), (2, 3), (2, 3, 4)])
def test_flatten_as_torch(shape):
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    layer = nn.Flatten()
    try:
        expected = torch.nn.Flatten()(torch.tensor(x)).shape
    except (RuntimeError, IndexError):
        with pytest.raises((ValueError, IndexError, RuntimeError)):
            layer(x)
        return
    y = layer(x)
    assert tuple(y.shape) == tuple(expected)
    assert layer.backward(np.ones_like(y)).shape == x.shape
