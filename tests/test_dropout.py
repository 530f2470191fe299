"""Dropout and Dropout2d: the mask's statistics (the fraction kept is about 1 - p), exact inverted scaling,
identity in eval mode, p = 0 and p = 1, backward = mask * g / (1 - p), reproducibility with manualbp.manual_seed,
in-place, torch's errors and warnings; and torch, fed the same mask, gives the same output and gradient."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import manualbp
from manualbp import nn

torch = pytest.importorskip("torch")


def test_mask_statistics_and_exact_scaling():
    manualbp.manual_seed(0)
    x = np.random.default_rng(1).uniform(0.5, 2.0, (200, 500))
    for p in (0.1, 0.5, 0.8):
        layer = nn.Dropout(p)
        y = layer(x)
        kept = y != 0
        assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / x.size)  # a binomial's 4 sigma
        np.testing.assert_array_equal(y[kept], x[kept] * (1 / (1 - p)))  # exactly x / (1 - p), no rounding apart
        g = np.random.default_rng(2).standard_normal(x.shape)
        np.testing.assert_array_equal(layer.backward(g), np.where(kept, g * (1 / (1 - p)), 0.0))


def test_dropout2d_drops_whole_channels():
    manualbp.manual_seed(0)
    x = np.ones((50, 40, 3, 3), np.float32)
    y = nn.Dropout2d(0.3)(x)
    per_channel = y.reshape(50, 40, 9)
    assert np.all((per_channel == 0).all(axis=2) | (per_channel == np.float32(1 / 0.7)).all(axis=2))
    assert abs((per_channel[:, :, 0] != 0).mean() - 0.7) < 0.05


def test_eval_is_identity_and_the_ends_of_p():
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    layer = nn.Dropout(0.5).eval()
    assert layer(x) is x
    with manualbp.enable_grad():
        layer(x)
    g = np.ones_like(x)
    assert layer.backward(g) is g
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)
    one = nn.Dropout(1.0)
    np.testing.assert_array_equal(one(x), np.zeros_like(x))
    np.testing.assert_array_equal(one.backward(g), np.zeros_like(x))


def test_a_seeded_run_is_reproducible():
    x = np.ones((10, 10))
    manualbp.manual_seed(42)
    a = nn.Dropout(0.5)(x), nn.Dropout(0.5)(x)
    manualbp.manual_seed(42)
    b = nn.Dropout(0.5)(x), nn.Dropout(0.5)(x)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])  # every forward draws a new mask


def test_inplace_writes_into_the_input():
    manualbp.manual_seed(0)
    x = np.ones((8, 8), np.float32)
    y = nn.Dropout(0.5, inplace=True)(x)
    assert y is x and set(np.unique(x)) <= {0.0, 2.0}


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from([(7,), (3, 4), (2, 3, 5), (2, 3, 2, 2)]), p=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]),
       channels=st.booleans(), seed=st.integers(0, 2**16))
def test_torch_fed_the_same_mask_agrees(shape, p, channels, seed):
    """torch's dropout is (input * mask) / (1 - p): given our mask it must give our output and gradient."""
    if channels and len(shape) < 3:
        return
    manualbp.manual_seed(seed)
    layer = nn.Dropout2d(p) if channels else nn.Dropout(p)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = layer(x.detach().numpy())
    g = torch.randn(shape, dtype=torch.float64)
    gx = layer.backward(g.numpy())
    mask = layer._mask.astype(np.float64)
    if channels:
        mask = np.repeat(mask, int(np.prod(shape[2:]))).reshape(shape)
    else:
        mask = mask.reshape(shape)
    scale = 0.0 if p == 1 else 1 / (1 - p)
    theirs = x * torch.tensor(mask) * scale  # what torch's kernel computes with its own mask
    theirs.backward(g)
    np.testing.assert_allclose(y, theirs.detach().numpy(), rtol=1e-15)
    np.testing.assert_allclose(gx, x.grad.numpy(), rtol=1e-15)


def test_errors_and_warnings_are_torchs():
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got"):
            nn.Dropout(p)
    with pytest.raises(TypeError, match="expected p to be a number"):
        nn.Dropout("0.5")
    with pytest.warns(UserWarning, match="Received a 3D input to dropout2d"):
        nn.Dropout2d()(np.ones((2, 3, 4), np.float32))
    with pytest.warns(UserWarning, match="Received a 2-D input to dropout2d"):
        nn.Dropout2d()(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.Dropout2d()(np.ones(3, np.float32))
    assert repr(nn.Dropout(0.25, True)) == repr(torch.nn.Dropout(0.25, True))
    assert nn.Dropout().state_dict() == {} and list(nn.Dropout().parameters()) == []


def test_nan_and_inf_give_what_torch_gives_with_the_same_mask():
    """torch multiplies by the mask: a dropped inf becomes NaN, a NaN stays NaN, in the gradient too."""
    manualbp.manual_seed(0)
    x = np.tile([np.nan, np.inf, 1.0], 100)
    layer = nn.Dropout(0.5)
    y = layer(x)
    mask = layer._mask.astype(np.float64)
    np.testing.assert_array_equal(y, (torch.tensor(x) * torch.tensor(mask) * 2.0).numpy())
    g = np.tile([1.0, np.nan, np.inf], 100)
    np.testing.assert_array_equal(layer.backward(g), (torch.tensor(g) * torch.tensor(mask) * 2.0).numpy())
