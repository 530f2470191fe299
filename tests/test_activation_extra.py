"""GELU (both forms), SiLU, ELU and Softplus against torch.autograd in float64: forward values and dL/dx for
hypothesis shapes (0-d, empty, 1-D..4-D) and every option; NaN and the infinities as torch; float32 too;
the Numba kernels against their NumPy twins (both dtypes, the serial and the parallel drivers); torch's
repr; inplace=True and a bad ``approximate`` refused by name."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from manualbp import nn
from manualbp.kernels import cpu, reference

# (our layer, torch's layer) for every option combination worth telling apart
CONFIGS = [
    ("GELU()", lambda: nn.GELU(), lambda: torch.nn.GELU()),
    ("GELU(tanh)", lambda: nn.GELU("tanh"), lambda: torch.nn.GELU("tanh")),
    ("SiLU()", lambda: nn.SiLU(), lambda: torch.nn.SiLU()),
    ("ELU()", lambda: nn.ELU(), lambda: torch.nn.ELU()),
    ("ELU(0.3)", lambda: nn.ELU(0.3), lambda: torch.nn.ELU(0.3)),
    ("ELU(-2)", lambda: nn.ELU(alpha=-2), lambda: torch.nn.ELU(alpha=-2)),
    ("ELU(0)", lambda: nn.ELU(0.0), lambda: torch.nn.ELU(0.0)),
    ("Softplus()", lambda: nn.Softplus(), lambda: torch.nn.Softplus()),
    ("Softplus(2, 5)", lambda: nn.Softplus(2, 5), lambda: torch.nn.Softplus(2, 5)),
    ("Softplus(0.5, 1)", lambda: nn.Softplus(beta=0.5, threshold=1.0), lambda: torch.nn.Softplus(0.5, 1.0)),
    ("Softplus(-1)", lambda: nn.Softplus(-1.0), lambda: torch.nn.Softplus(-1.0)),
    ("Softplus(3, -2)", lambda: nn.Softplus(3.0, -2.0), lambda: torch.nn.Softplus(3.0, -2.0)),
    ("Softplus(0)", lambda: nn.Softplus(0.0), lambda: torch.nn.Softplus(0.0)),  # log(2) / 0: infinity
]
IDS = [c[0] for c in CONFIGS]


def both(config, x, g, dtype=np.float64):
    """(ours y, ours dx, torch y, torch dx) for input x and upstream gradient g."""
    _, make_ours, make_theirs = config
    ours = make_ours()
    y = ours(np.asarray(x, dtype))
    dx = ours.backward(np.asarray(g, dtype))
    ty, tdx = torch_values(make_theirs(), x, g, dtype)
    return y, dx, ty, tdx


def torch_values(layer, x, g, dtype=np.float64):
    tx = torch.tensor(np.asarray(x, dtype), requires_grad=True)
    ty = layer(tx)
    (tdx,) = torch.autograd.grad(ty, tx, torch.tensor(np.asarray(g, dtype)))
    return ty.detach().numpy(), tdx.numpy()


shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(shape=shapes, scale=st.sampled_from([0.1, 1.0, 4.0, 30.0]), seed=st.integers(0, 2**16))
def test_forward_and_grad_input_match_torch_in_float64(config, shape, scale, seed):
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(shape) * scale)
    g = np.asarray(rng.standard_normal(shape))
    y, dx, ty, tdx = both(config, x, g)
    assert y.shape == ty.shape == shape and dx.shape == shape and y.dtype == dx.dtype == np.float64
    np.testing.assert_allclose(y, ty, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dx, tdx, rtol=1e-12, atol=1e-14)  # (1 + tanh) cancels for x << 0


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-10, -1e-10, 5e-324, -1000.0, 1000.0, -30.0, 30.0,
                    19.999, 20.0, 20.001, -5.0, 2.5, 710.0, -745.0])


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_nan_infinities_and_extremes_as_torch(config):
    """Each value through torch on its own: torch's float64 ELU backward gives NaN for a NaN input in its
    vectorized loop (16 or more elements) but dL/dy in its scalar loop and in float32; we give dL/dy."""
    g = np.linspace(-2, 2, SPECIAL.size)
    layer = config[1]()
    y, dx = layer(SPECIAL), layer.backward(g)
    ty, tdx = (np.concatenate(v) for v in zip(*(torch_values(config[2](), SPECIAL[i:i + 1], g[i:i + 1])
                                                for i in range(SPECIAL.size))))
    np.testing.assert_allclose(y, ty, rtol=1e-13, atol=0, equal_nan=True)
    np.testing.assert_allclose(dx, tdx, rtol=1e-12, atol=1e-14, equal_nan=True)  # 1 - tanh^2 cancels
    assert np.array_equal(np.isnan(y), np.isnan(ty)) and np.array_equal(np.isnan(dx), np.isnan(tdx))


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_float32_matches_torch_float32(config):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5)) * 3
    g = rng.standard_normal((3, 4, 5))
    y, dx, ty, tdx = both(config, x, g, np.float32)
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, tdx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_zero_dim_and_empty_inputs(config):
    for x in (np.array(0.7), np.array(-1.3), np.zeros((0, 3)), np.zeros((2, 0, 4))):
        y, dx, ty, tdx = both(config, x, np.ones_like(x))
        assert y.shape == x.shape == dx.shape and isinstance(y, np.ndarray) and isinstance(dx, np.ndarray)
        np.testing.assert_allclose(y, ty, rtol=1e-13)
        np.testing.assert_allclose(dx, tdx, rtol=1e-12)


# --- kernels against their NumPy twins ---------------------------------------------------------------

OPS = [("gelu", ("none",)), ("gelu", ("tanh",)), ("silu", ()), ("elu", (1.0,)), ("elu", (0.25,)),
       ("softplus", (1.0, 20.0)), ("softplus", (2.0, 3.0))]


@pytest.mark.parametrize("name,args", OPS, ids=[f"{n}{a}" for n, a in OPS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (7,), (3, 5, 2), (70_000,)])  # the last runs the parallel drivers
def test_cpu_kernels_match_reference(name, args, dtype, shape):
    rng = np.random.default_rng(7)
    x = np.asarray(rng.standard_normal(shape) * 5, dtype)
    if x.size > 4:
        x.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, 0.0]
    g = np.asarray(rng.standard_normal(shape), dtype)
    fwd, bwd = f"{name}_forward", f"{name}_backward"
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    for ours, want in ((getattr(cpu, fwd)(x, *args), getattr(reference, fwd)(x, *args)),
                       (getattr(cpu, bwd)(g, x, *args), getattr(reference, bwd)(g, x, *args))):
        assert ours.dtype == want.dtype == dtype and ours.shape == want.shape == shape
        np.testing.assert_allclose(ours, want, rtol=rtol, atol=rtol, equal_nan=True)  # libm's last bits differ


def test_numpy_backend_gives_the_same_layers():
    import manualbp

    x = np.random.default_rng(3).standard_normal((4, 6))
    layers = [nn.GELU(), nn.GELU("tanh"), nn.SiLU(), nn.ELU(0.5), nn.Softplus(2.0, 4.0)]
    got = [(m(x), m.backward(x)) for m in layers]
    manualbp.set_backend("numpy")
    try:
        for m, (y, dx) in zip(layers, got):
            np.testing.assert_allclose(m(x), y, rtol=1e-14)
            np.testing.assert_allclose(m.backward(x), dx, rtol=1e-14)
    finally:
        manualbp.set_backend("numba")


# --- construction, repr, refusals ----------------------------------------------------------------------

@pytest.mark.parametrize("ours,theirs", [
    (nn.GELU(), torch.nn.GELU()), (nn.GELU("tanh"), torch.nn.GELU(approximate="tanh")),
    (nn.SiLU(), torch.nn.SiLU()), (nn.ELU(), torch.nn.ELU()), (nn.ELU(alpha=2), torch.nn.ELU(alpha=2)),
    (nn.Softplus(), torch.nn.Softplus()), (nn.Softplus(2, 5), torch.nn.Softplus(2, 5)),
])
def test_repr_is_torchs(ours, theirs):
    assert repr(ours) == repr(theirs)


def test_bad_options_are_refused_by_name():
    with pytest.raises(ValueError, match="GELU: expected approximate to be 'none' or 'tanh', got 'fast'"):
        nn.GELU("fast")
    for make in (lambda: nn.SiLU(inplace=True), lambda: nn.ELU(inplace=True), lambda: nn.ELU(1.0, True)):
        with pytest.raises(ValueError, match="inplace=True is not supported"):
            make()
    with pytest.raises(TypeError, match="alpha to be a number"):
        nn.ELU("1")
    with pytest.raises(ValueError, match="finite beta"):
        nn.Softplus(float("nan"))
    with pytest.raises(TypeError, match="threshold to be a number"):
        nn.Softplus(1.0, None)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_backward_checks(config):
    layer = config[1]()
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.ones(3))
    layer(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(2, 3\), got \(3, 2\)"):
        layer.backward(np.ones((3, 2)))
    with pytest.raises(TypeError, match="dtype float64"):
        layer.backward(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="dtype float32 or float64"):
        layer(np.ones(3, np.int64))


NOT_REAL = ["0.1", None, [0.1], object(), 1 + 2j, np.array([0.1, 0.2]), True, float("nan"), float("inf")]
BAD_OPTIONS = [
    (nn.GELU, {}, {"approximate": [None, 1, "Tanh", "", "none ", "erf", True]}),
    (nn.SiLU, {}, {"inplace": [True, "yes", 1, None]}),
    (nn.ELU, {}, {"alpha": NOT_REAL, "inplace": [True, "no", 1, None]}),
    (nn.Softplus, {}, {"beta": NOT_REAL, "threshold": NOT_REAL}),
]


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_every_option_refuses_bad_values(draw):
    factory, valid, bad = draw.draw(st.sampled_from(BAD_OPTIONS))
    arg = draw.draw(st.sampled_from(sorted(bad)))
    value = draw.draw(st.sampled_from(bad[arg]))
    with pytest.raises((TypeError, ValueError)):
        factory(**{**valid, arg: value})
