"""manualbp.nn.init against torch.nn.init's formulas (gains, fans, bounds, standard deviations)."""
import math

import numpy as np
import pytest
import torch

import manualbp
from manualbp import nn
from manualbp.nn import init


@pytest.mark.parametrize("name,param", [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                                        ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2),
                                        ("leaky_relu", math.sqrt(5)), ("selu", None)])
def test_calculate_gain_matches_torch(name, param):
    assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param), rel=1e-12)


def test_calculate_gain_rejects_unknown():
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")


def _stats(fn, shape, **kw):
    manualbp.manual_seed(0)
    p = nn.Parameter(np.zeros(shape))
    fn(p, **kw)
    return p.data


SHAPES = [(256, 128), (64, 32, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_initialisers_use_torch_bounds(shape):
    fan_in = shape[1] * int(np.prod(shape[2:]))
    fan_out = shape[0] * int(np.prod(shape[2:]))
    cases = [
        (init.xavier_uniform_, {}, math.sqrt(6 / (fan_in + fan_out))),
        (init.xavier_uniform_, {"gain": 2.0}, 2 * math.sqrt(6 / (fan_in + fan_out))),
        (init.kaiming_uniform_, {"nonlinearity": "relu"}, math.sqrt(2) * math.sqrt(3 / fan_in)),
        (init.kaiming_uniform_, {"a": math.sqrt(5)}, 1 / math.sqrt(fan_in)),
        (init.kaiming_uniform_, {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(6 / fan_out)),
    ]
    for fn, kw, bound in cases:
        w = _stats(fn, shape, **kw)
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.97 * bound
        assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)


@pytest.mark.parametrize("shape", SHAPES)
def test_normal_initialisers_use_torch_std(shape):
    fan_in = shape[1] * int(np.prod(shape[2:]))
    fan_out = shape[0] * int(np.prod(shape[2:]))
    cases = [
        (init.xavier_normal_, {}, math.sqrt(2 / (fan_in + fan_out))),
        (init.kaiming_normal_, {"nonlinearity": "relu"}, math.sqrt(2 / fan_in)),
        (init.kaiming_normal_, {"mode": "fan_out"}, math.sqrt(2 / (1 + 0)) / math.sqrt(fan_out)),
        (init.normal_, {"mean": 1.0, "std": 0.5}, 0.5),
    ]
    for fn, kw, std in cases:
        w = _stats(fn, shape, **kw)
        assert w.std() == pytest.approx(std, rel=0.05)
    assert _stats(init.normal_, shape, mean=1.0, std=0.5).mean() == pytest.approx(1.0, abs=0.02)


def test_constant_initialisers_and_arrays():
    a = np.empty((2, 3))
    assert init.zeros_(a) is a and not a.any()
    init.ones_(a)
    assert (a == 1).all()
    p = nn.Parameter(np.empty(4, np.float32))
    init.constant_(p, 0.25)
    assert (p.data == 0.25).all() and p.dtype == np.float32
    init.uniform_(p, -2, -1)
    assert ((p.data >= -2) & (p.data < -1)).all()


def test_fan_needs_two_dimensions_and_valid_mode():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_uniform_(np.zeros(5))
    with pytest.raises(ValueError, match="fan_in"):
        init.kaiming_normal_(np.zeros((2, 2)), mode="fan_avg")
    with pytest.raises(TypeError, match="Parameter or numpy array"):
        init.zeros_([1.0, 2.0])
